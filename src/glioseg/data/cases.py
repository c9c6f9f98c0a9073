"""Finding BraTS cases in a folder and loading them as validated arrays.

Three layouts are recognised, and may be mixed under one root:

``brats2023``
    ``<ID>/<ID>-t1n.nii.gz``, ``-t1c``, ``-t2w``, ``-t2f`` and optionally ``-seg``
    (BraTS 2023 and later, e.g. ``BraTS-SSA-00002-000``).
``brats-legacy``
    ``<ID>/<ID>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair`` and optionally ``_seg``
    (BraTS 2018-2021, legacy labels with ET = 4).
``nnunet``
    ``imagesTr/<ID>_0000.nii.gz`` ... ``_0003`` with ``labelsTr/<ID>.nii.gz`` (and
    ``imagesTs/`` without labels), channel names and label meaning from ``dataset.json``.

Whatever the layout, images are returned in the fixed channel order
``t1n, t1c, t2w, t2f`` and labels in the canonical convention (1 NETC, 2 SNFH, 3 ET).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.data.io import (
    Geometry,
    load_label,
    load_volume,
    read_data,
    read_image,
    read_json,
    strip_nifti_suffix,
    walk_tree,
)
from glioseg.data.labels import ET, NETC, SNFH
from glioseg.data.modalities import (
    BRATS2023_SUFFIX,
    BRATS_LEGACY_SUFFIX,
    MODALITIES,
    modality_from_name,
)
from glioseg.errors import GliosegError, InputError

_BRATS2023_RE = re.compile(r"^(?P<id>.+)-(?P<key>t1n|t1c|t2w|t2f|seg)$")
_LEGACY_RE = re.compile(r"^(?P<id>.+)_(?P<key>t1|t1ce|t2|flair|seg)$")
_NNUNET_IMAGE_RE = re.compile(r"^(?P<id>.+)_(?P<channel>\d{4})$")


#: Suffix of the record ``glioseg synth`` writes beside each synthetic case (``<ID>-synth.json``).
SYNTH_RECORD_SUFFIX = "-synth.json"


@dataclass(frozen=True)
class Case:
    """Where the files of one case are.

    Attributes
    ----------
    case_id : str
        BraTS identifier (``BraTS-SSA-00002-000``, ``Brats18_CBICA_ABM_1``, ...).
    images : dict
        Modality key (``t1n``, ``t1c``, ``t2w``, ``t2f``) -> file path.
    label : Path or None
        Ground-truth segmentation, when present.
    layout : str
        ``brats2023``, ``brats-legacy`` or ``nnunet``.
    label_map : tuple of (int, int) pairs
        How the stored label values map to canonical ones (identity for BraTS layouts;
        nnU-Net datasets may number the regions differently, see :func:`_nnunet_label_map`).
    """

    case_id: str
    images: dict[str, Path]
    label: Path | None = None
    layout: str = "brats2023"
    label_map: tuple[tuple[int, int], ...] = ()

    @property
    def folder(self) -> Path:
        return next(iter(self.images.values())).parent

    @property
    def synthetic(self) -> bool:
        """Whether ``glioseg synth`` wrote this case (its record ``<ID>-synth.json`` lies beside the images)."""
        return (self.folder / f"{self.case_id}{SYNTH_RECORD_SUFFIX}").exists()


@dataclass
class CaseData:
    """A loaded, validated case.

    Attributes
    ----------
    case_id : str
    image : ndarray, float32, shape (4, X, Y, Z)
        Channels in the order :data:`glioseg.data.modalities.MODALITIES`, intensities as stored.
    label : ndarray of uint8, shape (X, Y, Z), or None
        Canonical labels.
    reference : nibabel.Nifti1Image
        The ``t1n`` image (header only): the grid every output of this case is written on.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    reference: nib.Nifti1Image

    @property
    def geometry(self) -> Geometry:
        return Geometry.of(self.reference)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.reference.affine)


@dataclass
class DiscoveryResult:
    """Cases found under a root, and the ones that could not be assembled (with the reason)."""

    cases: list[Case] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)

    def by_id(self) -> dict[str, Case]:
        return {c.case_id: c for c in self.cases}


