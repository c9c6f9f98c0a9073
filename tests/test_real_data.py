"""Real BraTS cases from ../shared/data load with the right channel order and canonical labels."""

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.cases import discover_cases, load_case
from glioseg.data.modalities import MODALITIES

pytestmark = pytest.mark.realdata

LEGACY_SUFFIX = {"t1n": "_t1.nii.gz", "t1c": "_t1ce.nii.gz", "t2w": "_t2.nii.gz", "t2f": "_flair.nii.gz"}
BRATS2018_IDS = [
    "Brats18_2013_2_1",
    "Brats18_2013_3_1",
    "Brats18_2013_11_1",
    "Brats18_2013_20_1",
    "Brats18_2013_23_1",
    "Brats18_CBICA_ABM_1",
    "Brats18_CBICA_ALU_1",
    "Brats18_CBICA_AME_1",
    "Brats18_CBICA_AQN_1",
    "Brats18_TCIA01_201_1",
    "Brats18_TCIA01_378_1",
    "Brats18_TCIA01_425_1",
    "Brats18_TCIA01_499_1",
    "Brats18_TCIA02_135_1",
    "Brats18_TCIA02_370_1",
    "Brats18_TCIA02_606_1",
    "Brats18_TCIA03_265_1",
    "Brats18_TCIA10_628_1",
    "Brats18_TCIA10_637_1",
    "Brats18_TCIA10_639_1",
    "Brats18_TCIA13_623_1",
]


def test_brats2018_cases_are_all_discovered(real_data):
    result = discover_cases(real_data / "brats2018")
    assert not result.errors
    assert sorted(c.case_id for c in result.cases) == sorted(BRATS2018_IDS)
    for case in result.cases:
        assert case.layout == "brats-legacy"
        for modality in MODALITIES:
            assert case.images[modality].name == case.case_id + LEGACY_SUFFIX[modality]


@pytest.mark.parametrize("case_id", BRATS2018_IDS)
def test_brats2018_case_loads_canonically(real_data, case_id):
    (case,) = discover_cases(real_data / "brats2018" / case_id).cases
    data = load_case(case)
    assert data.image.shape == (4, 240, 240, 155)
    assert data.spacing == pytest.approx((1.0, 1.0, 1.0))
    raw_seg = np.asarray(nib.load(case.label).dataobj)
    assert 3 not in np.unique(raw_seg)  # legacy file: ET stored as 4
    assert set(np.unique(data.label).tolist()) <= {0, 1, 2, 3}
    assert np.count_nonzero(data.label == 3) == np.count_nonzero(raw_seg == 4)
    assert np.count_nonzero(data.label == 1) == np.count_nonzero(raw_seg == 1)
    # channel order: each channel is exactly the file of that modality
    for i, modality in enumerate(MODALITIES):
        direct = np.asarray(nib.load(case.images[modality]).dataobj, dtype=np.float32)
        assert np.array_equal(data.image[i], direct), modality


def test_brats2023_case_loads(real_data):
    result = discover_cases(real_data / "brats2023")
    (case,) = result.cases
    assert case.case_id == "BraTS-GLI-00001-000" and case.layout == "brats2023" and case.label is None
    data = load_case(case)
    assert data.image.shape == (4, 240, 240, 155) and data.label is None
    for i, modality in enumerate(MODALITIES):
        assert case.images[modality].name == f"BraTS-GLI-00001-000-{modality}.nii.gz"
        direct = np.asarray(nib.load(case.images[modality]).dataobj, dtype=np.float32)
        assert np.array_equal(data.image[i], direct)
