"""``glioseg evaluate``: BraTS lesion-wise metrics of predictions against ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from glioseg.cli._choices import Definition, GeometryCheck, MissingPrediction
from glioseg.cli._common import console, exit_if_failures, reports_errors, say

_METRIC_ROWS = (
    ("lesionwise_dice", "lesion-wise Dice", 3),
    ("lesionwise_hd95", "lesion-wise HD95 (mm)", 2),
    ("legacy_dice", "legacy Dice", 3),
    ("legacy_hd95", "legacy HD95 (mm)", 2),
    ("sensitivity", "sensitivity*", 3),
    ("specificity", "specificity*", 4),
    ("n_tp", "TP lesions", 2),
    ("n_fp", "FP lesions", 2),
    ("n_fn", "FN lesions", 2),
)


def _cell(stats: dict, digits: int) -> str:
    if stats["n"] == 0:
        return "-"
    std = "" if stats["std"] is None else f" ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}{std} ({stats['median']:.{digits}f})"


def evaluate(
    pred: Path = typer.Option(
        ...,
        "--pred",
        "-p",
        help="A prediction file, or a folder of <ID>.nii.gz / <ID>-seg / <ID>-pred files.",
    ),
    gt: Path = typer.Option(
        ...,
        "--gt",
        "-g",
        help="The ground-truth file, or a folder of case folders (<ID>/<ID>-seg.nii.gz or _seg).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for per_case.csv, per_lesion.csv and summary.json."
    ),
    definition: Definition = typer.Option(
        Definition.brats2024_ssa,
        help="brats2024-ssa: BraTS-Africa 2024 code (default); brats2023: BraTS 2023 code.",
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
    geometry: GeometryCheck = typer.Option(
        GeometryCheck.strict,
        help="strict: shape, spacing and affine must match; shape: shape and spacing only (same voxel grid, different header).",
    ),
    missing: MissingPrediction = typer.Option(
        MissingPrediction.error,
        help="A ground-truth case without a prediction: error (default; exit status 1), skip (leave it out), "
        "empty (score it as an empty prediction, as the BraTS challenges do).",
    ),
) -> None:
    """Lesion-wise Dice and HD95 (plus legacy metrics) with the BraTS challenge definitions, exactly and fast.

    Either label convention (ET = 3, or legacy ET = 4) is accepted in either file. Bad cases
    are reported and skipped; the command exits with status 1 when any ground-truth case could
    not be evaluated.
    """
    from rich.table import Table

    from glioseg.data.io import check_output_folder
    from glioseg.evaluate.runner import evaluate as run_evaluation
    from glioseg.evaluate.runner import summarize, write_outputs

    def progress(case_id, result, error, seconds):
        if result is None:
            say("failed", error)
            return
        scores = "  ".join(f"{r} {result.regions[r].lesionwise_dice:.3f}" for r in ("ET", "TC", "WT"))
        console.print(f"{case_id}: lesion-wise Dice {scores} ({seconds:.2f} s)")

    check_output_folder(out)  # before any work
    run = run_evaluation(
        pred, gt, definition.value, jobs, geometry.value, progress=progress, missing=missing.value
    )
    paths = write_outputs(run, out)
    if run.results:
        stats = summarize(run.results)
        table = Table(title=f"{len(run.results)} case(s), definition {run.definition}: mean ± std (median)")
        table.add_column("metric")
        for region in ("ET", "TC", "WT"):
            table.add_column(region, justify="right")
        for key, label, digits in _METRIC_ROWS:
            table.add_row(label, *(_cell(stats[r][key], digits) for r in ("ET", "TC", "WT")))
        console.print(table)
        if run.definition == "brats2024-ssa":
            console.print(
                "* as the official BraTS-Africa code computes them, on the numbered lesion maps: with more than "
                "one lesion in a region they can be far from the voxel-wise values (0 with a Dice of 0.98 is "
                "possible); the lesion-wise and legacy Dice are not affected (docs/evaluation.md, 'Legacy metrics')"
            )
        else:
            console.print("* voxel-wise, as the official BraTS 2023 code computes them")
    if run.geometry == "shape":
        console.print("geometry check: shape and spacing only (affines were not compared)")
    if run.without_prediction:
        what = "scored as empty predictions" if run.missing == "empty" else "left out (--missing skip)"
        console.print(
            f"{len(run.without_prediction)} ground-truth case(s) without a prediction {what}: "
            + ", ".join(run.without_prediction[:5])
            + (" ..." if len(run.without_prediction) > 5 else "")
        )
    for case_id, path in run.unmatched_predictions.items():
        say("unmatched", f"prediction {path} (no ground truth for case {case_id})")
    console.print(
        f"wrote {paths['per_case']}, {paths['per_lesion'].name}, {paths['summary'].name} in {run.seconds:.1f} s"
    )
    exit_if_failures([failure.message for failure in run.failures], "not evaluated")


def register(app: typer.Typer) -> None:
    app.command(
        epilog="Example: glioseg evaluate --pred predictions/ --gt BraTS-SSA-val/ --out eval/ --definition brats2024-ssa --jobs 2"
    )(reports_errors(evaluate))
