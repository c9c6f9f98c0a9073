"""Post-processing operations and configurations on hand-built label maps."""

import json

import numpy as np
import pytest
from scipy import ndimage

from glioseg.errors import InputError
from glioseg.evaluate import evaluate_labels
from glioseg.postprocess import (
    Operation,
    PostprocessConfig,
    apply_operations,
    components,
    keep_largest_components,
    redefine_label,
    remove_small_components,
)
from glioseg.postprocess.grid import Grid, Setting
from glioseg.postprocess.scoring import CasePlan, score_case

STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def _blob_lattice(rng, shape=(90, 90, 14), step=4):
    """Hundreds of separate z-columns of random length (1..10 voxels) and label; returns labels and lengths."""
    labels = np.zeros(shape, np.uint8)
    lengths = {}
    for x in range(1, shape[0] - 1, step):
        for y in range(1, shape[1] - 1, step):
            n = int(rng.integers(1, 11))
            labels[x, y, 2 : 2 + n] = int(rng.integers(1, 4))
            lengths[(x, y)] = n
    return labels, lengths


def _reference_removal(labels, members, min_size, fill):
    """Plain per-component removal with scipy (the slow reference the LUT version must equal)."""
    out = labels.copy()
    ids, n = ndimage.label(np.isin(labels, members), structure=STRUCTURE_26)
    for k in range(1, n + 1):
        comp = ids == k
        if comp.sum() < min_size:
            out[comp] = fill
    return out


def test_remove_small_wt_components_sets_them_to_background():
    lab = np.zeros((12, 12, 12), np.uint8)
    lab[1:5, 1:5, 1:5] = 2  # 64 voxels with a core inside
    lab[2:4, 2:4, 2:4] = 1
    lab[2, 2, 2] = 3
    lab[9:11, 9:11, 9] = 2  # 4 voxels
    lab[9, 9, 9] = 3  # ... one of them ET: the whole component goes
    before = lab.copy()
    out = remove_small_components(lab, "WT", 5)
    assert np.array_equal(lab, before)  # input untouched
    assert out.dtype == np.uint8
    assert not out[8:, 8:, 8:].any()
    assert np.array_equal(out[:6, :6, :6], lab[:6, :6, :6])
    assert np.array_equal(
        remove_small_components(lab, "WT", 4), lab
    )  # "smaller than": 4 voxels stay at T = 4
    assert np.array_equal(remove_small_components(lab, "WT", 0), lab)


def test_remove_small_et_becomes_netc_and_small_tc_becomes_edema():
    lab = np.zeros((14, 14, 14), np.uint8)
    lab[1:13, 1:13, 1:13] = 2
    lab[2:6, 2:6, 2:6] = 3  # ET 64 voxels
    lab[9, 9, 9] = 3  # lone ET voxel in edema: TC and ET component of 1
    lab[9:11, 2:4, 9] = 1  # NETC 4 voxels with an ET voxel beside it
    lab[11, 2, 9] = 3
    out = remove_small_components(lab, "ET", 2)
    assert out[9, 9, 9] == 1 and out[11, 2, 9] == 1  # ET -> NETC, still tumour core
    expected_et = lab == 3
    expected_et[9, 9, 9] = expected_et[11, 2, 9] = False
    assert np.array_equal(out == 3, expected_et)
    assert (out[2:6, 2:6, 2:6] == 3).all()
    assert np.array_equal(out > 0, lab > 0)
    out = remove_small_components(lab, "TC", 6)
    assert out[9, 9, 9] == 2 and (out[9:12, 2:4, 9] == 2).all()  # the NETC + ET component (5 voxels) -> SNFH
    assert (out[2:6, 2:6, 2:6] == 3).all()
    assert np.array_equal(out > 0, lab > 0)
    out = remove_small_components(lab, "ET", 2, fill=2)  # an explicit fill
    assert out[9, 9, 9] == 2
    with pytest.raises(ValueError, match="part of target"):
        remove_small_components(lab, "TC", 2, fill=3)
    with pytest.raises(ValueError, match="unknown target"):
        remove_small_components(lab, "XX", 2)


