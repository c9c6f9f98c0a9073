"""The arms of the transfer experiment: the rows of its results table, and their scores.

Each arm is a way of producing predictions (one model, or the CV-weighted ensemble with or
without post-processing); :func:`score_arms` predicts the scored cohort with every arm (the
held-out test cohort, :mod:`glioseg.experiment.transfer`) or takes the arm's out-of-fold
predictions as they are (:mod:`glioseg.experiment.real`), and scores them with the
brats2024-ssa lesion-wise metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from glioseg.data.labels import REGIONS
from glioseg.errors import ConfigError

#: Lesion-wise metric definition of every score of the experiment.
DEFINITION = "brats2024-ssa"


@dataclass
class Arm:
    """One row of the results table: a way of producing predictions.

    ``predictions``: a folder of predictions made already (out of fold) that is scored as it is;
    otherwise :func:`score_arms` predicts with ``models`` and sets it to where they went.
    ``evaluation``: where their scores are (or go; default ``<stage>/<key>/evaluation``), e.g. the
    lesion-wise evaluation that cross-validation already wrote of its out-of-fold labels.
    """

    key: str
    title: str
    models: list[Path]
    weights: Path | None = None
    postprocess: Path | None = None
    predictions: Path | None = None
    evaluation: Path | None = None


def define_arms(
    architectures: Iterable[str],
    pretrained: dict[str, Path],
    cv_runs: dict[str, Path],
    weights: Path,
    pp: Path,
) -> list[Arm]:
    """The rows of the results table: per architecture (``nnunet``, ``mednext``, in the order given)
    from scratch, pre-trained only, fine-tuned on random and on stratified folds; then the ensemble
    of the stratified fine-tuned models, without and with the tuned post-processing."""
    names = {"nnunet": "nnU-Net", "mednext": "MedNeXt"}
    arms = []
    for arch in architectures:
        n = names[arch]
        arms += [
            Arm(f"{arch}-scratch", f"{n}, trained from scratch", [cv_runs[f"{arch}-scratch"]]),
            Arm(f"{arch}-pretrained", f"{n}, pre-trained, no fine-tuning", [pretrained[arch]]),
            Arm(f"{arch}-ft-random", f"{n}, fine-tuned, random folds", [cv_runs[f"{arch}-ft-random"]]),
            Arm(
                f"{arch}-ft-stratified",
                f"{n}, fine-tuned, stratified folds",
                [cv_runs[f"{arch}-ft-stratified"]],
            ),
        ]
    members = [cv_runs["nnunet-ft-stratified"], cv_runs["mednext-ft-stratified"]]
    arms.append(Arm("ensemble", "+ CV-weighted ensemble (nnU-Net + MedNeXt, stratified)", members, weights))
    arms.append(Arm("ensemble-pp", "+ adaptive post-processing", members, weights, pp))
    return arms


def score_arms(exp, arms: list[Arm], test: Path, stage: str = "test") -> dict[str, dict]:
    """Predict the cohort ``test`` with every arm and score it (arms already scored in ``exp.out`` are read back).

    ``exp`` is the :class:`glioseg.experiment.transfer.Experiment` (its folder, scale, log, timings and
    command record are used); predictions and evaluations go to ``exp.out/<stage>/<arm>/``.  An arm
    with ``predictions`` is only evaluated.  Returns the per-case scores of each arm by key.
    """
    from glioseg.data.cases import discover_cases

    cases = discover_cases(test).cases
    scores = {}
    for arm in arms:
        given = arm.predictions is not None
        pred = arm.predictions if given else exp.path(stage, arm.key, "predictions")
        arm.predictions = pred
        evaluation = arm.evaluation or exp.path(stage, arm.key, "evaluation")
        if not (evaluation / "per_case.csv").exists():
            exp.log(f"[{stage}] {arm.title}")
            if not given:
                _predict(exp, arm, cases, test, stage)
            _evaluate(exp, pred, test, evaluation)
        scores[arm.key] = read_scores(evaluation / "per_case.csv")
    return scores


def _predict(exp, arm: Arm, cases: list, test: Path, stage: str) -> None:
    """Predict the cases that ``arm.predictions`` lacks with the arm's models (and weights, post-processing)."""
    from glioseg.infer.batch import PredictOptions, load_weights_file, predict_cases
    from glioseg.infer.models import find_members
    from glioseg.infer.settings import InferenceSettings

    pred = arm.predictions
    groups = [find_members(m) for m in arm.models]
    weights = load_weights_file(arm.weights, groups) if arm.weights else None
    postprocess = None
    if arm.postprocess is not None:
        from glioseg.postprocess.config import PostprocessConfig, make_postprocessor

        postprocess = make_postprocessor(PostprocessConfig.load(arm.postprocess))
    options = PredictOptions(
        InferenceSettings(tta=exp.scale.tta, device="auto"),
        weights=weights,
        postprocess=postprocess,
        postprocess_source=str(arm.postprocess) if arm.postprocess else None,
        save_probabilities=arm.key == "ensemble",
        track_variance=False,
    )
    todo = [c for c in cases if not (pred / f"{c.case_id}.nii.gz").exists()]
    report = exp.timed(
        f"{stage}-{arm.key}", lambda: predict_cases(todo, groups, pred, options, printer=lambda line: None)
    )
    if report.failed:
        raise ConfigError(f"prediction failed for {report.failed[0][0]}: {report.failed[0][1]}")
    args = ["predict", test, *[x for m in arm.models for x in ("--model", m)], "--tta", exp.scale.tta]
    if arm.weights:
        args += ["--weights", arm.weights]
    if arm.postprocess:
        args += ["--postprocess", arm.postprocess]
    exp.command(*args, "--out", pred)


def _evaluate(exp, pred: Path, truth: Path, evaluation: Path) -> None:
    from glioseg.evaluate import evaluate, write_outputs

    run = evaluate(pred, truth, definition=DEFINITION)
    if run.failures:
        raise ConfigError(f"could not score {run.failures[0].case_id}: {run.failures[0].message}")
    write_outputs(run, evaluation)
    exp.command("evaluate", "--pred", pred, "--gt", truth, "--out", evaluation, "--definition", DEFINITION)


def read_scores(per_case_csv: Path) -> dict:
    import pandas as pd

    frame = pd.read_csv(per_case_csv).sort_values("case_id")
    return {
        "case_id": frame["case_id"].astype(str).tolist(),
        **{f"{r}_dice": frame[f"{r}_lesionwise_dice"].astype(float).tolist() for r in REGIONS},
        **{f"{r}_hd95": frame[f"{r}_lesionwise_hd95"].astype(float).tolist() for r in REGIONS},
    }
