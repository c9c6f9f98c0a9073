"""Grid search of post-processing thresholds for the BraTS lesion-wise metrics.

The pipeline that is tuned (canonical order, see ``docs/postprocessing.md``)::

    1. remove WT components smaller than wt_min_size voxels      -> background
    2. keep the wt_keep largest WT components (0 = all)          -> background
    3. remove TC components smaller than tc_min_size voxels      -> SNFH
    4. remove ET components smaller than et_min_size voxels      -> NETC
    5. if ET voxels / WT voxels < et_ratio: all ET               -> NETC

Coarse to fine, so that every step only ever removes *whole components of the original
prediction*: a WT removal takes its TC and ET components with it, a TC removal its ET
components, an ET removal (to NETC) or the ratio rule changes neither TC nor WT.  Hence

* the result of any setting is a lookup table away from the components of the
  unprocessed prediction, labelled **once** per case and region (:class:`CasePlan`);
* applying the result again changes nothing (idempotence): the surviving components
  already pass every size test, and the ET / WT ratio the rule saw is the final one.

Scores.  Each region's lesion-wise score depends only on that region's final mask (ET in
``brats2024-ssa`` also on NETC, which is TC minus ET): WT on the kept WT components, TC on
the kept TC components, ET on the kept (TC, ET) components.  :func:`score_case` gives each
distinct region mask one :func:`~glioseg.evaluate.evaluate_labels` call (a call scores all
three regions, so one call can fill a new WT, TC and ET entry at once) and looks every
setting up in these caches.  A case x setting table is computed once; selection (global,
per cluster, or leave-one-out) is table arithmetic.

Selection rule (:func:`select_setting`): maximise the mean over cases of the mean
lesion-wise Dice of WT, TC and ET, subject to **no region's mean Dice being lower than
without post-processing** on the tuning cases (the identity, setting 0, is always a
candidate); ties go to the lower mean lesion-wise HD95, then to the earlier setting in grid
order (smaller thresholds first).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cc3d
import numpy as np

from glioseg.data.labels import ET, NETC, REGIONS, SNFH, region_mask
from glioseg.errors import ConfigError, InputError
from glioseg.evaluate.components import CONNECTIVITY, DILATION_ITERATIONS, bounding_box, pad_box
from glioseg.postprocess.config import Operation
from glioseg.postprocess.operations import largest_components

#: Margin kept around the tumour when a case is cropped for scoring: the metrics' dilation reach.
_MARGIN = DILATION_ITERATIONS
#: Floating-point slack of the never-lower rule (scores of identical maps are identical).
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Setting:
    """One point of the grid: thresholds of the canonical pipeline (module docstring).

    Sizes are voxels of the prediction grid; ``0`` (or ``1``) disables a size test,
    ``wt_keep = 0`` keeps every component and ``et_ratio = 0`` disables the ratio rule.
    """

    wt_min_size: int = 0
    wt_keep: int = 0
    tc_min_size: int = 0
    et_min_size: int = 0
    et_ratio: float = 0.0

    @property
    def is_identity(self) -> bool:
        return (
            self.wt_min_size <= 1
            and self.wt_keep <= 0
            and self.tc_min_size <= 1
            and self.et_min_size <= 1
            and self.et_ratio <= 0
        )

    def operations(self, voxel_mm3: float | None = None) -> list[Operation]:
        """The configuration operations of this setting (no-op steps left out; identity -> [])."""

        def size_param(n: int) -> dict:
            return {"min_size": int(n)} | ({"min_size_mm3": round(n * voxel_mm3, 3)} if voxel_mm3 else {})

        ops = []
        if self.wt_min_size > 1:
            ops.append(
                Operation(
                    "remove_small_components", {"target": "WT", **size_param(self.wt_min_size), "fill": 0}
                )
            )
        if self.wt_keep > 0:
            ops.append(
                Operation("keep_largest_components", {"target": "WT", "k": int(self.wt_keep), "fill": 0})
            )
        if self.tc_min_size > 1:
            ops.append(
                Operation(
                    "remove_small_components", {"target": "TC", **size_param(self.tc_min_size), "fill": SNFH}
                )
            )
        if self.et_min_size > 1:
            ops.append(
                Operation(
                    "remove_small_components", {"target": "ET", **size_param(self.et_min_size), "fill": NETC}
                )
            )
        if self.et_ratio > 0:
            ops.append(
                Operation(
                    "redefine_label",
                    {"label": ET, "into": NETC, "min_fraction": float(self.et_ratio), "of": "WT"},
                )
            )
        return ops

    def describe(self) -> str:
        if self.is_identity:
            return "identity"
        parts = []
        if self.wt_min_size > 1:
            parts.append(f"WT<{self.wt_min_size}")
        if self.wt_keep > 0:
            parts.append(f"WT keep {self.wt_keep}")
        if self.tc_min_size > 1:
            parts.append(f"TC<{self.tc_min_size}")
        if self.et_min_size > 1:
            parts.append(f"ET<{self.et_min_size}")
        if self.et_ratio > 0:
            parts.append(f"ET/WT<{self.et_ratio:g}->NETC")
        return ", ".join(parts)


@dataclass(frozen=True)
class Grid:
    """Values tried for each threshold; the search is the full product (identity always included).

    The defaults: 10 WT sizes x 10 TC sizes x 10 ET sizes x 7 ratios = 7,000 settings.
    """

    wt_min_size: tuple[int, ...] = (0, 25, 50, 100, 200, 300, 500, 1000, 1500, 2000)
    wt_keep: tuple[int, ...] = (0,)
    tc_min_size: tuple[int, ...] = (0, 10, 25, 50, 75, 100, 150, 200, 300, 500)
    et_min_size: tuple[int, ...] = (0, 10, 25, 50, 75, 100, 150, 200, 300, 500)
    et_ratio: tuple[float, ...] = (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1)

    def axes(self) -> dict[str, list]:
        """Sorted values of each axis, each including its 'off' value 0."""
        out = {}
        for name in ("wt_min_size", "wt_keep", "tc_min_size", "et_min_size", "et_ratio"):
            kind = float if name == "et_ratio" else int
            values = sorted({kind(v) for v in getattr(self, name)} | {kind(0)})
            if values[0] < 0:
                raise ConfigError(f"grid {name}: values must be >= 0, got {values[0]}")
            out[name] = values
        return out

    def settings(self) -> list[Setting]:
        """Every combination, in lexicographic order of the sorted axes; index 0 is the identity."""
        return [Setting(*combo) for combo in itertools.product(*self.axes().values())]

    def to_dict(self) -> dict:
        return self.axes()

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = "grid") -> Grid:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(source, f"unknown grid axis {unknown[0]!r} (known: {', '.join(sorted(known))})")
        try:
            values = {k: tuple(float(x) if k == "et_ratio" else int(x) for x in v) for k, v in d.items()}
        except (TypeError, ValueError) as exc:
            raise InputError(source, f"grid values must be lists of numbers ({exc})") from None
        return cls(**values)


class CasePlan:
    """Components of one prediction, labelled once; the map of any :class:`Setting` by lookup tables.

    Parameters
    ----------
    labels : ndarray of uint8, shape (X, Y, Z)
        Canonical prediction (typically cropped around the tumour; cropping keeps the
        components and their raster order).

    Attributes
    ----------
    n_components : dict
        Number of 26-connected components of WT, TC and ET.
    """

    def __init__(self, labels: np.ndarray):
        self.labels = np.ascontiguousarray(labels, dtype=np.uint8)
        masks = {region: region_mask(self.labels, region) for region in REGIONS}
        self.ids, self.sizes = {}, {}
        for region, mask in masks.items():
            ids, n = cc3d.connected_components(
                np.ascontiguousarray(mask), connectivity=CONNECTIVITY, return_N=True
            )
            self.ids[region] = ids
            self.sizes[region] = np.bincount(ids.ravel(), minlength=int(n) + 1).astype(np.int64)
        # Each TC component lies in one WT component, each ET component in one TC component.
        self.parent = {}
        for child, parent in (("TC", "WT"), ("ET", "TC")):
            where = masks[child]
            table = np.zeros(self.sizes[child].size, dtype=np.int64)
            table[self.ids[child][where]] = self.ids[parent][where]
            self.parent[child] = table
        self.n_components = {r: int(s.size - 1) for r, s in self.sizes.items()}

    def kept(self, setting: Setting) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flags of the WT, TC and ET components that survive ``setting`` (index 0 = background, True)."""
        wt_sizes, tc_sizes, et_sizes = self.sizes["WT"], self.sizes["TC"], self.sizes["ET"]
        kw = (wt_sizes >= setting.wt_min_size) & largest_components(wt_sizes, setting.wt_keep)
        kw[0] = True
        kt = kw[self.parent["TC"]] & (tc_sizes >= setting.tc_min_size)
        kt[0] = True
        ke = kt[self.parent["ET"]] & (et_sizes >= setting.et_min_size)
        ke[0] = True
        if setting.et_ratio > 0:
            wt_voxels = int(wt_sizes[1:][kw[1:]].sum())
            et_voxels = int(et_sizes[1:][ke[1:]].sum())
            if et_voxels and wt_voxels and et_voxels / wt_voxels < setting.et_ratio:
                ke[1:] = False
        return kw, kt, ke

    def render(self, kw: np.ndarray, kt: np.ndarray, ke: np.ndarray) -> np.ndarray:
        """The label map where components not flagged are removed (ET -> NETC, TC -> SNFH, WT -> 0)."""
        out = self.labels.copy()
        out[~ke[self.ids["ET"]]] = NETC
        out[~kt[self.ids["TC"]]] = SNFH
        out[~kw[self.ids["WT"]]] = 0
        return out

    def apply(self, setting: Setting) -> np.ndarray:
        """The label map of ``setting`` (equals running ``setting.operations()`` on ``labels``)."""
        return self.render(*self.kept(setting))


