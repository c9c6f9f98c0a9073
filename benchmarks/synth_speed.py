"""Seconds per full-size (240x240x155, 1 mm) synthetic case on one core.

Usage: python benchmarks/synth_speed.py [--cases 5]

Prints generation time and generation + writing time (four int16 NIfTI + labels,
gzip) per case for both domains.  The one-off atlas load is timed separately.
Goal (issue 2): <= 5 s per full-size case on one core.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from glioseg.data.synthetic import generate_case, write_case  # noqa: E402
from glioseg.data.synthetic.atlas import load_atlas  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load_atlas()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, 1 thread used"
    )
    print(f"atlas load (once per process): {time.perf_counter() - t0:.2f} s")
    print(f"{'domain':8s} {'generate s/case (median)':>26s} {'generate+write s/case':>24s}")
    with tempfile.TemporaryDirectory() as tmp:
        for domain in ("adult", "ssa"):
            gen, total = [], []
            for index in range(1, args.cases + 1):
                t0 = time.perf_counter()
                case = generate_case(100, index, domain)
                t1 = time.perf_counter()
                write_case(case, tmp)
                t2 = time.perf_counter()
                gen.append(t1 - t0)
                total.append(t2 - t0)
            print(
                f"{domain:8s} {statistics.median(gen):>20.2f} (max {max(gen):.2f}) {statistics.median(total):>14.2f} (max {max(total):.2f})"
            )


if __name__ == "__main__":
    main()
