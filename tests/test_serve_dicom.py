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
from tests.dicom_writer import write_case_study, write_series

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


def wait_done(client: TestClient, job_id: str, timeout: float = 600) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


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
