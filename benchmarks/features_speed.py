"""Seconds per case for ``glioseg features`` on full-size (240x240x155, 1 mm) cases, one thread.

Usage: python benchmarks/features_speed.py [--cases 3] [--real DIR] [--real-cases 5]
    [--json benchmarks/results/features_speed.json]

Synthetic cases (both domains): the feature computation alone (arrays in memory), split into
its families (shape; quality proxies). Real cases (``--real``, default
``../shared/data/brats2018`` when it exists): the first ``--real-cases`` cases as ``glioseg
features`` computes them, from reading the four contrasts and the ground truth to the last
feature (:func:`glioseg.data.radiomics.iter_case_features`). ``--json`` also writes every
case's times with where and with what they were measured (``benchmarks/provenance.py``);
docs/transfer.md quotes that file (``scripts/docs_numbers.py``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from provenance import machine_record, write_result  # noqa: E402  (benchmarks/provenance.py)

from glioseg.data.cases import discover_cases  # noqa: E402
from glioseg.data.radiomics import (  # noqa: E402
    brain_mask,
    case_features,
    iter_case_features,
    quality_features,
    shape_features,
)
from glioseg.data.synthetic import generate_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REAL = ROOT.parent / "shared" / "data" / "brats2018"


def synthetic_times(cases: int) -> dict[str, dict[str, list[float]]]:
    """Per domain, per case: seconds for all features, for the shape family, for the quality proxies."""
    out = {}
    for domain in ("adult", "ssa"):
        total, shape, quality = [], [], []
        for index in range(1, cases + 1):
            case = generate_case(200, index, domain)
            t0 = time.perf_counter()
            case_features(case.image, case.label, (1.0, 1.0, 1.0))
            t1 = time.perf_counter()
            shape_features(case.label, (1.0, 1.0, 1.0))
            t2 = time.perf_counter()
            brain = brain_mask(case.image)
            for channel in case.image:
                quality_features(channel, brain)
            t3 = time.perf_counter()
            total.append(t1 - t0)
            shape.append(t2 - t1)
            quality.append(t3 - t2)
        out[domain] = {"all_s": total, "shape_s": shape, "quality_s": quality}
    return out


def real_times(folder: Path, cases: int) -> list[dict]:
    """Seconds per real case, reading the NIfTI files included, as ``glioseg features`` runs it."""
    found = discover_cases(folder).cases[:cases]
    rows = []
    began = time.perf_counter()
    for case, _row, error in iter_case_features(found, source="truth"):
        seconds = time.perf_counter() - began
        rows.append({"case_id": case.case_id, "seconds": seconds, "ok": error is None})
        began = time.perf_counter()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3, help="synthetic cases per domain")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="a folder of real BraTS cases")
    parser.add_argument("--real-cases", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the per-case times here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = machine_record(("nibabel", "scipy", "scikit-image"))
    print(f"machine: {machine['cpu']}, {machine['cpu_count']} cores visible, 1 thread used")
    print(f"{'domain':8s} {'all features s/case':>20s} {'shape':>7s} {'quality':>8s}  (medians)")
    synthetic = synthetic_times(args.cases)
    for domain, times in synthetic.items():
        print(
            f"{domain:8s} {statistics.median(times['all_s']):>20.2f} {statistics.median(times['shape_s']):>7.2f} "
            f"{statistics.median(times['quality_s']):>8.2f}"
        )
    real = real_times(args.real, args.real_cases) if args.real.is_dir() else []
    if real:
        seconds = [row["seconds"] for row in real if row["ok"]]
        print(
            f"real ({args.real.name}, {len(seconds)} cases, reading included): median "
            f"{statistics.median(seconds):.2f} s/case (max {max(seconds):.2f})"
        )
    else:
        print(f"real cases not timed: {args.real} not found")
    if args.json:
        command = f"python benchmarks/features_speed.py --cases {args.cases} --real-cases {args.real_cases}"
        result = {
            "command": command,
            "threads": 1,
            "synthetic": synthetic,
            "real_cohort": args.real.name if real else None,
            "real": real,
        }
        print(f"wrote {write_result(args.json, {**result, **machine})}")


if __name__ == "__main__":
    main()
