"""Seconds per case for ``glioseg features`` on full-size (240x240x155, 1 mm) synthetic cases, one thread.

Usage: python benchmarks/features_speed.py [--cases 3]

Times the feature computation alone (arrays in memory) and split into its families,
for both synthetic domains.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from glioseg.data.radiomics import brain_mask, case_features, quality_features, shape_features  # noqa: E402
from glioseg.data.synthetic import generate_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, 1 thread used"
    )
    print(f"{'domain':8s} {'all features s/case':>20s} {'shape':>7s} {'quality':>8s}  (medians)")
    for domain in ("adult", "ssa"):
        total, shape, quality = [], [], []
        for index in range(1, args.cases + 1):
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
        print(
            f"{domain:8s} {statistics.median(total):>20.2f} {statistics.median(shape):>7.2f} {statistics.median(quality):>8.2f}"
        )


if __name__ == "__main__":
    main()
