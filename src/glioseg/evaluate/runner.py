"""Batch evaluation: load pairs, check them, score them (optionally in parallel), write the tables.

Outputs of :func:`write_outputs` in the output folder (each written atomically):

``per_case.csv``
    One row per evaluated case: ``case_id`` then ``<REGION>_<metric>`` for WT, TC, ET and
    the metrics of :attr:`RegionResult.METRICS`.
``per_lesion.csv``
    One row per scored lesion: case, region, kind (TP / FN / FP), lesion numbers, volumes,
    Dice, HD95 and whether it counts (GT lesions of at most 50 mm^3 do not).
``summary.json``
    Definition, geometry check, mean / median / std (sample, ddof = 1) / n of every metric
    per region, and the cases that failed or were left unmatched.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np

from glioseg.data.io import (
    SPACING_TOLERANCE_MM,
    Geometry,
    atomic_path,
    load_label,
    write_text_atomic,
)
from glioseg.data.labels import REGIONS
from glioseg.errors import ConfigError, GliosegError, InputError
from glioseg.evaluate.lesionwise import (
    DEFAULT_DEFINITION,
    DEFINITIONS,
    CaseResult,
    RegionResult,
    evaluate_labels,
)
from glioseg.evaluate.matching import Matching, Pair, match_cases

#: ``strict``: shape, spacing and affine must agree; ``shape``: shape and spacing only.
GEOMETRY_MODES = ("strict", "shape")


@dataclass(frozen=True)
class CaseFailure:
    """A case that could not be evaluated, with a one-line reason naming the file."""

    case_id: str
    message: str


@dataclass
class EvaluationRun:
    """Everything one batch evaluation produced."""

    definition: str
    geometry: str
    results: list[CaseResult] = field(default_factory=list)
    failures: list[CaseFailure] = field(default_factory=list)
    unmatched_predictions: dict[str, Path] = field(default_factory=dict)
    missing: str = "error"  # what was done with ground-truth cases that have no prediction
    without_prediction: list[str] = field(default_factory=list)  # their case IDs (skipped or scored as empty)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every ground-truth case was evaluated."""
        return not self.failures


#: What :func:`evaluate` does with a ground-truth case that has no prediction.
MISSING_POLICIES = ("error", "skip", "empty")


def definition_spacing(image: nib.Nifti1Image, definition: str) -> tuple[float, float, float]:
    """Voxel spacing (mm) that the official code of ``definition`` uses for a prediction.

    ``brats2023`` reads the zooms of the prediction header; ``brats2024-ssa`` first writes the
    binary maps to temporary files with the prediction's affine only, so its zooms are the
    lengths of the affine's columns (stored as float32).  The two agree for any consistent
    header.
    """
    if definition == "brats2023":
        return Geometry.of(image).spacing
    fresh = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), image.affine)
    return tuple(float(z) for z in fresh.header.get_zooms()[:3])


