"""The worker of ``glioseg serve``: one thread runs the queued jobs one at a time, oldest first.

A job is segmented by the same code as ``glioseg predict`` (:func:`glioseg.infer.batch.predict_cases`
with the bundled model's weights and post-processing), so its label map is the one ``predict``
writes for that case, byte for byte. Its outputs are written into a staging folder that is
renamed to ``result/`` only when all of them are there (:func:`glioseg.data.io.atomic_folder`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.data.cases import discover_cases
from glioseg.data.io import atomic_folder, write_text_atomic
from glioseg.data.labels import LABEL_NAMES, REGIONS
from glioseg.errors import GliosegError, InputError
from glioseg.infer.batch import PredictOptions, predict_cases
from glioseg.infer.models import ResolvedModels, resolve_models
from glioseg.infer.settings import MODES, InferenceSettings
from glioseg.models.catalog import bundled_cards
from glioseg.serve.jobs import DONE, FAILED, PREPARING, SEGMENTING, Job, JobStore

#: The modes a server may run: every named mode but ``reference`` (the yardstick, minutes per case).
SERVE_MODES = tuple(m for m in MODES if m != "reference")

#: The model ``glioseg serve`` uses when none is named: the real one when bundled, else the demo.
PREFERRED_MODELS = ("brats-2mm", "demo")


def default_model_name() -> str:
    """``brats-2mm`` when this installation bundles it, otherwise ``demo``."""
    names = {card.name for card in bundled_cards()}
    return next((n for n in PREFERRED_MODELS if n in names), "demo")


@dataclass
class ServeModel:
    """The model every job of a server uses, resolved once at start (checksums checked then)."""

    name: str
    resolved: ResolvedModels
    options: PredictOptions
    notes: list[str] = field(default_factory=list)  # shown at the top of the page

    @property
    def members(self) -> int:
        return sum(len(g.members) for g in self.resolved.groups)

    def describe(self) -> dict[str, Any]:
        card = self.resolved.cards[0] if self.resolved.cards else None
        return {
            "name": self.name,
            "version": card.version if card else None,
            "summary": (card.doc.get("summary", "") if card else ""),
            "intended_use": (card.doc.get("intended_use", "") if card else ""),
            "synthetic": any(g.synthetic for g in self.resolved.groups),
            "members": self.members,
            "notes": self.notes,
        }


def load_model(name: str | None = None, mode: str | None = None) -> ServeModel:
    """Resolve ``name`` (a bundled model or a run folder; default :func:`default_model_name`) with
    ``glioseg predict``'s ``mode`` (one of :data:`SERVE_MODES`; ``None``: the bundle's
    recommended mode), the bundle's ensemble weights and post-processing: a job's label map is
    then ``glioseg predict``'s with the same mode."""
    name = name or default_model_name()
    resolved = resolve_models([name])
    postprocess = None
    if resolved.postprocess is not None:
        from glioseg.postprocess.config import PostprocessConfig, make_postprocessor

        postprocess = make_postprocessor(PostprocessConfig.load(resolved.postprocess))
    members = sum(len(g.members) for g in resolved.groups)
    options = PredictOptions(
        settings=InferenceSettings.for_mode(mode or resolved.mode),
        weights=None if resolved.weights is None else np.asarray(resolved.weights),
        postprocess=postprocess,
        postprocess_source=str(resolved.postprocess) if resolved.postprocess is not None else None,
        track_variance=members > 1,
    )
    notes = [
        f"model '{g.name}' was trained only on glioseg's synthetic phantoms: its segmentations of real "
        "scans are not reliable (a demonstration only)"
        for g in resolved.groups
        if g.synthetic
    ]
    return ServeModel(name, resolved, options, notes)


def summarise(data, labels: np.ndarray, record: dict, members: int, prediction) -> dict[str, Any]:
    """What the page's side panel shows: volumes (mL), lesion counts, warnings, provenance."""
    from glioseg.report.case_report import lesion_summary, quality_warnings, uncertainty_score

    lesions = lesion_summary(labels, data.spacing)
    quality, proxies = quality_warnings(data.image, data.spacing)
    voxel_ml = float(np.prod(data.spacing)) / 1000.0
    uncertainty = (
        uncertainty_score(prediction.member_probabilities_variance, prediction.probabilities)
        if members > 1
        else None
    )
    from scipy import ndimage

    core = labels if not np.any((labels == 1) | (labels == 3)) else np.isin(labels, (1, 3))
    centre = [int(round(c)) for c in ndimage.center_of_mass(core > 0)] if np.any(core) else None
    # the viewer opens at the tumour core's centre of mass, given in scanner mm (RAS): NiiVue shows a
    # volume re-oriented to RAS, so voxel indices of a file stored otherwise (BraTS 2018: x and y
    # flipped) would put the crosshair at the mirrored place
    centre_mm = None if centre is None else [round(float(v), 2) for v in (data.affine @ [*centre, 1.0])[:3]]
    return {
        "case_id": data.case_id,
        "centre_vox": centre,  # voxel (i, j, k) of the label map
        "centre_mm": centre_mm,
        "shape": [int(s) for s in labels.shape],
        "spacing_mm": [float(s) for s in data.spacing],
        "volumes_ml": {k: lesions[k]["volume_ml"] for k in (*REGIONS, "NETC", "SNFH")},
        "label_volumes_ml": {str(v): float(np.count_nonzero(labels == v) * voxel_ml) for v in (1, 2, 3)},
        "label_names": {str(k): v for k, v in LABEL_NAMES.items() if k},
        "lesions": {r: lesions[r]["lesions"] for r in REGIONS},
        "lesion_volumes_ml": {r: lesions[r]["lesion_volumes_ml"] for r in REGIONS},
        "quality_warnings": quality,
        "quality": proxies,
        "warnings": list(record.get("warnings", [])),
        "uncertainty": uncertainty,
        "models": record.get("models", []),
        "settings": record.get("settings", {}),
        "disclaimer": record.get("disclaimer", ""),
        "date_utc": record.get("date_utc"),
        "glioseg_version": record.get("glioseg_version"),
    }