def test_components_are_26_connected():
    lab = np.zeros((5, 5, 5), np.uint8)
    lab[1, 1, 1] = lab[2, 2, 2] = 3  # corner contact only
    assert components(lab, "ET").sizes[1:].tolist() == [2]
    assert np.array_equal(remove_small_components(lab, "ET", 2), lab)
    assert (remove_small_components(lab, "ET", 3)[lab > 0] == 1).all()


@pytest.mark.parametrize("target,members,fill", [("WT", (1, 2, 3), 0), ("TC", (1, 3), 2), ("ET", (3,), 1)])
def test_removal_on_hundreds_of_components_equals_the_per_component_reference(target, members, fill):
    rng = np.random.default_rng(4)
    lab, lengths = _blob_lattice(rng)
    comps = components(lab, target)
    assert comps.n > 100
    for threshold in (2, 5, 9):
        expected = _reference_removal(lab, members, threshold, fill)
        assert np.array_equal(remove_small_components(lab, target, threshold), expected)
    if target == "WT":  # the columns are the components: check against their known lengths too
        out = remove_small_components(lab, "WT", 6)
        for (x, y), n in lengths.items():
            assert bool(out[x, y, 2]) == (n >= 6)


def test_keep_largest_components_with_ties_in_raster_order():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[1:4, 1:4, 1:4] = 2  # 27
    lab[10:12, 1:3, 1:3] = 1  # 8, first of the tied pair in C order
    lab[15:17, 15:17, 15:17] = 3  # 8
    out = keep_largest_components(lab, "WT", 2)
    assert (
        (out[1:4, 1:4, 1:4] == 2).all() and (out[10:12, 1:3, 1:3] == 1).all() and not out[15:, 15:, 15:].any()
    )
    assert np.array_equal(keep_largest_components(lab, "WT", 3), lab)
    assert np.array_equal(keep_largest_components(lab, "WT", 0), lab)
    out = keep_largest_components(lab, "TC", 1)  # the smaller core component becomes edema
    assert (out[15:17, 15:17, 15:17] == 2).all() and (out[10:12, 1:3, 1:3] == 1).all()
    rng = np.random.default_rng(1)
    many, _ = _blob_lattice(rng)
    sizes = components(many, "WT").sizes[1:]
    kept = components(keep_largest_components(many, "WT", 10), "WT").sizes[1:]
    assert sorted(kept.tolist()) == sorted(sizes.tolist())[-10:]


def test_redefine_label_by_et_fraction_of_the_whole_tumour():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[:, :, :5] = 2  # 500 voxels
    lab[0:2, 0:2, 0:5] = 1
    lab[0, 0, 0:5] = 3  # ET 5 / WT 500 = 0.01
    assert np.array_equal(redefine_label(lab, min_fraction=0.01), lab)  # strict: ratio == r keeps ET
    out = redefine_label(lab, min_fraction=0.011)
    assert not (out == 3).any() and np.array_equal(out == 1, (lab == 1) | (lab == 3))
    assert np.array_equal(redefine_label(lab, min_fraction=0), lab)
    assert np.array_equal(redefine_label(np.zeros_like(lab), min_fraction=0.5), np.zeros_like(lab))
    only_et = np.zeros_like(lab)
    only_et[1, 1, 1] = 3
    assert np.array_equal(redefine_label(only_et, min_fraction=0.5), only_et)  # ratio 1
    out = redefine_label(lab, label=3, into=1, min_fraction=0.2, of="TC")  # ET 5 / TC 20 = 0.25
    assert np.array_equal(out, lab)


def _random_prediction(rng, shape=(30, 30, 24)):
    """A core tumour plus random small blobs of random labels: many components of every region."""
    lab = np.zeros(shape, np.uint8)
    lab[8:20, 8:20, 6:16] = 2
    lab[11:17, 11:17, 8:14] = 1
    lab[12:16, 12:16, 9:13] = 3
    for _ in range(40):
        x, y, z = (int(rng.integers(0, s - 3)) for s in shape)
        r = rng.integers(1, 4, 3)
        lab[x : x + r[0], y : y + r[1], z : z + r[2]] = int(rng.integers(1, 4))
    return lab