def discover_cases(root: str | Path) -> DiscoveryResult:
    """List the cases under ``root`` (a case folder, a folder of cases, or an nnU-Net raw dataset).

    Files are matched by name only; nothing is read except ``dataset.json``.  A case
    with a missing modality or two files claiming the same modality is reported in
    :attr:`DiscoveryResult.errors` and the other cases are still listed.

    Raises
    ------
    InputError
        When ``root`` does not exist or holds no recognisable case at all.

    Examples
    --------
    >>> result = discover_cases("data/BraTS-SSA")          # doctest: +SKIP
    >>> [c.case_id for c in result.cases][:2]               # doctest: +SKIP
    ['BraTS-SSA-00002-000', 'BraTS-SSA-00003-000']
    """
    root = Path(root)
    if not root.exists():
        raise InputError(root, "folder not found")
    if not root.is_dir():
        raise InputError(root, "is a file; expected a case folder or a folder of cases")
    result = DiscoveryResult()
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        _discover_nnunet(root, result)
    else:
        folders, _ = walk_tree(root)  # follows links to case folders; loops entered once
        for folder in folders:
            _discover_brats_folder(folder, result)
        for folder in folders[1:]:  # an empty case folder in a batch is reported, not skipped silently
            if not any(folder.iterdir()):
                result.errors.append(InputError(folder, "empty folder inside the input: no case files in it"))
    if not result.cases and not result.errors:
        raise InputError(
            root,
            "no BraTS case found (expected <ID>/<ID>-t1n.nii.gz..., <ID>/<ID>_t1.nii.gz... or imagesTr/<ID>_0000.nii.gz)",
        )
    result.cases.sort(key=lambda c: c.case_id)
    ids = [c.case_id for c in result.cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        keep = []
        for case in result.cases:
            if case.case_id in dupes:
                result.errors.append(
                    InputError(case.folder, f"case ID {case.case_id} appears in more than one folder")
                )
            else:
                keep.append(case)
        result.cases = keep
    return result


def _discover_brats_folder(folder: Path, result: DiscoveryResult) -> None:
    """Group NIfTI files directly inside ``folder`` into cases by their BraTS names."""
    found: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    layouts: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        stem = strip_nifti_suffix(path.name)
        if stem is None:
            continue
        match = _BRATS2023_RE.match(stem)
        if match:
            key = "seg" if match["key"] == "seg" else BRATS2023_SUFFIX[match["key"]]
            layout = "brats2023"
        else:
            match = _LEGACY_RE.match(stem)
            if not match:
                continue
            key = "seg" if match["key"] == "seg" else BRATS_LEGACY_SUFFIX[match["key"]]
            layout = "brats-legacy"
        found[match["id"]][key].append(path)
        layouts.setdefault(match["id"], layout)
    for case_id, files in found.items():
        images_only = {k: v for k, v in files.items() if k != "seg"}
        if not images_only:
            continue  # a lone segmentation (e.g. a prediction) is not a case
        problem = _file_set_problem(case_id, files)
        if problem:
            result.errors.append(InputError(folder, problem))
            continue
        result.cases.append(
            Case(
                case_id=case_id,
                images={m: files[m][0] for m in MODALITIES},
                label=files["seg"][0] if "seg" in files else None,
                layout=layouts[case_id],
            )
        )


def _file_set_problem(case_id: str, files: dict[str, list[Path]]) -> str | None:
    for key, paths in files.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            what = "segmentation" if key == "seg" else f"modality {key}"
            return f"case {case_id}: two files claim {what} ({names})"
    missing = [m for m in MODALITIES if m not in files]
    if missing:
        return f"case {case_id}: missing modality {', '.join(missing)}"
    return None


def _discover_nnunet(root: Path, result: DiscoveryResult) -> None:
    dataset_json = root / "dataset.json"
    meta: dict = {}
    if dataset_json.exists():
        meta = read_json(dataset_json, "dataset.json")
    channel_order = _nnunet_channel_order(meta, dataset_json)
    label_map = _nnunet_label_map(meta)
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        img_root = root / images_dir
        if not img_root.is_dir():
            continue
        files: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
        for path in sorted(img_root.iterdir()):
            stem = strip_nifti_suffix(path.name)
            match = _NNUNET_IMAGE_RE.match(stem or "")
            if not match:
                continue
            channel = int(match["channel"])
            if channel >= len(channel_order):
                result.errors.append(
                    InputError(path, f"channel {channel:04d} not described in {dataset_json.name}")
                )
                continue
            files[match["id"]][channel_order[channel]].append(path)
        for case_id, by_mod in files.items():
            label = None
            for suffix in (".nii.gz", ".nii"):
                candidate = root / labels_dir / f"{case_id}{suffix}"
                if candidate.exists():
                    label = candidate
                    by_mod["seg"].append(candidate)
            problem = _file_set_problem(case_id, by_mod)
            if problem:
                result.errors.append(InputError(img_root, problem))
                continue
            result.cases.append(
                Case(
                    case_id=case_id,
                    images={m: by_mod[m][0] for m in MODALITIES},
                    label=label,
                    layout="nnunet",
                    label_map=label_map,
                )
            )


def _nnunet_channel_order(meta: dict, dataset_json: Path) -> list[str]:
    """Modality of each nnU-Net channel index, from ``channel_names`` (or ``modality``) in dataset.json."""
    names = meta.get("channel_names") or meta.get("modality")
    if not names:
        return list(MODALITIES)  # no description: glioseg's own order, which nnU-Net's BraTS scripts also use
    order: list[str] = []
    for index in sorted(names, key=lambda k: int(k)):
        modality = modality_from_name(str(names[index]))
        if modality is None:
            raise InputError(
                dataset_json, f"channel {index} is named {names[index]!r}, which is not a BraTS modality"
            )
        order.append(modality)
    if sorted(order) != sorted(MODALITIES):
        raise InputError(dataset_json, f"channels {order} do not cover t1n, t1c, t2w, t2f exactly once")
    return order


def _nnunet_label_map(meta: dict) -> tuple[tuple[int, int], ...]:
    """Map stored nnU-Net label values to canonical ones.

    nnU-Net's BraTS conversion numbers the labels so that they nest as regions
    (``whole tumor: [1, 2, 3]``, ``tumor core: [2, 3]``, ``enhancing tumor: 3``), which
    makes 1 = edema and 2 = necrosis.  When ``labels`` in dataset.json is region-based
    the meaning is derived from the nesting; otherwise names are matched; otherwise the
    canonical convention is assumed.
    """
    labels = meta.get("labels") or {}
    if any(isinstance(v, list | tuple) for v in labels.values()):
        sets = [set(v) if isinstance(v, list | tuple) else {int(v)} for v in labels.values()]
        sets = sorted((s for s in sets if s != {0}), key=len, reverse=True)
        if len(sets) == 3 and sets[0] > sets[1] > sets[2] and len(sets[2]) == 1:
            (et,) = sets[2]
            (netc,) = sets[1] - sets[2]
            (snfh,) = sets[0] - sets[1]
            return ((snfh, SNFH), (netc, NETC), (et, ET))
    mapping = []
    for name, value in labels.items():
        if isinstance(value, list | tuple):
            continue
        key = "".join(ch for ch in name.lower() if ch.isalnum())
        if any(w in key for w in ("nonenhanc", "necro", "netc", "ncr")):
            mapping.append((int(value), NETC))
        elif "enhanc" in key or key == "et":
            mapping.append((int(value), ET))
        elif any(w in key for w in ("edema", "oedema", "snfh")) or key == "ed":
            mapping.append((int(value), SNFH))
    if len(mapping) == 3:
        return tuple(sorted(mapping))
    return ()


def load_case(case: Case, with_label: bool = True) -> CaseData:
    """Load and validate all files of a case.

    Checks, each failing with :class:`InputError` naming the file: readable and not
    truncated, 3-D, no NaN/Inf, not all zero, the same voxel grid (shape, spacing,
    affine) in every modality and in the label, integer labels within ``{0..4}``.

    Returns
    -------
    CaseData
        ``image`` of shape ``(4, X, Y, Z)`` (float32) in the order ``t1n, t1c, t2w, t2f``.
    """
    volumes = []
    reference = None
    ref_geometry = None
    for modality in MODALITIES:
        path = case.images[modality]
        data, image = load_volume(path)
        if not np.any(data):
            raise InputError(path, "image is all zero")
        geometry = Geometry.of(image)
        if ref_geometry is None:
            reference, ref_geometry = image, geometry
        else:
            problem = ref_geometry.mismatch(geometry, MODALITIES[0])
            if problem:
                raise InputError(path, problem)
        volumes.append(data)
    label = None
    if with_label and case.label is not None:
        label = load_case_label(case, ref_geometry)
    assert reference is not None
    return CaseData(case_id=case.case_id, image=np.stack(volumes), label=label, reference=reference)


def load_case_label(case: Case, geometry: Geometry | None = None) -> np.ndarray:
    """Load the ground truth of ``case`` as canonical labels, checking it against ``geometry``."""
    if case.label is None:
        raise InputError(case.folder, f"case {case.case_id} has no segmentation")
    if case.label_map:
        image = read_image(case.label)
        raw = read_data(image, case.label, None)
        described = {src for src, _ in case.label_map} | {0}
        present = set(np.unique(raw).tolist())
        if not present <= described:
            raise InputError(
                case.label, f"label values {sorted(present - described)} not described in dataset.json"
            )
        label = np.zeros(raw.shape, dtype=np.uint8)
        for src, dst in case.label_map:
            label[raw == src] = dst
    else:
        label, image = load_label(case.label)
    if geometry is not None:
        problem = geometry.mismatch(Geometry.of(image), "the images")
        if problem:
            raise InputError(case.label, problem)
    return label


def iter_loaded(cases: Iterable[Case], with_label: bool = True):
    """Yield ``(case, CaseData | None, error | None)``; a bad case never stops the others."""
    for case in cases:
        try:
            yield case, load_case(case, with_label=with_label), None
        except GliosegError as exc:
            yield case, None, exc
