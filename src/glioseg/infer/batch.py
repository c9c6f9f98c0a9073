"""``glioseg predict``: segment every case of an input, write BraTS label maps, never stop at a bad case."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from glioseg._version import __version__
from glioseg.data.cases import Case, discover_cases, load_case
from glioseg.data.io import (
    atomic_path,
    check_output_folder,
    read_json,
    remove_stale_parts,
    save_nifti,
    staged_outputs,
    strip_nifti_suffix,
    write_text_atomic,
)
from glioseg.data.labels import REGIONS
from glioseg.data.modalities import MODALITIES
from glioseg.errors import GliosegError, InputError
from glioseg.infer.ensemble import Prediction, segment_case
from glioseg.infer.models import ModelGroup
from glioseg.infer.settings import InferenceSettings
from glioseg.models.checkpoint import DISCLAIMER


@dataclass
class PredictOptions:
    """What ``glioseg predict`` does around the segmentation itself: the inference settings, ensemble
    weights, and what is written for each case."""

    settings: InferenceSettings = field(default_factory=InferenceSettings)
    weights: Sequence | np.ndarray | None = None
    save_probabilities: bool = False
    postprocess: Callable[[np.ndarray, object], np.ndarray] | None = None
    postprocess_source: str | None = None  # the configuration file behind ``postprocess`` (for provenance)
    # (case, data, prediction, label map, record) -> None, called before the case's outputs are moved
    # into the output folder: it writes its own files beside the label map it is given
    after_case: Callable[[Case, object, Prediction, Path, dict], None] | None = None
    track_variance: bool = False


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "cuda requested but no CUDA device is available")
    return device


def cases_from_files(files: dict[str, str | Path]) -> Case:
    """A case from four files given by modality (the ID is the t1n file name without modality suffix)."""
    missing = [m for m in MODALITIES if not files.get(m)]
    if missing:
        raise InputError("input", f"four files are needed; missing {', '.join('--' + m for m in missing)}")
    paths = {m: Path(files[m]) for m in MODALITIES}
    for m, p in paths.items():
        if not p.exists():
            raise InputError(p, f"file not found (given as --{m})")
    stem = strip_nifti_suffix(paths["t1n"].name) or paths["t1n"].stem
    for suffix in ("-t1n", "_t1n", "_t1", "-t1", "_0000"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return Case(case_id=stem, images=paths, label=None, layout="files")


def load_weights_file(path: str | Path, groups: Sequence[ModelGroup]) -> np.ndarray:
    """Per-region weights from ``glioseg ensemble-weights`` JSON, in the order of ``groups``.

    Models are matched by name (the folder name of each ``--model``) or, failing that, by order.
    """
    p = Path(path)
    doc = read_json(p, "weights file")
    entries = doc.get("models") if isinstance(doc, dict) else None
    if not entries or not all("weights" in e for e in entries):
        raise InputError(p, 'expected {"models": [{"name": ..., "weights": [wt, tc, et]}, ...]}')
    by_name = {e.get("name"): e for e in entries}
    ordered = []
    for index, group in enumerate(groups):
        entry = by_name.get(group.name) or (entries[index] if index < len(entries) else None)
        if entry is None:
            raise InputError(p, f"no weights for model {group.name}")
        w = entry["weights"]
        ordered.append([w[r] for r in REGIONS] if isinstance(w, dict) else w)
    return np.asarray(ordered, dtype=float)


def save_probabilities(prediction: Prediction, path: Path, affine: np.ndarray) -> Path:
    """Region probabilities as float16 in a compressed npz (``probabilities`` (3, X, Y, Z), ``regions``, ``affine``)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        probabilities=prediction.probabilities.astype(np.float16),
        regions=np.asarray(REGIONS),
        affine=np.asarray(affine, dtype=np.float64),
    )
    with atomic_path(path, suffix=".npz") as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def load_probabilities(path: str | Path) -> np.ndarray:
    """Read probabilities written by :func:`save_probabilities` as float32 ``(3, X, Y, Z)``."""
    with np.load(path, allow_pickle=False) as data:
        return data["probabilities"].astype(np.float32)


