"""Seconds per case of ``glioseg evaluate`` on the 20 real BraTS 2018 pairs, and of the official scripts.

Usage::

    python benchmarks/evaluate_speed.py [--definition brats2024-ssa|brats2023|both]
        [--data ../shared/data] [--official-dir DIR --official-python PY [--official-cases [DEFINITION=]N ...]]
        [--json benchmarks/results/evaluate_speed.json]

glioseg: each case is timed from reading the two NIfTI files to the last metric, on one
thread (wall and CPU seconds); the one-off start-up (imports, surfel table) is timed
separately.  Pairs: ``brats2018-predictions/<ID>-pred.nii.gz`` against
``brats2018/<ID>/<ID>_seg.nii.gz`` (240x240x155, 1 mm).

Official scripts (optional): ``--official-dir`` holds ``brats2023/metrics.py`` and
``brats2024/metrics_SSA.py`` with their bundled ``surface_distance`` (laid out as described
in docs/evaluation.md; never part of this repository); ``--official-python`` is an
interpreter with their dependencies (numpy < 2, pandas, scipy, nibabel, cc3d).  They run in
a subprocess, one case at a time in a scratch folder, timed around
``get_LesionWiseResults`` only; legacy GT (ET = 4) is rewritten with ET = 3 beforehand,
outside the timing, because the official code knows only ET = 3.  The largest absolute
difference between their numbers and glioseg's is printed too.  ``--json`` also writes every
case's times, the differences and where and with what they were measured
(``benchmarks/provenance.py``); docs/evaluation.md quotes that file (``scripts/docs_numbers.py``).

Goal (issue 3): <= 1 s per case on one core, >= 30x faster than the official scripts,
identical numbers.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from provenance import machine_record, write_result  # noqa: E402  (benchmarks/provenance.py)

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_KEYS = {
    "lesionwise_dice": "LesionWise_Score_Dice",
    "lesionwise_hd95": "LesionWise_Score_HD95",
    "legacy_dice": "Legacy_Dice",
    "legacy_hd95": "Legacy_HD95",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "n_tp": "Num_TP",
    "n_fp": "Num_FP",
    "n_fn": "Num_FN",
    "gt_volume_mm3": "GT_Complete_Volume",
}

# Timing harness run by --official-python: imports the official module from the folder
# given on its command line and times get_LesionWiseResults per case.
_HARNESS = r"""
import json, os, sys, tempfile, time, shutil
import numpy as np, nibabel as nib
folder, definition, pairs_file = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(folder, "brats2023" if definition == "brats2023" else "brats2024"))
module = __import__("metrics" if definition == "brats2023" else "metrics_SSA")
scratch = tempfile.mkdtemp(prefix="official-bench-")
for case_id, pred, gt in json.load(open(pairs_file)):
    img = nib.load(gt)
    data = np.asanyarray(img.dataobj)
    if np.any(data == 4):
        data = np.where(data == 4, 3, data).astype(data.dtype)
        gt = os.path.join(scratch, os.path.basename(gt))
        nib.save(nib.Nifti1Image(data, img.affine, img.header), gt)
    work = tempfile.mkdtemp(dir=scratch)
    os.chdir(work)
    t0, c0 = time.perf_counter(), time.process_time()
    out = module.get_LesionWiseResults(pred, gt, "BraTS-SSA")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    frame = out[0] if isinstance(out, tuple) else out
    rows = {r["Labels"]: {k: float(v) for k, v in r.items() if k != "Labels"} for _, r in frame.iterrows()}
    print(json.dumps({"case_id": case_id, "seconds": seconds, "cpu": cpu, "regions": rows}), flush=True)
    os.chdir(scratch)
    shutil.rmtree(work, ignore_errors=True)
