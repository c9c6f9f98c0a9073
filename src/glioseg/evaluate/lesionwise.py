"""The BraTS lesion-wise metrics, in the two definitions the challenges used.

``brats2023`` (public repository rachitsaluja/BraTS-2023-Metrics, ``metrics.py``, BraTS-SSA
settings) and ``brats2024-ssa`` (rachitsaluja/BraTS-2024-Metrics, ``metrics_SSA.py``, the
code that scored BraTS-Africa 2024).  glioseg computes them independently and reproduces
the official numbers to 1e-6 (see ``docs/evaluation.md``); only the work is organised
differently: everything happens in a crop around the tumour, and per-lesion work inside
each lesion's bounding box.

Common to both, for each region (WT = labels {1,2,3}, TC = {1,3}, ET = {3}):

* GT lesions are the 26-connected components of the GT region, merged when they fall in
  one component of the GT region dilated 3 times with the 18-neighbourhood element.
* A predicted lesion matches a GT lesion when it intersects that lesion dilated the same
  way; all matching predicted lesions are scored together against the GT lesion
  (Dice and HD95).  A GT lesion without match scores Dice 0 and HD95 374.
* Predicted lesions matching no GT lesion are false positives; each adds a term with
  Dice 0 and HD95 374.
* GT lesions of at most 50 mm^3 are left out of the scores and of the TP / FN counts (a
  prediction that matches them is still not a false positive).
* Lesion-wise Dice = sum of Dice over the kept GT lesions / (number kept + FP); HD95
  likewise with the 374 penalties; with neither kept lesions nor FP the scores are Dice 1
  and HD95 0.

``brats2023`` scores the raw 26-connected components of the prediction; legacy Dice,
HD95, sensitivity and specificity are the usual whole-region voxel metrics.

``brats2024-ssa`` first merges predicted components through their dilation too and deletes
merged predicted lesions of at most 50 voxels (in every tissue, NETC included).  In ET, GT
and predicted ET lesions are grouped through the NETC lesions they touch (see
:func:`glioseg.evaluate.components.group_by_touching`).  Its legacy metrics are computed on
the filtered prediction and, as in the official code, on lesion-*label* maps: the legacy
HD95 sees label values (surfel codes modulo 256) and the sensitivity / specificity count
label 1 as "positive" and sum label values for the totals.  These two quirks change the
numbers only when a region has more than one lesion; glioseg reproduces them for parity
and ``docs/evaluation.md`` explains them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from glioseg.data.labels import NETC, REGIONS, region_mask
from glioseg.evaluate.components import (
    DILATION_ITERATIONS,
    Box,
    bounding_box,
    group_by_touching,
    label_components,
    merge_by_dilation,
    pad_box,
    remove_small_lesions,
    shift_box,
    union_box,
)
from glioseg.evaluate.surface import hd95

#: The two definitions, the default first.
DEFINITIONS: tuple[str, str] = ("brats2024-ssa", "brats2023")
DEFAULT_DEFINITION = DEFINITIONS[0]
#: GT lesions of at most this volume (mm^3) are not scored; in ``brats2024-ssa`` merged
#: predicted lesions of at most this many *voxels* are deleted.
LESION_VOLUME_THRESHOLD = 50
#: HD95 (mm) given to a missed GT lesion, a false positive, or an empty mask against a non-empty one.
MISSED_HD95 = 374.0


@dataclass(frozen=True)
class LesionRecord:
    """One scored lesion of one region.

    Attributes
    ----------
    region : str
        ``WT``, ``TC`` or ``ET``.
    kind : str
        ``TP`` (GT lesion with at least one matching predicted lesion), ``FN`` (GT lesion
        without), ``FP`` (predicted lesion matching no GT lesion).
    gt_lesion : int or None
        Number of the GT lesion (None for FP).
    pred_lesions : tuple of int
        Numbers of the matching predicted lesions (the FP itself for FP).
    gt_volume, pred_volume : float
        mm^3.
    dice, hd95 : float
        Scores of this lesion (HD95 in mm, 374 for FN and FP).
    counted : bool
        False for GT lesions at or under the volume threshold, which do not enter the scores.
    """

    region: str
    kind: str
    gt_lesion: int | None
    pred_lesions: tuple[int, ...]
    gt_volume: float
    pred_volume: float
    dice: float
    hd95: float
    counted: bool


@dataclass
class RegionResult:
    """Scores of one region of one case (volumes in mm^3, HD95 in mm)."""

    region: str
    lesionwise_dice: float
    lesionwise_hd95: float
    legacy_dice: float
    legacy_hd95: float
    sensitivity: float
    specificity: float
    n_tp: int
    n_fp: int
    n_fn: int
    gt_volume_mm3: float
    pred_volume_mm3: float
    lesions: list[LesionRecord] = field(default_factory=list)

    #: Names of the per-case metrics, in CSV column order.
    METRICS = (
        "lesionwise_dice",
        "lesionwise_hd95",
        "legacy_dice",
        "legacy_hd95",
        "sensitivity",
        "specificity",
        "n_tp",
        "n_fp",
        "n_fn",
        "gt_volume_mm3",
        "pred_volume_mm3",
    )

    def metrics(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.METRICS}


@dataclass
class CaseResult:
    """All regions of one case under one definition."""

    case_id: str
    definition: str
    spacing: tuple[float, float, float]
    regions: dict[str, RegionResult]

    def row(self) -> dict[str, object]:
        """One flat row: ``case_id`` then ``<REGION>_<metric>`` for every region and metric."""
        out: dict[str, object] = {"case_id": self.case_id}
        for region in REGIONS:
            for name, value in self.regions[region].metrics().items():
                out[f"{region}_{name}"] = value
        return out

    def lesion_rows(self) -> list[dict[str, object]]:
        rows = []
        for region in REGIONS:
            for rec in self.regions[region].lesions:
                rows.append(
                    {
                        "case_id": self.case_id,
                        "region": region,
                        "kind": rec.kind,
                        "gt_lesion": rec.gt_lesion,
                        "pred_lesions": " ".join(str(i) for i in rec.pred_lesions),
                        "gt_volume_mm3": rec.gt_volume,
                        "pred_volume_mm3": rec.pred_volume,
                        "dice": rec.dice,
                        "hd95": rec.hd95,
                        "counted": rec.counted,
                    }
                )
        return rows


def evaluate_labels(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    definition: str = DEFAULT_DEFINITION,
    case_id: str = "",
) -> CaseResult:
    """Lesion-wise and legacy BraTS metrics of one prediction against its ground truth.

    Parameters
    ----------
    pred, gt : ndarray of int, shape (X, Y, Z)
        Canonical label maps (0 background, 1 NETC, 2 SNFH, 3 ET); use
        :func:`glioseg.data.labels.to_canonical` for legacy ET = 4 files.
    spacing : tuple of 3 floats
        Voxel size in mm along the array axes (volumes and HD95 honour it).
    definition : ``"brats2024-ssa"`` (default) or ``"brats2023"``
    case_id : str
        Carried into the result.

    Returns
    -------
    CaseResult
        ``regions["WT"|"TC"|"ET"]`` with lesion-wise Dice / HD95, legacy Dice / HD95,
        sensitivity, specificity, TP / FP / FN lesion counts, volumes, and per-lesion records.

    Examples
    --------
    >>> gt = np.zeros((20, 20, 20), np.uint8); gt[5:10, 5:10, 5:10] = 3
    >>> res = evaluate_labels(gt.copy(), gt, definition="brats2023")
    >>> res.regions["ET"].lesionwise_dice, res.regions["TC"].n_tp, res.regions["TC"].n_fp
    (1.0, 1, 0)
    """
    if definition not in DEFINITIONS:
        raise ValueError(f"unknown definition {definition!r}; expected one of {', '.join(DEFINITIONS)}")
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(
            f"prediction {pred.shape} and ground truth {gt.shape} must be 3-D arrays of one shape"
        )
    for name, arr in (("prediction", pred), ("ground truth", gt)):
        if arr.size and (arr.min() < 0 or arr.max() > 3):
            raise ValueError(f"{name} has labels outside 0..3; convert with to_canonical first")
    spacing = tuple(float(s) for s in spacing)
    box = bounding_box((pred > 0) | (gt > 0))
    if box is None:
        regions = {r: _empty_region(r) for r in REGIONS}
        return CaseResult(case_id, definition, spacing, regions)
    crop = pad_box(box, DILATION_ITERATIONS, pred.shape)
    p, g = np.asfortranarray(pred[crop]), np.asfortranarray(gt[crop])
    ctx = _Context(spacing=spacing, n_voxels=int(pred.size))
    if definition == "brats2023":
        regions = {region: _score_2023(ctx, region, g, p) for region in REGIONS}
    else:
        regions = {"WT": _score_2024(ctx, ("WT",), g, p)["WT"], **_score_2024(ctx, ("TC", "ET"), g, p)}
    return CaseResult(case_id, definition, spacing, regions)


def _tissue_crop(g: np.ndarray, p: np.ndarray, tissue: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``g`` and ``p`` cut to the box of ``tissue`` (either map) grown by the dilation margin; None if absent."""
    box = bounding_box(_region(g, tissue) | _region(p, tissue))
    if box is None:
        return None
    sub = pad_box(box, DILATION_ITERATIONS, g.shape)
    return np.asfortranarray(g[sub]), np.asfortranarray(p[sub])


