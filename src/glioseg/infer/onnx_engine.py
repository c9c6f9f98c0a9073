"""ONNX Runtime as an alternative CPU engine (``glioseg predict --engine onnx``).

A member is exported once (spatial axes dynamic) to ``$GLIOSEG_CACHE/onnx/<hash>.onnx``, keyed by
its weights file and the torch version, and run with ONNX Runtime's CPU execution provider.
Needs the ``bench`` extra (onnx, onnxruntime).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from glioseg.errors import ConfigError
from glioseg.paths import cache_dir


def _cache_path(weights: Path) -> Path:
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(torch.__version__.encode())
    return cache_dir() / "onnx" / f"{digest.hexdigest()[:24]}.onnx"


class OnnxPredictor:
    """Callable like a network: ``(B, 4, X, Y, Z)`` torch tensor -> logits tensor."""

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("--engine onnx needs onnxruntime: pip install 'glioseg[bench]'") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(
            None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
        )[0]
        return torch.from_numpy(out)


def onnx_predictor(member, threads: int | None = None) -> OnnxPredictor:
    """Export ``member`` (if not cached) and open it with ONNX Runtime."""
    path = _cache_path(member.path)
    if not path.exists():
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--engine onnx needs onnx and onnxruntime: pip install 'glioseg[bench]'"
            ) from None
        from glioseg.data.io import atomic_path

        network = member.load("cpu")
        patch = tuple(int(p) for p in member.plan.patch_size)
        example = torch.zeros((1, 4, *patch))
        with atomic_path(path, suffix=".onnx") as tmp:
            torch.onnx.export(
                network,
                (example,),
                str(tmp),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={
                    "image": {0: "batch", 2: "x", 3: "y", 4: "z"},
                    "logits": {0: "batch", 2: "x", 3: "y", 4: "z"},
                },
                opset_version=18,
                dynamo=False,
            )
    return OnnxPredictor(path, threads)
