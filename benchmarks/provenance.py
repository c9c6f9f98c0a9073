"""Where and with what a benchmark ran: the fields every ``benchmarks/results/*.json`` records.

Imported by the benchmark scripts (``python benchmarks/X.py`` puts this folder on ``sys.path``);
``scripts/docs_numbers.py`` prints these fields under every table it renders from a result.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

CORE_PACKAGES = ("glioseg", "torch", "monai", "dynamic-network-architectures", "lightning", "numpy")


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record(packages: tuple[str, ...] = ()) -> dict:
    """Date (UTC), CPU, core count, thread settings, the 1-minute load average when it was called
    (a busy machine shows: timings then read high), Python and package versions, as a JSON-able dict.

    ``packages`` are recorded besides :data:`CORE_PACKAGES`; one that is not installed is skipped.
    No machine path or host name is recorded.
    """
    versions = {"python": platform.python_version()}
    for name in (*CORE_PACKAGES, *packages):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }


def _jsonable(value: object) -> object:
    """A NumPy scalar as its Python number (``.item()``), anything else JSON cannot hold as its text."""
    return value.item() if hasattr(value, "item") else str(value)


def write_result(path: str | Path, result: dict) -> Path:
    """Write ``result`` as indented JSON to ``path`` (folders made), atomically; NumPy scalars are
    written as numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    part.write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    os.replace(part, path)
    return path
