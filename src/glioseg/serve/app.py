"""The FastAPI application of ``glioseg serve``: the page, the job API and the safety rules.

Safety rules, applied to every request before any route:

- **Token.** A server bound to anything but the loopback address has a token (printed at start);
  every request must carry it (``?token=``, the ``X-Glioseg-Token`` header, or the cookie the
  page receives when opened with ``?token=``), else 401. Compared in constant time.
- **Host.** A loopback server answers only requests addressed to ``127.0.0.1``, ``localhost``
  or ``[::1]`` (a web page elsewhere cannot reach it through DNS rebinding).
- **Cross-site.** Requests that change something (POST, DELETE) must carry ``X-Glioseg: 1``, a
  header no other site's page can send without a CORS pre-flight, which is never granted.
- **Sizes.** An upload's body is refused (413) when its declared length passes the limit,
  before it is read; lengths are counted again while it is written.
- User text (file names, form fields) is never used as a path or given to a shell: files get
  names made here, job IDs are checked against a pattern, results are served from a fixed list.
"""

from __future__ import annotations

import hmac
import json
import secrets
import shutil
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import UploadFile

from glioseg.errors import InputError
from glioseg.serve.folders import FOLDER_FIELD, stage_folder
from glioseg.serve.jobs import DONE, QUEUED, RUNNING, SEGMENTING, Job, JobStore
from glioseg.serve.runner import ServeModel, Worker
from glioseg.serve.uploads import UploadedFile, UploadError, UploadLimits, stage_upload

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_HEADER, TOKEN_COOKIE, CSRF_HEADER = "x-glioseg-token", "glioseg_token", "x-glioseg"
STATIC = Path(__file__).resolve().parent / "static"
#: Files of a finished job the page may download, by key (names come from summary.json).
RESULT_KEYS = ("labels", "record", "report", "pdf", "native")
CONTRASTS = ("t1n", "t1c", "t2w", "t2f")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self' blob: data:; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def niivue_script() -> Path:
    """NiiVue's browser build as shipped inside the installed nilearn package (no CDN, no network).

    Raises
    ------
    InputError
        The file is not there (a nilearn without NiiVue): the viewer could not work.
    """
    path = Path(str(resources.files("nilearn") / "_assets" / "js" / "niivue.umd.js"))
    if not path.is_file():
        raise InputError(path, "NiiVue's script is missing from nilearn; reinstall glioseg's dependencies")
    return path


