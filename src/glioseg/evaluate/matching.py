"""Pair prediction files with ground-truth files by BraTS case ID.

Names recognised (``.nii.gz`` or ``.nii``):

* predictions: ``<ID>.nii.gz``, ``<ID>-seg.nii.gz``, ``<ID>-pred.nii.gz`` (also with ``_seg`` /
  ``_pred``), anywhere under the prediction folder;
* ground truth: ``<ID>/<ID>-seg.nii.gz`` (BraTS 2023+) or ``<ID>/<ID>_seg.nii.gz`` (BraTS
  2018-2021) inside case folders, or a flat folder of ``<ID>-seg.nii.gz`` / ``<ID>.nii.gz``
  files (e.g. nnU-Net ``labelsTr``).

Image files of a case (``-t1n``, ``_flair``, ..., anything in nnU-Net ``imagesTr`` /
``imagesTs``) are never taken for segmentations.  IDs are matched exactly (``BraTS-SSA-00002-000``, ``Brats18_CBICA_ABM_1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from glioseg.data.io import strip_nifti_suffix, walk_tree
from glioseg.errors import ConfigError, InputError

_SEG_SUFFIX = re.compile(r"^(?P<id>.+?)[-_](?P<kind>seg|pred)$")
_IMAGE_SUFFIX = re.compile(r"[-_](t1n|t1c|t2w|t2f|t1|t1ce|t2|flair)$")
_IMAGE_FOLDERS = frozenset({"imagesTr", "imagesTs"})


@dataclass(frozen=True)
class Pair:
    """A prediction and the ground truth of the same case."""

    case_id: str
    pred: Path | None  # None: no prediction, scored as empty (evaluate's missing="empty")
    gt: Path


@dataclass
class Matching:
    """Result of :func:`match_cases`.

    Attributes
    ----------
    pairs : list of Pair
        Sorted by case ID.
    missing_predictions : dict
        Case ID -> ground-truth file, for GT cases without a prediction.
    unmatched_predictions : dict
        Case ID -> prediction file, for predictions without ground truth.
    problems : dict
        Case ID -> InputError, for case IDs claimed by two files (left out of ``pairs``).
    """

    pairs: list[Pair] = field(default_factory=list)
    missing_predictions: dict[str, Path] = field(default_factory=dict)
    unmatched_predictions: dict[str, Path] = field(default_factory=dict)
    problems: dict[str, InputError] = field(default_factory=dict)


def _stem(path: Path) -> str | None:
    if path.name.startswith(
        "."
    ):  # hidden: a writer's temporary file (.<ID>.nii.gz.*.part.nii.gz), macOS ._ files
        return None
    return strip_nifti_suffix(path.name)


def prediction_case_id(path: str | Path) -> str | None:
    """Case ID of a prediction file name, or ``None`` when it is not a segmentation name.

    Examples
    --------
    >>> prediction_case_id("BraTS-SSA-00002-000.nii.gz"), prediction_case_id("Brats18_CBICA_ABM_1-pred.nii.gz")
    ('BraTS-SSA-00002-000', 'Brats18_CBICA_ABM_1')
    >>> prediction_case_id("BraTS-SSA-00002-000-t1n.nii.gz") is None
    True
    >>> prediction_case_id(".BraTS-SSA-00002-000.nii.gz.x1y2.part.nii.gz") is None  # a killed writer's file
    True
    """
    stem = _stem(Path(path))
    if stem is None or _IMAGE_SUFFIX.search(stem):
        return None
    match = _SEG_SUFFIX.match(stem)
    return match["id"] if match else stem


def ground_truth_case_id(path: str | Path) -> str | None:
    """Case ID of a ground-truth file: ``<ID>-seg`` / ``<ID>_seg``, or ``<ID>`` alone; ``None`` for images."""
    stem = _stem(Path(path))
    if stem is None or _IMAGE_SUFFIX.search(stem):
        return None
    match = _SEG_SUFFIX.match(stem)
    if match:
        return match["id"] if match["kind"] == "seg" else None
    return stem


def _collect(root: Path, case_id_of) -> tuple[dict[str, Path | None], dict[str, InputError]]:
    found: dict[str, list[Path]] = {}
    for path in walk_tree(root)[1]:  # follows links to case folders
        if _IMAGE_FOLDERS.intersection(path.relative_to(root).parts[:-1]):
            continue
        case_id = case_id_of(path)
        if case_id is not None:
            found.setdefault(case_id, []).append(path)
    files: dict[str, Path | None] = {}
    problems = {}
    for case_id, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(str(p.relative_to(root)) for p in paths)
            problems[case_id] = InputError(root, f"case {case_id}: more than one file claims it ({names})")
            files[case_id] = None  # ambiguous: reported once, never paired
        else:
            files[case_id] = paths[0]
    return files, problems


def match_cases(pred: str | Path, gt: str | Path) -> Matching:
    """Pair predictions with ground truth.

    Parameters
    ----------
    pred, gt : path-like
        Two files (one case) or two folders (matched by case ID).

    Raises
    ------
    InputError
        A path does not exist, or no prediction matches any ground-truth case.
    ConfigError
        One path is a file and the other a folder.
    """
    pred, gt = Path(pred), Path(gt)
    for path, what in ((pred, "prediction"), (gt, "ground truth")):
        if not path.exists():
            raise InputError(path, f"{what} not found")
    if pred.is_file() != gt.is_file():
        raise ConfigError(f"--pred {pred} and --gt {gt} must be two files or two folders")
    if pred.is_file():
        case_id = ground_truth_case_id(gt) or prediction_case_id(pred) or _stem(gt) or gt.name
        return Matching(pairs=[Pair(case_id, pred, gt)])
    gts, gt_problems = _collect(gt, ground_truth_case_id)
    preds, pred_problems = _collect(pred, prediction_case_id)
    if not gts:
        raise InputError(
            gt,
            "no ground-truth segmentation found (expected <ID>/<ID>-seg.nii.gz, <ID>_seg.nii.gz or <ID>.nii.gz)",
        )
    result = Matching(problems={**gt_problems, **pred_problems})
    for case_id in sorted(gts):
        gt_file, pred_file = gts[case_id], preds.get(case_id)
        if gt_file is None or (case_id in preds and pred_file is None):
            continue  # ambiguous, already in problems
        if pred_file is None:
            result.missing_predictions[case_id] = gt_file
        else:
            result.pairs.append(Pair(case_id, pred_file, gt_file))
    result.unmatched_predictions = {c: p for c, p in sorted(preds.items()) if c not in gts and p is not None}
    if not result.pairs:
        shown = ", ".join(sorted(preds)[:3]) or "none"
        raise InputError(
            pred,
            f"no prediction matches any of the {len(gts)} ground-truth case(s) in {gt} "
            f"(prediction IDs found: {shown}); name predictions <ID>.nii.gz, <ID>-seg.nii.gz or <ID>-pred.nii.gz",
        )
    return result
