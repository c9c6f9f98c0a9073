"""``glioseg features`` and ``glioseg split``: radiomic features and radiomics-stratified folds."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape

from glioseg.cli._common import console, err_console, reports_errors, say


class LabelSource(str, Enum):
    auto = "auto"
    truth = "truth"
    labels = "labels"


class Strategy(str, Enum):
    radiomics = "radiomics"
    volume = "volume"
    random = "random"


_LABELS_HELP = (
    "Folder of label maps (e.g. predictions) named <ID>.nii.gz, <ID>-pred.nii.gz, <ID>-seg.nii.gz ...; "
    "used for cases without ground truth (see --label-source)."
)
_SOURCE_HELP = "auto: ground truth if the case has one, else --labels; truth: ground truth only; labels: always --labels."


def _compute_features(
    data: Path, labels: Path | None, source: LabelSource, quality: bool, bin_width: float, levels: int
):
    """Features of every case under ``data``, printing one line per case; returns (frame, errors)."""
    from glioseg.data.cases import discover_cases
    from glioseg.data.radiomics import CohortFeatures, iter_case_features

    found = discover_cases(data)
    result = CohortFeatures(errors=list(found.errors))
    total = len(found.cases)
    options = {"include_quality": quality, "bin_width": bin_width, "n_levels": levels}
    began = time.perf_counter()
    t0 = began
    for i, (case, row, error) in enumerate(
        iter_case_features(found.cases, labels, source.value, **options), 1
    ):
        if error is not None:
            result.errors.append(error)
            err_console.print(escape(f"[{i}/{total}] {case.case_id}: failed ({error})"), soft_wrap=True)
        else:
            result.rows.append(row)
            f = row.features
            console.print(
                f"[{i}/{total}] {case.case_id}: WT {f['shape_wt_volume_ml']:.1f} mL from {row.label_source} "
                f"({time.perf_counter() - t0:.1f} s)"
            )
        t0 = time.perf_counter()
    console.print(f"features of {len(result.rows)} case(s) in {time.perf_counter() - began:.1f} s")
    return result.to_frame(), result.errors


def _write_csv(frame, path: Path) -> None:
    from glioseg.data.io import atomic_path

    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)


def _report_errors(errors: list) -> None:
    for error in errors:
        say("error", error)


def features(
    data: Path = typer.Argument(
        ..., help="A case folder, a folder of cases (any BraTS layout) or an nnU-Net raw dataset."
    ),
    out: Path = typer.Option(Path("features.csv"), "--out", "-o", help="CSV to write: one row per case."),
    labels: Path | None = typer.Option(None, "--labels", help=_LABELS_HELP),
    label_source: LabelSource = typer.Option(LabelSource.auto, "--label-source", help=_SOURCE_HELP),
    quality: bool = typer.Option(
        True, "--quality/--no-quality", help="Add the image-quality proxies (quality_*)."
    ),
    assign: Path | None = typer.Option(
        None,
        "--assign",
        help="Cluster model written by glioseg split (<out>.model.json): add each case's cluster.",
    ),
    bin_width: float = typer.Option(
        0.25, min=1e-6, help="First-order histogram bin width, in brain standard deviations."
    ),
    levels: int = typer.Option(32, min=2, help="Grey levels of the GLCM quantisation."),
) -> None:
    """Radiomic features per case on the whole tumour's largest component: shape, first-order, GLCM, quality."""
    from glioseg.data.io import check_output_file
    from glioseg.data.radiomics.clusters import ClusterModel
    from glioseg.errors import InputError

    check_output_file(out)  # before any work
    model = ClusterModel.load(assign) if assign is not None else None
    frame, errors = _compute_features(data, labels, label_source, quality, bin_width, levels)
    if frame.empty:
        _report_errors(errors[:-1])
        raise errors[-1] if errors else InputError(data, "no case to compute features of")
    if model is not None:
        frame["cluster"] = model.predict(model.matrix(frame, assign))
    _write_csv(frame, out)
    n_features = frame.shape[1] - 2 - (model is not None)
    console.print(f"wrote {len(frame)} case(s) x {n_features} features to {out}")
    if errors:
        _report_errors(errors)
        err_console.print(escape(f"{len(errors)} case(s) failed; the others are in {out}"))
        raise typer.Exit(code=1)


def _parse_range(text: str) -> tuple[int, int]:
    parts = text.replace("..", ",").replace("-", ",").split(",")
    try:
        lo, hi = (int(p) for p in parts if p.strip())
    except ValueError:
        raise typer.BadParameter(f"--k-range must be two integers like 2,6; got {text!r}") from None
    return lo, hi


