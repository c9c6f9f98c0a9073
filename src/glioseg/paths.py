"""Where glioseg keeps derived caches (atlas arrays, ONNX exports)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$GLIOSEG_CACHE`` or ``~/.cache/glioseg``; safe to delete (everything is rebuilt on demand)."""
    root = os.environ.get("GLIOSEG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "glioseg")
    return Path(root)