def _score_2023(ctx: _Context, region: str, g: np.ndarray, p: np.ndarray) -> RegionResult:
    cut = _tissue_crop(g, p, region)
    if cut is None:
        return _empty_region(region)
    gm, pm = _region(cut[0], region), _region(cut[1], region)
    gt_lesions, gt_reach, _ = merge_by_dilation(gm)
    pred_lesions, _ = label_components(pm)
    legacy = _legacy_binary(ctx, gm, pm)
    return _score_lesions(ctx, region, gt_lesions, gt_reach, pred_lesions, legacy, True)


def _score_2024(
    ctx: _Context, regions: tuple[str, ...], g: np.ndarray, p: np.ndarray
) -> dict[str, RegionResult]:
    """BraTS 2024 SSA scores of ``regions``, all computed in the box of the first (WT, or TC which holds ET and NETC)."""
    cut = _tissue_crop(g, p, regions[0])
    if cut is None:
        return {region: _empty_region(region) for region in regions}
    g, p = cut
    tissues = list(regions) + (["NETC"] if "ET" in regions else [])
    gt_maps, gt_reach, pred_maps = {}, {}, {}
    for tissue in tissues:
        gt_maps[tissue], gt_reach[tissue], _ = merge_by_dilation(_region(g, tissue))
        pred_maps[tissue] = remove_small_lesions(
            merge_by_dilation(_region(p, tissue))[0], LESION_VOLUME_THRESHOLD
        )
    if "ET" in regions:
        lookup = group_by_touching(gt_maps["ET"], gt_maps["NETC"])
        gt_maps["ET"], gt_reach["ET"] = lookup[gt_maps["ET"]], lookup[gt_reach["ET"]]
        pred_maps["ET"] = group_by_touching(pred_maps["ET"], pred_maps["NETC"])[pred_maps["ET"]]
    out = {}
    for region in regions:
        gl, pl = gt_maps[region], pred_maps[region]
        if not gl.any() and not pl.any():
            out[region] = _empty_region(region)
            continue
        legacy = _legacy_label_maps(ctx, gl, pl)
        reusable = gl.max(initial=0) <= 1 and pl.max(initial=0) <= 1
        out[region] = _score_lesions(ctx, region, gl, gt_reach[region], pl, legacy, reusable)
    return out