def split(
    data: Path = typer.Argument(
        ...,
        help="A feature table (CSV from glioseg features) or a data folder (features are computed first).",
    ),
    folds: int = typer.Option(5, "--folds", min=2, help="Number of folds."),
    strategy: Strategy = typer.Option(
        Strategy.radiomics,
        help="radiomics: stratify by k-means cluster; volume: by WT-volume quartile; random: KFold.",
    ),
    seed: int = typer.Option(0, help="Seed of the PCA, k-means and fold shuffling."),
    out: Path = typer.Option(
        Path("splits.json"), "--out", "-o", help="splits_final.json-style file to write."
    ),
    clusters: int | None = typer.Option(
        None, "--clusters", "-k", min=1, help="Number of clusters (default: by silhouette)."
    ),
    k_range: str = typer.Option("2,6", "--k-range", help="Range of k tried by the silhouette choice."),
    variance: float = typer.Option(0.9, min=1e-6, max=1.0, help="Variance fraction the PCA keeps."),
    components: int | None = typer.Option(
        None, min=1, help="Number of PCA components (overrides --variance)."
    ),
    include_quality: bool = typer.Option(
        False, "--include-quality", help="Cluster on the quality_* columns too."
    ),
    labels: Path | None = typer.Option(None, "--labels", help=_LABELS_HELP + " Only when DATA is a folder."),
    label_source: LabelSource = typer.Option(LabelSource.auto, "--label-source", help=_SOURCE_HELP),
) -> None:
    """Cross-validation folds stratified by radiomic clusters (or volume, or random) with a balance report."""
    from glioseg.data.io import check_output_file, write_text_atomic
    from glioseg.data.radiomics.clusters import read_feature_table
    from glioseg.errors import GliosegError
    from glioseg.report.balance import render_balance
    from glioseg.train.splits import split_cohort

    stem = out.with_suffix("") if out.suffix == ".json" else out
    paths = {
        "model": Path(f"{stem}.model.json"),
        "balance": Path(f"{stem}.balance.csv"),
        "png": Path(f"{stem}.balance.png"),
        "cases": Path(f"{stem}.cases.csv"),
        "features": Path(f"{stem}.features.csv"),
    }
    for path in (out, *paths.values()):  # before any work
        check_output_file(path)
    if data.is_file():
        frame = read_feature_table(data)
    else:
        frame, errors = _compute_features(data, labels, label_source, True, 0.25, 32)
        if not frame.empty:
            _write_csv(frame, paths["features"])
            console.print(f"features -> {paths['features']}")
        if errors:
            if len(errors) > 1:
                for error in errors:
                    say("failed", error)
            detail = f" ({errors[0]})" if len(errors) == 1 else ""
            raise GliosegError(
                f"{len(errors)} case(s) failed{detail}; no folds written (folds must cover the whole cohort). "
                f"Fix or remove them, or split the good ones with: glioseg split {paths['features']}"
            )
        frame = read_feature_table(paths["features"])  # the same checks as for a table given by hand
    k_lo, k_hi = _parse_range(k_range)
    result = split_cohort(
        frame, folds, strategy.value, seed, clusters, (k_lo, k_hi), variance, components, include_quality
    )
    model, stats = result.model, result.stats
    write_text_atomic(out, json.dumps(result.splits, indent=2) + "\n")
    model.save(paths["model"])
    _write_csv(result.table, paths["balance"])
    _write_csv(result.per_case, paths["cases"])
    title = (
        f"{strategy.value} folds, seed {seed}: cluster chi2 {stats['cluster_chi2']:.2f} "
        f"(random median {stats['random_cluster_chi2_median']:.2f}), "
        f"volume chi2 {stats['volume_chi2']:.2f} (random median {stats['random_volume_chi2_median']:.2f})"
    )
    render_balance(result.per_case, paths["png"], title=title)
    sizes = ", ".join(str(s) for s in model.info["cluster_sizes"])
    how = "given" if model.k_selection["method"] == "given" else "best silhouette"
    console.print(
        f"{len(frame)} cases, {len(model.features)} features -> PCA {model.pca_components.shape[0]} components "
        f"({100 * model.info['explained_variance']:.0f}% variance) -> k-means k={model.n_clusters} ({how}); "
        f"cluster sizes {sizes}"
    )
    if "fallback" in stats:
        console.print(f"note: {stats['fallback']}")
    for key, label in (("cluster", "clusters"), ("volume", "WT-volume quartiles")):
        console.print(
            f"balance of {label} over validation sets: chi2 {stats[f'{key}_chi2']:.2f}; random splits: median "
            f"{stats[f'random_{key}_chi2_median']:.2f}, {100 * stats[f'random_{key}_chi2_share_worse']:.0f}% less balanced"
        )
    console.print(
        f"wrote {out} ({folds} folds), {paths['model']}, {paths['balance']}, {paths['png']}, {paths['cases']}"
    )


def register(app: typer.Typer) -> None:
    app.command(epilog="Example: glioseg features data/ssa --out features.csv --labels predictions/")(
        reports_errors(features)
    )
    app.command(
        epilog="Example: glioseg split features.csv --folds 5 --strategy radiomics --seed 0 --out splits.json"
    )(reports_errors(split))
