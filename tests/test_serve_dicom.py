"""glioseg serve with raw studies (issue 19): a zipped DICOM study is prepared, segmented and its
label map served on the original t1c's grid; a study that cannot be prepared is refused at upload
in plain words and leaves nothing behind.

The study is written with pydicom from a small synthetic case (tests/dicom_writer.py). The real
skull stripping (deepbet, two 3-D U-Nets on a 1 mm grid) would take most of a minute on two cores
and is already run end to end on the real raw study by tests/test_prepare_pipeline.py; here it is
replaced by a threshold of the synthetic head, which has a black background, so the test
exercises everything else for real: conversion (dcm2niix), series identification, registration,
the job, the model, the way back to the native grid.
"""

from __future__ import annotations

import gzip
import io
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from glioseg.serve.app import ServeConfig, create_app
from glioseg.serve.runner import load_model
from glioseg.serve.uploads import UploadLimits
from tests.dicom_writer import write_case_study, write_series
from tests.serve_client import wait_done

LOCAL = "http://127.0.0.1"
PAGE = {"X-Glioseg": "1"}


@pytest.fixture(scope="module")
def demo_fast():
    return load_model("demo", "fast")


@pytest.fixture()
def fast_skullstrip(monkeypatch):
    from scipy import ndimage

    import glioseg.prepare.skullstrip as skullstrip

    def threshold_mask(t1: np.ndarray, affine: np.ndarray) -> np.ndarray:
        return ndimage.binary_fill_holes(t1 > 0.05 * float(t1.max()))

    monkeypatch.setattr(skullstrip, "brain_mask", threshold_mask)


