"""Render the measured numbers in the docs from the committed benchmark results.

Usage: python scripts/docs_numbers.py [--check]

A block in a Markdown file of ``docs/`` (or README.md)::

    <!-- numbers: prepare_speed -->
    ...generated...
    <!-- /numbers -->

is replaced by the table that :data:`RENDERERS` makes from ``benchmarks/results/prepare_speed.json``,
followed by where and with what it was measured (date, CPU, cores, threads, versions: the fields of
``benchmarks/provenance.py``). So a number in the docs is the number in the committed result, and
rerunning a benchmark then this script updates every place that quotes it. ``--check`` changes
nothing and exits 1 when a file differs from its rendering (``tests/test_docs_numbers.py`` does the
same in CI).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- numbers: ([\w-]+) -->\n)(.*?)(<!-- /numbers -->)", re.DOTALL)


def _provenance(result: dict, command: str) -> str:
    versions = result.get("versions", {})
    shown = ", ".join(
        f"{k} {v}" for k, v in versions.items() if k in ("python", "glioseg", "torch", "simpleitk")
    )
    threads = result.get("OMP_NUM_THREADS") or result.get("threads")
    threads = f", {threads} thread{'s' if str(threads) != '1' else ''}" if threads else ""
    when = str(result.get("date_utc", "?"))[:10]
    load = result.get("load_1min")
    if load is not None:
        threads += f", load average {load:.1f} at the start" + (
            " (a busy machine: timings read high)" if load > result.get("cpu_count", 1) else ""
        )
    return (
        f"*Measured {when} on {result.get('cpu', '?')} ({result.get('cpu_count', '?')} cores"
        f"{threads}; {shown}) by `{command}`; "
        "rendered from the committed JSON by `python scripts/docs_numbers.py`.*"
    )


def _with_provenance(lines: list[str], result: dict, command: str | None = None) -> str:
    """The Markdown ``lines``, then the line that says where, how and with what they were measured
    (``command`` defaults to the one the result recorded)."""
    return "\n".join(lines) + "\n\n" + _provenance(result, command or result["command"]) + "\n"


def prepare_speed(r: dict) -> str:
    steps = r["steps_s"]
    rows = [
        ("wall time of `glioseg prepare`", f"{r['wall_s']:.1f} s (target ≤ 90 s)"),
        ("peak memory", f"{r['peak_rss_mib'] / 1024:.1f} GiB"),
        ("conversion and loading", f"{steps['convert_load_s']:.1f} s"),
        ("registration (3 contrasts)", f"{steps['register_s']:.1f} s"),
        ("skull stripping (deepbet)", f"{steps['skullstrip_s']:.1f} s"),
        ("resampling and writing", f"{steps['resample_write_s']:.1f} s"),
    ]
    table = "| | value |\n| --- | --- |\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    return table + "\n" + _provenance(r, "python benchmarks/prepare_speed.py") + "\n"


def registration_accuracy(r: dict) -> str:
    from glioseg.prepare.register import rigid_register

    default = inspect.signature(rigid_register).parameters["min_step"].default
    seeds = sorted({row["seed"] for row in r["rows"]})
    lines = [
        f"| optimiser minimum step | T2 error, mean (max) of {len(seeds)} seeds | FLAIR error | time per contrast |",
        "| --- | --- | --- | --- |",
    ]
    for step in sorted({row["min_step"] for row in r["rows"]}, reverse=True):
        cells = []
        for contrast in ("t2", "flair"):
            s = r["summary"][f"{contrast} min_step={step:g}"]
            cells.append(f"{s['mean_error_mm']:.3f} ({s['max_error_mm']:.3f}) mm")
        seconds = [row["seconds"] for row in r["rows"] if row["min_step"] == step]
        name = f"{step:g}" + (" (glioseg's default)" if step == default else "")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {sum(seconds) / len(seconds):.1f} s |")
    return _with_provenance(lines, r, "python benchmarks/registration_accuracy.py")


def train_peer(r: dict) -> str:
    g, n = r["glioseg"], r["nnunet"]

    def row(name: str, side: dict) -> str:
        load = side["s_per_iter"] - side["step_s"]
        share = 100 * load / side["s_per_iter"]
        return (
            f"| {name} | {side['s_per_iter']:.2f} | {load:.2f} s ({share:.0f} %) | {side['step_s']:.2f} s |"
        )

    lines = [
        "| trainer | s / iteration | loading + augmentation | network step |",
        "| --- | --- | --- | --- |",
        row("glioseg (`PatchDataset` + Lightning module's loss, SGD)", g),
        row(
            f"nnunetv2 {r['versions'].get('nnunetv2', '')} `nnUNetTrainer` (its data loader and `train_step`)",
            n,
        ),
        "",
        f"nnunetv2 / glioseg = {r['nnunet_over_glioseg']:.2f} ({r['iters']} timed iterations, "
        f"{len(r['cases'])} real cases, {g['params_m']:.2f} M parameters on both sides).",
    ]
    command = f"python benchmarks/train_peer.py --iters {r['iters']} --threads {r['threads']} --json ..."
    return _with_provenance(lines, r, command)


def cpu_inference_brats2mm(r: dict) -> str:
    rows = r["rows"]

    def span(values: list[float], digits: int) -> str:
        low, high = min(values), max(values)
        return (
            f"{low:.{digits}f}"
            if round(low, digits) == round(high, digits)
            else f"{low:.{digits}f}–{high:.{digits}f}"
        )

    lines = [
        "| mode (members) | seconds per case | peak GiB | Dice vs reference WT / TC / ET, per case | mean WT / TC / ET |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode in ("fast", "balanced", "default", "accurate"):
        mine = [row for row in rows if row["mode"] == mode]
        if not mine:
            continue
        dice = np.array([row["dice_vs_reference"] for row in mine])
        per_case = " · ".join("/".join(f"{v:.3f}" for v in case) for case in dice)
        mean = " / ".join(f"{v:.3f}" for v in dice.mean(axis=0))
        lines.append(
            f"| `{mode}` ({mine[0]['members']}) | {span([row['seconds'] for row in mine], 1)} | "
            f"{max(row['peak_gib'] for row in mine):.1f} | {per_case} | {mean} |"
        )
    reference = [row for row in rows if row["mode"] == "reference"]
    members = sorted({row["members"] for row in reference})
    times = " / ".join(span([row["seconds"] for row in reference if row["members"] == m], 0) for m in members)
    lines.append(
        f"| reference ({' / '.join(map(str, members))}) | {times} | "
        f"{max(row['peak_gib'] for row in reference):.1f} | — | — |"
    )
    return _with_provenance(lines, r)


def mednext_upsampling(r: dict) -> str:
    lines = [
        "| depth-wise transposed convolution (channels, input size) | default format | `channels_last_3d` |",
        "| --- | --- | --- |",
    ]
    for row in r["layers"]:
        lines.append(
            f"| {row['channels']} ch, {'×'.join(map(str, row['shape']))} | {row['default_s'] * 1e3:.1f} ms | "
            f"{row['channels_last_s'] * 1e3:.1f} ms |"
        )
    monai, ours = r["network"]["monai"], r["network"]["glioseg"]
    lines += [
        "",
        "| MedNeXt-S k3, 16 features, in `channels_last_3d` | inference, 64×80×64 crop | training step, 2 × 64³ |",
        "| --- | --- | --- |",
        f"| MONAI's layers as they are | {monai['inference_s']:.2f} s | {monai['train_step_s']:.2f} s |",
        f"| up-sampling convolutions in the default format (glioseg) | {ours['inference_s']:.2f} s "
        f"({monai['inference_s'] / ours['inference_s']:.2f}×) | {ours['train_step_s']:.2f} s "
        f"({monai['train_step_s'] / ours['train_step_s']:.2f}×) |",
        "",
        f"Largest difference between the two networks' outputs: {r['max_abs_difference']:.1e}.",
    ]
    command = "python benchmarks/mednext_upsampling.py --json benchmarks/results/mednext_upsampling.json"
    return _with_provenance(lines, r, command)


def _median_max(values: list[float]) -> str:
    return f"{np.median(values):.2f} s (max {max(values):.2f})"


def synth_speed(r: dict) -> str:
    lines = [
        "| domain | generate, s per case | generate + write five NIfTI files, s per case |",
        "| --- | --- | --- |",
    ]
    for domain, times in r["domains"].items():
        lines.append(
            f"| `{domain}` | {_median_max(times['generate_s'])} | {_median_max(times['generate_and_write_s'])} |"
        )
    lines += [
        "",
        f"Full-size cases (240×240×155, 1 mm), median of {r['cases']} per domain, one thread; loading the "
        f"atlas once per process adds {r['atlas_load_s']:.1f} s.",
    ]
    return _with_provenance(lines, r)


def features_speed(r: dict) -> str:
    lines = [
        "| cases | all features, s per case | of which shape | of which quality proxies |",
        "| --- | --- | --- | --- |",
    ]
    for domain, times in r["synthetic"].items():
        n = len(times["all_s"])
        lines.append(
            f"| synthetic `{domain}`, {n} cases, arrays in memory | {_median_max(times['all_s'])} | "
            f"{np.median(times['shape_s']):.2f} s | {np.median(times['quality_s']):.2f} s |"
        )
    real = [row["seconds"] for row in r.get("real", []) if row["ok"]]
    if real:
        lines.append(
            f"| real `{r['real_cohort']}`, first {len(real)} cases, reading the NIfTI files included "
            f"(as `glioseg features` runs) | {_median_max(real)} | — | — |"
        )
    lines += ["", "Full-size cases (240×240×155, 1 mm), medians, one thread."]
    return _with_provenance(lines, r)


def split_balance(r: dict) -> str:
    runs = r["runs"]

    def summary(values: list[float]) -> str:
        return f"{np.mean(values):.2f} ({min(values):.2f}–{max(values):.2f})"

    lines = [
        "| strategy | cluster chi2 | random splits less balanced | adult/ssa chi2 | WT-volume quartile chi2 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for strategy in dict.fromkeys(row["strategy"] for row in runs):
        mine = [row for row in runs if row["strategy"] == strategy]
        column = {key: [row[key] for row in mine] for key in mine[0]}
        lines.append(
            f"| {strategy} | {summary(column['cluster_chi2'])} | "
            f"{100 * np.mean(column['share_random_worse']):.0f} % | {summary(column['domain_chi2'])} | "
            f"{summary(column['volume_chi2'])} |"
        )
    ks = sorted({row["k"] for row in runs})
    lines += [
        "",
        f"{r['cohorts']} synthetic cohorts of {r['per_domain']} `adult` + {r['per_domain']} `ssa` cases "
        f"({'×'.join(map(str, r['shape']))} voxels at {r['spacing_mm']:g} mm) × {r['seeds']} fold seeds, "
        f"{r['folds']} folds; mean (min–max) over the {len(runs) // 3} runs. Median cluster chi2 of 200 "
        f"random KFold splits (mean over runs): {np.mean([row['random_median'] for row in runs]):.2f}. "
        f"Silhouette chose k = {', '.join(map(str, ks))}.",
    ]
    return _with_provenance(lines, r)


def evaluate_speed(r: dict) -> str:
    lines = [
        "| definition | glioseg s/case, mean (median, max) | glioseg CPU s/case | official s/case "
        "| official CPU s/case | speed-up, wall / CPU, on the same cases | values compared, largest difference |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for definition, run in r["definitions"].items():
        mine, theirs = run["glioseg"], run["official"]
        wall = [m["seconds"] for m in mine.values()]
        cpu = [m["cpu"] for m in mine.values()]
        row = f"| `{definition}` | {np.mean(wall):.2f} ({np.median(wall):.2f}, {max(wall):.2f}) | {np.mean(cpu):.2f} |"
        if theirs:
            shared = [c for c in theirs if c in mine]
            o_wall = np.mean([theirs[c]["seconds"] for c in shared])
            o_cpu = np.mean([theirs[c]["cpu"] for c in shared])
            m_wall = np.mean([mine[c]["seconds"] for c in shared])
            m_cpu = np.mean([mine[c]["cpu"] for c in shared])
            cases = f"{'all' if len(shared) == len(mine) else 'first'} {len(shared)} cases"
            row += (
                f" {o_wall:.1f} ({cases}) | {o_cpu:.1f} | {o_wall / m_wall:.0f}× / {o_cpu / m_cpu:.0f}× |"
                f" {run['values_compared']}, {run['max_abs_difference']:.3g} |"
            )
        else:
            row += " not timed | — | — | — |"
        lines.append(row)
    lines += [
        "",
        f"{r['pairs']} real BraTS 2018 pairs (240×240×155, 1 mm), one thread. glioseg's time per case runs from "
        "reading the two `.nii.gz` files to the last metric; the official time is `get_LesionWiseResults` "
        f"alone. The once-per-process start-up (imports, surfel table) took {r['startup_s']:.1f} s and is "
        "not included.",
    ]
    return _with_provenance(lines, r)


def train_throughput(r: dict) -> str:
    lines = [
        "| configuration | model | parameters | s / iteration | iterations / s | peak RSS GiB | planner estimate GiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["rows"]:
        head = f"| {row['description'].split(' (')[0].replace('^3', '³')} | `{row['model']}` |"
        if "s_per_iter" in row:
            lines.append(
                f"{head} {row['params_m']:.1f} M | {row['s_per_iter']:.2f} | {row['it_per_s']:.3f} | "
                f"{row['peak_gib']:.2f} | {row['estimate_gib']:.2f} |"
            )
        else:
            why = f"skipped: {row['skipped']}" if "skipped" in row else f"failed: {row['failed']}"
            lines.append(f"{head} — | {why} | | | {row['estimate_gib']:.2f} |")
    lines += [
        "",
        f"{r['steps']} timed step(s) after one warm-up step, {r['device'].upper()}, each configuration in its "
        "own process; `estimate` is the planner's memory estimate, computed without running the network.",
    ]
    return _with_provenance(lines, r)


PREDICT_PLANS = {
    "demo": "demo model (nnU-Net, 12 base features, 3 mm, 40³ patch)",
    "brats": "BraTS nnU-Net 3d_fullres (1 mm, 128³ patch, 31.2 M parameters, fixed-seed weights)",
}


def predict_speed(r: dict) -> str:
    lines = ["| plan | members | mirroring | seconds | peak RSS GiB |", "| --- | --- | --- | --- | --- |"]
    for row in r["rows"]:
        head = f"| {PREDICT_PLANS.get(row['plan'], row['plan'])} | {row['members']} | {row['tta']} |"
        if "seconds" in row:
            lines.append(f"{head} {row['seconds']:.1f} | {row['peak_gib']:.2f} |")
        else:
            lines.append(f"{head} failed: {row['failed']} | |")
    lines += [
        "",
        "One full-size synthetic `ssa` case (240×240×155, 1 mm) through the code of `glioseg predict`, "
        "sliding windows (overlap 0.5, Gaussian), a fresh process per row; seconds from the loaded case to "
        "the label map on the input grid.",
    ]
    return _with_provenance(lines, r)


def train_memory_reuse(r: dict) -> str:
    runs = [r["runs"]["returned"], r["runs"]["reused"]]

    def kernel(run: dict) -> str:
        return f"{run['system_s']:.0f} s ({100 * run['system_s'] / (run['user_s'] + run['system_s']):.0f} %)"

    lines = [
        "| `glioseg train`, one process each | glibc default (memory returned) | `--reuse-memory` (memory kept) |",
        "| --- | --- | --- |",
        "| seconds per iteration (median epoch after the first) | "
        + " | ".join(f"{run['s_per_iter']:.2f}" for run in runs)
        + " |",
        "| user CPU time | " + " | ".join(f"{run['user_s']:.0f} s" for run in runs) + " |",
        "| kernel CPU time (share) | " + " | ".join(kernel(run) for run in runs) + " |",
        "| peak resident memory | " + " | ".join(f"{run['peak_rss_gib']:.2f} GiB" for run in runs) + " |",
        "",
        f"`{r['model']}` at {r['plan']['spacing_mm']} mm, {r['plan']['patch']}³ patches, "
        f"{r['plan']['base_features']} base features, batch 2, on {r['cases']} real cases; {r['epochs']} epochs of "
        f"{r['iters_per_epoch']} iterations, no validation; speed-up {r['speedup']:.2f}×, memory "
        f"×{runs[1]['peak_rss_gib'] / runs[0]['peak_rss_gib']:.2f}.",
    ]
    return _with_provenance(lines, r)


def experiment(r: dict) -> str:
    """The arms table and the verdict per claim of a ``glioseg experiment transfer`` run's
    ``results.json`` (the same numbers as its report)."""
    regions = ("ET", "TC", "WT")

    def dice(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"

    lines = [
        "| arm | "
        + " | ".join(f"Dice {g}" for g in regions)
        + " | "
        + " | ".join(f"HD95 {g}" for g in regions)
        + " |",
        "| --- " * 7 + "|",
    ]
    for arm in r["arms"]:
        s = arm["scores"]
        lines.append(
            f"| {arm['title']} | "
            + " | ".join(dice(s[f"{g}_dice"]) for g in regions)
            + " | "
            + " | ".join(f"{np.mean(s[f'{g}_hd95']):.1f}" for g in regions)
            + " |"
        )
    lines += [
        "",
        "Verdict per claim (compared arm minus baseline, lesion-wise Dice ET / TC / WT, 95 % bootstrap CI):",
        "",
    ]
    for claim, c in r["comparisons"].items():
        diffs = "; ".join(
            f"{g} {c['regions'][g]['mean_difference']:+.3f} [{c['regions'][g]['ci_low']:+.3f}, {c['regions'][g]['ci_high']:+.3f}]"
            for g in regions
        )
        lines.append(f"- {claim}: **{c['verdict']}** ({diffs})")
    n = len(r["arms"][0]["scores"]["case_id"])
    scored = r.get("scored_on", "test")  # runs before the real scale scored the test cohort
    cohort = "synthetic" if r["synthetic"][scored] else "real"
    if cohort == "real" and any(r["synthetic"].values()):
        cohort += "; some arms pre-trained on synthetic phantoms"
    versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items() if k in ("python", "glioseg", "torch"))
    lines += [
        "",
        f"*Scale `{r['scale']}`, seed {r['seed']}, {n} scored {scored} cases ({cohort}); {versions}; "
        "rendered from the run's committed `results.json` by `python scripts/docs_numbers.py`.*",
    ]
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[dict], str]] = {
    "prepare_speed": prepare_speed,
    "registration_accuracy": registration_accuracy,
    "train_peer": train_peer,
    "cpu_inference_brats2mm": cpu_inference_brats2mm,
    "mednext_upsampling": mednext_upsampling,
    "synth_speed": synth_speed,
    "features_speed": features_speed,
    "split_balance": split_balance,
    "evaluate_speed": evaluate_speed,
    "train_throughput": train_throughput,
    "predict_speed": predict_speed,
    "train_memory_reuse": train_memory_reuse,
    "train_memory_reuse_nnunet": train_memory_reuse,
    "experiment_small": experiment,
    "experiment_real": experiment,
}

# Results that are not benchmark output: an experiment's run, committed with its report.
RESULT_FILES = {
    "experiment_small": ROOT / "docs" / "results" / "small" / "results.json",
    "experiment_real": ROOT / "docs" / "results" / "real" / "results.json",
}


def result_file(name: str, results: Path = RESULTS) -> Path:
    """Where the result that numbers block ``name`` renders lives."""
    return RESULT_FILES.get(name, results / f"{name}.json")


def render(text: str, results: Path = RESULTS) -> str:
    """``text`` with every numbers block re-rendered from ``results/<name>.json``."""

    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in RENDERERS:
            raise KeyError(f"numbers block '{name}': no renderer (known: {', '.join(RENDERERS)})")
        result = json.loads(result_file(name, results).read_text(encoding="utf-8"))
        return match.group(1) + RENDERERS[name](result) + match.group(4)

    return BLOCK.sub(replace, text)


def documents() -> list[Path]:
    """The Markdown files that may hold numbers blocks."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    args = parser.parse_args()
    stale = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "stale" if args.check else "updated"
    print(f"{verb}: {', '.join(map(str, stale))}" if stale else "every numbers block is up to date")
    if args.check and stale:
        sys.exit(1)


if __name__ == "__main__":
    main()
