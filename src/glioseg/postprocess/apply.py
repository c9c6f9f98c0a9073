"""Apply a post-processing configuration to label-map files (``glioseg postprocess apply``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.io import walk_tree
from glioseg.errors import GliosegError, InputError
from glioseg.postprocess.config import PostprocessConfig

#: Relative difference of voxel volumes above which sizes in voxels mean other physical sizes.
_VOXEL_VOLUME_TOLERANCE = 0.01


@dataclass
class ApplyReport:
    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _is_nifti_name(path: Path) -> bool:
    return path.name.endswith((".nii.gz", ".nii"))


def collect_predictions(pred: str | Path) -> tuple[dict[str, Path], list[str]]:
    """Label maps of a file or folder by case ID (names as for ``glioseg evaluate``) and the ambiguous IDs."""
    from glioseg.data.io import strip_nifti_suffix
    from glioseg.evaluate.matching import prediction_case_id

    root = Path(pred)
    if not root.exists():
        raise InputError(root, "prediction not found")
    if root.is_file():
        return {prediction_case_id(root) or strip_nifti_suffix(root.name) or root.stem: root}, []
    found: dict[str, list[Path]] = {}
    for path in walk_tree(root)[1]:  # follows links to case folders
        case_id = prediction_case_id(path)
        if case_id is not None:
            found.setdefault(case_id, []).append(path)
    if not found:
        raise InputError(
            root, "no label map found (expected <ID>.nii.gz, <ID>-pred.nii.gz or <ID>-seg.nii.gz)"
        )
    problems = [
        str(InputError(root, f"case {c}: more than one file claims it ({', '.join(p.name for p in paths)})"))
        for c, paths in found.items()
        if len(paths) > 1
    ]
    return {c: paths[0] for c, paths in found.items() if len(paths) == 1}, problems


def apply_to_files(
    pred: str | Path,
    config: PostprocessConfig,
    out: str | Path,
    images: str | Path | None = None,
    progress: Callable[[str, Path | None, int, int | None, str | None], None] | None = None,
    config_path: str | Path = "configuration",
) -> ApplyReport:
    """Post-process every label map of ``pred`` into ``out`` (``<ID>.nii.gz``, same grid and header).

    Parameters
    ----------
    pred : path
        A label map or a folder of them (either ET convention; outputs use ET = 3).
    config : PostprocessConfig
    out : path
        Output folder; when ``pred`` is one file, ``out`` may name the output ``.nii.gz`` file.
    images : path, optional
        Folder of cases with images, needed when the configuration is per cluster (the
        cluster of a case comes from the radiomic features of its label map and images).
    progress : callable, optional
        ``progress(case_id, written_path, changed_voxels, cluster, error)`` after each case.

    Returns
    -------
    ApplyReport
        One bad case never stops the others; its one-line message is in ``failed``.
    """
    from glioseg.data.cases import discover_cases, load_case
    from glioseg.data.io import Geometry, check_output_file, check_output_folder, save_nifti
    from glioseg.evaluate.runner import read_labels

    pred, out = Path(pred), Path(out)
    single_file = pred.is_file() and _is_nifti_name(out)
    check_output_file(out) if single_file else check_output_folder(out)  # before any work
    if config.has_clusters and images is None:
        raise InputError(config_path, "is a per-cluster configuration: give the cases' images with --images")
    predictions, problems = collect_predictions(pred)
    report = ApplyReport(failed=list(problems))
    cases = discover_cases(images).by_id() if config.has_clusters else {}
    tuned_voxel = config.tuning.get("voxel_mm3") if isinstance(config.tuning, dict) else None
    warned: set[float] = set()
    for case_id, path in sorted(predictions.items()):
        target = out if single_file else out / f"{case_id}.nii.gz"
        try:
            if target.resolve() == path.resolve():
                raise InputError(path, "output would overwrite the input; choose another --out")
            labels, image = read_labels(path)
            geometry = Geometry.of(image)
            voxel = float(np.prod(geometry.spacing))
            if (
                tuned_voxel
                and abs(voxel - tuned_voxel) > _VOXEL_VOLUME_TOLERANCE * tuned_voxel
                and voxel not in warned
            ):
                warned.add(voxel)
                report.warnings.append(
                    f"{path}: voxels of {voxel:g} mm^3, the configuration was tuned on {tuned_voxel:g} mm^3 voxels "
                    "(size thresholds are in voxels)"
                )
            cluster = None
            if config.has_clusters:
                case = cases.get(case_id)
                if case is None:
                    raise InputError(
                        images, f"no images for case {case_id} (the per-cluster configuration needs them)"
                    )
                data = load_case(case, with_label=False)
                if data.image.shape[1:] != labels.shape:
                    raise InputError(
                        path, f"shape {labels.shape} differs from the case images' {data.image.shape[1:]}"
                    )
                cluster = config.assign_cluster(data.image, labels, data.spacing)
            result = config.apply(labels, cluster)
            try:
                save_nifti(result, target, reference=image, dtype=np.uint8)
            except OSError as exc:  # e.g. a full disk: this case fails, nothing half-written stays
                raise InputError(target, f"could not be written ({exc.strerror or exc})") from None
            report.written.append(target)
            if progress is not None:
                progress(case_id, target, int(np.count_nonzero(result != labels)), cluster, None)
        except GliosegError as exc:
            report.failed.append(str(exc))
            if progress is not None:
                progress(case_id, None, 0, None, str(exc))
    return report