@dataclass(frozen=True)
class _Context:
    spacing: tuple[float, float, float]
    n_voxels: int

    def volume(self, n: int) -> float:
        sx, sy, sz = self.spacing
        return float(n) * sx * sy * sz


@dataclass
class _Legacy:
    dice: float
    hd95: float
    sensitivity: float
    specificity: float
    gt_count: int
    pred_count: int


def _region(labels: np.ndarray, tissue: str) -> np.ndarray:
    """Mask of a tissue (``WT``, ``TC``, ``ET`` or ``NETC``) of a canonical label map (values 0..3)."""
    return labels == NETC if tissue == "NETC" else region_mask(labels, tissue)


def _empty_region(region: str) -> RegionResult:
    return RegionResult(region, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0, 0, 0, 0.0, 0.0, [])


def _dice(n_inter: int, n_pred: int, n_gt: int) -> float:
    if n_pred == 0 and n_gt == 0:
        return 1.0
    return 2.0 * n_inter / (n_pred + n_gt)


def _hd95_or_penalty(gt: np.ndarray, pred: np.ndarray, spacing) -> float:
    value = hd95(gt, pred, spacing)
    return MISSED_HD95 if np.isinf(value) else value


def _sens_spec(tp: float, fp: float, fn: float, tn: float, nothing: bool) -> tuple[float, float]:
    """GaNDLF-style sensitivity / specificity, as in the official scripts (tiny epsilon, empty/empty -> 1)."""
    eps = sys.float_info.min
    sensitivity = 1.0 * tp / (tp + fn + eps)
    specificity = 1.0 * tn / (tn + fp + eps)
    if nothing:
        sensitivity = 1.0
    return sensitivity, specificity