@dataclass
class ServeConfig:
    """How a server runs: where its jobs live, where it is bound, its token and upload limits."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    limits: UploadLimits = field(default_factory=UploadLimits)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if not is_loopback(self.host) and not self.token:
            self.token = secrets.token_urlsafe(24)  # any other address: never without a token


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=SECURITY_HEADERS)


def _host_name(request: Request) -> str:
    host = request.headers.get("host", "")
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def job_view(store: JobStore, job: Job) -> dict[str, Any]:
    """A job as the page sees it: state, progress (0-1), seconds left, results when done."""
    doc = asdict(job)
    now = time.time()
    remaining = store.remaining_seconds(job, now)
    if job.state in RUNNING and job.started:
        expected = max(store.expected_seconds(job), 1.0)
        if job.state == SEGMENTING:
            doc["progress"] = round(min(0.95, 0.1 + 0.85 * (now - job.started) / expected), 3)
    doc["remaining_s"] = None if remaining is None else round(remaining, 1)
    # past its estimate (a busy machine, a large case): say so rather than "0 s left" for minutes
    doc["overdue"] = bool(
        job.state in RUNNING and job.started and now - job.started > store.expected_seconds(job)
    )
    if doc["overdue"]:
        doc["remaining_s"] = None
    doc["position"] = (
        sum(1 for j in store.all() if j.state == QUEUED and j.created < job.created)
        if job.state == QUEUED
        else None
    )
    doc["summary"] = None
    if job.state == DONE:
        try:
            doc["summary"] = json.loads(
                (store.result_dir(job.id) / "summary.json").read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            doc["summary"] = None
    return doc


def create_app(config: ServeConfig, model: ServeModel, start_worker: bool = True) -> FastAPI:
    """The application: a job store in ``config.data_dir`` and (unless ``start_worker`` is false)
    the worker thread, started and stopped with the application's lifespan."""
    store = JobStore(config.data_dir)
    niivue = niivue_script()
    validating = threading.Semaphore(2)  # uploads checked at once (each reads four images)

    def _stage(uploads: list[UploadedFile], staging: Path):
        folder = any(u.field == FOLDER_FIELD for u in uploads)
        with validating:  # in a worker thread of the pool, never on the event loop
            return (stage_folder if folder else stage_upload)(uploads, staging, config.limits)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        worker = Worker(store, model) if start_worker else None
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    app = FastAPI(title="glioseg serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.config, app.state.model = store, config, model

    @app.middleware("http")
    async def safety(request: Request, call_next):
        if not config.token and not is_loopback(_host_name(request)):
            return _error(400, "this server answers only at 127.0.0.1 or localhost")
        if config.token:
            given = (
                request.headers.get(TOKEN_HEADER)
                or request.query_params.get("token")
                or request.cookies.get(TOKEN_COOKIE)
                or ""
            )
            if not hmac.compare_digest(given.encode(), config.token.encode()):
                return _error(401, "this server needs its token: open the address printed when it started")
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.headers.get(CSRF_HEADER) != "1":
            return _error(403, "requests that change something must come from glioseg's own page")
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "the upload must state its length")
            if not length.isdigit() or int(length) > config.limits.max_request_bytes:
                return _error(
                    413,
                    f"the upload is larger than the limit of {config.limits.max_request_bytes // 2**20} MiB",
                )
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if config.token and request.query_params.get("token") == config.token:
            response.set_cookie(TOKEN_COOKIE, config.token, httponly=True, samesite="strict")
        return response

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        files = {"app.js": STATIC / "app.js", "style.css": STATIC / "style.css", "niivue.umd.js": niivue}
        if name not in files:
            return _error(404, "no such file")
        return FileResponse(files[name])

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        from glioseg._version import __version__
        from glioseg.data.labels import LABEL_COLOURS, LABEL_NAMES

        labels = {
            str(v): {"name": LABEL_NAMES[v], "rgb": [round(255 * c) for c in LABEL_COLOURS[v]]}
            for v in sorted(LABEL_COLOURS)
        }
        return {
            "glioseg_version": __version__,
            "model": model.describe(),
            "labels": labels,
            "limits": asdict(config.limits),
        }

    @app.get("/api/jobs")
    def list_jobs() -> list[dict[str, Any]]:
        return [job_view(store, j) for j in store.all()]

    @app.post("/api/jobs", status_code=201)
    async def create_job(request: Request) -> Response:
        try:  # a folder (a DICOM study) sends one file per slice: up to limits.max_files
            form = await request.form(max_files=config.limits.max_files, max_fields=16)
        except Exception as exc:  # a malformed multipart body, or too many files
            detail = str(getattr(exc, "detail", exc))
            if detail.startswith("Too many files"):
                return _error(
                    413,
                    f"the upload holds more than {config.limits.max_files:,} files, the limit; "
                    "choose the study's folder only, or zip it",
                )
            return _error(400, f"the upload could not be read ({detail})")
        uploads = [
            UploadedFile(key, value.filename or "", value.file)
            for key, value in form.multi_items()
            if isinstance(value, UploadFile)
        ]
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=store.jobs_dir))
        try:
            staged = await _in_thread(_stage, uploads, staging)
            job = Job(
                id=store.new_id(),
                created=time.time(),
                case_id=staged.case_id,
                kind=staged.kind,
                model=model.name,
                voxels=staged.voxels,
                upload_name=_upload_name(uploads),
            )
            store.add(job, staging)
        except UploadError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            return _error(exc.status, str(exc))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            await form.close()
        return JSONResponse(job_view(store, job), status_code=201)

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str) -> Response:
        job = _find(store, job_id)
        return job if isinstance(job, Response) else JSONResponse(job_view(store, job))

    @app.delete("/api/jobs/{job_id}")
    def delete_job(job_id: str) -> Response:
        job = _find(store, job_id)
        if isinstance(job, Response):
            return job
        if not store.delete(job.id):
            return _error(409, "this job is running; delete it when it has finished")
        return JSONResponse({"deleted": job.id})

    @app.get("/api/jobs/{job_id}/files/{name}")
    def job_file(job_id: str, name: str) -> Response:
        """A result (``labels``, ``record``, ``report``, ``pdf``, ``native``, only once the job is
        done) or a contrast for the viewer (``t1n.nii.gz`` ...)."""
        job = _find(store, job_id)
        if isinstance(job, Response):
            return job
        if job.state != DONE:
            return _error(409, f"the job is {job.state}; its files are served once it is done")
        key = name.split(".", 1)[0]
        if key in CONTRASTS:
            found = sorted((store.case_root(job.id) / job.case_id).glob(f"{job.case_id}-{key}.nii*"))
            if not found:
                return _error(404, f"no {key} image in this job")
            return FileResponse(found[0], media_type="application/gzip")
        summary = job_view(store, job)["summary"] or {}
        file_name = (summary.get("files") or {}).get(key) if key in RESULT_KEYS else None
        if not file_name:
            return _error(404, "no such result")
        path = store.result_dir(job.id) / file_name
        if key == "report":
            return FileResponse(path, media_type="text/html")
        return FileResponse(path, filename=file_name)

    return app


def _upload_name(uploads: list[UploadedFile]) -> str:
    """What was uploaded, for the job's record: the file names, or a folder's name and size."""
    if any(u.field == FOLDER_FIELD for u in uploads):
        top = uploads[0].name.replace("\\", "/").split("/", 1)[0]
        return f"folder {top[:80]} ({len(uploads)} files)"
    return ", ".join(u.name for u in uploads)[:200]


def _find(store: JobStore, job_id: str) -> Job | Response:
    try:
        job = store.get(job_id)
    except InputError:
        return _error(404, "no such job")
    return job if job is not None else _error(404, "no such job")


async def _in_thread(func, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(func, *args)