@dataclass
class CaseScores:
    """Lesion-wise scores of one case under every setting of a grid.

    Attributes
    ----------
    dice, hd95 : ndarray of float64, shape (S, 3)
        Lesion-wise Dice and HD95 (mm) per setting, regions in :data:`REGIONS` order.
    n_maps : int
        Distinct label maps scored (``evaluate_labels`` calls).
    n_components : dict
        Components of the unprocessed prediction per region.
    seconds : float
    features : dict or None
        Radiomic features of the unprocessed prediction (only when clusters were asked for).
    """

    case_id: str
    dice: np.ndarray
    hd95: np.ndarray
    n_maps: int = 0
    n_components: dict = field(default_factory=dict)
    seconds: float = 0.0
    voxel_mm3: float = 1.0
    features: dict | None = None


def score_case(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: tuple[float, float, float],
    settings: Sequence[Setting],
    definition: str = "brats2024-ssa",
    case_id: str = "",
) -> CaseScores:
    """Lesion-wise Dice and HD95 of one case for every setting, scoring each distinct region mask once.

    Parameters
    ----------
    pred, gt : ndarray of uint8, shape (X, Y, Z)
        Canonical prediction (unprocessed) and ground truth.
    spacing : tuple of 3 float
        Voxel size in mm.
    settings : sequence of Setting
        Usually ``Grid().settings()``.
    definition : ``"brats2024-ssa"`` or ``"brats2023"``

    Returns
    -------
    CaseScores
        Row ``s`` of ``dice`` / ``hd95`` equals the lesion-wise scores of
        ``evaluate_labels(apply_operations(pred, settings[s].operations()), gt)``.
    """
    from glioseg.evaluate import evaluate_labels

    began = time.perf_counter()
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    n = len(settings)
    dice = np.empty((n, len(REGIONS)), dtype=np.float64)
    hd = np.empty((n, len(REGIONS)), dtype=np.float64)
    box = bounding_box((pred > 0) | (gt > 0))
    voxel_mm3 = float(np.prod(spacing))
    if box is None:  # nothing anywhere: every setting gives the empty map
        result = evaluate_labels(pred, gt, spacing, definition, case_id)
        dice[:] = [result.regions[r].lesionwise_dice for r in REGIONS]
        hd[:] = [result.regions[r].lesionwise_hd95 for r in REGIONS]
        return CaseScores(
            case_id, dice, hd, 1, {r: 0 for r in REGIONS}, time.perf_counter() - began, voxel_mm3
        )
    # Cropping with the metrics' dilation margin changes no lesion-wise score (docs/evaluation.md).
    box = pad_box(box, _MARGIN, pred.shape)
    plan = CasePlan(pred[box])
    g = np.ascontiguousarray(gt[box])

    key_ids: list[dict[bytes, int]] = [{}, {}, {}]

    def key_id(level: int, flags: np.ndarray) -> int:
        return key_ids[level].setdefault(np.packbits(flags).tobytes(), len(key_ids[level]))

    flags_of: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    keys = np.empty((n, 3), dtype=np.int64)  # (WT key, TC key, ET key) of each setting
    for s, setting in enumerate(settings):
        kw, kt, ke = plan.kept(setting)
        # ET in brats2024-ssa also sees NETC (TC minus ET): its mask is fixed by the kept TC and ET components
        et_key = key_id(2, ke if definition == "brats2023" else np.concatenate([kt, ke]))
        w, t = key_id(0, kw), key_id(1, kt)
        keys[s] = (w, t, et_key)
        flags_of.setdefault((w, t, et_key), (kw, kt, ke))
    # Phase 1: one full map per distinct WT mask, chosen to fill new TC and ET entries too.
    # Phase 2: the remaining TC / ET entries from "core" maps, where SNFH is set to 0 in the
    # prediction and the ground truth: TC and ET (and NETC) are unchanged, so are their scores,
    # and the WT part of the call shrinks to the core.
    done: list[dict[int, tuple[float, float]]] = [{}, {}, {}]
    g_core = np.where(g == SNFH, 0, g).astype(np.uint8)
    n_maps = 0

    def score(triple, flags, core: bool) -> None:
        nonlocal n_maps
        labels = plan.render(*flags)
        if core:
            labels[labels == SNFH] = 0
        result = evaluate_labels(labels, g_core if core else g, spacing, definition, case_id)
        n_maps += 1
        for i in range(1 if core else 0, 3):
            r = result.regions[REGIONS[i]]
            done[i].setdefault(triple[i], (r.lesionwise_dice, r.lesionwise_hd95))

    def cover(level: int, core: bool) -> None:
        """Score maps until every key of ``level`` is done, each covering as many new entries as possible."""
        for key in sorted({t[level] for t in flags_of}):
            if key in done[level]:
                continue
            candidates = [t for t in flags_of if t[level] == key]
            best = max(candidates, key=lambda t: sum(t[i] not in done[i] for i in range(1 if core else 0, 3)))
            score(best, flags_of[best], core)

    cover(0, core=False)
    cover(2, core=True)
    cover(1, core=True)
    for i in range(3):
        table = np.array([done[i][k] for k in range(max(done[i]) + 1)]) if done[i] else np.zeros((0, 2))
        dice[:, i] = table[keys[:, i], 0]
        hd[:, i] = table[keys[:, i], 1]
    return CaseScores(
        case_id, dice, hd, n_maps, dict(plan.n_components), time.perf_counter() - began, voxel_mm3
    )


