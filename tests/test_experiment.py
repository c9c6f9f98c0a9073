"""glioseg experiment transfer --scale tiny: the whole pipeline runs and fills every row of the report."""

import json
import math
import re

import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.evaluate.stats import paired_difference

pytestmark = pytest.mark.slow


@pytest.mark.timeout(2400)  # ~8 min alone on 2 cores; >15 min when the machine is shared (seen)
def test_tiny_transfer_experiment_fills_its_report_and_resumes(tmp_path):
    out = tmp_path / "exp"
    runner = CliRunner()
    result = runner.invoke(app, ["experiment", "transfer", "--out", str(out), "--scale", "tiny"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    keys = [arm["key"] for arm in results["arms"]]
    assert keys == [
        "nnunet-scratch",
        "nnunet-pretrained",
        "nnunet-ft-random",
        "nnunet-ft-stratified",
        "mednext-scratch",
        "mednext-pretrained",
        "mednext-ft-random",
        "mednext-ft-stratified",
        "ensemble",
        "ensemble-pp",
    ]
    report = (out / "report.md").read_text()
    for arm in results["arms"]:
        scores = arm["scores"]
        assert len(scores["case_id"]) == 3
        for region in ("ET", "TC", "WT"):
            values = scores[f"{region}_dice"] + scores[f"{region}_hd95"]
            assert all(math.isfinite(v) for v in values)
            assert all(0 <= v <= 1 for v in scores[f"{region}_dice"])
        assert arm["title"] in report
    # the table rows are numbers computed in this run: they match the per-case evaluations on disk
    import pandas as pd

    for arm in results["arms"]:
        frame = pd.read_csv(out / "test" / arm["key"] / "evaluation" / "per_case.csv").sort_values("case_id")
        assert frame["WT_lesionwise_dice"].tolist() == pytest.approx(arm["scores"]["WT_dice"])
    assert "All numbers below are on synthetic phantoms" in report
    assert "`glioseg experiment transfer --out EXP --scale tiny --seed 0`" in report  # how to reproduce it
    assert "glioseg synth" in report and "glioseg finetune" in report and "glioseg postprocess tune" in report
    assert set(results["comparisons"]) and all("verdict" in c for c in results["comparisons"].values())
    # the training time is summed from every trained network's own record, which survives resumes
    trained = [*(out / "pretrained").glob("**/model.json"), *(out / "cv").glob("**/model.json")]
    found = re.search(r"each of the (\d+) trained networks", report)
    assert found and int(found.group(1)) == len(trained) > 0
    html = (out / "report.html").read_text()
    assert "<table>" in html and "figures/case-worst.png" in html
    assert (out / "figures" / "case-best.png").exists()
    # rerunning skips every finished step
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    again = runner.invoke(app, ["experiment", "transfer", "--out", str(out), "--scale", "tiny"])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")} == stamps
    assert "[cv]" not in again.output and "[pretrain]" not in again.output


def test_paired_difference_needs_both_interval_and_test():
    few = paired_difference([0.5, 0.6, 0.7], [0.6, 0.7, 0.8])
    assert few.ci_low > 0 and not few.significant
    many = paired_difference([0.5 + 0.01 * i for i in range(12)], [0.6 + 0.011 * i for i in range(12)])
    assert many.significant and many.p_wilcoxon < 0.05
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1, 2], [1])


def test_verdicts_follow_the_paired_statistics():
    from glioseg.report.experiment import verdict

    base = [0.5 + 0.01 * i for i in range(12)]
    up = paired_difference(base, [b + 0.1 + 0.001 * i for i, b in enumerate(base)])  # large and consistent
    down = paired_difference(base, [b - 0.1 - 0.001 * i for i, b in enumerate(base)])
    noise = [0.02, -0.03, 0.01, -0.01, 0.03, -0.02, 0.0, 0.01, -0.02, 0.02, -0.01, -0.02]  # mean < 0
    flat = paired_difference(base, [b + n for b, n in zip(base, noise, strict=True)])
    small_up = paired_difference([0.5, 0.6, 0.7], [0.6, 0.7, 0.8])  # 3 cases: never significant
    assert up.significant and down.significant and not flat.significant and not small_up.significant
    assert verdict([up, up, up]).startswith("reproduced")
    assert verdict([up, flat, flat]).startswith("partly reproduced: significantly better in 1 of 3")
    assert verdict([up, up, down]).startswith("not reproduced: significantly worse in 1 of 3")
    assert verdict([small_up, small_up]) == "inconclusive: better in every region, none significantly"
    assert flat.mean_difference < 0
    assert verdict([small_up, flat]) == "inconclusive: no significant difference, directions mixed"