def predict_cases(
    cases: Sequence[Case],
    groups: Sequence[ModelGroup],
    out_dir: str | Path,
    options: PredictOptions,
    printer: Callable[[str], None] = print,
) -> BatchReport:
    """Segment ``cases`` one by one; a failing case is reported and the others go on."""
    out = Path(out_dir)
    check_output_folder(out)  # before any work; the folder itself is made with the first output
    created = not out.exists()
    remove_stale_parts(out)  # what a killed run was writing (SIGKILL leaves its temporary files)
    settings = options.settings.with_(device=resolve_device(options.settings.device))
    for group in groups:  # a model that cannot be loaded is an error of the run, not of a case
        for member in group.members:
            member.load("cpu")
    report = BatchReport()
    models = [group.provenance() for group in groups]  # checksums once per run, not per case
    for case in cases:
        try:
            data = load_case(case, with_label=False)
            prediction = segment_case(
                data, groups, options.weights, settings, track_variance=options.track_variance
            )
            labels = prediction.labels
            if options.postprocess is not None:
                labels = options.postprocess(labels, data)
                prediction.labels = labels
            target = out / f"{case.case_id}.nii.gz"
            warnings = model_warnings(case, groups)
            for warning in warnings:
                printer(f"{case.case_id}: WARNING: {warning}")
            record = provenance(case, target, models, options, warnings)
            try:
                # a case's outputs are staged and then moved in, the label map last: it is there only
                # when all its companions are (after_case writes beside the label map it is given)
                with staged_outputs(out, last=target.name) as stage:
                    staged = stage / target.name
                    save_nifti(labels.astype(np.uint8), staged, reference=data.reference, dtype=np.uint8)
                    write_text_atomic(stage / f"{case.case_id}.json", json.dumps(record, indent=1) + "\n")
                    if options.save_probabilities:
                        save_probabilities(
                            prediction, stage / f"{case.case_id}_probabilities.npz", data.affine
                        )
                    if options.after_case is not None:
                        options.after_case(case, data, prediction, staged, record)
            except (OSError, GliosegError) as exc:
                if isinstance(exc, GliosegError):
                    raise
                raise InputError(
                    out, f"could not write the outputs of {case.case_id} ({exc.strerror or exc})"
                ) from exc
            report.written.append(target)
            voxel_ml = float(np.prod(data.spacing)) / 1000
            vols = ", ".join(
                f"{r} {v * voxel_ml:.1f} mL"
                for r, v in zip(
                    REGIONS,
                    (
                        np.count_nonzero(labels),
                        np.count_nonzero((labels == 1) | (labels == 3)),
                        np.count_nonzero(labels == 3),
                    ),
                    strict=True,
                )
            )
            printer(f"{case.case_id}: {vols} -> {target}")
        except GliosegError as exc:
            report.failed.append((case.case_id, str(exc)))
            printer(f"{case.case_id}: FAILED: {exc}")
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # nothing was written: leave no empty folder behind
    return report


def discover_input(
    input_path: str | Path | None, files: dict[str, str | Path] | None = None
) -> tuple[list[Case], list[InputError]]:
    """Cases of INPUT (a case folder, a folder of cases, an nnU-Net dataset) or of four files."""
    if files and any(files.values()):
        return [cases_from_files(files)], []
    if input_path is None:
        raise InputError("input", "give an INPUT folder or the four files --t1n --t1c --t2w --t2f")
    found = discover_cases(input_path)
    return found.cases, found.errors


def model_warnings(case: Case, groups: Sequence[ModelGroup]) -> list[str]:
    """Warnings about using these models on this case (a phantom-trained model on a scan glioseg did not make),
    and the quality warnings ``glioseg prepare`` recorded for it (thick slices, motion)."""
    if case.synthetic:
        return []
    from glioseg.prepare.native import prepare_record

    record = prepare_record(case.folder, case.case_id) if case.layout != "nnunet" else None
    prepared = [f"prepare: {w}" for w in (record or {}).get("warnings", [])]
    return prepared + [
        f"model '{g.name}' was trained only on glioseg's synthetic phantoms and is not meant for real scans; "
        "this segmentation is not reliable (see glioseg models for models trained on real data)"
        for g in groups
        if g.synthetic
    ]


def provenance(
    case: Case, output: Path, models: list[dict[str, Any]], options: PredictOptions, warnings: Sequence[str]
) -> dict[str, Any]:
    """The sidecar ``<ID>.json`` of an output: inputs, models (name, version, checksum), settings, date, warnings."""
    settings = options.settings.to_dict()
    if options.weights is not None:
        settings["weights"] = np.asarray(options.weights, dtype=float).tolist()
    settings["postprocess"] = options.postprocess_source
    return {
        "format": "glioseg-prediction-v1",
        "case_id": case.case_id,
        "output": output.name,
        "labels": {"1": "NETC", "2": "SNFH", "3": "ET"},
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "glioseg_version": __version__,
        "inputs": {m: str(Path(p).resolve()) for m, p in case.images.items()},
        "models": models,
        "settings": settings,
        "warnings": list(warnings),
        "disclaimer": DISCLAIMER,
    }