# --------------------------------------------------------------------------- selection


def select_setting(
    dice: np.ndarray, hd95: np.ndarray, cases: np.ndarray | Sequence[int] | None = None
) -> int:
    """Index of the best setting on ``cases`` (rows of the case x setting tables).

    Parameters
    ----------
    dice, hd95 : ndarray, shape (N, S, 3)
        Lesion-wise Dice and HD95 of N cases under S settings (setting 0 = identity), regions
        in :data:`REGIONS` order.
    cases : indices into N, optional
        The tuning cases (default all).

    Returns
    -------
    int
        The setting with the highest mean (over cases and regions) lesion-wise Dice among
        those that lower no region's mean Dice below the identity's; ties: lower mean HD95,
        then the lower index.  0 when nothing qualifies better than the identity.
    """
    rows = np.arange(dice.shape[0]) if cases is None else np.asarray(cases, dtype=np.int64)
    if rows.size == 0:
        return 0
    region_dice = dice[rows].mean(axis=0)  # (S, 3)
    feasible = np.all(region_dice >= region_dice[0] - _TOLERANCE, axis=1)
    objective = region_dice.mean(axis=1)
    mean_hd = hd95[rows].mean(axis=(0, 2))
    best = 0
    for s in np.flatnonzero(feasible):
        if objective[s] > objective[best] + _TOLERANCE or (
            abs(objective[s] - objective[best]) <= _TOLERANCE and mean_hd[s] < mean_hd[best] - _TOLERANCE
        ):
            best = int(s)
    return best


