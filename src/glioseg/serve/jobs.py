"""The persistent job queue of ``glioseg serve``: one folder and one JSON record per job.

Layout of the data folder (``--data-dir``)::

    jobs/<job id>/job.json    state, progress, timings, messages (rewritten atomically)
    jobs/<job id>/upload/     a raw study to prepare (DICOM or NIfTI; only for such uploads)
    jobs/<job id>/case/<ID>/  the BraTS-ready case that is segmented
    jobs/<job id>/result/     the results; renamed into place whole (data.io.atomic_folder)
    timings.json              seconds per megavoxel of past jobs (the estimate of new ones)

A job goes ``queued -> preparing -> segmenting -> done`` or ends ``failed``. The queue is the
set of ``queued`` records, oldest first, so jobs survive a restart. A job found ``preparing``
or ``segmenting`` when the store opens belonged to a server that was stopped mid-job: whatever
it had written (a half-prepared case, the result's staging folder, even a whole ``result/`` whose
record never said ``done``) is removed, so only a complete ``result/`` is ever served; then it is
queued again from the start when its inputs are intact and it has not been interrupted before,
and otherwise marked failed with :data:`INTERRUPTED` (an input that stopped the server twice,
e.g. by exhausting the memory, is not run a third time). A job that fails keeps only its record:
its images are removed.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glioseg.data.io import write_text_atomic
from glioseg.errors import InputError

QUEUED, PREPARING, SEGMENTING, DONE, FAILED = "queued", "preparing", "segmenting", "done", "failed"
STATES = (QUEUED, PREPARING, SEGMENTING, DONE, FAILED)
RUNNING = (PREPARING, SEGMENTING)
#: Job IDs are 16 lower-case hex digits; anything else never reaches the file system.
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
#: Until a job has been timed on this machine: seconds per megavoxel of the uploaded case.
DEFAULT_S_PER_MVOX = 4.0
#: Seconds a raw study takes to prepare (docs/prepare.md measures ~33 s on 2 cores).
PREPARE_S = 40.0
INTERRUPTED = "the server stopped while this job was running; nothing of it is served. Upload the case again"
#: The message of a job queued again after the server stopped while running it.
RESUMED = "the server stopped while this job was running; it runs again from the start"
#: Runs a job may start: once, and once more after a server stopped mid-job.
MAX_ATTEMPTS = 2
#: What a job keeps of its inputs, by kind: a case folder, or the raw study to prepare.
INPUTS = {"case": "case", "study": "upload"}


@dataclass
class Job:
    """One upload and what became of it (the content of ``job.json``).

    Times are seconds since the epoch (``time.time()``); ``progress`` is 0-1; ``voxels`` is
    the number of voxels of one contrast of the uploaded case.
    """

    id: str
    created: float
    case_id: str
    kind: str  # "case" (four BraTS-ready NIfTI files) or "study" (raw, prepared first)
    model: str
    voxels: int = 0
    state: str = QUEUED
    progress: float = 0.0
    message: str = ""
    started: float | None = None
    phase_started: float | None = None
    finished: float | None = None
    upload_name: str = ""
    warnings: list[str] = field(default_factory=list)
    attempts: int = 0  # runs started (a run interrupted by a stopped server is retried once)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Job:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class JobStore:
    """Jobs on disk under ``root/jobs``; safe to use from the request threads and the worker.

    Every change of a record is an atomic rewrite of its ``job.json`` under one lock, so a
    reader sees a whole record, before or after the change.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.wakeup = threading.Condition(self._lock)
        self._recover()

    # -- paths ------------------------------------------------------------------------------
    def folder(self, job_id: str) -> Path:
        """The job's folder; :class:`InputError` for a malformed ID (never a path outside ``jobs``)."""
        if not JOB_ID.match(job_id):
            raise InputError(job_id, "not a job ID")
        return self.jobs_dir / job_id

    def result_dir(self, job_id: str) -> Path:
        return self.folder(job_id) / "result"

    def case_root(self, job_id: str) -> Path:
        return self.folder(job_id) / "case"

    # -- records ----------------------------------------------------------------------------
    def _read(self, folder: Path) -> Job | None:
        try:
            return Job.from_dict(json.loads((folder / "job.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def _write(self, job: Job) -> None:
        write_text_atomic(self.folder(job.id) / "job.json", json.dumps(asdict(job), indent=1) + "\n")

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            folder = self.folder(job_id)
            return self._read(folder) if folder.is_dir() else None

    def all(self) -> list[Job]:
        """Every job, newest first."""
        with self._lock:
            jobs = [j for f in self.jobs_dir.iterdir() if JOB_ID.match(f.name) and (j := self._read(f))]
        return sorted(jobs, key=lambda j: j.created, reverse=True)

    def new_id(self) -> str:
        return uuid.uuid4().hex[:16]

    def add(self, job: Job, staged: Path) -> Job:
        """Enqueue ``job`` whose files were staged in ``staged`` (renamed to the job's folder)."""
        with self._lock:
            folder = self.folder(job.id)
            write_text_atomic(staged / "job.json", json.dumps(asdict(job), indent=1) + "\n")
            staged.rename(folder)
            self.wakeup.notify_all()
        return job

    def update(self, job_id: str, **changes: Any) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job is None:
                raise InputError(job_id, "no such job (deleted?)")
            for key, value in changes.items():
                setattr(job, key, value)
            self._write(job)
            return job

    def delete(self, job_id: str) -> bool:
        """Remove a job that is not running; ``False`` when it is running (the worker owns it)."""
        with self._lock:
            job = self.get(job_id)
            if job is None:
                raise InputError(job_id, "no such job")
            if job.state in RUNNING:
                return False
            folder = self.folder(job_id)
            trash = folder.with_name(f".{job_id}.deleting")
            folder.rename(trash)  # atomic: the job disappears at once, the files go after
        shutil.rmtree(trash, ignore_errors=True)
        return True

    # -- the queue --------------------------------------------------------------------------
    def next_queued(self) -> Job | None:
        """The oldest queued job, or ``None``."""
        queued = [j for j in self.all() if j.state == QUEUED]
        return min(queued, key=lambda j: j.created) if queued else None

    def _recover(self) -> None:
        """Re-queue (or fail) jobs a stopped server left running; remove staging and half-deleted folders."""
        for path in self.jobs_dir.iterdir():
            if path.name.startswith("."):  # an upload being staged or a job being deleted
                shutil.rmtree(path, ignore_errors=True)
                continue
            job = self._read(path) if JOB_ID.match(path.name) else None
            if job is None:
                continue
            for partial in path.glob(".result.*"):
                shutil.rmtree(partial, ignore_errors=True)
            if job.state not in RUNNING:
                continue
            shutil.rmtree(path / "result", ignore_errors=True)  # even whole: its job never said done
            if job.kind == "study":  # prepared again from the upload: drop a half-prepared case
                shutil.rmtree(self.case_root(job.id), ignore_errors=True)
            if job.attempts < MAX_ATTEMPTS and self.inputs_intact(job):
                job.state, job.message, job.progress = QUEUED, RESUMED, 0.0
                job.started = job.phase_started = None
            else:
                job.state, job.message, job.finished = FAILED, INTERRUPTED, time.time()
                self.remove_inputs(job.id)
            self._write(job)

    def inputs_intact(self, job: Job) -> bool:
        """Whether ``job``'s inputs are all there: the four images of its case, or its raw study."""
        folder = self.folder(job.id)
        if job.kind == "study":
            return (folder / "upload").is_dir() and any((folder / "upload").iterdir())
        case = self.case_root(job.id) / job.case_id
        return all(any(case.glob(f"{job.case_id}-{m}.nii*")) for m in ("t1n", "t1c", "t2w", "t2f"))

    def remove_inputs(self, job_id: str) -> None:
        """Remove a failed job's images (its upload, its case) but keep its record (``job.json``)."""
        folder = self.folder(job_id)
        for name in set(INPUTS.values()):
            shutil.rmtree(folder / name, ignore_errors=True)

    # -- estimates --------------------------------------------------------------------------
    def seconds_per_mvox(self) -> float:
        """Median seconds per megavoxel over the last jobs done on this machine (or a default)."""
        path = self.root / "timings.json"
        try:
            rates = [float(r) for r in json.loads(path.read_text())["s_per_mvox"]]
        except (OSError, ValueError, KeyError, TypeError):
            rates = []
        return statistics.median(rates) if rates else DEFAULT_S_PER_MVOX

    def record_timing(self, voxels: int, seconds: float) -> None:
        """Remember how long segmenting ``voxels`` took (the last 20 jobs are kept)."""
        if voxels <= 0:
            return
        with self._lock:
            path = self.root / "timings.json"
            try:
                rates = list(json.loads(path.read_text())["s_per_mvox"])
            except (OSError, ValueError, KeyError, TypeError):
                rates = []
            rates = [*rates, seconds / (voxels / 1e6)][-20:]
            write_text_atomic(path, json.dumps({"s_per_mvox": rates}) + "\n")

    def expected_seconds(self, job: Job) -> float:
        """Seconds the whole job should take on this machine (preparing a raw study included)."""
        return self.seconds_per_mvox() * job.voxels / 1e6 + (PREPARE_S if job.kind == "study" else 0.0)

    def remaining_seconds(self, job: Job, now: float | None = None) -> float | None:
        """Seconds until ``job`` should be done: the jobs queued before it, then its own rest."""
        now = time.time() if now is None else now
        if job.state in (DONE, FAILED):
            return None
        own = self.expected_seconds(job)
        if job.state in RUNNING:
            return max(0.0, own - (now - (job.started or now)))
        ahead = [j for j in self.all() if j.created < job.created and j.state in (QUEUED, *RUNNING)]
        return own + sum(
            self.expected_seconds(j) - (now - (j.started or now) if j.state in RUNNING else 0.0)
            for j in ahead
        )