def read_labels(path: str | Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Load a segmentation as canonical uint8 labels (:func:`glioseg.data.io.load_label`)."""
    return load_label(path)


class CheckedPair(NamedTuple):
    """A prediction and its ground truth, read as canonical uint8 labels and checked to share a grid."""

    pred: np.ndarray
    gt: np.ndarray
    #: Voxel size (mm) that the metric definition uses (:func:`definition_spacing`).
    spacing: tuple[float, float, float]
    pred_image: nib.Nifti1Image


def load_checked_pair(
    pair: Pair, definition: str = DEFAULT_DEFINITION, geometry: str = "strict"
) -> CheckedPair:
    """Read a prediction and its ground truth and check that they lie on one voxel grid.

    Raises
    ------
    InputError
        Unreadable file, bad labels (non-integer, outside {0..4}, ET given as both 3 and 4),
        or a grid that differs from the ground truth's (shape or spacing; with
        ``geometry="strict"`` also the affine).
    """
    gt, gt_image = read_labels(pair.gt)
    if pair.pred is None:  # a missing prediction scored as empty (evaluate(..., missing="empty"))
        return CheckedPair(np.zeros_like(gt), gt, definition_spacing(gt_image, definition), gt_image)
    pred, pred_image = read_labels(pair.pred)
    gt_geometry, pred_geometry = Geometry.of(gt_image), Geometry.of(pred_image)
    if gt_geometry.shape != pred_geometry.shape:
        raise InputError(
            pair.pred,
            f"shape {pred_geometry.shape} differs from the ground truth's {gt_geometry.shape} ({pair.gt.name})",
        )
    if not np.allclose(gt_geometry.spacing, pred_geometry.spacing, rtol=0, atol=SPACING_TOLERANCE_MM):
        shown = (
            "x".join(f"{v:g}" for v in pred_geometry.spacing),
            "x".join(f"{v:g}" for v in gt_geometry.spacing),
        )
        raise InputError(
            pair.pred,
            f"voxel spacing {shown[0]} mm differs from the ground truth's {shown[1]} mm ({pair.gt.name})",
        )
    if geometry == "strict" and gt_geometry.mismatch(pred_geometry):
        raise InputError(
            pair.pred,
            f"affine (voxel-to-world orientation/origin) differs from the ground truth's ({pair.gt.name}); "
            "if both are on the same voxel grid and only the header differs, use --geometry shape",
        )
    return CheckedPair(pred, gt, definition_spacing(pred_image, definition), pred_image)


def evaluate_pair(pair: Pair, definition: str = DEFAULT_DEFINITION, geometry: str = "strict") -> CaseResult:
    """Load and check (:func:`load_checked_pair`), then score one prediction against its ground truth.

    Raises
    ------
    InputError
        As :func:`load_checked_pair`.
    """
    pred, gt, spacing, _ = load_checked_pair(pair, definition, geometry)
    return evaluate_labels(pred, gt, spacing, definition, pair.case_id)


class CaseOutcome(NamedTuple):
    """One case's outcome in :func:`map_cases`: the result, or ``None`` and a one-line error."""

    pair: Pair
    result: Any
    error: str | None
    seconds: float


def _run_case(fn: Callable, item: tuple) -> CaseOutcome:
    """``fn(*item)``, timed; an exception becomes a one-line message naming the prediction (never raises)."""
    pair = item[0]
    began = time.perf_counter()
    try:
        result, error = fn(*item), None
    except GliosegError as exc:
        result, error = None, str(exc)
    except MemoryError:
        result, error = None, f"{pair.pred}: out of memory"
    except Exception as exc:  # a bug must not stop the other cases; it is reported with its type
        result, error = None, f"{pair.pred}: internal error ({type(exc).__name__}: {exc})"
    return CaseOutcome(pair, result, error, time.perf_counter() - began)


def map_cases(fn: Callable, items: Sequence[tuple], jobs: int = 1) -> Iterator[CaseOutcome]:
    """Call ``fn(*item)`` for every item (``item[0]`` is its :class:`Pair`); yield the outcomes in order.

    With ``jobs > 1`` and more than one item the calls run in ``jobs`` worker processes
    (``fn`` and the items are pickled: ``fn`` must be a module-level function), otherwise
    in this process.  A case whose call raises gives ``result=None`` and the message; the
    other cases go on.
    """
    items = list(items)
    if jobs == 1 or len(items) <= 1:
        for item in items:
            yield _run_case(fn, item)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_case, fn, item) for item in items]
        for future in futures:
            yield future.result()