def paired_statistics(
    before: np.ndarray, after: np.ndarray, higher_is_better: bool = True, n_boot: int = 10_000, seed: int = 0
) -> dict:
    """Paired comparison of per-case scores after vs. before post-processing.

    Returns ``n``, ``before_mean``, ``after_mean``, ``mean_difference`` (after - before), a
    percentile bootstrap 95 % CI of the mean difference (``n_boot`` resamples of the cases,
    ``numpy.random.default_rng(seed)``), the two-sided Wilcoxon signed-rank p-value
    (``scipy.stats.wilcoxon``, zero differences dropped; 1.0 when every difference is 0),
    and how many cases got better, worse or stayed the same.
    """
    from glioseg.evaluate.stats import paired_difference

    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    d = a - b
    n = int(d.size)
    if n == 0:
        return {"n": 0}
    stats = paired_difference(b, a, n_boot=n_boot, confidence=0.95, seed=seed)
    sign = 1 if higher_is_better else -1
    return {
        "n": n,
        "before_mean": stats.mean_a,
        "after_mean": stats.mean_b,
        "mean_difference": stats.mean_difference,
        "ci95_low": stats.ci_low,
        "ci95_high": stats.ci_high,
        "wilcoxon_p": stats.p_wilcoxon,
        "n_better": int(np.sum(sign * d > 0)),
        "n_worse": int(np.sum(sign * d < 0)),
        "n_unchanged": int(np.sum(d == 0)),
    }