def _prepare_study(store: JobStore, job: Job) -> Job:
    from glioseg.prepare.pipeline import prepare_case

    folder = store.folder(job.id)
    result = prepare_case(folder / "upload", store.case_root(job.id) / job.case_id, case_id=job.case_id)
    import nibabel as nib

    shape = nib.load(str(next((store.case_root(job.id) / job.case_id).glob("*-t1c.nii*")))).shape
    return store.update(job.id, voxels=int(np.prod(shape[:3])), warnings=list(result.warnings))


def run_job(store: JobStore, job: Job, model: ServeModel) -> Job:
    """Run one queued job to ``done`` or ``failed``; never raises for a problem of the job."""
    began = time.time()
    job = store.update(
        job.id, state=PREPARING, started=began, phase_started=began, progress=0.02, attempts=job.attempts + 1
    )
    try:
        if job.kind == "study":
            job = _prepare_study(store, job)
        found = discover_cases(store.case_root(job.id))
        if len(found.cases) != 1:
            raise found.errors[0] if found.errors else InputError(job.case_id, "no case found")
        case = found.cases[0]
        seg_started = time.time()
        job = store.update(job.id, state=SEGMENTING, phase_started=seg_started, progress=0.1)
        lines: list[str] = []
        with atomic_folder(store.result_dir(job.id)) as staging:
            options = replace(model.options, after_case=_writer(model, job))
            report = predict_cases([case], model.resolved.groups, staging, options, printer=lines.append)
            if report.failed:
                raise GliosegError(report.failed[0][1])
        store.record_timing(job.voxels, time.time() - seg_started)
        return store.update(job.id, state=DONE, progress=1.0, finished=time.time(), message="")
    except Exception as exc:  # any failure of one job is that job's, the server goes on
        if not isinstance(exc, GliosegError):
            traceback.print_exc(file=sys.stderr)
        message = (
            str(exc) if isinstance(exc, GliosegError) else f"internal error: {type(exc).__name__}: {exc}"
        )
        message = message.replace(str(store.folder(job.id)) + "/", "")
        store.remove_inputs(job.id)  # a failed job keeps its message, none of the patient's images
        return store.update(job.id, state=FAILED, finished=time.time(), message=message)


def _writer(model: ServeModel, job: Job):
    """``after_case`` of predict_cases: the report (HTML, PDF), the summary and the native label map,
    written beside the label map it is given (they move into the result with it)."""

    def after_case(case, data, prediction, seg_path: Path, record: dict) -> None:
        folder = seg_path.parent
        from glioseg.report.case_pdf import write_case_pdf
        from glioseg.report.case_report import write_case_report

        record = {**record, "warnings": [*job.warnings, *record.get("warnings", [])]}
        write_case_report(data, prediction, seg_path, folder, model.members, record)
        summary = summarise(data, prediction.labels, record, model.members, prediction)
        files = {
            "labels": seg_path.name,
            "record": f"{case.case_id}.json",
            "report": f"{case.case_id}_report.html",
            "pdf": f"{case.case_id}_report.pdf",
        }
        if job.kind == "study":
            from glioseg.prepare.native import write_native

            native = folder / f"{case.case_id}-native.nii.gz"
            write_native(seg_path, case.folder, case.case_id, native)
            files["native"] = native.name
        summary["files"] = files
        write_case_pdf(folder / files["pdf"], folder / f"{case.case_id}_report.png", summary)
        write_text_atomic(folder / "summary.json", json.dumps(summary, indent=1) + "\n")

    return after_case


class Worker(threading.Thread):
    """The one thread that runs jobs; started and stopped with the app."""

    def __init__(self, store: JobStore, model: ServeModel) -> None:
        super().__init__(name="glioseg-serve-worker", daemon=True)
        self.store, self.model = store, model
        self._halt = threading.Event()

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        with self.store.wakeup:
            self.store.wakeup.notify_all()
        self.join(timeout)

    def run(self) -> None:
        while not self._halt.is_set():
            job = self.store.next_queued()
            if job is None:
                with self.store.wakeup:
                    self.store.wakeup.wait(timeout=1.0)
                continue
            try:
                run_job(self.store, job, self.model)
            except GliosegError:  # the job was deleted before it started
                continue