shutil.rmtree(scratch, ignore_errors=True)
"""


def _default_data() -> Path:
    return Path(os.environ.get("GLIOSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def _pairs(data: Path) -> list[tuple[str, Path, Path]]:
    pairs = []
    for pred in sorted((data / "brats2018-predictions").glob("*-pred.nii.gz")):
        case_id = pred.name[: -len("-pred.nii.gz")]
        gt = data / "brats2018" / case_id / f"{case_id}_seg.nii.gz"
        if gt.exists():
            pairs.append((case_id, pred, gt))
    return pairs


def _glioseg(pairs, definition: str) -> dict[str, dict]:
    from glioseg.evaluate.matching import Pair
    from glioseg.evaluate.runner import evaluate_pair

    out = {}
    for case_id, pred, gt in pairs:
        wall, cpu = time.perf_counter(), time.process_time()
        result = evaluate_pair(Pair(case_id, pred, gt), definition)
        out[case_id] = {
            "seconds": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu,
            "regions": {r: v.metrics() for r, v in result.regions.items()},
        }
    return out


def _official(pairs, definition: str, folder: Path, python: str) -> dict[str, dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump([[c, str(p), str(g)] for c, p, g in pairs], fh)
        pairs_file = fh.name
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    proc = subprocess.run(
        [python, "-c", _HARNESS, str(folder), definition, pairs_file], capture_output=True, text=True, env=env
    )
    os.unlink(pairs_file)
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            out[row["case_id"]] = row
    if proc.returncode != 0:
        print(f"official scripts stopped: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return out


def _max_difference(mine: dict, theirs: dict) -> tuple[float, int]:
    worst, count = 0.0, 0
    for case_id, row in theirs.items():
        for region, values in row["regions"].items():
            for key, official_key in OFFICIAL_KEYS.items():
                worst = max(worst, abs(float(mine[case_id]["regions"][region][key]) - values[official_key]))
                count += 1
    return worst, count


def _official_limit(values: list[str], definition: str) -> int | None:
    """How many cases the official scripts run for ``definition``: ``["6"]`` means 6 for every
    definition, ``["brats2024-ssa=6"]`` 6 for that one and all cases for the others."""
    limit = None
    for value in values:
        name, _, number = value.rpartition("=")
        if name in ("", definition):
            limit = int(number)
    return limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definition", choices=["brats2024-ssa", "brats2023", "both"], default="both")
    parser.add_argument("--data", type=Path, default=_default_data())
    parser.add_argument("--official-dir", type=Path, default=os.environ.get("GLIOSEG_OFFICIAL_METRICS"))
    parser.add_argument("--official-python", default=os.environ.get("GLIOSEG_OFFICIAL_PYTHON"))
    parser.add_argument(
        "--official-cases",
        nargs="+",
        default=[],
        help="time the official scripts on the first N cases (N: every definition; DEFINITION=N: that one)",
    )
    parser.add_argument("--json", default=None, help="also write every case's times here")
    args = parser.parse_args()
    machine = machine_record(("scipy", "connected-components-3d", "nibabel"))
    pairs = _pairs(args.data)
    if not pairs:
        sys.exit(f"no brats2018 pairs under {args.data}")
    t0 = time.perf_counter()
    from glioseg.evaluate.surface import surfel_area_table

    surfel_area_table((1.0, 1.0, 1.0))
    startup = time.perf_counter() - t0
    official_ready = bool(args.official_dir and args.official_python and Path(args.official_dir).is_dir())
    print(
        f"machine: {machine['cpu']}, {machine['cpu_count']} cores visible, 1 thread used, "
        f"load average {machine['load_1min']} at start"
    )
    print(
        f"python {machine['versions']['python']}; {len(pairs)} pairs (240x240x155, 1 mm); "
        f"glioseg start-up {startup:.2f} s once"
    )
    runs = {}
    definitions = ["brats2024-ssa", "brats2023"] if args.definition == "both" else [args.definition]
    for definition in definitions:
        mine = _glioseg(pairs, definition)
        theirs = {}
        if official_ready:
            limit = _official_limit(args.official_cases, definition)
            subset = pairs[:limit] if limit else pairs
            theirs = _official(
                subset,
                "brats2024" if definition == "brats2024-ssa" else "brats2023",
                args.official_dir,
                args.official_python,
            )
        print(f"\n== {definition}")
        print(
            f"{'case':24s} {'glioseg s':>10s} {'(cpu s)':>8s} {'official s':>11s} {'(cpu s)':>8s} {'ratio':>7s}"
        )
        for case_id, _, _ in pairs:
            m = mine[case_id]
            o = theirs.get(case_id)
            off = (
                f"{o['seconds']:11.1f} {o['cpu']:8.1f} {o['seconds'] / m['seconds']:6.0f}x"
                if o
                else f"{'-':>11s} {'-':>8s} {'-':>7s}"
            )
            print(f"{case_id:24s} {m['seconds']:10.2f} {m['cpu']:8.2f} {off}")
        wall = [m["seconds"] for m in mine.values()]
        cpu = [m["cpu"] for m in mine.values()]
        print(
            f"glioseg: mean {statistics.mean(wall):.2f} s/case (median {statistics.median(wall):.2f}, max {max(wall):.2f}; "
            f"cpu mean {statistics.mean(cpu):.2f} s)"
        )
        worst, count = _max_difference(mine, theirs) if theirs else (None, 0)
        if theirs:
            shared = [c for c in theirs if c in mine]
            off_mean = statistics.mean(theirs[c]["seconds"] for c in shared)
            my_mean = statistics.mean(mine[c]["seconds"] for c in shared)
            off_cpu = statistics.mean(theirs[c]["cpu"] for c in shared)
            my_cpu = statistics.mean(mine[c]["cpu"] for c in shared)
            print(
                f"official: mean {off_mean:.1f} s/case (cpu {off_cpu:.1f} s) on {len(shared)} case(s); glioseg on the "
                f"same cases {my_mean:.2f} s/case (cpu {my_cpu:.2f} s): {off_mean / my_mean:.0f}x faster "
                f"(cpu time: {off_cpu / my_cpu:.0f}x)"
            )
            print(f"numbers: {count} values compared, max abs difference {worst:.3g}")
        elif not official_ready:
            print("official scripts not timed (give --official-dir and --official-python)")
        runs[definition] = {
            "glioseg": {c: {"seconds": m["seconds"], "cpu": m["cpu"]} for c, m in mine.items()},
            "official": {c: {"seconds": o["seconds"], "cpu": o["cpu"]} for c, o in theirs.items()},
            "values_compared": count,
            "max_abs_difference": worst,
        }
    if args.json:
        command = "python benchmarks/evaluate_speed.py --definition " + args.definition
        if official_ready:
            command += " --official-dir OFFICIAL --official-python OFFICIAL_PYTHON"
            command += " --official-cases " + " ".join(args.official_cases) if args.official_cases else ""
        result = {"command": command, "threads": 1, "pairs": len(pairs), "startup_s": startup}
        print(f"wrote {write_result(args.json, {**result, 'definitions': runs, **machine})}")


if __name__ == "__main__":
    main()
