"""``glioseg postprocess tune`` and ``glioseg postprocess apply``: adaptive post-processing of label maps."""

from __future__ import annotations

from pathlib import Path

import typer

from glioseg.cli._choices import Definition, GeometryCheck
from glioseg.cli._common import console, exit_if_failures, reports_errors, say

postprocess_app = typer.Typer(
    help="Adaptive post-processing tuned for the BraTS lesion-wise metrics (small components, ET -> NETC).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def tune(
    pred: Path = typer.Option(
        ..., "--pred", "-p", help="Out-of-fold predictions: a folder of <ID>.nii.gz (e.g. CV/oof)."
    ),
    gt: Path = typer.Option(
        ..., "--gt", "-g", help="Ground truth: a folder of cases (with images when --clusters is given)."
    ),
    out: Path = typer.Option(
        Path("pp.json"), "--out", "-o", help="Configuration to write; reports go beside it."
    ),
    clusters: Path | None = typer.Option(
        None,
        "--clusters",
        help="Cluster model of glioseg split (<name>.model.json): one setting per radiomic cluster.",
    ),
    definition: Definition = typer.Option(
        Definition.brats2024_ssa, help="Lesion-wise metric definition to maximise."
    ),
    min_cluster_cases: int = typer.Option(
        5, "--min-cluster-cases", min=1, help="Clusters with fewer tuning cases use the global setting."
    ),
    grid: Path | None = typer.Option(
        None,
        "--grid",
        help='JSON of threshold lists, e.g. {"wt_min_size": [0, 100, 500], "et_ratio": [0, 0.05]}.',
    ),
    geometry: GeometryCheck = typer.Option(
        GeometryCheck.strict,
        help="strict: shape, spacing and affine must match the ground truth; shape: not the affine.",
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
) -> None:
    """Grid-search small-component and ET -> NETC thresholds that maximise mean lesion-wise Dice.

    Never picks a setting that lowers any region's mean lesion-wise Dice on the tuning
    cases. Writes the configuration, <stem>.report.json / .report.csv (gain per region with
    paired per-case differences, bootstrap CI, Wilcoxon p) and <stem>.cases.csv.
    """

    from rich.table import Table

    from glioseg.data.io import check_output_file, read_json
    from glioseg.errors import InputError
    from glioseg.postprocess.grid import Grid
    from glioseg.postprocess.tune import tune as run_tune

    check_output_file(out)  # before any work; the reports go beside it
    chosen_grid = Grid()
    if grid is not None:
        try:
            chosen_grid = Grid.from_dict(read_json(grid, "grid"), grid)
        except AttributeError as exc:  # JSON that is not an object
            raise InputError(grid, f"unreadable grid ({exc})") from None
    n_settings = len(chosen_grid.settings())
    console.print(f"{n_settings} settings; scoring every case (definition {definition.value})")

    def progress(case_id, scores, error):
        if scores is None:
            say("failed", error)
        else:
            console.print(f"{case_id}: {scores.n_maps} distinct map(s) scored ({scores.seconds:.1f} s)")

    result = run_tune(
        pred, gt, chosen_grid, definition.value, clusters, min_cluster_cases, geometry.value, jobs, progress
    )
    paths = result.write(out)
    report = result.report
    table = Table(
        title=f"{report['n_cases']} case(s): mean lesion-wise Dice before -> after (paired difference, 95% CI, p)"
    )
    for column in ("region", "before", "after", "difference [95% CI]", "Wilcoxon p", "better/worse"):
        table.add_column(column, justify="left" if column == "region" else "right")
    for region in ("ET", "TC", "WT"):
        s = report["regions"][region]["lesionwise_dice"]
        table.add_row(
            region,
            f"{s['before_mean']:.4f}",
            f"{s['after_mean']:.4f}",
            f"{s['mean_difference']:+.4f} [{s['ci95_low']:+.4f}, {s['ci95_high']:+.4f}]",
            f"{s['wilcoxon_p']:.3g}",
            f"{s['n_better']}/{s['n_worse']}",
        )
    console.print(table)
    console.print(f"global setting: {report['selected']['global']['description']}")
    for key, entry in report["selected"].get("clusters", {}).items():
        console.print(
            f"cluster {key} ({entry['n_cases']} case(s), {entry['source']}): {entry['description']}"
        )
    timing = report["timing"]
    console.print(
        f"{timing['cases']} cases x {timing['settings']} settings from {timing['maps_scored']} distinct maps "
        f"in {timing['seconds']:.1f} s"
    )
    console.print(
        f"wrote {paths['config']}, {paths['report'].name}, {paths['summary'].name}, {paths['cases'].name}"
    )
    exit_if_failures(result.failures, "not used")


def apply(
    pred: Path = typer.Argument(
        ..., help="A label map, or a folder of <ID>.nii.gz / <ID>-pred / <ID>-seg label maps."
    ),
    config: Path = typer.Option(
        ..., "--config", "-c", help="Configuration written by glioseg postprocess tune."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (or a .nii.gz file when PRED is one file)."
    ),
    images: Path | None = typer.Option(
        None,
        "--images",
        help="Folder of the cases' images; needed by per-cluster configurations (radiomics).",
    ),
) -> None:
    """Apply a post-processing configuration to label maps (writes <ID>.nii.gz on the input's grid)."""
    from glioseg.postprocess.apply import apply_to_files
    from glioseg.postprocess.config import PostprocessConfig

    configuration = PostprocessConfig.load(config)

    def progress(case_id, target, changed, cluster, error):
        if error is not None:
            say("failed", error)
            return
        where = "" if cluster is None else f" (cluster {cluster})"
        console.print(f"{case_id}{where}: {changed} voxel(s) changed -> {target}")

    report = apply_to_files(pred, configuration, out, images, progress, config_path=config)
    for warning in report.warnings:
        say("warning", warning)
    console.print(f"wrote {len(report.written)} label map(s) to {out}")
    exit_if_failures(report.failed)


def register(app: typer.Typer) -> None:
    postprocess_app.command(
        epilog="Example: glioseg postprocess tune --pred CV/oof --gt data/BraTS-SSA --clusters splits.model.json "
        "--out pp.json"
    )(reports_errors(tune))
    postprocess_app.command(
        epilog="Example: glioseg postprocess apply predictions/ --config pp.json --images data/BraTS-SSA --out final/"
    )(reports_errors(apply))
    app.add_typer(
        postprocess_app,
        name="postprocess",
        epilog="Example: glioseg postprocess tune --pred CV/oof --gt data/BraTS-SSA --out pp.json",
    )
