"""glioseg serve's API (issue 19): concurrent uploads give predict's labels, bad uploads are refused
in plain words and leave nothing behind, the token guards a non-local bind, and a job killed
mid-way never serves a partial result."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from glioseg.cli import app as cli_app
from glioseg.serve.app import ServeConfig, create_app
from glioseg.serve.jobs import INTERRUPTED, RESUMED, JobStore
from glioseg.serve.runner import load_model
from glioseg.serve.uploads import MiB, UploadLimits
from tests.serve_client import wait_done

LOCAL = "http://127.0.0.1"
PAGE = {"X-Glioseg": "1"}  # what the page sends with every change


@pytest.fixture(scope="module")
def demo_fast():
    return load_model("demo", "fast")


def case_files(folder: Path) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (p.name, p.read_bytes())) for p in sorted(folder.glob("*-t[12]*.nii.gz"))]


def predict_reference(case: Path, out: Path) -> Path:
    result = CliRunner().invoke(
        cli_app, ["predict", str(case), "--model", "demo", "--mode", "fast", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out / f"{case.name}.nii.gz"


def test_ten_concurrent_uploads_all_finish_with_predicts_labels(small_cohort, tmp_path, demo_fast):
    cases = sorted(p for p in small_cohort.iterdir() if p.is_dir())[:2]
    reference = {c.name: predict_reference(c, tmp_path / "predict") for c in cases}
    app = create_app(ServeConfig(data_dir=tmp_path / "data"), demo_fast)
    with TestClient(app, base_url=LOCAL) as client:
        uploads = [cases[i % 2] for i in range(10)]
        with ThreadPoolExecutor(10) as pool:
            answers = list(
                pool.map(lambda c: client.post("/api/jobs", files=case_files(c), headers=PAGE), uploads)
            )
        assert [a.status_code for a in answers] == [201] * 10, [a.text for a in answers]
        ids = [a.json()["id"] for a in answers]
        assert len(set(ids)) == 10 and {a.json()["state"] for a in answers} == {"queued"}
        listed = client.get("/api/jobs").json()
        assert {j["id"] for j in listed} == set(ids)
        for job_id, case in zip(ids, uploads, strict=True):
            job = wait_done(client, job_id)
            assert job["state"] == "done", job["message"]
            got = client.get(f"/api/jobs/{job_id}/files/labels")
            assert got.status_code == 200
            served = _nifti_from_bytes(got.content)
            expected = nib.load(str(reference[case.name]))
            assert np.array_equal(np.asarray(served.dataobj), np.asarray(expected.dataobj))
            assert np.allclose(served.affine, expected.affine) and served.get_data_dtype() == np.uint8
            labels = np.asarray(expected.dataobj)
            voxel_ml = float(np.prod(expected.header.get_zooms()[:3])) / 1000
            summary = job["summary"]
            assert summary["volumes_ml"]["WT"] == pytest.approx(np.count_nonzero(labels) * voxel_ml)
            assert summary["volumes_ml"]["ET"] == pytest.approx(np.count_nonzero(labels == 3) * voxel_ml)
            assert summary["models"][0]["name"] == "demo" and summary["settings"]["mode"] == "fast"
            assert any("synthetic phantoms" in w for w in summary["warnings"])  # the demo model's warning
            assert client.get(f"/api/jobs/{job_id}/files/pdf").content[:5] == b"%PDF-"
            assert b"Provenance" in client.get(f"/api/jobs/{job_id}/files/report").content
            assert client.get(f"/api/jobs/{job_id}/files/t2f.nii.gz").status_code == 200
        assert client.delete(f"/api/jobs/{ids[0]}", headers=PAGE).status_code == 200
        assert client.get(f"/api/jobs/{ids[0]}").status_code == 404
        assert not (tmp_path / "data" / "jobs" / ids[0]).exists()


def _nifti_from_bytes(content: bytes) -> nib.Nifti1Image:
    import gzip

    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        info = zipfile.ZipInfo("case/link-t1n.nii.gz")
        info.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _lying_zip(real: bytes) -> bytes:
    """A zip whose entry declares 100 bytes but unpacks to more (sizes patched in both headers)."""
    data = bytearray(_zip({"X-t1n.nii.gz": real}))
    struct.pack_into("<I", data, 22, 100)  # local header: uncompressed size
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 100)
    return bytes(data)


def test_malformed_uploads_are_refused_in_plain_words_and_leave_nothing(one_case, tmp_path, demo_fast):
    files = case_files(one_case)
    by_name = {name: data for _f, (name, data) in files}
    limits = UploadLimits(max_request_bytes=40 * MiB, max_file_bytes=8 * MiB, max_unpacked_bytes=16 * MiB)
    data_dir = tmp_path / "data"
    app = create_app(ServeConfig(data_dir=data_dir, limits=limits), demo_fast, start_worker=False)
    big_nifti = nib.Nifti1Image(np.zeros((300, 300, 200), np.float32), np.eye(4))
    big_nifti.header.set_data_shape((4000, 4000, 4000))  # the header of a gzip bomb
    zeros = b"\0" * (20 * MiB)
    cases = {
        "wrong type": ([("files", ("notes.txt", b"hello"))], 400, "not an accepted file type"),
        "not a NIfTI": (
            [("files", (n, b"\x1f\x8b" + b"x" * 500 if "t1n" in n else d)) for n, d in by_name.items()],
            400,
            "t1n.nii.gz: not a",
        ),
        "missing contrast": (files[:3], 400, "missing contrast"),
        "two t1n": ([*files, ("files", ("other-t1n.nii.gz", files[0][1][1]))], 400, "two files are t1n"),
        "unnamed contrast": (
            [("files", ("scan.nii.gz", files[0][1][1])), *files[1:]],
            400,
            "cannot tell which contrast",
        ),
        "oversized file": ([("files", ("big-t1n.nii", b"\0" * (9 * MiB)))], 413, "larger than the limit"),
        "oversized request": ([("files", ("big.zip", b"\0" * (41 * MiB)))], 413, "larger than the limit"),
        "zip bomb (declared size)": ([("files", ("bomb.zip", _zip({"a-t1n.nii": zeros})))], 413, "zip bomb"),
        "zip bomb (ratio)": (
            [("files", ("ratio.zip", _zip({"a-t1n.nii": b"\0" * (5 * MiB)})))],
            413,
            "compressed",
        ),
        "zip entry lies about its size": (
            [("files", ("lie.zip", _lying_zip(b"\1" * 5000)))],
            400,
            "damaged",  # zipfile stops at the declared size and its CRC check fails
        ),
        "zip with ../": (
            [("files", ("evil.zip", _zip({"../../evil-t1n.nii.gz": b"x"})))],
            400,
            "leaves its folder",
        ),
        "zip with absolute path": (
            [("files", ("abs.zip", _zip({"/tmp/evil.nii.gz": b"x"})))],
            400,
            "leaves its folder",
        ),
        "zip with a link": ([("files", ("link.zip", _symlink_zip()))], 400, "link"),
        "zip of nothing useful": (
            [("files", ("docs.zip", _zip({"readme.txt": b"hi"})))],
            400,
            "neither NIfTI",
        ),
        "damaged zip": ([("files", ("broken.zip", b"PK\x03\x04broken"))], 400, "not a readable zip"),
        "header bomb": (
            [("files", ("huge-t1n.nii", big_nifti.header.binaryblock + b"\0" * 1004))]
            + [f for f in files if "t1n" not in f[1][0]],
            413,
            "declares",
        ),
        "zip and NIfTI together": ([*files, ("files", ("x.zip", _zip({"a": b"1"})))], 400, "not both"),
        "nothing": ([], 400, "no file"),
    }
    with TestClient(app, base_url=LOCAL) as client:
        for what, (upload, status, words) in cases.items():
            if upload:
                answer = client.post("/api/jobs", files=upload, headers=PAGE)
            else:
                answer = client.post("/api/jobs", data={"x": "1"}, headers=PAGE)
            assert answer.status_code == status, (what, answer.text)
            detail = answer.json()["detail"]
            assert words in detail and "\n" not in detail and str(tmp_path) not in detail, (what, detail)
            assert client.get("/api/jobs").json() == [], what
            assert list((data_dir / "jobs").iterdir()) == [], what  # no staging folder left
    assert not (tmp_path / "evil-t1n.nii.gz").exists() and not Path("/tmp/evil.nii.gz").exists()
    # the same case, well formed, is accepted (the checks above refused the problem, not the case)
    with TestClient(app, base_url=LOCAL) as client:
        assert client.post("/api/jobs", files=files, headers=PAGE).status_code == 201
        zipped = _zip({f"{one_case.name}/{n}": d for n, d in by_name.items() if "-t" in n})
        answer = client.post("/api/jobs", files=[("files", ("case.zip", zipped))], headers=PAGE)
        assert answer.status_code == 201 and answer.json()["case_id"] == one_case.name


def test_a_non_local_bind_refuses_every_request_without_the_token(tmp_path, demo_fast):
    config = ServeConfig(data_dir=tmp_path / "data", host="0.0.0.0")
    assert config.token and len(config.token) >= 24  # made at start, printed by glioseg serve
    app = create_app(config, demo_fast, start_worker=False)
    with TestClient(app, base_url="http://192.0.2.10:8000") as client:
        for method, path in [
            ("GET", "/"),
            ("GET", "/static/app.js"),
            ("GET", "/static/niivue.umd.js"),
            ("GET", "/api/info"),
            ("GET", "/api/jobs"),
            ("POST", "/api/jobs"),
            ("DELETE", "/api/jobs/0123456789abcdef"),
            ("GET", "/api/jobs/0123456789abcdef/files/labels"),
            ("GET", "/no/such/page"),
        ]:
            for headers in ({}, {"X-Glioseg-Token": "wrong"}, {"X-Glioseg-Token": config.token[:-1]}):
                answer = client.request(method, path, headers={**PAGE, **headers})
                assert answer.status_code == 401, (method, path, headers)
                assert "token" in answer.json()["detail"]
        assert client.get("/api/jobs", headers={"X-Glioseg-Token": config.token}).status_code == 200
        page = client.get(f"/?token={config.token}")  # the address printed at start
        assert page.status_code == 200 and "glioseg" in page.text
        assert client.get("/api/info").status_code == 200  # the page's cookie now carries the token
    # a loopback server: no token, but only requests addressed to it, and changes only from its page
    local = create_app(ServeConfig(data_dir=tmp_path / "local"), demo_fast, start_worker=False)
    with TestClient(local, base_url="http://evil.example:8000") as client:
        assert client.get("/api/jobs").status_code == 400
    with TestClient(local, base_url=LOCAL) as client:
        assert client.get("/api/jobs").status_code == 200
        assert client.post("/api/jobs", files=[("files", ("a.zip", b"x"))]).status_code == 403
        assert client.get("/api/jobs/..%2F..%2Fetc").status_code == 404
        assert client.get("/static/..%2Fapp.py").status_code == 404
        assert "default-src 'self'" in client.get("/").headers["content-security-policy"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real ``glioseg serve`` process (demo model, fast mode) on a free port and ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        import httpx

        self.port = _free_port()
        command = [sys.executable, "-m", "glioseg", "serve", "--port", str(self.port)]
        command += ["--model", "demo", "--mode", "fast", "--data-dir", str(data_dir)]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        for _ in range(480):
            try:
                self.client.get("/api/info")
                return
            except httpx.TransportError:
                assert self.process.poll() is None, "glioseg serve exited at start"
                time.sleep(0.25)
        raise AssertionError("glioseg serve did not answer within 2 minutes")

    def kill(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)  # the worst stop: no clean-up code runs
        self.process.wait(30)


def test_a_server_killed_mid_job_resumes_it_on_restart_and_never_serves_a_partial_result(one_case, tmp_path):
    reference = nib.load(str(predict_reference(one_case, tmp_path / "predict")))
    data_dir = tmp_path / "data"
    server = Server(data_dir)
    try:
        job_id = server.client.post("/api/jobs", files=case_files(one_case), headers=PAGE).json()["id"]
        for _ in range(6000):
            state = server.client.get(f"/api/jobs/{job_id}").json()["state"]
            if state == "segmenting":
                break
            assert state in ("queued", "preparing"), state
            time.sleep(0.02)
    finally:
        server.kill()
    folder = data_dir / "jobs" / job_id
    record = json.loads((folder / "job.json").read_text())
    assert record["state"] == "segmenting" and record["attempts"] == 1
    (folder / ".result.abc.part").mkdir(exist_ok=True)  # as atomic_folder leaves it when killed
    (folder / ".result.abc.part" / "half.nii.gz").write_bytes(b"\x1f\x8b")
    # a result/ renamed into place just before the kill, whose job never said done: never served
    (folder / "result").mkdir(exist_ok=True)
    (folder / "result" / "summary.json").write_text(json.dumps({"files": {"labels": "half.nii.gz"}}))
    (folder / "result" / "half.nii.gz").write_bytes(b"\x1f\x8b")
    server = Server(data_dir)  # the same data folder: the job is queued again and runs from the start
    try:
        job = server.client.get(f"/api/jobs/{job_id}").json()
        assert job["state"] != "failed", job["message"]
        if job["state"] != "done":
            assert server.client.get(f"/api/jobs/{job_id}/files/labels").status_code == 409
        for _ in range(6000):
            job = server.client.get(f"/api/jobs/{job_id}").json()
            if job["state"] in ("done", "failed"):
                break
            time.sleep(0.1)
        assert job["state"] == "done" and job["attempts"] == 2, job
        served = _nifti_from_bytes(server.client.get(f"/api/jobs/{job_id}/files/labels").content)
        assert np.array_equal(np.asarray(served.dataobj), np.asarray(reference.dataobj))
        assert job["summary"]["files"]["labels"] == f"{one_case.name}.nii.gz"
    finally:
        server.kill()
    assert not list(folder.glob(".result.*")) and not (folder / "result" / "half.nii.gz").exists()


def test_a_job_interrupted_twice_or_without_its_inputs_fails_in_plain_words(one_case, tmp_path, demo_fast):
    data_dir = tmp_path / "data"
    app = create_app(ServeConfig(data_dir=data_dir), demo_fast, start_worker=False)
    with TestClient(app, base_url=LOCAL) as client:
        ids = [
            client.post("/api/jobs", files=case_files(one_case), headers=PAGE).json()["id"] for _ in range(3)
        ]
    store = JobStore(data_dir)
    store.update(ids[0], state="segmenting", attempts=2)  # the second run was stopped too
    store.update(ids[1], state="preparing", attempts=1)
    next((data_dir / "jobs" / ids[1] / "case").rglob("*-t2w.nii.gz")).unlink()  # an input is gone
    store.update(ids[2], state="segmenting", attempts=1)
    for job_id in ids:
        (store.folder(job_id) / "result").mkdir()
    app = create_app(ServeConfig(data_dir=data_dir), demo_fast, start_worker=False)
    with TestClient(app, base_url=LOCAL) as client:
        for job_id in ids[:2]:
            job = client.get(f"/api/jobs/{job_id}").json()
            assert job["state"] == "failed" and job["message"] == INTERRUPTED and job["summary"] is None
            for key in ("labels", "report", "pdf", "record", "t1c.nii.gz"):
                answer = client.get(f"/api/jobs/{job_id}/files/{key}")
                assert answer.status_code == 409 and "failed" in answer.json()["detail"]
            assert sorted(p.name for p in (data_dir / "jobs" / job_id).iterdir()) == ["job.json"]
        resumed = client.get(f"/api/jobs/{ids[2]}").json()
        assert resumed["state"] == "queued" and resumed["message"] == RESUMED
        # a job running past its estimate says so instead of "0 s left" (seen on a busy machine)
        started = time.time() - 2 * store.expected_seconds(store.get(ids[2]))
        store.update(ids[2], state="segmenting", started=started)
        late = client.get(f"/api/jobs/{ids[2]}").json()
        assert late["overdue"] is True and late["remaining_s"] is None
        store.update(ids[2], started=time.time())
        assert client.get(f"/api/jobs/{ids[2]}").json()["overdue"] is False
        store.update(ids[2], state="queued", started=None)
        assert not (data_dir / "jobs" / ids[2] / "result").exists()
        assert client.delete(f"/api/jobs/{ids[0]}", headers=PAGE).status_code == 200
    assert {j.id for j in JobStore(data_dir).all()} == set(ids[1:])


def test_serve_command_is_registered():
    result = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--model", "--data-dir", "--mode"):
        assert option in result.output
