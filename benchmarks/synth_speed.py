"""Seconds per full-size (240x240x155, 1 mm) synthetic case on one core.

Usage: python benchmarks/synth_speed.py [--cases 5] [--json benchmarks/results/synth_speed.json]

Prints generation time and generation + writing time (four int16 NIfTI + labels,
gzip) per case for both domains.  The one-off atlas load is timed separately.
``--json`` also writes every case's times with where and with what they were measured
(``benchmarks/provenance.py``); README.md quotes that file (``scripts/docs_numbers.py``).
Goal (issue 2): <= 5 s per full-size case on one core.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from provenance import machine_record, write_result  # noqa: E402  (benchmarks/provenance.py)

from glioseg.data.synthetic import generate_case, write_case  # noqa: E402
from glioseg.data.synthetic.atlas import load_atlas  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the per-case times here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = machine_record(("nibabel", "nilearn"))
    t0 = time.perf_counter()
    load_atlas()
    atlas_s = time.perf_counter() - t0
    print(f"machine: {machine['cpu']}, {machine['cpu_count']} cores visible, 1 thread used")
    print(f"atlas load (once per process): {atlas_s:.2f} s")
    domains = {}
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
            domains[domain] = {"generate_s": gen, "generate_and_write_s": total}
            print(
                f"{domain:8s} {statistics.median(gen):>20.2f} (max {max(gen):.2f}) {statistics.median(total):>14.2f} (max {max(total):.2f})"
            )
    if args.json:
        command = f"python benchmarks/synth_speed.py --cases {args.cases}"
        result = {"command": command, "cases": args.cases, "threads": 1, "atlas_load_s": atlas_s}
        print(f"wrote {write_result(args.json, {**result, 'domains': domains, **machine})}")


if __name__ == "__main__":
    main()
