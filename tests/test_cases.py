"""Case discovery in every layout and validation of every kind of bad input."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.cases import discover_cases, iter_loaded, load_case
from glioseg.data.modalities import MODALITIES, modality_from_name
from glioseg.errors import InputError

LEGACY = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}


def _case_files(folder):
    case_id = folder.name
    return (
        case_id,
        {m: folder / f"{case_id}-{m}.nii.gz" for m in MODALITIES},
        folder / f"{case_id}-seg.nii.gz",
    )


def _as_legacy(src_folder, dest_root, new_id="Brats18_TEST_001_1"):
    case_id, images, seg = _case_files(src_folder)
    dest = dest_root / new_id
    dest.mkdir(parents=True)
    for m, path in images.items():
        shutil.copy(path, dest / f"{new_id}_{LEGACY[m]}.nii.gz")
    img = nib.load(seg)
    lab = np.asarray(img.dataobj).astype(np.int16)
    lab[lab == 3] = 4
    nib.save(nib.Nifti1Image(lab, img.affine), dest / f"{new_id}_seg.nii.gz")
    return dest


def test_brats2023_layout(small_cohort):
    result = discover_cases(small_cohort)
    assert not result.errors
    assert [c.case_id for c in result.cases] == [f"SynSSA-s7-000{i}" for i in range(1, 5)]
    case = result.cases[0]
    assert case.layout == "brats2023"
    assert [case.images[m].name.split("-")[-1] for m in MODALITIES] == [f"{m}.nii.gz" for m in MODALITIES]
    assert case.label is not None


def test_single_case_folder_is_a_root(small_cohort):
    result = discover_cases(small_cohort / "SynSSA-s7-0002")
    assert [c.case_id for c in result.cases] == ["SynSSA-s7-0002"]


def test_channel_order_and_content(small_cohort):
    case = discover_cases(small_cohort).cases[0]
    data = load_case(case)
    assert data.image.shape == (4, 48, 48, 40) and data.image.dtype == np.float32
    for i, m in enumerate(MODALITIES):
        direct = nib.load(case.images[m]).get_fdata(dtype=np.float32)
        assert np.array_equal(data.image[i], direct)
    assert data.label.dtype == np.uint8 and set(np.unique(data.label)) <= {0, 1, 2, 3}


def test_legacy_layout_maps_names_and_labels(small_cohort, tmp_path):
    src = small_cohort / "SynSSA-s7-0001"
    _as_legacy(src, tmp_path)
    result = discover_cases(tmp_path)
    (case,) = result.cases
    assert case.layout == "brats-legacy" and case.case_id == "Brats18_TEST_001_1"
    assert case.images["t1c"].name.endswith("_t1ce.nii.gz") and case.images["t2f"].name.endswith(
        "_flair.nii.gz"
    )
    legacy = load_case(case)
    original = load_case(discover_cases(src).cases[0])
    assert np.array_equal(legacy.image, original.image)
    assert np.array_equal(legacy.label, original.label)  # 4 -> 3 on load


def _as_nnunet(cohort, dest, channel_names, labels, remap):
    (dest / "imagesTr").mkdir(parents=True)
    (dest / "labelsTr").mkdir()
    for case in discover_cases(cohort).cases:
        for channel, name in channel_names.items():
            source = case.images[modality_from_name(name) or "t2f"]
            shutil.copy(source, dest / "imagesTr" / f"{case.case_id}_{int(channel):04d}.nii.gz")
        img = nib.load(case.label)
        lab = np.asarray(img.dataobj)
        out = np.zeros_like(lab)
        for canonical, stored in remap.items():
            out[lab == canonical] = stored
        nib.save(nib.Nifti1Image(out, img.affine), dest / "labelsTr" / f"{case.case_id}.nii.gz")
    (dest / "dataset.json").write_text(
        json.dumps(
            {"channel_names": channel_names, "labels": labels, "numTraining": 4, "file_ending": ".nii.gz"}
        )
    )


def test_nnunet_layout_with_region_labels_and_shuffled_channels(small_cohort, tmp_path):
    # nnU-Net's own BraTS conversion: 1 = edema, 2 = necrosis, 3 = ET, labels declared as nested regions
    channels = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    _as_nnunet(small_cohort, tmp_path / "Dataset900", channels, labels, remap={2: 1, 1: 2, 3: 3})
    result = discover_cases(tmp_path / "Dataset900")
    assert len(result.cases) == 4 and not result.errors
    for case in result.cases:
        assert case.layout == "nnunet"
        assert case.images["t2f"].name.endswith("_0000.nii.gz")
        loaded = load_case(case)
        reference = load_case(discover_cases(small_cohort / case.case_id).cases[0])
        assert np.array_equal(loaded.image, reference.image)
        assert np.array_equal(loaded.label, reference.label)


def test_nnunet_layout_with_named_labels(small_cohort, tmp_path):
    channels = {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"}
    labels = {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}
    _as_nnunet(small_cohort, tmp_path / "D", channels, labels, remap={1: 1, 2: 2, 3: 3})
    case = discover_cases(tmp_path / "D").cases[0]
    assert np.array_equal(
        load_case(case).label, load_case(discover_cases(small_cohort / case.case_id).cases[0]).label
    )


def test_nnunet_unknown_channel_name(small_cohort, tmp_path):
    _as_nnunet(
        small_cohort, tmp_path / "D", {"0": "t1n", "1": "t1c", "2": "t2w", "3": "ADC"}, {"background": 0}, {}
    )
    with pytest.raises(InputError, match="ADC"):
        discover_cases(tmp_path / "D")


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(InputError, match="not found"):
        discover_cases(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no BraTS case"):
        discover_cases(tmp_path / "empty")


def test_missing_modality_is_reported_and_others_listed(small_cohort, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(small_cohort, root)
    (root / "SynSSA-s7-0002" / "SynSSA-s7-0002-t2w.nii.gz").unlink()
    result = discover_cases(root)
    assert [c.case_id for c in result.cases] == ["SynSSA-s7-0001", "SynSSA-s7-0003", "SynSSA-s7-0004"]
    (error,) = result.errors
    assert "SynSSA-s7-0002" in str(error) and "missing modality t2w" in str(error)


def test_two_files_claim_one_modality(one_case):
    case_id = one_case.name
    shutil.copy(one_case / f"{case_id}-t1c.nii.gz", one_case / f"{case_id}-t1c.nii")
    result = discover_cases(one_case)
    assert not result.cases
    assert "two files claim modality t1c" in str(result.errors[0])


def _rewrite(path, transform):
    img = nib.load(path)
    data, affine = transform(np.asarray(img.get_fdata(), dtype=np.float32), img.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), path)


def _load_error(folder) -> str:
    with pytest.raises(InputError) as info:
        load_case(discover_cases(folder).cases[0])
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("modality", "transform", "expected"),
    [
        ("t2w", lambda d, a: (d[:-2], a), "shape"),
        ("t1c", lambda d, a: (d, a @ np.diag([1.5, 1, 1, 1])), "spacing"),
        (
            "t2f",
            lambda d, a: (d, a + np.array([[0, 0, 0, 5.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])),
            "affine",
        ),
        ("t1n", lambda d, a: (np.where(d > d.max() * 0.5, np.nan, d), a), "NaN"),
        ("t1c", lambda d, a: (np.where(d > d.max() * 0.5, np.inf, d), a), "Inf"),
        ("t2w", lambda d, a: (np.zeros_like(d), a), "all zero"),
        ("t2f", lambda d, a: (d[..., None].repeat(2, axis=-1), a), "4-D"),
    ],
)
def test_bad_image_names_file_and_problem(one_case, modality, transform, expected):
    path = one_case / f"{one_case.name}-{modality}.nii.gz"
    _rewrite(path, transform)
    message = _load_error(one_case)
    assert str(path) in message and expected in message


def test_truncated_image(one_case):
    path = one_case / f"{one_case.name}-t2f.nii.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    message = _load_error(one_case)
    assert str(path) in message and ("truncated" in message or "unreadable" in message)


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (lambda d, a: (np.where(d == 2, 6, d), a), "outside"),
        (lambda d, a: (np.where(d == 2, 1.5, d), a), "not integers"),
        (lambda d, a: (d[:, :, :-1], a), "shape"),
    ],
)
def test_bad_label_names_file_and_problem(one_case, transform, expected):
    path = one_case / f"{one_case.name}-seg.nii.gz"
    _rewrite(path, transform)
    message = _load_error(one_case)
    assert str(path) in message and expected in message


def test_batch_loading_continues_after_bad_case(small_cohort, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(small_cohort, root)
    bad = root / "SynSSA-s7-0003" / "SynSSA-s7-0003-t1n.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])
    outcomes = list(iter_loaded(discover_cases(root).cases))
    ok = [c.case_id for c, data, err in outcomes if err is None]
    failed = [(c.case_id, str(err)) for c, data, err in outcomes if err is not None]
    assert ok == ["SynSSA-s7-0001", "SynSSA-s7-0002", "SynSSA-s7-0004"]
    assert failed[0][0] == "SynSSA-s7-0003" and str(bad) in failed[0][1]


def test_inputs_are_not_modified(small_cohort):
    before = {p: p.stat().st_mtime_ns for p in small_cohort.rglob("*")}
    for case in discover_cases(small_cohort).cases:
        load_case(case)
    assert {p: p.stat().st_mtime_ns for p in small_cohort.rglob("*")} == before


def test_grid_mismatch_messages_name_the_reference_plainly(one_case):
    """It read 'differs from t1n's the other images of the case'."""
    path = one_case / f"{one_case.name}-t2f.nii.gz"
    _rewrite(path, lambda d, a: (d, a + np.array([[0, 0, 0, 5.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])))
    assert _load_error(one_case) == f"{path}: affine (voxel-to-world orientation/origin) differs from t1n's"


def test_an_empty_case_folder_in_a_batch_is_reported_and_the_others_found(one_case, tmp_path):
    batch = one_case.parent
    (batch / "forgotten-case").mkdir()
    found = discover_cases(batch)
    assert [c.case_id for c in found.cases] == [one_case.name]
    assert [str(e) for e in found.errors] == [
        f"{batch / 'forgotten-case'}: empty folder inside the input: no case files in it"
    ]
