"""Time and peak memory of ``glioseg prepare`` on the real raw study (issue 18's target: <= 90 s on 2 cores).

Usage: python benchmarks/prepare_speed.py [STUDY] [--out benchmarks/results/prepare_speed.json]

STUDY defaults to ../shared/data/raw/TCGA-FG-6692. The command runs in a child process (as a user
runs it); wall time and the child's peak resident memory (getrusage) are printed and written as
JSON with the date, CPU, thread settings and package versions. No machine path is written.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import machine_record, write_result  # benchmarks/provenance.py

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "study", nargs="?", default=str(ROOT.parent / "shared" / "data" / "raw" / "TCGA-FG-6692")
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prepare_speed.json"))
    args = parser.parse_args()
    glioseg = Path(sys.executable).with_name("glioseg")
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "case"
        began = time.perf_counter()
        done = subprocess.run(
            [str(glioseg), "prepare", args.study, "--out", str(case)], capture_output=True, text=True
        )
        wall = time.perf_counter() - began
        if done.returncode != 0:
            sys.exit(done.stderr)
        record = json.loads(next(case.glob("*-prepare.json")).read_text())
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "command": f"glioseg prepare {Path(args.study).name} --out CASE",
        "study": Path(args.study).name,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_mib),
        "steps_s": record["times_s"],
        "warnings": record["warnings"],
        **machine_record(("simpleitk", "deepbet", "dcm2niix", "pydicom", "nibabel")),
    }
    print(
        f"glioseg prepare {result['study']}: {result['wall_s']} s wall, peak {result['peak_rss_mib']} MiB; steps {record['times_s']}"
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
