"""Package a cross-validated release as a bundled model (``glioseg models package``).

A release workspace (``scripts/train_real_models.sh``) holds::

    WORK/splits.json, splits.model.json        radiomics-stratified folds and their cluster model
    WORK/<group>/fold_k/model.{json,safetensors}   the CV runs of each architecture (nnunet, mednext)
    WORK/<group>/oof/, cv/per_case.csv          out-of-fold predictions and their lesion-wise scores
    WORK/weights.json                           CV-weighted ensemble weights (glioseg ensemble-weights)
    WORK/oof-ensemble/                          the weighted ensemble's out-of-fold label maps
    WORK/pp.json                                post-processing tuned on them (glioseg postprocess tune)

:func:`package_release` turns it into ``glioseg/assets/models/<name>/``: every fold's weights
(float16 when the probabilities stay within :data:`FP16_TOLERANCE` of float32 on a real case,
else float32), the ensemble weights and post-processing inside the card, and the model card's
results: out-of-fold lesion-wise scores of every stage (each architecture, the ensemble, the
ensemble with post-processing) computed from the files, never typed in.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.data.cases import discover_cases, load_case
from glioseg.data.degrade import RECORD_SUFFIX as DEGRADE_RECORD_SUFFIX
from glioseg.data.io import read_json, swap_folder
from glioseg.data.labels import REGIONS
from glioseg.errors import InputError
from glioseg.evaluate import CaseResult, evaluate, evaluate_labels
from glioseg.infer.ensemble import segment_case
from glioseg.infer.models import find_members
from glioseg.infer.settings import InferenceSettings
from glioseg.models.catalog import BUNDLED_MODELS, ModelCard, read_card, write_card
from glioseg.models.checkpoint import DISCLAIMER, canonical_state_dict, half_precision, save_model
from glioseg.postprocess.apply import apply_to_files
from glioseg.postprocess.config import PostprocessConfig, make_postprocessor

#: Largest allowed change of any region probability when weights are stored as float16.
FP16_TOLERANCE = 1e-3
#: Labelled cases whose shipped-pipeline Dice the card records (the first validation case of each of
#: the first folds), for the real-data regression test.
REGRESSION_CASES = 2
#: Architectures of a release, in ensemble order.
GROUPS = ("nnunet", "mednext")


def score_summary(results: list[CaseResult]) -> dict[str, dict[str, float]]:
    """Per region: mean, SD and median of lesion-wise Dice and HD95 and of legacy Dice over cases.

    Examples
    --------
    >>> score_summary([])
    {}
    """
    if not results:
        return {}
    out = {}
    for region in REGIONS:
        row: dict[str, float] = {"n": len(results)}
        for metric in ("lesionwise_dice", "lesionwise_hd95", "legacy_dice"):
            values = np.asarray([getattr(r.regions[region], metric) for r in results], dtype=float)
            row[f"{metric}_mean"] = round(float(values.mean()), 4)
            row[f"{metric}_sd"] = round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)
            row[f"{metric}_median"] = round(float(np.median(values)), 4)
        out[region] = row
    return out


def _scores(pred: Path, data: Path) -> dict[str, dict[str, float]]:
    run = evaluate(pred, data)
    if run.failures:
        raise InputError(run.failures[0].case_id, f"cannot score {pred}: {run.failures[0].message}")
    return score_summary(run.results)


def _shipped_pipeline(weights, postprocess: Path | None, mode: str):
    """The settings of ``mode`` on the CPU, the post-processing hook (or ``None``) and the
    per-group (WT, TC, ET) weights (or ``None``) of a bundle, as ``glioseg predict`` uses them."""
    settings = InferenceSettings.for_mode(mode, device="cpu")
    hook = make_postprocessor(PostprocessConfig.load(postprocess)) if postprocess else None
    w = None if weights is None else [[float(x[r]) for r in REGIONS] for x in weights]
    return settings, hook, w


def regression_scores(
    groups, weights, postprocess: Path | None, cases, mode: str = "default"
) -> dict[str, dict[str, float]]:
    """Lesion-wise Dice of the shipped pipeline (the bundle's recommended ``mode``, weights and
    post-processing, float16 weights as shipped) on a few labelled cases: recorded in the card at
    release so that a test can tell when the pipeline's results drift."""
    settings, hook, w = _shipped_pipeline(weights, postprocess, mode)
    out = {}
    for case in cases:
        data = load_case(case)
        labels = segment_case(data, groups, w, settings).labels
        if hook is not None:
            labels = hook(labels, data)
        result = evaluate_labels(labels, data.label, data.spacing, "brats2024-ssa", case.case_id)
        out[case.case_id] = {r: round(result.regions[r].lesionwise_dice, 4) for r in REGIONS}
    return out


