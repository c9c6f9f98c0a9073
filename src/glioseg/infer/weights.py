"""Ensemble weights from cross-validation (``glioseg ensemble-weights``).

``proportional`` (default, the seed paper's cross-validation weighting): for each region the
weight of model *m* is its out-of-fold mean lesion-wise Dice divided by the sum over models.
``search``: for each region, the weights on a simplex grid (step 0.1) that maximise the mean
lesion-wise Dice of that region on the out-of-fold probabilities (each region is thresholded on
its own for this search, so it is an approximation of the nested label maps used at
prediction time).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from glioseg.data.io import Geometry, read_image, write_text_atomic
from glioseg.data.labels import REGIONS
from glioseg.errors import InputError

_REGION_LABEL = {"WT": 2, "TC": 1, "ET": 3}


def read_cv_summary(cv_dir: str | Path) -> dict:
    path = Path(cv_dir) / "cv_summary.json"
    if not path.exists():
        raise InputError(cv_dir, "no cv_summary.json (run cross-validation with --fold all first)")
    return json.loads(path.read_text())


def proportional_weights(scores: np.ndarray) -> np.ndarray:
    """``scores`` (n_models, 3) lesion-wise Dice -> weights (n_models, 3), each column summing to 1.

    Examples
    --------
    >>> proportional_weights(np.array([[0.8, 0.6, 0.5], [0.6, 0.6, 0.0]])).round(3).tolist()
    [[0.571, 0.5, 1.0], [0.429, 0.5, 0.0]]
    """
    scores = np.clip(np.asarray(scores, dtype=float), 0, None)
    total = scores.sum(axis=0, keepdims=True)
    equal = np.full_like(scores, 1.0 / scores.shape[0])
    return np.where(total > 0, scores / np.where(total > 0, total, 1), equal)


def simplex_grid(n_models: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """All weight vectors with entries in multiples of ``step`` that sum to 1."""
    k = int(round(1 / step))
    return [
        tuple(c / k for c in combo)
        for combo in itertools.product(range(k + 1), repeat=n_models)
        if sum(combo) == k
    ]


def searched_weights(cv_dirs: Sequence[Path], data: Path, definition: str, step: float = 0.1) -> np.ndarray:
    """Per-region grid search of ensemble weights on out-of-fold probabilities (see module doc)."""
    from glioseg.data.cases import discover_cases, load_case_label
    from glioseg.evaluate import evaluate_labels
    from glioseg.infer.batch import load_probabilities

    cases = discover_cases(data).by_id()
    ids = sorted(
        p.name.removesuffix("_probabilities.npz") for p in (cv_dirs[0] / "oof").glob("*_probabilities.npz")
    )
    for cv in cv_dirs[1:]:
        missing = [c for c in ids if not (cv / "oof" / f"{c}_probabilities.npz").exists()]
        if missing:
            raise InputError(
                cv, f"no out-of-fold probabilities for {missing[0]} (the runs must share their cases)"
            )
    grid = simplex_grid(len(cv_dirs), step)
    totals = np.zeros((len(grid), len(REGIONS)))
    for case_id in ids:
        truth = load_case_label(cases[case_id])
        spacing = Geometry.of(read_image(cases[case_id].images["t1n"])).spacing
        probs = [load_probabilities(cv / "oof" / f"{case_id}_probabilities.npz") for cv in cv_dirs]
        for g, weights in enumerate(grid):
            for r, region in enumerate(REGIONS):
                mixed = sum(w * p[r] for w, p in zip(weights, probs, strict=True))
                labels = np.where(mixed > 0.5, _REGION_LABEL[region], 0).astype(np.uint8)
                region_truth = np.where(
                    np.isin(truth, {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}[region]),
                    _REGION_LABEL[region],
                    0,
                )
                result = evaluate_labels(labels, region_truth.astype(np.uint8), spacing, definition)
                totals[g, r] += result.regions[region].lesionwise_dice
    best = totals.argmax(axis=0)
    return np.asarray([[grid[best[r]][m] for r in range(len(REGIONS))] for m in range(len(cv_dirs))])


def ensemble_weights(
    cv_dirs: Sequence[str | Path], method: str = "proportional", data: str | Path | None = None
) -> dict:
    """Weights document for ``glioseg predict --weights`` from cross-validation runs."""
    dirs = [Path(d) for d in cv_dirs]
    summaries = [read_cv_summary(d) for d in dirs]
    definition = summaries[0].get("definition", "brats2024-ssa")
    scores = np.asarray([[s["overall"][r]["lesionwise_dice"] for r in REGIONS] for s in summaries])
    if method == "proportional":
        weights = proportional_weights(scores)
    elif method == "search":
        if data is None:
            raise InputError("--data", "the search method needs the labelled data (--data)")
        weights = searched_weights(dirs, Path(data), definition)
    else:
        raise InputError("--method", f"unknown method {method!r}; expected proportional or search")
    return {
        "regions": list(REGIONS),
        "method": method,
        "definition": definition,
        "models": [
            {
                "name": d.name,
                "path": str(d),
                "cv_lesionwise_dice": dict(zip(REGIONS, map(float, s), strict=True)),
                "weights": dict(zip(REGIONS, map(float, w), strict=True)),
            }
            for d, s, w in zip(dirs, scores, weights, strict=True)
        ],
    }


def write_weights(doc: dict, path: str | Path) -> Path:
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")
    return Path(path)


def combine_out_of_fold(
    cv_dirs: Sequence[str | Path],
    doc: dict,
    data: str | Path,
    out_dir: str | Path,
    cases: Collection[str] | None = None,
) -> list[Path]:
    """Weighted ensemble of the out-of-fold probabilities of several CV runs, as label maps in ``out_dir``.

    The runs must share their cases (same folds or at least the same cohort); labels are written
    on each case's grid (``<ID>.nii.gz``), ready for ``glioseg postprocess tune``.  Existing
    files are kept (the step resumes).  ``cases``: only these case IDs (default all), e.g. one
    fold's validation cases with weights chosen on the other folds.
    """
    from glioseg.data.cases import discover_cases
    from glioseg.data.io import save_nifti
    from glioseg.data.labels import probabilities_to_labels
    from glioseg.infer.batch import load_probabilities

    dirs = [Path(d) for d in cv_dirs]
    weights = np.asarray([[m["weights"][r] for r in REGIONS] for m in doc["models"]], dtype=np.float32)
    if len(weights) != len(dirs):
        raise InputError("weights", f"{len(weights)} weight entries for {len(dirs)} cross-validation runs")
    wanted = None if cases is None else set(cases)
    by_id = discover_cases(data).by_id()
    out = Path(out_dir)
    written = []
    for npz in sorted((dirs[0] / "oof").glob("*_probabilities.npz")):
        case_id = npz.name.removesuffix("_probabilities.npz")
        target = out / f"{case_id}.nii.gz"
        if target.exists() or (wanted is not None and case_id not in wanted):
            continue
        if case_id not in by_id:
            raise InputError(data, f"case {case_id} of the out-of-fold predictions is not in the data")
        total = np.zeros(1, np.float32)
        for w, d in zip(weights, dirs, strict=True):
            source = d / "oof" / npz.name
            if not source.exists():
                raise InputError(
                    d, f"no out-of-fold probabilities for {case_id} (the runs must share their cases)"
                )
            total = total + w[:, None, None, None] * load_probabilities(source)
        labels = probabilities_to_labels(total / weights.sum(axis=0)[:, None, None, None])
        written.append(
            save_nifti(labels, target, reference=read_image(by_id[case_id].images["t1n"]), dtype=np.uint8)
        )
    return written