def _random_settings(rng, n):
    return [
        Setting(
            int(rng.choice([0, 2, 4, 9, 30])),
            int(rng.choice([0, 0, 1, 3])),
            int(rng.choice([0, 2, 5, 12])),
            int(rng.choice([0, 2, 3, 8])),
            float(rng.choice([0, 0.02, 0.1, 0.3])),
        )
        for _ in range(n)
    ]


def test_plan_lookup_equals_running_the_operations_and_applying_twice_changes_nothing():
    rng = np.random.default_rng(0)
    for _ in range(6):
        pred = _random_prediction(rng)
        plan = CasePlan(pred)
        for setting in _random_settings(rng, 12):
            once = apply_operations(pred, setting.operations())
            assert np.array_equal(plan.apply(setting), once), setting
            assert np.array_equal(apply_operations(once, setting.operations()), once), setting


def test_score_table_equals_evaluating_each_setting():
    rng = np.random.default_rng(2)
    gt = _random_prediction(rng)
    pred = gt.copy()
    pred[gt == 3] = np.where(rng.random(int((gt == 3).sum())) < 0.2, 1, 3)  # some ET missed
    pred = np.maximum(pred, _random_prediction(rng) * (rng.random(gt.shape) < 0.5))
    grid = Grid(
        wt_min_size=(0, 3, 10), wt_keep=(0, 2), tc_min_size=(0, 4), et_min_size=(0, 2, 6), et_ratio=(0, 0.15)
    )
    settings = grid.settings()
    assert settings[0].is_identity and len(settings) == 3 * 2 * 2 * 3 * 2
    for definition in ("brats2024-ssa", "brats2023"):
        table = score_case(pred, gt, (1.0, 1.2, 2.0), settings, definition)
        assert table.n_maps < len(settings)
        for s in range(0, len(settings), 5):
            result = evaluate_labels(
                apply_operations(pred, settings[s].operations()), gt, (1.0, 1.2, 2.0), definition
            )
            for i, region in enumerate(("WT", "TC", "ET")):
                assert table.dice[s, i] == result.regions[region].lesionwise_dice, (
                    definition,
                    settings[s],
                    region,
                )
                assert table.hd95[s, i] == result.regions[region].lesionwise_hd95, (
                    definition,
                    settings[s],
                    region,
                )


def test_config_json_round_trip_and_one_line_errors(tmp_path):
    config = PostprocessConfig(operations=Setting(300, 2, 50, 25, 0.04).operations(voxel_mm3=1.0))
    path = config.save(tmp_path / "pp.json")
    loaded = PostprocessConfig.load(path)
    assert loaded.to_dict() == config.to_dict()
    assert [op.op for op in loaded.operations] == [
        "remove_small_components",
        "keep_largest_components",
        "remove_small_components",
        "remove_small_components",
        "redefine_label",
    ]
    rng = np.random.default_rng(5)
    pred = _random_prediction(rng)
    assert np.array_equal(loaded.apply(pred), apply_operations(pred, config.operations))
    assert np.array_equal(PostprocessConfig().apply(pred), pred)  # no operation: identity

    def broken(change, message):
        d = json.loads(path.read_text())
        change(d)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(d))
        with pytest.raises(InputError, match=message) as info:
            PostprocessConfig.load(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)

    broken(lambda d: d.update(version=7), "version 7")
    broken(lambda d: d["operations"].append({"op": "dilate"}), "unknown operation 'dilate'")
    broken(lambda d: d["operations"][0].pop("min_size"), "missing min_size")
    broken(lambda d: d["operations"][0].update(target="XX"), "unknown target")
    broken(lambda d: d["operations"][0].update(min_size="big"), "min_size must be int")
    broken(lambda d: d["operations"][4].update(into=9), "canonical label")
    broken(lambda d: d["operations"][2].update(fill=3), "part of target")
    with pytest.raises(InputError, match="not found"):
        PostprocessConfig.load(tmp_path / "missing.json")
    op = Operation.from_dict({"op": "remove_small_components", "target": "ET", "min_size": 25.0})
    assert op.params["min_size"] == 25 and isinstance(op.params["min_size"], int)
