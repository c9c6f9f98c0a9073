"""Cross-validation: train every fold, predict each fold's held-out cases, score them lesion-wise.

A CV run folder::

    CV/fold_0 ... CV/fold_{k-1}   one training run each (a fold ensemble for `glioseg predict`)
    CV/oof/<ID>.nii.gz            out-of-fold labels of every training case
    CV/oof/<ID>_probabilities.npz out-of-fold region probabilities (float16)
    CV/cv/per_case.csv, per_lesion.csv, summary.json   lesion-wise metrics of the out-of-fold labels
    CV/cv_summary.json            mean lesion-wise Dice / HD95 per fold and overall

Each fold predicts its held-out cases as soon as it has trained, so a finished fold's outputs no
longer need its weights. Every step skips finished work, so rerunning after an interruption
continues where it stopped (an unfinished fold resumes from its last checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from glioseg.data.cases import discover_cases
from glioseg.data.io import check_output_folder, write_text_atomic
from glioseg.data.labels import REGIONS
from glioseg.errors import ConfigError, InputError
from glioseg.infer.settings import InferenceSettings
from glioseg.train.run import TrainOptions, resume, train
from glioseg.train.splits import load_splits


def run_fold(options: TrainOptions, fold: int, printer=print):
    """Train (or resume, or skip when finished) fold ``fold`` of a CV run in ``options.out/fold_<k>``."""
    fold_dir = Path(options.out) / f"fold_{fold}"
    if (fold_dir / "model.json").exists():
        printer(f"fold {fold}: finished earlier, skipped")
        return fold_dir
    if (fold_dir / "run.json").exists():
        printer(f"fold {fold}: resuming")
        resume(fold_dir, printer=printer)
        return fold_dir
    printer(f"fold {fold}: training")
    cache = options.cache or str(Path(options.out) / "preprocessed")
    train(replace(options, out=str(fold_dir), fold=str(fold), cache=cache), printer=printer)
    return fold_dir


def predicted_out_of_fold(oof: Path, case_id: str) -> bool:
    """Whether ``case_id`` is done in the out-of-fold folder ``oof``: its label map exists (it is
    written after the case's other outputs, so its probabilities may be gone and it still counts)."""
    return (Path(oof) / f"{case_id}.nii.gz").exists()


def predict_out_of_fold(
    cv_dir: Path,
    data: Path,
    folds,
    settings: InferenceSettings,
    printer=print,
    oof: Path | None = None,
    only: Sequence[int] | None = None,
) -> Path:
    """Predict each fold's validation cases with that fold's model into ``oof`` (default ``cv_dir/oof``).

    ``settings``: how (``glioseg train --fold all`` uses sliding windows with its ``--tta``; a
    benchmark can measure another configuration, ``benchmarks/oof_settings.py``).  ``only``: the
    fold indices to predict (default all).  Cases already predicted are skipped
    (:func:`predicted_out_of_fold`), and so is a fold with nothing left to predict (its weights
    are then not read).
    """
    from glioseg.infer.batch import PredictOptions, predict_cases
    from glioseg.infer.models import find_members

    cases = discover_cases(data).by_id()
    oof = Path(oof) if oof is not None else cv_dir / "oof"
    for k, fold in enumerate(folds):
        todo = [cases[c] for c in fold["val"] if not predicted_out_of_fold(oof, c)]
        if not todo or (only is not None and k not in only):
            continue
        group = find_members(cv_dir / f"fold_{k}")
        report = predict_cases(
            todo,
            [group],
            oof,
            PredictOptions(settings, save_probabilities=True),
            printer=printer,
        )
        if report.failed:
            raise InputError(report.failed[0][0], f"out-of-fold prediction failed: {report.failed[0][1]}")
    return oof


def summarize_cross_validation(cv_dir: Path, data: Path, folds, definition: str = "brats2024-ssa") -> dict:
    """Lesion-wise metrics of the out-of-fold labels, per fold and overall (written to ``cv_summary.json``)."""
    from glioseg.evaluate import evaluate, write_outputs

    run = evaluate(cv_dir / "oof", data, definition=definition)
    if run.failures:
        raise InputError(
            run.failures[0].case_id, f"could not score out-of-fold prediction: {run.failures[0].message}"
        )
    write_outputs(run, cv_dir / "cv")
    by_case = {r.case_id: r for r in run.results}

    def stats(results) -> dict:
        out = {}
        for region in REGIONS:
            dice = [r.regions[region].lesionwise_dice for r in results]
            hd = [r.regions[region].lesionwise_hd95 for r in results]
            out[region] = {
                "lesionwise_dice": float(np.mean(dice)),
                "lesionwise_hd95": float(np.mean(hd)),
                "n": len(results),
            }
        return out

    summary = {
        "definition": definition,
        "folds": [stats([by_case[c] for c in fold["val"] if c in by_case]) for fold in folds],
        "overall": stats(run.results),
    }
    write_text_atomic(cv_dir / "cv_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def cross_validate(options: TrainOptions, tta: str = "flip", printer=print) -> dict:
    """Train all folds of ``options.splits``, predict out of fold, and summarise (resumable)."""
    if options.splits is None:
        raise ConfigError("--fold all needs --splits (make them with `glioseg split`)")
    if options.devices * options.num_nodes > 1:
        raise ConfigError(
            "--fold all runs the folds one after another in one process; with several devices train each "
            "fold on its own (--fold 0, --fold 1, ...), then predict out of fold with --fold all on one device"
        )
    folds = load_splits(options.splits)
    cv_dir = check_output_folder(options.out)
    cv_dir.mkdir(parents=True, exist_ok=True)
    settings = InferenceSettings(tta=tta)
    for k in range(len(folds)):
        run_fold(options, k, printer)
        predict_out_of_fold(cv_dir, Path(options.data), folds, settings, printer, only=[k])
    summary = summarize_cross_validation(cv_dir, Path(options.data), folds)
    overall = summary["overall"]
    printer(
        "cross-validation (out-of-fold, lesion-wise Dice): "
        + ", ".join(f"{r} {overall[r]['lesionwise_dice']:.3f}" for r in REGIONS)
    )
    return summary