def evaluate(
    pred: str | Path,
    gt: str | Path,
    definition: str = DEFAULT_DEFINITION,
    jobs: int = 1,
    geometry: str = "strict",
    progress: Callable[[str, CaseResult | None, str | None, float], None] | None = None,
    missing: str = "error",
) -> EvaluationRun:
    """Evaluate predictions against ground truth (two files, or two folders matched by case ID).

    A bad case (unreadable, bad labels, different grid) is recorded in
    :attr:`EvaluationRun.failures`; the other cases are still evaluated.  A ground-truth case
    without a prediction is, by ``missing``: ``"error"`` a failure (the default: nothing is
    silently left out), ``"skip"`` left out, ``"empty"`` scored as an empty prediction, as the
    BraTS challenges score a missing submission; :attr:`EvaluationRun.without_prediction` lists
    the skipped or empty ones.

    Parameters
    ----------
    pred, gt : path-like
    definition : ``"brats2024-ssa"`` (default) or ``"brats2023"``
    jobs : int
        Worker processes (1 = in this process).
    geometry : ``"strict"`` or ``"shape"``
    progress : callable, optional
        Called as ``progress(case_id, result, error, seconds)`` after each case.

    Raises
    ------
    InputError
        Missing paths, or no prediction matches any ground-truth case.
    ConfigError
        Unknown definition or geometry mode, ``jobs < 1``, or a file given with a folder.
    """
    if definition not in DEFINITIONS:
        raise ConfigError(f"unknown definition {definition!r}; choose one of {', '.join(DEFINITIONS)}")
    if geometry not in GEOMETRY_MODES:
        raise ConfigError(f"unknown geometry check {geometry!r}; choose one of {', '.join(GEOMETRY_MODES)}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if missing not in MISSING_POLICIES:
        raise ConfigError(
            f"unknown policy for missing predictions {missing!r}; choose one of {', '.join(MISSING_POLICIES)}"
        )
    began = time.perf_counter()
    matching: Matching = match_cases(pred, gt)
    run = EvaluationRun(
        definition, geometry, unmatched_predictions=dict(matching.unmatched_predictions), missing=missing
    )
    for case_id, problem in matching.problems.items():
        run.failures.append(CaseFailure(case_id, str(problem)))
    pairs = list(matching.pairs)
    for case_id, gt_file in matching.missing_predictions.items():
        if missing == "error":
            run.failures.append(
                CaseFailure(case_id, f"{gt_file}: case {case_id} has no prediction in {pred}")
            )
            continue
        run.without_prediction.append(case_id)
        if missing == "empty":
            pairs.append(Pair(case_id, None, gt_file))
    run.without_prediction.sort()
    items = [(pair, definition, geometry) for pair in sorted(pairs, key=lambda p: p.case_id)]
    for pair, result, error, seconds in map_cases(evaluate_pair, items, jobs):
        if result is not None:
            run.results.append(result)
        else:
            run.failures.append(CaseFailure(pair.case_id, error or "unknown error"))
        if progress is not None:
            progress(pair.case_id, result, error, seconds)
    run.results.sort(key=lambda r: r.case_id)
    run.failures.sort(key=lambda f: f.case_id)
    run.seconds = time.perf_counter() - began
    return run


def _statistics(values: list[float]) -> dict[str, float | int | None]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "median": None, "std": None, "n": 0}

    def clean(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    std = float(np.std(arr, ddof=1)) if arr.size > 1 else float("nan")
    return {
        "mean": clean(float(np.mean(arr))),
        "median": clean(float(np.median(arr))),
        "std": clean(std),
        "n": int(arr.size),
    }


def summarize(results: list[CaseResult]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Mean, median, std (ddof = 1) and n of every metric, per region: ``out[region][metric]``."""
    return {
        region: {
            metric: _statistics([float(r.regions[region].metrics()[metric]) for r in results])
            for metric in RegionResult.METRICS
        }
        for region in REGIONS
    }


def write_outputs(run: EvaluationRun, out_dir: str | Path) -> dict[str, Path]:
    """Write ``per_case.csv``, ``per_lesion.csv`` and ``summary.json`` into ``out_dir`` (atomically)."""
    import pandas as pd

    from glioseg._version import __version__

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    case_columns = ["case_id"] + [f"{r}_{m}" for r in REGIONS for m in RegionResult.METRICS]
    lesion_columns = [
        "case_id",
        "region",
        "kind",
        "gt_lesion",
        "pred_lesions",
        "gt_volume_mm3",
        "pred_volume_mm3",
        "dice",
        "hd95",
        "counted",
    ]
    per_case = pd.DataFrame([r.row() for r in run.results], columns=case_columns)
    per_lesion = pd.DataFrame([row for r in run.results for row in r.lesion_rows()], columns=lesion_columns)
    per_lesion["gt_lesion"] = per_lesion["gt_lesion"].astype("Int64")
    paths = {
        "per_case": out / "per_case.csv",
        "per_lesion": out / "per_lesion.csv",
        "summary": out / "summary.json",
    }
    for frame, path in ((per_case, paths["per_case"]), (per_lesion, paths["per_lesion"])):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.10g")
    summary = {
        "glioseg_version": __version__,
        "definition": run.definition,
        "geometry_check": run.geometry,
        "cases_evaluated": len(run.results),
        "cases_failed": len(run.failures),
        "missing_predictions": {"policy": run.missing, "cases": run.without_prediction},
        "seconds": round(run.seconds, 3),
        "metrics": summarize(run.results),
        "failures": [{"case_id": f.case_id, "error": f.message} for f in run.failures],
        "unmatched_predictions": {c: str(p) for c, p in run.unmatched_predictions.items()},
    }
    write_text_atomic(paths["summary"], json.dumps(summary, indent=2) + "\n")
    return paths