def _legacy_binary(ctx: _Context, gm: np.ndarray, pm: np.ndarray) -> _Legacy:
    n_gt, n_pred = int(np.count_nonzero(gm)), int(np.count_nonzero(pm))
    n_inter = int(np.count_nonzero(gm & pm))
    n_union = n_gt + n_pred - n_inter
    hd = 0.0 if n_gt == 0 and n_pred == 0 else _hd95_or_penalty(gm, pm, ctx.spacing)
    sens, spec = _sens_spec(
        n_inter, n_pred - n_inter, n_gt - n_inter, ctx.n_voxels - n_union, n_gt == n_pred == 0
    )
    return _Legacy(_dice(n_inter, n_pred, n_gt), hd, sens, spec, n_gt, n_pred)


def _legacy_label_maps(ctx: _Context, gt_lesions: np.ndarray, pred_lesions: np.ndarray) -> _Legacy:
    """Legacy metrics of the BraTS 2024 SSA code, which receive lesion-label maps (see module docs)."""
    gb, pb = gt_lesions > 0, pred_lesions > 0
    n_gt, n_pred = int(np.count_nonzero(gb)), int(np.count_nonzero(pb))
    n_inter = int(np.count_nonzero(gb & pb))
    hd = 0.0 if n_gt == 0 and n_pred == 0 else _hd95_or_penalty(gt_lesions, pred_lesions, ctx.spacing)
    # Label 1 counts as positive; totals are sums of label values (the reference's arithmetic).
    sum_pred, sum_gt = int(pred_lesions.sum(dtype=np.int64)), int(gt_lesions.sum(dtype=np.int64))
    g1, p1 = gt_lesions == 1, pred_lesions == 1
    tp = int(np.count_nonzero(g1 & p1))
    tn = ctx.n_voxels - int(np.count_nonzero(g1 | p1))
    sens, spec = _sens_spec(tp, sum_pred - tp, sum_gt - tp, tn, sum_pred == 0 and sum_gt == 0)
    return _Legacy(_dice(n_inter, n_pred, n_gt), hd, sens, spec, n_gt, n_pred)


def _lookup(ids, size: int) -> np.ndarray:
    lut = np.zeros(size, dtype=bool)
    lut[list(ids)] = True
    return lut


