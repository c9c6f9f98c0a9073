"""The synthetic generator: determinism, anatomy of the phantoms, contrast signatures, domains."""

import json

import cc3d
import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from glioseg.data.cases import discover_cases, load_case
from glioseg.data.labels import ET, NETC, SNFH
from glioseg.data.modalities import MODALITIES
from glioseg.data.synthetic import generate_case, write_case
from glioseg.data.synthetic.degrade import thick_slices
from glioseg.data.synthetic.generate import TISSUE_INTENSITY

from .conftest import labels_are_nested

SHAPE, SPACING = (64, 64, 52), 3.0


@pytest.fixture(scope="module")
def cohort():
    return {d: [generate_case(11, i, d, SHAPE, SPACING) for i in range(12)] for d in ("adult", "ssa")}


def test_same_seed_same_case_bit_for_bit():
    a = generate_case(5, 2, "ssa", (40, 40, 32), 4.0)
    b = generate_case(5, 2, "ssa", (40, 40, 32), 4.0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert a.metadata == b.metadata


def test_different_seeds_or_indices_differ():
    base = generate_case(5, 2, "adult", (40, 40, 32), 4.0)
    for other in (
        generate_case(6, 2, "adult", (40, 40, 32), 4.0),
        generate_case(5, 3, "adult", (40, 40, 32), 4.0),
    ):
        assert not np.array_equal(base.label, other.label)
        assert not np.array_equal(base.image, other.image)


def test_outputs_are_brats_like(cohort):
    for case in cohort["adult"][:3] + cohort["ssa"][:3]:
        assert case.image.shape == (4, *SHAPE) and case.label.shape == SHAPE
        assert set(np.unique(case.label)) <= {0, 1, 2, 3}
        assert labels_are_nested(case.label)
        brain = case.image[0] > 0
        # skull-stripped: every modality is zero outside the same brain mask, integer-valued
        for channel in case.image:
            assert np.array_equal(channel > 0, brain) or np.mean((channel > 0) == brain) > 0.995
            assert np.array_equal(channel, np.rint(channel))
        assert np.all(brain[case.label > 0])  # tumour lies inside the brain


def test_lesion_anatomy(cohort):
    """ET forms a rim around NETC, edema surrounds the core, the core sits inside WT."""
    checked = 0
    for case in cohort["adult"] + cohort["ssa"]:
        lab = case.label
        netc, et, tc = lab == NETC, lab == ET, np.isin(lab, (NETC, ET))
        if netc.sum() > 20 and et.sum() > 20:
            shell = binary_dilation(netc) & ~netc
            assert (
                np.mean(np.isin(lab[shell], (ET, NETC))) > 0.8
            )  # NETC is wrapped by ET (3 mm voxels break thin rims)
            checked += 1
        if tc.sum() > 50 and (lab == SNFH).sum() > 50:
            main_core = cc3d.largest_k(tc, k=1, connectivity=26) > 0
            inside = case.image[0] > 0
            core_shell = binary_dilation(main_core) & ~main_core & inside
            assert np.mean(lab[core_shell] == SNFH) > 0.5  # edema around the main core (inside the brain)
    assert checked >= 8


def test_cohort_has_variety_for_lesion_wise_metrics(cohort):
    cases = cohort["adult"] + cohort["ssa"]
    multi_wt = sum(cc3d.connected_components(c.label > 0, connectivity=26).max() > 1 for c in cases)
    no_et = sum(not np.any(c.label == ET) for c in cases)
    satellites = sum(any(les["kind"] == "satellite" for les in c.metadata["lesions"]) for c in cases)
    multiple = sum(sum(les["kind"] == "main" for les in c.metadata["lesions"]) > 1 for c in cases)
    assert multi_wt >= 2 and satellites >= 3 and multiple >= 2
    more = [generate_case(11, i, "adult", (40, 40, 32), 4.0) for i in range(12, 60)]
    assert any(not np.any(c.label == ET) for c in cases + more) and no_et < len(cases) // 2


def test_tumour_sizes_are_realistic_and_ssa_larger(cohort):
    wt = {d: np.median([c.metadata["volumes"]["WT_ml"] for c in cohort[d]]) for d in cohort}
    assert 20 < wt["adult"] < 250 and 40 < wt["ssa"] < 350
    core = {
        d: np.mean(
            [
                np.mean([les["core_radii_mm"] for les in c.metadata["lesions"] if les["kind"] == "main"])
                for c in cohort[d]
            ]
        )
        for d in cohort
    }
    assert core["ssa"] > core["adult"]


def _mean(case, modality, mask):
    return float(case.image[MODALITIES.index(modality)][mask].mean())


def test_intensity_signatures_per_label(cohort):
    for case in cohort["adult"]:
        lab, brain = case.label, case.image[0] > 0
        normal = brain & (lab == 0)
        if (lab == ET).sum() < 10 or (lab == NETC).sum() < 10 or (lab == SNFH).sum() < 10:
            continue
        et, netc, snfh = lab == ET, lab == NETC, lab == SNFH
        assert _mean(case, "t1c", et) > 1.3 * _mean(case, "t1c", normal)  # ET enhances
        assert _mean(case, "t1c", netc) < _mean(case, "t1c", normal)  # necrosis dark on t1c
        assert _mean(case, "t2f", snfh) > 1.3 * _mean(case, "t2f", normal)  # edema bright on FLAIR
        assert _mean(case, "t2w", snfh) > 1.2 * _mean(case, "t2w", normal)  # and on T2


def test_csf_contrast_in_the_model():
    mu = TISSUE_INTENSITY
    assert mu["t2w"]["csf"] > max(mu["t2w"]["gm"], mu["t2w"]["wm"])
    assert mu["t2f"]["csf"] < min(mu["t2f"]["gm"], mu["t2f"]["wm"])
    # and in the images: the brightest normal t2w voxels (ventricles) are dark on FLAIR
    case = generate_case(1, 1, "adult", (96, 96, 80), 2.0)
    brain = (case.image[0] > 0) & (case.label == 0)
    t2w, t2f = case.image[2], case.image[3]
    bright_t2 = brain & (t2w > np.percentile(t2w[brain], 97))
    assert t2f[bright_t2].mean() < 0.8 * t2f[brain].mean()


def _noise_level(case):
    """Robust noise estimate: MAD of the Laplacian-like residual inside normal brain, relative to its median."""
    img = case.image[1]
    brain = (img > 0) & (case.label == 0)
    core = brain & np.roll(brain, 1, 0) & np.roll(brain, -1, 0)
    resid = img - 0.5 * (np.roll(img, 1, 0) + np.roll(img, -1, 0))
    return float(np.median(np.abs(resid[core])) / np.median(img[brain]))


def test_ssa_is_lower_quality_than_adult():
    adult = [generate_case(2, i, "adult", (80, 80, 64), 2.5) for i in range(3)]
    ssa = [generate_case(2, i, "ssa", (80, 80, 64), 2.5) for i in range(3)]
    for case in ssa:
        acquisition = case.metadata["acquisition"]["modalities"]
        assert all(acquisition[m]["snr"] < 15 for m in MODALITIES)
        assert all(acquisition[m]["bias_strength"] >= 0.15 for m in MODALITIES)
    assert np.mean([c.metadata["acquisition"]["modalities"]["t1c"]["snr"] for c in adult]) > 24
    assert np.mean([c.metadata["acquisition"]["modalities"]["t1n"]["snr"] for c in ssa]) < 15


def test_thick_slices_remove_through_plane_detail():
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((30, 30, 40)).astype(np.float32)
    out = thick_slices(vol, axis=2, factor=5)
    assert out.shape == vol.shape
    through = np.abs(np.diff(out, axis=2)).mean()
    in_plane = np.abs(np.diff(out, axis=0)).mean()
    assert through < 0.5 * in_plane
    assert np.array_equal(thick_slices(vol, 2, 1), vol)


def test_write_case_uses_brats2023_naming(tmp_path):
    case = generate_case(4, 9, "ssa", (40, 40, 32), 4.0)
    folder = write_case(case, tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        [f"{case.case_id}-{m}.nii.gz" for m in (*MODALITIES, "seg")] + [f"{case.case_id}-synth.json"]
    )
    loaded = load_case(discover_cases(folder).cases[0])
    assert np.array_equal(loaded.label, case.label)
    assert np.array_equal(loaded.image, case.image)
    assert np.allclose(loaded.spacing, (4.0, 4.0, 4.0))
    meta = json.loads((folder / f"{case.case_id}-synth.json").read_text())
    assert meta["synthetic"] is True and meta["domain"] == "ssa"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"domain": "paediatric"}, "unknown domain"),
        ({"shape": (4, 4, 4)}, "shape"),
        ({"spacing": 20.0}, "spacing"),
    ],
)
def test_bad_generator_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_case(0, 1, **kwargs)
