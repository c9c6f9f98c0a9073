"""CPU training with and without ``--reuse-memory``: seconds per iteration, kernel time, peak memory.

Usage: python benchmarks/train_memory_reuse.py [--data DIR] [--cases 21] [--model mednext-s-k3]
           [--spacing 2] [--patch 64] [--base-features 16] [--epochs 4] [--iters 40]
           [--out benchmarks/results/train_memory_reuse.json]

Runs ``glioseg train`` twice on the same real cases (default: the first ``--cases`` of
../shared/data/brats2018) with the same plan and seed, once returning freed memory to the system
(glibc's default) and once keeping it (``--reuse-memory``, glioseg.runtime.keep_freed_memory),
each in its own process without validation. Per run it records the seconds of every epoch (from
the command's own one-line epoch summaries; the first epoch is warm-up and left out of the
median), the process's user and kernel CPU seconds and its peak resident memory (``wait4``).
The preprocessed cache is shared, so preprocessing happens once, before the first run's epochs.
Written as JSON with the date, CPU, thread settings and package versions; no machine path.
Run it on an otherwise idle machine: the JSON records the load average at the start.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import machine_record, write_result  # benchmarks/provenance.py

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ .*?(\d+(?:\.\d+)?) s, ETA")


def run(command: list[str]) -> dict:
    """Run ``command``; its epoch seconds, CPU seconds and peak RSS (this child alone, via wait4)."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"glioseg train failed ({process.returncode}):\n{output[-3000:]}")
    epochs = [float(m.group(2)) for m in EPOCH_LINE.finditer(output.replace("\r", "\n"))]
    return {
        "wall_s": round(time.perf_counter() - began, 1),
        "epoch_s": epochs,
        "user_s": round(usage.ru_utime, 1),
        "system_s": round(usage.ru_stime, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brats2018"))
    parser.add_argument("--cases", type=int, default=21)
    parser.add_argument("--model", default="mednext-s-k3")
    parser.add_argument("--spacing", default="2")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--base-features", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_memory_reuse.json"))
    args = parser.parse_args()
    cases = sorted(p for p in Path(args.data).iterdir() if p.is_dir())[: args.cases]
    if len(cases) < 2:
        sys.exit(f"{args.data}: needs at least two labelled cases")
    command = (
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')} python benchmarks/train_memory_reuse.py "
        f"--cases {args.cases} --model {args.model} --spacing {args.spacing} --patch {args.patch} "
        f"--base-features {args.base_features} --epochs {args.epochs} --iters {args.iters}"
    )
    out = Path(args.out).resolve()
    if out != ROOT / "benchmarks" / "results" / "train_memory_reuse.json":  # no machine path in the record
        command += f" --out {out.relative_to(ROOT) if ROOT in out.parents else 'OUT'}"
    result = {
        **machine_record(),
        "command": command,
        "model": args.model,
        "plan": {"spacing_mm": args.spacing, "patch": args.patch, "base_features": args.base_features},
        "cases": len(cases),
        "epochs": args.epochs,
        "iters_per_epoch": args.iters,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        for case in cases:
            (data / case.name).symlink_to(case.resolve())
        for mode in ("returned", "reused"):
            command = [
                sys.executable, "-m", "glioseg", "train", str(data), "--model", args.model,
                "--out", str(Path(tmp) / mode), "--cache", str(Path(tmp) / "cache"),
                "--spacing", args.spacing, "--patch", ",".join([str(args.patch)] * 3),
                "--base-features", str(args.base_features), "--epochs", str(args.epochs),
                "--iters-per-epoch", str(args.iters), "--val-every", str(args.epochs + 1),
                "--accelerator", "cpu", "--seed", "0",
            ] + (["--reuse-memory"] if mode == "reused" else [])  # fmt: skip
            record = run(command)
            steady = record["epoch_s"][1:] or record["epoch_s"]
            record["s_per_iter"] = round(statistics.median(steady) / args.iters, 2)
            result["runs"][mode] = record
            print(
                f"{mode:>8}: {record['s_per_iter']:.2f} s/iteration (median of epochs 2-{args.epochs}), "
                f"user {record['user_s']:.0f} s, kernel {record['system_s']:.0f} s, "
                f"peak {record['peak_rss_gib']:.2f} GiB"
            )
    returned, reused = result["runs"]["returned"], result["runs"]["reused"]
    result["speedup"] = round(returned["s_per_iter"] / reused["s_per_iter"], 2)
    print(
        f"speed-up {result['speedup']:.2f}x, memory x{reused['peak_rss_gib'] / returned['peak_rss_gib']:.2f}"
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
