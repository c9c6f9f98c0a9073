"""scripts/compare_runs.py: the experiment report's paired statistics for any two scored runs."""

import csv
import importlib.util
from pathlib import Path

import pytest

from glioseg.evaluate.stats import paired_difference

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"


def _script():
    spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _per_case(path: Path, scores: dict[str, float], order=None) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id"] + [f"{r}_lesionwise_dice" for r in ("WT", "TC", "ET")])
        for case in order or scores:
            writer.writerow([case, scores[case], scores[case] / 2, scores[case] / 4])
    return path


def test_pairs_cases_by_id_and_matches_the_report_statistics(tmp_path):
    script = _script()
    base = {f"c{i}": 0.1 * i for i in range(1, 9)}
    better = {c: v + 0.05 + 0.01 * (i % 3) for i, (c, v) in enumerate(base.items())}
    a = _per_case(tmp_path / "a.csv", base)
    b = _per_case(tmp_path / "b.csv", better, order=sorted(better, reverse=True))  # row order differs
    rows = {r["region"]: r for r in script.compare(a, b)}
    cases = sorted(base)
    expected = paired_difference([base[c] for c in cases], [better[c] for c in cases])
    assert rows["WT"]["difference"] == pytest.approx(expected.mean_difference)
    assert (rows["WT"]["ci_low"], rows["WT"]["p_wilcoxon"]) == pytest.approx(
        (expected.ci_low, expected.p_wilcoxon)
    )
    assert rows["WT"]["significant"] and rows["WT"]["difference"] > rows["TC"]["difference"] > 0
    same = {r["region"]: r for r in script.compare(a, a)}
    assert same["ET"]["difference"] == 0 and not same["ET"]["significant"]


def test_refuses_runs_of_other_cases_or_other_files(tmp_path):
    script = _script()
    a = _per_case(tmp_path / "a.csv", {"c1": 0.5, "c2": 0.6})
    b = _per_case(tmp_path / "b.csv", {"c1": 0.5, "c3": 0.6})
    with pytest.raises(SystemExit, match=r"b\.csv: scores other cases"):
        script.compare(a, b)
    (tmp_path / "bad.csv").write_text("case_id,WT_dice\nc1,0.5\n")
    with pytest.raises(SystemExit, match=r"bad\.csv: not a per_case\.csv"):
        script.compare(tmp_path / "bad.csv", a)
