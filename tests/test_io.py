import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.io import (
    Geometry,
    load_label,
    load_volume,
    remove_stale_parts,
    save_nifti,
    staged_outputs,
    walk_tree,
)
from glioseg.errors import InputError


def _reference(tmp_path, affine=None, dtype=np.int16):
    affine = (
        np.array([[-1.0, 0, 0, 10], [0, -1.2, 0, 239], [0, 0, 2.5, -3], [0, 0, 0, 1]])
        if affine is None
        else affine
    )
    img = nib.Nifti1Image(np.arange(6 * 7 * 5, dtype=dtype).reshape(6, 7, 5), affine)
    img.set_qform(affine, 2)
    img.set_sform(affine, 1)
    img.header["descrip"] = b"reference"
    path = tmp_path / "ref.nii.gz"
    nib.save(img, path)
    return path


def test_save_keeps_geometry_and_codes(tmp_path):
    ref_path = _reference(tmp_path)
    ref = nib.load(ref_path)
    out = save_nifti(np.ones((6, 7, 5), np.uint8), tmp_path / "sub" / "out.nii.gz", reference=ref)
    img = nib.load(out)
    assert np.allclose(img.affine, ref.affine)
    assert int(img.header["qform_code"]) == 2 and int(img.header["sform_code"]) == 1
    assert img.header.get_zooms() == ref.header.get_zooms()
    assert img.get_data_dtype() == np.uint8
    assert np.asarray(img.dataobj).sum() == 6 * 7 * 5
    assert [p.name for p in out.parent.iterdir()] == ["out.nii.gz"]  # no temporary left behind


def test_save_rejects_wrong_shape_and_leaves_nothing(tmp_path):
    ref = nib.load(_reference(tmp_path))
    with pytest.raises(ValueError, match="does not match"):
        save_nifti(np.zeros((5, 5, 5)), tmp_path / "o" / "bad.nii.gz", reference=ref)
    assert not (tmp_path / "o" / "bad.nii.gz").exists()


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    ref = nib.load(_reference(tmp_path))
    target = tmp_path / "seg.nii.gz"
    save_nifti(np.zeros((6, 7, 5), np.uint8), target, reference=ref)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_nifti(np.ones((6, 7, 5), np.uint8), target, reference=ref)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.nii.gz", "seg.nii.gz"]


def test_load_volume_reads_float(tmp_path):
    data, img = load_volume(_reference(tmp_path))
    assert data.dtype == np.float32 and data.shape == (6, 7, 5)
    assert Geometry.of(img).spacing == pytest.approx((1.0, 1.2, 2.5))


def test_trailing_singleton_axis_is_accepted(tmp_path):
    path = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 1), np.float32), np.eye(4)), path)
    data, _ = load_volume(path)
    assert data.shape == (4, 4, 4)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.ones((4, 4, 4, 2), np.float32), "4-D"),
        (np.ones((4, 4), np.float32), "2-D"),
        (np.where(np.eye(4)[None].repeat(4, 0) > 0, np.nan, 1).astype(np.float32), "NaN"),
        (np.where(np.eye(4)[None].repeat(4, 0) > 0, np.inf, 1).astype(np.float32), "Inf"),
    ],
)
def test_bad_volumes(tmp_path, array, message):
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    with pytest.raises(InputError, match=message) as info:
        load_volume(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_file(tmp_path):
    good = _reference(tmp_path)
    raw = gzip.decompress(good.read_bytes())
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(gzip.compress(raw[: len(raw) - 100]))
    with pytest.raises(InputError, match="truncated") as info:
        load_volume(bad)
    assert str(bad) in str(info.value)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InputError, match="trunc.*|unreadable"):
        load_volume(cut)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"this is not an image at all" * 20, "unreadable")],
)
def test_not_a_nifti(tmp_path, content, message):
    path = tmp_path / "x.nii.gz"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_volume(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_volume(tmp_path / "nope.nii.gz")


@pytest.mark.parametrize(
    ("values", "message"),
    [(np.array([0, 1, 7], np.int16), "outside"), (np.array([0.0, 0.5, 1.0], np.float32), "not integers")],
)
def test_bad_labels(tmp_path, values, message):
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.resize(values, (3, 3, 3)), np.eye(4)), path)
    with pytest.raises(InputError, match=message) as info:
        load_label(path)
    assert str(path) in str(info.value)


def test_legacy_label_file(tmp_path):
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.resize(np.array([0, 1, 2, 4], np.int16), (4, 4, 4)), np.eye(4)), path)
    labels, _ = load_label(path)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}


def test_staged_outputs_move_in_together_with_the_marker_last(tmp_path, monkeypatch):
    import os

    out = tmp_path / "out"
    out.mkdir()
    (out / "A.json").write_text("old")
    moved = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moved.append(Path(dst).name), replace(src, dst)))
    with staged_outputs(out, last="A.nii.gz") as stage:
        for name in ("A.nii.gz", "A.json", "A_report.html"):
            (stage / name).write_text(name)
        assert not (out / "A.nii.gz").exists()  # nothing visible before the block ends
    assert moved == ["A.json", "A_report.html", "A.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == ["A.json", "A.nii.gz", "A_report.html"]
    assert (out / "A.json").read_text() == "A.json"  # an older output is replaced


def test_failed_staging_leaves_the_folder_untouched_and_stale_stages_are_cleared(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError), staged_outputs(out, last="B.nii.gz") as stage:
        (stage / "B.nii.gz").write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    killed = out / ".B.nii.gz.x1y2.part"  # what a process killed inside the block leaves
    killed.mkdir()
    (killed / "B.json").write_text("{}")
    assert remove_stale_parts(out) == [killed]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_staging_folder_left_by_a_killed_run_is_not_read_as_output(tmp_path):
    (tmp_path / "A.nii.gz").write_text("done")
    killed = tmp_path / ".B.nii.gz.k3j2.part"
    killed.mkdir()
    (killed / "B.nii.gz").write_text("never moved in")
    folders, files = walk_tree(tmp_path)
    assert files == [tmp_path / "A.nii.gz"] and folders == [tmp_path]