def degraded_scores(
    bundle: Path,
    groups: list[str],
    weights,
    postprocess: Path | None,
    folds,
    degraded: Path,
    mode: str = "default",
) -> dict[str, Any]:
    """Out-of-fold scores of the shipped pipeline on low-quality copies of the cross-validation cases.

    Each fold's shipped members (float16 where shipped so) segment the ``glioseg degrade`` copies
    of that fold's validation cases (the bundle's recommended ``mode``, weights and
    post-processing), so no case is segmented by a model that saw its clean original.  Returns the
    severity and seed of the copies with :func:`score_summary` of the results.
    """
    cases = discover_cases(degraded).by_id()
    settings, hook, w = _shipped_pipeline(weights, postprocess, mode)
    results = []
    record: dict[str, Any] = {}
    for k, fold in enumerate(folds):
        fold_groups = [find_members(bundle / g / f"fold_{k}") for g in groups]
        for case_id in fold["val"]:
            if case_id not in cases:
                raise InputError(degraded, f"no degraded copy of {case_id} (make them with glioseg degrade)")
            case = cases[case_id]
            record = read_json(case.folder / f"{case_id}{DEGRADE_RECORD_SUFFIX}", "degrade record")
            data = load_case(case)
            labels = segment_case(data, fold_groups, w, settings).labels
            if hook is not None:
                labels = hook(labels, data)
            results.append(evaluate_labels(labels, data.label, data.spacing, "brats2024-ssa", case_id))
    return {
        "severity": record.get("severity"),
        "seed": record.get("seed"),
        "command": f"glioseg degrade DATA --out DEGRADED --seed {record.get('seed')} --severity {record.get('severity')}",
        "scores": score_summary(results),
    }


def validation_curve(cv_dir: Path, n_folds: int) -> list[dict[str, float]]:
    """Validation Dice by training iteration, mean over the folds, from each fold's training log.

    The training-time validation: voxel Dice per region on the fold's whole validation cases at
    the plan's spacing (sliding windows, overlap 0.25, no mirroring), every ``--val-every``
    epochs.  Early points come from inside one learning-rate schedule, so they show how far the
    models were from converging, not what a shorter schedule would reach.
    """
    import pandas as pd

    frames = []
    for k in range(n_folds):
        log = cv_dir / f"fold_{k}" / "logs" / "csv" / "metrics.csv"
        if not log.exists():
            continue
        frame = pd.read_csv(log)
        frames.append(frame[frame["val_dice_mean"].notna()].assign(fold=k))
    if not frames:
        return []
    table = pd.concat(frames)
    rows = []
    for step, group in table.groupby("step"):
        row = {"iterations": int(step) + 1, "folds": int(group["fold"].nunique())}
        row |= {r: round(float(group[f"val_dice_{r}"].mean()), 4) for r in REGIONS}
        rows.append(row)
    return rows


def fp16_deviation(member_dir: Path, half_dir: Path, case_dir: Path) -> float:
    """Largest absolute difference of region probabilities between two copies of a member on one case."""
    data = load_case(discover_cases(case_dir).cases[0], with_label=False)
    settings = InferenceSettings(tta="none", device="cpu")
    full = segment_case(data, [find_members(member_dir)], settings=settings).probabilities
    half = segment_case(data, [find_members(half_dir)], settings=settings).probabilities
    return float(np.abs(full - half).max())


def _export_member(
    member_dir: Path, target: Path, check_case: Path, printer: Callable[[str], None]
) -> dict[str, Any]:
    """Write ``target/model.{safetensors,json}`` in float16 when that is within tolerance, else float32."""
    (member,) = find_members(member_dir).members
    network = member.load("cpu")
    info = {k: v for k, v in member.info.items() if k not in ("format", "versions")}
    info["trained_with_versions"] = member.info.get("versions")
    state = canonical_state_dict(network)
    save_model(half_precision(state), {**info, "weights_dtype": "float16"}, target / "model")
    deviation = fp16_deviation(member_dir, target, check_case)
    if deviation > FP16_TOLERANCE:
        save_model(state, {**info, "weights_dtype": "float32", "fp16_deviation": deviation}, target / "model")
        printer(
            f"{member_dir}: float16 changes probabilities by {deviation:.2e} > {FP16_TOLERANCE:g}; kept float32"
        )
    else:
        printer(f"{member_dir}: float16 (largest probability change {deviation:.1e} on {check_case.name})")
    return {"member": target.name, "fp16_max_probability_change": deviation}


