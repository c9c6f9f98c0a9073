"""Grid search of post-processing thresholds for the BraTS lesion-wise metrics (``glioseg postprocess tune``).

The parts, each in its module:

* :mod:`glioseg.postprocess.grid`: the canonical pipeline and the grid of its thresholds
  (:class:`~glioseg.postprocess.grid.Setting`, :class:`~glioseg.postprocess.grid.Grid`);
* :mod:`glioseg.postprocess.scoring`: the lesion-wise scores of one case under every
  setting (:func:`~glioseg.postprocess.scoring.score_case`);
* :mod:`glioseg.postprocess.selection`: the selection rule and the paired statistics;
* this module: the scores of a cohort of prediction files (:func:`score_cohort`) and the
  tuning that writes the configuration and its reports (:func:`tune`, :class:`TuneResult`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.labels import REGIONS
from glioseg.errors import ConfigError, InputError
from glioseg.postprocess.grid import Grid, Setting
from glioseg.postprocess.scoring import CaseScores, score_case, stack_scores
from glioseg.postprocess.selection import region_statistics, select_setting


def _score_pair(pair, settings, definition: str, geometry: str, case, quality: bool) -> CaseScores:
    """Scores (and, with ``case``, radiomic features of the prediction) of one pair."""
    from glioseg.evaluate.runner import load_checked_pair

    pred, gt, spacing, _ = load_checked_pair(pair, definition, geometry)
    scores = score_case(pred, gt, spacing, settings, definition, pair.case_id)
    if case is not None:
        from glioseg.data.cases import load_case
        from glioseg.data.radiomics import case_features

        data = load_case(case, with_label=False)
        if data.image.shape[1:] != pred.shape:
            raise InputError(
                pair.pred, f"shape {pred.shape} differs from the case images' {data.image.shape[1:]}"
            )
        scores.features = case_features(data.image, pred, data.spacing, include_quality=quality)
    return scores


def score_cohort(
    pred: str | Path,
    gt: str | Path,
    settings: Sequence[Setting],
    definition: str = "brats2024-ssa",
    geometry: str = "strict",
    jobs: int = 1,
    cluster_model=None,
    progress: Callable[[str, CaseScores | None, str | None], None] | None = None,
) -> tuple[list[CaseScores], list[str]]:
    """Score every prediction under ``pred`` against its ground truth in ``gt`` for every setting.

    With ``cluster_model`` the radiomic features of each (unprocessed) prediction are
    computed with the case's images, found in ``gt`` (a folder of cases).  Returns the
    case scores (sorted by case ID) and one-line messages of the cases that failed
    (unreadable, other grid, no prediction, no images); the others are scored.
    """
    from glioseg.data.cases import discover_cases
    from glioseg.evaluate import DEFINITIONS, match_cases
    from glioseg.evaluate.runner import GEOMETRY_MODES, map_cases
    from glioseg.postprocess.config import needs_quality

    if definition not in DEFINITIONS:
        raise ConfigError(f"unknown definition {definition!r}; choose one of {', '.join(DEFINITIONS)}")
    if geometry not in GEOMETRY_MODES:
        raise ConfigError(f"unknown geometry check {geometry!r}; choose strict or shape")
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    matching = match_cases(pred, gt)
    failures = [str(p) for p in matching.problems.values()]
    failures += [
        f"{f}: case {c} has no prediction in {pred}" for c, f in matching.missing_predictions.items()
    ]
    cases = {}
    quality = False
    if cluster_model is not None:
        found = discover_cases(gt)
        cases = found.by_id()
        quality = needs_quality(cluster_model)
    jobs_list = []
    for pair in matching.pairs:
        if cluster_model is not None and pair.case_id not in cases:
            failures.append(f"{gt}: no images for case {pair.case_id} (the radiomic clusters need them)")
            continue
        jobs_list.append((pair, settings, definition, geometry, cases.get(pair.case_id), quality))
    results: list[CaseScores] = []
    for pair, scores, error, _ in map_cases(_score_pair, jobs_list, jobs):
        if scores is None:
            failures.append(error)
        else:
            results.append(scores)
        if progress is not None:
            progress(pair.case_id, scores, error)
    results.sort(key=lambda r: r.case_id)
    return results, failures


def prediction_clusters(model, scores: Sequence[CaseScores]) -> np.ndarray:
    """The radiomic cluster of each scored prediction (``score_cohort`` with ``cluster_model=model``)."""
    import pandas as pd

    return model.predict(model.matrix(pd.DataFrame([s.features for s in scores]), "prediction features"))


@dataclass
class TuneResult:
    """Everything :func:`tune` decided and measured.

    Attributes
    ----------
    config : PostprocessConfig
    settings : list of Setting
    scores : list of CaseScores
    clusters : ndarray of int64 (N,) or None
    chosen : ndarray of int64 (N,)
        Setting index applied to each case (its cluster's, or the global one).
    report : dict
        Selected settings, per-region paired statistics, timing (the ``.report.json``).
    failures : list of str
    """

    config: object
    settings: list[Setting]
    scores: list[CaseScores]
    clusters: np.ndarray | None
    chosen: np.ndarray
    report: dict
    failures: list[str] = field(default_factory=list)

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """The (N, S, 3) Dice and HD95 tables."""
        return stack_scores(self.scores)

    def per_case_frame(self):
        """One row per case: cluster, applied setting, and Dice / HD95 per region before and after."""
        import pandas as pd

        dice, hd = self.tables()
        rows = []
        for n, cs in enumerate(self.scores):
            s = int(self.chosen[n])
            row = {
                "case_id": cs.case_id,
                "cluster": None if self.clusters is None else int(self.clusters[n]),
                "setting": self.settings[s].describe(),
            }
            for i, region in enumerate(REGIONS):
                row[f"{region}_dice_before"] = dice[n, 0, i]
                row[f"{region}_dice_after"] = dice[n, s, i]
                row[f"{region}_hd95_before"] = hd[n, 0, i]
                row[f"{region}_hd95_after"] = hd[n, s, i]
            rows.append(row)
        return pd.DataFrame(rows)

    def summary_frame(self):
        """One row per (scope, region, metric) with the paired statistics (the ``.report.csv``)."""
        import pandas as pd

        rows = []
        scopes = [("all", self.report["regions"])]
        for key, entry in sorted(self.report["selected"].get("clusters", {}).items()):
            if "regions" in entry:
                scopes.append((f"cluster_{key}", entry["regions"]))
        for scope, regions in scopes:
            for region in REGIONS:
                for metric, stats in regions[region].items():
                    rows.append({"scope": scope, "region": region, "metric": metric, **stats})
        return pd.DataFrame(rows)

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write the configuration ``out`` and ``<stem>.report.json``, ``.report.csv``, ``.cases.csv`` beside it."""
        import json

        from glioseg.data.io import atomic_path, write_text_atomic

        out = Path(out)
        stem = out.with_suffix("") if out.suffix == ".json" else out
        paths = {
            "config": out,
            "report": Path(f"{stem}.report.json"),
            "summary": Path(f"{stem}.report.csv"),
            "cases": Path(f"{stem}.cases.csv"),
        }
        self.config.save(paths["config"])
        write_text_atomic(paths["report"], json.dumps(self.report, indent=1, allow_nan=False) + "\n")
        for frame, key in ((self.summary_frame(), "summary"), (self.per_case_frame(), "cases")):
            with atomic_path(paths[key], suffix=".csv") as tmp:
                frame.to_csv(tmp, index=False, float_format="%.10g")
        return paths


def _selection_entry(settings: list[Setting], index: int, voxel_mm3: float) -> dict:
    setting = settings[index]
    return {
        "index": int(index),
        "setting": asdict(setting),
        "description": setting.describe(),
        "operations": [op.to_dict() for op in setting.operations(voxel_mm3)],
    }


def tune(
    pred: str | Path,
    gt: str | Path,
    grid: Grid | None = None,
    definition: str = "brats2024-ssa",
    cluster_model_path: str | Path | None = None,
    min_cluster_cases: int = 5,
    geometry: str = "strict",
    jobs: int = 1,
    progress: Callable[[str, CaseScores | None, str | None], None] | None = None,
) -> TuneResult:
    """Tune the post-processing on out-of-fold predictions (``pred``) against ground truth (``gt``).

    Parameters
    ----------
    pred : path
        Folder of predictions ``<ID>.nii.gz`` (e.g. ``CV/oof``), or one file.
    gt : path
        Ground truth (case folders, or a flat folder of segmentations); with clusters, case
        folders with the images.
    grid : Grid, optional
        Thresholds to try (default :class:`Grid`).
    definition : ``"brats2024-ssa"`` or ``"brats2023"``
    cluster_model_path : path, optional
        Cluster model of ``glioseg split`` (``<name>.model.json``): tune one setting per
        cluster; each case's cluster comes from the radiomic features of its prediction.
    min_cluster_cases : int
        A cluster with fewer tuning cases gets the global setting.
    geometry : ``"strict"`` or ``"shape"``
        As for ``glioseg evaluate``.
    jobs : int
        Worker processes.

    Returns
    -------
    TuneResult

    Raises
    ------
    InputError
        When no case could be scored.
    """

    from glioseg.data.radiomics.clusters import ClusterModel
    from glioseg.postprocess.config import PostprocessConfig

    began = time.perf_counter()
    grid = grid or Grid()
    settings = grid.settings()
    model = ClusterModel.load(cluster_model_path) if cluster_model_path is not None else None
    scores, failures = score_cohort(pred, gt, settings, definition, geometry, jobs, model, progress)
    if not scores:
        raise InputError(
            pred, "no case could be scored: " + (failures[0] if failures else "no prediction found")
        )
    scoring_seconds = time.perf_counter() - began
    dice, hd = stack_scores(scores)
    voxel_mm3 = float(np.median([s.voxel_mm3 for s in scores]))
    global_index = select_setting(dice, hd)
    chosen = np.full(len(scores), global_index, dtype=np.int64)
    selected: dict = {"global": _selection_entry(settings, global_index, voxel_mm3)}
    config = PostprocessConfig(operations=settings[global_index].operations(voxel_mm3), definition=definition)
    clusters = None
    if model is not None:
        clusters = prediction_clusters(model, scores)
        config.cluster_model = model
        config.cluster_model_path = str(cluster_model_path)
        config.min_cases = int(min_cluster_cases)
        selected["clusters"] = {}
        for k in range(model.n_clusters):
            members = np.flatnonzero(clusters == k)
            own = members.size >= min_cluster_cases
            index = select_setting(dice, hd, members) if own else global_index
            chosen[members] = index
            config.cluster_operations[k] = settings[index].operations(voxel_mm3)
            config.cluster_source[k] = "cluster" if own else "global"
            entry = {
                "n_cases": int(members.size),
                "source": config.cluster_source[k],
                **_selection_entry(settings, index, voxel_mm3),
            }
            if members.size:
                entry["regions"] = region_statistics(dice[members], hd[members], chosen[members])
            selected["clusters"][str(k)] = entry
    regions = region_statistics(dice, hd, chosen)
    report = {
        "definition": definition,
        "n_cases": len(scores),
        "cases": [s.case_id for s in scores],
        "grid": grid.to_dict(),
        "n_settings": len(settings),
        "voxel_mm3": voxel_mm3,
        "selection_rule": "max mean lesion-wise Dice over WT/TC/ET; no region's mean Dice below the identity's; "
        "ties: lower mean lesion-wise HD95, then smaller thresholds",
        "selected": selected,
        "regions": regions,
        "timing": {
            "cases": len(scores),
            "settings": len(settings),
            "maps_scored": int(sum(s.n_maps for s in scores)),
            "scoring_seconds": round(scoring_seconds, 3),
            "seconds": round(time.perf_counter() - began, 3),
        },
        "failures": failures,
    }
    if model is not None:
        report["global_only"] = region_statistics(dice, hd, np.full(len(scores), global_index))
        report["case_clusters"] = {s.case_id: int(c) for s, c in zip(scores, clusters, strict=True)}
    config.tuning = {
        "definition": definition,
        "n_cases": len(scores),
        "voxel_mm3": voxel_mm3,
        "grid": grid.to_dict(),
        "global_setting": asdict(settings[global_index]),
        "mean_lesionwise_dice": {
            r: {
                "before": regions[r]["lesionwise_dice"]["before_mean"],
                "after": regions[r]["lesionwise_dice"]["after_mean"],
            }
            for r in REGIONS
        },
    }
    return TuneResult(config, settings, scores, clusters, chosen, report, failures)
