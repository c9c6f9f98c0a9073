"""Folders of symbolic links to case folders (nnU-Net raw folders, cluster storage) are followed; loops are not."""

import os
import shutil

from glioseg.data.cases import discover_cases
from glioseg.evaluate import evaluate
from glioseg.postprocess.apply import collect_predictions


def _linked_cohort(one_case, tmp_path):
    """``links/<ID>`` -> the real case folder, which holds a link back to its parent (a loop)."""
    real = tmp_path / "store"
    real.mkdir()
    case = real / one_case.name
    shutil.move(str(one_case), case)
    os.symlink(real, case / "loop")  # case/loop -> store (contains the case again)
    links = tmp_path / "links"
    links.mkdir()
    os.symlink(case, links / one_case.name)
    return links, case


def test_cases_behind_links_are_found_once_despite_a_loop(one_case, tmp_path):
    links, case = _linked_cohort(one_case, tmp_path)
    found = discover_cases(links)
    assert [c.case_id for c in found.cases] == [case.name] and found.errors == []


def test_evaluate_and_postprocess_follow_links_to_case_folders(one_case, tmp_path):
    links, case = _linked_cohort(one_case, tmp_path)
    seg = next(case.glob("*-seg.nii.gz"))
    pred_store = tmp_path / "pred-store" / case.name
    pred_store.mkdir(parents=True)
    shutil.copy(seg, pred_store / f"{case.name}.nii.gz")
    pred_links = tmp_path / "pred-links"
    pred_links.mkdir()
    os.symlink(pred_store, pred_links / case.name)
    run = evaluate(pred_links, links)
    assert run.failures == [] and [r.case_id for r in run.results] == [case.name]
    assert run.results[0].regions["WT"].lesionwise_dice == 1.0  # the truth against itself
    maps, problems = collect_predictions(pred_links)
    assert list(maps) == [case.name] and problems == []