def package_release(
    work: str | Path,
    name: str,
    data: str | Path,
    card: dict[str, Any],
    dest_root: str | Path = BUNDLED_MODELS,
    printer: Callable[[str], None] = print,
    degraded: str | Path | None = None,
) -> ModelCard:
    """Build the bundled model ``dest_root/name`` from a release workspace (atomically replaced).

    Parameters
    ----------
    work : the workspace of ``scripts/train_real_models.sh``
    name : the model's name for ``glioseg predict --model NAME``
    data : the labelled cases the cross-validation ran on (to score and to check float16)
    card : the descriptive fields of the model card (``summary``, ``intended_use``, ...);
        ``groups``, ``postprocess`` and ``results`` are filled in from the workspace; an
        optional ``default_mode`` (the mode ``predict`` uses without ``--mode``) is also the mode
        the regression and degraded-input results are measured in.
    degraded : optional ``glioseg degrade`` copies of ``data``; the card then also records the
        shipped pipeline's out-of-fold scores on them (:func:`degraded_scores`).
    """
    work, data, dest_root = Path(work), Path(data), Path(dest_root)
    mode = InferenceSettings.for_mode(card.get("default_mode") or "default").mode  # fails early if unknown
    groups = [g for g in GROUPS if (work / g / "cv_summary.json").exists()]
    if not groups:
        raise InputError(
            work, f"no finished cross-validation ({' or '.join(f'{g}/cv_summary.json' for g in GROUPS)})"
        )
    weights_doc = (
        read_json(work / "weights.json", "ensemble weights") if (work / "weights.json").exists() else None
    )
    weights = {e["name"]: e["weights"] for e in (weights_doc or {}).get("models", [])}
    cases = discover_cases(data).by_id()
    folds = read_json(work / "splits.json", "splits")
    results: dict[str, Any] = {"definition": "brats2024-ssa", "cases": len(cases), "mode": mode, "stages": {}}
    dest_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest_root))
    try:
        fp16 = []
        for group in groups:
            for k, fold in enumerate(folds):
                fp16.append(
                    _export_member(
                        work / group / f"fold_{k}",
                        staging / group / f"fold_{k}",
                        cases[fold["val"][0]].folder,
                        printer,
                    )
                )
            results["stages"][group] = _scores(work / group / "oof", data)
            results.setdefault("validation_curve", {})[group] = validation_curve(work / group, len(folds))
        has_ensemble = len(groups) > 1 and (work / "oof-ensemble").is_dir()
        if has_ensemble:
            results["stages"]["ensemble"] = _scores(work / "oof-ensemble", data)
        postprocess = None
        if (work / "pp.json").exists():
            shutil.copy(work / "pp.json", staging / "pp.json")
            postprocess = "pp.json"
            source = work / ("oof-ensemble" if has_ensemble else f"{groups[0]}/oof")
            with tempfile.TemporaryDirectory() as tmp:
                report = apply_to_files(source, PostprocessConfig.load(work / "pp.json"), tmp, data)
                if report.failed:
                    raise InputError(work / "pp.json", f"post-processing failed: {report.failed[0]}")
                results["stages"]["ensemble+postprocess" if has_ensemble else f"{groups[0]}+postprocess"] = (
                    _scores(Path(tmp), data)
                )
        results["fp16"] = fp16
        regression_cases = [fold["val"][0] for fold in folds[:REGRESSION_CASES]]
        results["regression"] = regression_scores(
            [find_members(staging / g) for g in groups],
            [weights.get(g) for g in groups] if has_ensemble and weights else None,
            staging / "pp.json" if postprocess else None,
            [cases[c] for c in regression_cases],
            mode,
        )
        if degraded is not None:
            printer(f"scoring the shipped pipeline out of fold on the low-quality copies in {degraded}")
            results["degraded"] = degraded_scores(
                staging,
                groups,
                [weights.get(g) for g in groups] if has_ensemble and weights else None,
                staging / "pp.json" if postprocess else None,
                folds,
                Path(degraded),
                mode,
            )
        doc = {
            **card,
            "name": name,
            "disclaimer": card.get("disclaimer", DISCLAIMER),
            "synthetic": False,
            "groups": [
                {"name": g, "path": g, "weights": weights.get(g) if has_ensemble else None} for g in groups
            ],
            "postprocess": postprocess,
            "results": results,
        }
        write_card(staging, doc)
        swap_folder(staging, dest_root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return read_card(dest_root / name)
