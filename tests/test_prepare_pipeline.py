"""glioseg prepare end to end on the real raw study: offline, BraTS-named, and back to the native grid."""

from __future__ import annotations

import json
import socket

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app


@pytest.mark.realdata
@pytest.mark.slow
def test_the_real_study_is_prepared_offline_and_labels_return_to_its_t1c_grid(
    real_data, tmp_path, monkeypatch
):
    def no_network(*args, **kwargs):
        raise AssertionError("glioseg prepare opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    raw = real_data / "raw" / "TCGA-FG-6692"
    out = tmp_path / "case"
    result = CliRunner().invoke(app, ["prepare", str(raw), "--out", str(out), "--id", "TCGA-FG-6692"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "TCGA-FG-6692-prepare.json").read_text())
    assert {m: v["how"] for m, v in record["chosen"].items()} == dict.fromkeys(
        ("t1n", "t1c", "t2w", "t2f"), "identified"
    )
    assert (
        "_t1c.nii.gz" in record["chosen"]["t1c"]["series"]
        and "_fla.nii.gz" in record["chosen"]["t2f"]["series"]
    )
    assert any("5.5 mm slices" in w for w in record["warnings"])
    for m in ("t1n", "t1c", "t2w", "t2f"):
        image = nib.load(str(out / f"TCGA-FG-6692-{m}.nii.gz"))
        assert image.shape == (240, 240, 155) and nib.aff2axcodes(image.affine) == ("L", "P", "S")
    mask = nib.load(str(out / "TCGA-FG-6692-brainmask.nii.gz"))
    assert 1000 < record["skullstrip"]["brain_ml"] < 2000
    assert sorted(p.name for p in (out / "qc").iterdir()) == [
        "1_inputs.png",
        "2_registration.png",
        "3_skullstrip.png",
        "4_prepared.png",
        "before_after.png",
    ]
    from glioseg.prepare.native import write_native

    native = write_native(
        out / "TCGA-FG-6692-brainmask.nii.gz", out, "TCGA-FG-6692", tmp_path / "native.nii.gz"
    )
    original = nib.load(str(next(raw.glob("*_t1c.nii.gz"))))
    back = nib.load(str(native))
    assert back.shape == original.shape and np.array_equal(back.affine, original.affine)
    volume_ml = np.count_nonzero(np.asarray(back.dataobj)) * np.prod(original.header.get_zooms()[:3]) / 1000
    assert abs(volume_ml - np.count_nonzero(np.asarray(mask.dataobj)) / 1000) < 0.05 * volume_ml
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        p.name for p in raw.iterdir()
    )  # read only, untouched
