"""Lesion-wise scores of one case under every setting of a grid, each distinct region mask scored once.

Each region's lesion-wise score depends only on that region's final mask (ET in
``brats2024-ssa`` also on NETC, which is TC minus ET): WT on the kept WT components, TC on
the kept TC components, ET on the kept (TC, ET) components.  :func:`score_case` gives each
distinct region mask one :func:`~glioseg.evaluate.evaluate_labels` call (a call scores all
three regions, so one call can fill a new WT, TC and ET entry at once) and looks every
setting up in these caches.  A case x setting table is computed once; selection (global,
per cluster, or leave-one-out, :mod:`glioseg.postprocess.selection`) is table arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cc3d
import numpy as np

from glioseg.data.labels import NETC, REGIONS, SNFH, region_mask
from glioseg.evaluate.components import CONNECTIVITY, DILATION_ITERATIONS, bounding_box, pad_box
from glioseg.evaluate.lesionwise import evaluate_labels
from glioseg.postprocess.grid import Setting
from glioseg.postprocess.operations import largest_components

#: Margin kept around the tumour when a case is cropped for scoring: the metrics' dilation reach.
_MARGIN = DILATION_ITERATIONS
#: Kept flags of the WT, TC and ET components under one setting (:meth:`CasePlan.kept`).
Flags = tuple[np.ndarray, np.ndarray, np.ndarray]


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
    keys, flags_of = _distinct_masks(plan, settings, definition)
    scores = _MaskScores(plan, np.ascontiguousarray(gt[box]), spacing, definition, case_id)
    scores.fill(flags_of)
    for i in range(3):
        table = scores.table(i)
        dice[:, i] = table[keys[:, i], 0]
        hd[:, i] = table[keys[:, i], 1]
    return CaseScores(
        case_id, dice, hd, scores.n_maps, dict(plan.n_components), time.perf_counter() - began, voxel_mm3
    )


def _number(numbers: dict[bytes, int], flags: np.ndarray) -> int:
    """The number of the mask that ``flags`` keep: the next free one when first seen."""
    return numbers.setdefault(np.packbits(flags).tobytes(), len(numbers))


def _distinct_masks(
    plan: CasePlan, settings: Sequence[Setting], definition: str
) -> tuple[np.ndarray, dict[tuple[int, int, int], Flags]]:
    """Number the distinct WT, TC and ET masks that ``settings`` give.

    Returns ``keys``, shape (S, 3): the numbers of each setting's WT, TC and ET mask (equal
    numbers, equal masks), and for each distinct triple of numbers the kept flags of the
    first setting that gives it.
    """
    numbers: list[dict[bytes, int]] = [{}, {}, {}]
    flags_of: dict[tuple[int, int, int], Flags] = {}
    keys = np.empty((len(settings), 3), dtype=np.int64)
    for s, setting in enumerate(settings):
        kw, kt, ke = plan.kept(setting)
        # ET in brats2024-ssa also sees NETC (TC minus ET): its mask is fixed by the kept TC and ET components
        et_key = _number(numbers[2], ke if definition == "brats2023" else np.concatenate([kt, ke]))
        w, t = _number(numbers[0], kw), _number(numbers[1], kt)
        keys[s] = (w, t, et_key)
        flags_of.setdefault((w, t, et_key), (kw, kt, ke))
    return keys, flags_of


class _MaskScores:
    """Lesion-wise (Dice, HD95) of every distinct WT, TC and ET mask of one case, by mask number.

    :meth:`fill` scores as few label maps as it can.  Phase 1: one full map per distinct WT
    mask, chosen to fill new TC and ET entries too.  Phase 2: the remaining TC / ET entries
    from "core" maps, where SNFH is set to 0 in the prediction and the ground truth: TC and
    ET (and NETC) are unchanged, so are their scores, and the WT part of the call shrinks
    to the core.
    """

    def __init__(
        self,
        plan: CasePlan,
        gt: np.ndarray,
        spacing: tuple[float, float, float],
        definition: str,
        case_id: str,
    ):
        self.plan = plan
        self.gt = gt
        self.gt_core = np.where(gt == SNFH, 0, gt).astype(np.uint8)
        self.spacing = spacing
        self.definition = definition
        self.case_id = case_id
        #: (Dice, HD95) of the WT, TC and ET masks scored so far, by mask number.
        self.done: list[dict[int, tuple[float, float]]] = [{}, {}, {}]
        #: Label maps scored (``evaluate_labels`` calls).
        self.n_maps = 0

    def fill(self, flags_of: dict[tuple[int, int, int], Flags]) -> None:
        """Score maps until every WT, TC and ET mask of ``flags_of`` (see :func:`_distinct_masks`) is done."""
        self._cover(flags_of, 0, core=False)
        self._cover(flags_of, 2, core=True)
        self._cover(flags_of, 1, core=True)

    def table(self, level: int) -> np.ndarray:
        """(Dice, HD95) of the masks of ``level`` (0 WT, 1 TC, 2 ET) by number, shape (K, 2)."""
        done = self.done[level]
        return np.array([done[k] for k in range(max(done) + 1)]) if done else np.zeros((0, 2))

    def _cover(self, flags_of: dict[tuple[int, int, int], Flags], level: int, core: bool) -> None:
        """Score maps until every key of ``level`` is done, each covering as many new entries as possible."""
        for key in sorted({t[level] for t in flags_of}):
            if key in self.done[level]:
                continue
            candidates = [t for t in flags_of if t[level] == key]
            best = max(candidates, key=lambda t: self._new_entries(t, core))
            self._score(best, flags_of[best], core)

    def _new_entries(self, triple: tuple[int, int, int], core: bool) -> int:
        return sum(triple[i] not in self.done[i] for i in range(1 if core else 0, 3))

    def _score(self, triple: tuple[int, int, int], flags: Flags, core: bool) -> None:
        labels = self.plan.render(*flags)
        if core:
            labels[labels == SNFH] = 0
        gt = self.gt_core if core else self.gt
        result = evaluate_labels(labels, gt, self.spacing, self.definition, self.case_id)
        self.n_maps += 1
        for i in range(1 if core else 0, 3):
            r = result.regions[REGIONS[i]]
            self.done[i].setdefault(triple[i], (r.lesionwise_dice, r.lesionwise_hd95))


def stack_scores(scores: Sequence[CaseScores]) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, 3) Dice and HD95 tables of a list of :class:`CaseScores`."""
    return np.stack([s.dice for s in scores]), np.stack([s.hd95 for s in scores])