def _score_lesions(
    ctx: _Context,
    region: str,
    gt_lesions: np.ndarray,
    gt_reach: np.ndarray,
    pred_lesions: np.ndarray,
    legacy: _Legacy,
    legacy_reusable: bool,
) -> RegionResult:
    """Match GT and predicted lesions and aggregate the lesion-wise scores of one region.

    ``gt_reach`` numbers the dilation of every GT lesion like the lesion itself (the
    region where predicted lesions match it; dilations of different lesions never overlap
    because merged lesions are exactly the components of the dilated GT mask).
    """
    pred_counts = np.bincount(pred_lesions.ravel(order="K"))
    n_pred_ids = len(pred_counts)
    pred_ids = np.flatnonzero(pred_counts[1:]) + 1
    # Everything about GT lesions happens inside the box of their dilation.
    reach_box = bounding_box(gt_reach)
    if reach_box is None:
        gt_counts, matches, overlap, gt_boxes = np.zeros(1, np.int64), {}, np.zeros(1, np.int64), []
    else:
        reach, lesions, preds = gt_reach[reach_box], gt_lesions[reach_box], pred_lesions[reach_box]
        gt_counts = np.bincount(lesions.ravel(order="K"))
        # (GT lesion, predicted lesion) pairs within reach, and the overlap of each GT lesion.
        both = (reach > 0) & (preds > 0)
        codes = np.unique(reach[both].astype(np.int64) * n_pred_ids + preds[both])
        matches: dict[int, list[int]] = {}
        for gt_id, pred_id in zip((codes // n_pred_ids).tolist(), (codes % n_pred_ids).tolist(), strict=True):
            matches.setdefault(gt_id, []).append(pred_id)
        overlap = np.bincount(lesions[preds > 0].ravel(), minlength=len(gt_counts))
        origin = tuple(s.start for s in reach_box)
        gt_boxes = [
            None if b is None else shift_box(b, tuple(-o for o in origin))
            for b in ndimage.find_objects(lesions)
        ]
    pred_boxes = ndimage.find_objects(pred_lesions) if matches else []
    matched_any: set[int] = set()
    records: list[LesionRecord] = []
    for gt_id in range(1, len(gt_counts)):
        n_gt = int(gt_counts[gt_id])
        if n_gt == 0:
            continue
        matched = tuple(matches.get(gt_id, ()))
        matched_any.update(matched)
        gt_volume = ctx.volume(n_gt)
        counted = gt_volume > LESION_VOLUME_THRESHOLD
        if not matched:
            records.append(LesionRecord(region, "FN", gt_id, (), gt_volume, 0.0, 0.0, MISSED_HD95, counted))
            continue
        n_pred = int(sum(int(pred_counts[i]) for i in matched))
        dice = 2.0 * int(overlap[gt_id]) / (n_pred + n_gt)
        if legacy_reusable and n_gt == legacy.gt_count and len(matched) == len(pred_ids):
            hd = legacy.hd95  # the lesion and its match are the whole region: same masks as the legacy HD95
        else:
            box: Box = gt_boxes[gt_id - 1]
            span = union_box(box, *(pred_boxes[i - 1] for i in matched))
            lut = _lookup(matched, n_pred_ids)
            hd = _hd95_or_penalty(gt_lesions[span] == gt_id, lut[pred_lesions[span]], ctx.spacing)
        records.append(
            LesionRecord(region, "TP", gt_id, matched, gt_volume, ctx.volume(n_pred), dice, hd, counted)
        )
    false_positives = [int(i) for i in pred_ids if int(i) not in matched_any]
    for pred_id in false_positives:
        vol = ctx.volume(int(pred_counts[pred_id]))
        records.append(LesionRecord(region, "FP", None, (pred_id,), 0.0, vol, 0.0, MISSED_HD95, True))
    kept = [r for r in records if r.kind != "FP" and r.counted]
    n_fp = len(false_positives)
    denominator = len(kept) + n_fp
    if denominator == 0:
        lw_dice, lw_hd95 = 1.0, 0.0
    else:
        lw_dice = float(np.sum([r.dice for r in kept])) / denominator
        lw_hd95 = (float(np.sum([r.hd95 for r in kept])) + n_fp * MISSED_HD95) / denominator
    return RegionResult(
        region=region,
        lesionwise_dice=lw_dice,
        lesionwise_hd95=lw_hd95,
        legacy_dice=legacy.dice,
        legacy_hd95=legacy.hd95,
        sensitivity=legacy.sensitivity,
        specificity=legacy.specificity,
        n_tp=sum(1 for r in kept if r.kind == "TP"),
        n_fp=n_fp,
        n_fn=sum(1 for r in kept if r.kind == "FN"),
        gt_volume_mm3=ctx.volume(legacy.gt_count),
        pred_volume_mm3=ctx.volume(legacy.pred_count),
        lesions=records,
    )