def zip_folder(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def _nifti(content: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def test_a_zipped_dicom_study_is_segmented_and_served_on_its_t1c_grid(
    one_case, tmp_path, demo_fast, fast_skullstrip
):
    study = write_case_study(one_case, tmp_path / "study", patient="PAT-7")
    upload = zip_folder(study)
    assert not any(n.endswith((".nii", ".nii.gz")) for n in zipfile.ZipFile(io.BytesIO(upload)).namelist())
    app = create_app(ServeConfig(data_dir=tmp_path / "data"), demo_fast)
    with TestClient(app, base_url=LOCAL) as client:
        answer = client.post("/api/jobs", files=[("files", ("PAT-7 study.zip", upload))], headers=PAGE)
        assert answer.status_code == 201, answer.text
        assert answer.json()["kind"] == "study" and answer.json()["case_id"] == "PAT-7-study"
        job = wait_done(client, answer.json()["id"])
        assert job["state"] == "done", job["message"]
        files = job["summary"]["files"]
        assert files["native"] == "PAT-7-study-native.nii.gz"
        native = _nifti(client.get(f"/api/jobs/{job['id']}/files/native").content)
        prepared = _nifti(client.get(f"/api/jobs/{job['id']}/files/labels").content)
        t1c_served = _nifti(client.get(f"/api/jobs/{job['id']}/files/t1c.nii.gz").content)
    # the prepared grid (1 mm, 240 x 240 x 155) is what the viewer shows, over the prepared t1c
    assert prepared.shape == t1c_served.shape == (240, 240, 155)
    assert np.allclose(prepared.affine, t1c_served.affine)
    # the native label map lies on the original t1c's grid (the one the DICOM series was written from)
    original = nib.load(str(next(one_case.glob("*-t1c.nii.gz"))))
    native_c, original_c = nib.as_closest_canonical(native), nib.as_closest_canonical(original)
    assert native_c.shape == original_c.shape
    assert np.allclose(native_c.affine, original_c.affine, atol=1e-3)
    assert native.get_data_dtype() == np.uint8
    labels, truth = (
        np.asarray(native_c.dataobj),
        np.asarray(nib.as_closest_canonical(nib.load(str(next(one_case.glob("*-seg.nii.gz"))))).dataobj),
    )
    # the same tumour, in the same place: volumes agree with the prepared map's, and it overlaps the truth
    voxel_ml = float(np.prod(original.header.get_zooms()[:3])) / 1000
    native_wt = np.count_nonzero(labels) * voxel_ml
    assert native_wt == pytest.approx(job["summary"]["volumes_ml"]["WT"], rel=0.15)
    dice = (
        2
        * np.count_nonzero((labels > 0) & (truth > 0))
        / (np.count_nonzero(labels) + np.count_nonzero(truth))
    )
    assert dice > 0.5, dice


def test_a_dicom_study_that_cannot_be_prepared_is_refused_and_leaves_nothing(one_case, tmp_path, demo_fast):
    no_flair = write_case_study(one_case, tmp_path / "no_flair", skip=("t2f",))
    two_t1c = write_case_study(one_case, tmp_path / "two_t1c")
    t1c = nib.load(str(next(one_case.glob("*-t1c.nii.gz"))))
    write_series(
        np.asarray(t1c.dataobj),
        t1c.affine,
        two_t1c / "series9",
        9,
        "AX T1 SE POST",
        EchoTime=10,
        RepetitionTime=500,
        ContrastBolusAgent="GADOVIST",
    )
    not_dicom = tmp_path / "not_dicom"
    (not_dicom / "DICOMDIR").parent.mkdir()
    (not_dicom / "IM0001").write_bytes(b"\0" * 300)  # no DICM marker: a file of some other kind
    cases = {
        "missing contrast": (no_flair, ["no series identified as t2f", "FLAIR (t2f)"]),
        "ambiguous contrast": (two_t1c, ["2 series could be t1c", "one series of each contrast"]),
        "no DICOM inside": (not_dicom, ["holds neither NIfTI images", "nor DICOM files"]),
    }
    data_dir = tmp_path / "data"
    app = create_app(ServeConfig(data_dir=data_dir), demo_fast, start_worker=False)
    with TestClient(app, base_url=LOCAL) as client:
        for what, (root, words) in cases.items():
            answer = client.post(
                "/api/jobs", files=[("files", ("study.zip", zip_folder(root)))], headers=PAGE
            )
            assert answer.status_code == 400, (what, answer.text)
            detail = answer.json()["detail"]
            assert all(w in detail for w in words), (what, detail)
            assert "--t" not in detail and str(data_dir) not in detail and "\n" not in detail, (what, detail)
            assert client.get("/api/jobs").json() == [], what
            assert list((data_dir / "jobs").iterdir()) == [], what


def folder_files(root: Path, top: str, field: str = "folder") -> list[tuple[str, tuple[str, bytes]]]:
    """Every file under ``root`` as the page sends a chosen folder: its path inside the folder
    (``webkitRelativePath``, starting with the folder's name ``top``) as the file name."""
    return [
        (field, (f"{top}/{p.relative_to(root).as_posix()}", p.read_bytes()))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body written byte by byte (httpx would escape a NUL or a quote in a file name)."""
    boundary = "glioseg-test-boundary-7c1f"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="'.encode()
        + name.encode("utf-8")
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + data
        + b"\r\n"
        for field, name, data in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}", **PAGE}


def test_a_dicom_folder_sent_file_by_file_is_accepted_as_the_zipped_study_would_be(
    one_case, tmp_path, demo_fast
):
    """Accepted, identified and kept byte for byte as the chosen folder; not segmented here: from
    the job's ``upload/`` on, a folder's job is the zipped study's, which the first test of this
    file segments (the same again took 230 s on the loaded 2-core machine)."""
    study = write_case_study(one_case, tmp_path / "study", patient="PAT-7")
    files = folder_files(study, "PAT-7 study")
    # one file per slice, without extension, in one sub-folder per series: as a scanner's CD holds them
    assert len(files) > 64 and all("." not in Path(name).name for _, (name, _) in files)
    litter = [
        ("folder", ("PAT-7 study/.DS_Store", b"\0\0\0\1Bud1")),
        ("folder", ("PAT-7 study/._IM4_000", b"x")),
    ]
    data_dir = tmp_path / "data"
    app = create_app(ServeConfig(data_dir=data_dir), demo_fast, start_worker=False)
    began = time.time()
    with TestClient(app, base_url=LOCAL) as client:
        answer = client.post("/api/jobs", files=files + litter, headers=PAGE)
        assert answer.status_code == 201, answer.text
        print(f"folder of {len(files) + 2} files accepted in {time.time() - began:.1f} s")
        job = answer.json()
        assert job["kind"] == "study" and job["case_id"] == "PAT-7-study" and job["state"] == "queued"
        assert job["upload_name"] == f"folder PAT-7 study ({len(files) + 2} files)"
        assert [j["id"] for j in client.get("/api/jobs").json()] == [job["id"]]
    upload = data_dir / "jobs" / job["id"] / "upload"
    kept = {p.relative_to(upload).as_posix(): p.read_bytes() for p in upload.rglob("*") if p.is_file()}
    # the folder as it was chosen, the system litter left out, nothing else beside it
    assert kept == dict(f for _, f in files)
    assert sorted(p.name for p in (data_dir / "jobs").iterdir()) == [job["id"]]


def test_a_folder_with_paths_that_leave_it_is_refused_and_leaves_nothing(one_case, tmp_path, demo_fast):
    study = write_case_study(one_case, tmp_path / "study")
    good = [("folder", name, data) for _, (name, data) in folder_files(study, "study")[:30]]
    no_flair = write_case_study(one_case, tmp_path / "no_flair", skip=("t2f",))
    dicom = good[0][2]
    bad_paths = {
        "study/../../escaped": "'..' that leaves the folder",
        "study/series2/../../../escaped": "'..' that leaves the folder",
        "study\\..\\..\\escaped": "'..' that leaves the folder",
        "..": "'..' that leaves the folder",
        "/tmp/escaped": "an absolute path",
        "//server/share/escaped": "an absolute path",
        "\\escaped": "an absolute path",
        "C:/Windows/escaped": "a drive letter",
        "c:escaped": "a drive letter",
        "study/IM\x00.dcm": "a control character",
        "study/IM\x1bnext": "a control character",
    }
    cases: dict[str, tuple[list[tuple[str, str, bytes]], list[str]]] = {
        # the bad path comes last: every path is checked before anything is written
        repr(path): ([*good, ("folder", path, dicom)], [words, "nothing was kept"])
        for path, words in bad_paths.items()
    }
    cases["listed twice"] = ([*good, good[3]], ["twice"])
    cases["file and folder"] = (
        [*good, ("folder", good[3][1] + "/IM1", dicom)],
        ["both as a file and as a folder"],
    )
    cases["deep"] = ([("folder", "/".join(["d"] * 40) + "/IM1", dicom)], ["too deep or too long"])
    cases["folder and files"] = ([*good, ("files", "x-t1n.nii.gz", b"x")], ["not a mix"])
    cases["only litter"] = ([("folder", "study/.DS_Store", b"x")], ["holds no file"])
    cases["missing contrast"] = (
        [("folder", name, data) for _, (name, data) in folder_files(no_flair, "no_flair")],
        ["no_flair: no series identified as t2f", "FLAIR (t2f)"],
    )
    data_dir = tmp_path / "data"
    app = create_app(ServeConfig(data_dir=data_dir), demo_fast, start_worker=False)
    with TestClient(app, base_url=LOCAL) as client:
        for what, (parts, words) in cases.items():
            body, headers = multipart(parts)
            answer = client.post("/api/jobs", content=body, headers=headers)
            assert answer.status_code == 400, (what, answer.text)
            detail = answer.json()["detail"]
            assert all(w in detail for w in words), (what, detail)
            assert str(data_dir) not in detail and "\n" not in detail and "\0" not in detail, (what, detail)
            assert client.get("/api/jobs").json() == [], what
            assert list((data_dir / "jobs").iterdir()) == [], what
    assert not list(tmp_path.rglob("escaped")) and not Path("/tmp/escaped").exists()


def test_a_folder_of_too_many_files_is_refused_in_plain_words(one_case, tmp_path, demo_fast):
    study = write_case_study(one_case, tmp_path / "study")
    files = folder_files(study, "study")[:21]
    data_dir = tmp_path / "data"
    app = create_app(
        ServeConfig(data_dir=data_dir, limits=UploadLimits(max_files=20)), demo_fast, start_worker=False
    )
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/api/info").json()["limits"]["max_files"] == 20  # the page checks it too
        answer = client.post("/api/jobs", files=files, headers=PAGE)
        assert answer.status_code == 413, answer.text
        assert answer.json()["detail"] == (
            "the upload holds more than 20 files, the limit; choose the study's folder only, or zip it"
        )
        assert client.get("/api/jobs").json() == []
        assert list((data_dir / "jobs").iterdir()) == []