def region_statistics(dice: np.ndarray, hd95: np.ndarray, chosen: np.ndarray, **options) -> dict:
    """:func:`paired_statistics` per region and metric of the per-case ``chosen`` settings vs. the identity.

    ``dice`` / ``hd95`` are (N, S, 3) tables; ``chosen`` (N,) the setting index applied to each case.
    Returns ``{region: {"lesionwise_dice": stats, "lesionwise_hd95": stats}}``.
    """
    rows = np.arange(dice.shape[0])
    out = {}
    for i, region in enumerate(REGIONS):
        out[region] = {
            "lesionwise_dice": paired_statistics(dice[:, 0, i], dice[rows, chosen, i], True, **options),
            "lesionwise_hd95": paired_statistics(hd95[:, 0, i], hd95[rows, chosen, i], False, **options),
        }
    return out


# --------------------------------------------------------------------------- cohorts


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
    from glioseg.evaluate.runner import map_cases
    from glioseg.postprocess.config import needs_quality

    if definition not in DEFINITIONS:
        raise ConfigError(f"unknown definition {definition!r}; choose one of {', '.join(DEFINITIONS)}")
    if geometry not in ("strict", "shape"):
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


# --------------------------------------------------------------------------- tuning


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


def stack_scores(scores: Sequence[CaseScores]) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, 3) Dice and HD95 tables of a list of :class:`CaseScores`."""
    return np.stack([s.dice for s in scores]), np.stack([s.hd95 for s in scores])


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
    import pandas as pd

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
        frame = pd.DataFrame([s.features for s in scores])
        clusters = model.predict(model.matrix(frame, "prediction features"))
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
