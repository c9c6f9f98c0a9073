"""The test arms of the transfer experiment: the rows of its results table, and their test scores.

Each arm is a way of producing test predictions (one model, or the CV-weighted ensemble with or
without post-processing); :func:`score_arms` predicts the held-out test cohort with every arm and
scores it with the brats2024-ssa lesion-wise metrics (see :mod:`glioseg.experiment.transfer`).
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
    """One row of the results table: a way of producing test predictions."""

    key: str
    title: str
    models: list[Path]
    weights: Path | None = None
    postprocess: Path | None = None


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


def score_arms(exp, arms: list[Arm], test: Path) -> dict[str, dict]:
    """Predict the test cohort with every arm and score it (arms already scored in ``exp.out`` are read back).

    ``exp`` is the :class:`glioseg.experiment.transfer.Experiment` (its folder, scale, log, timings and
    command record are used).  Returns the per-case scores of each arm by key.
    """
    from glioseg.data.cases import discover_cases
    from glioseg.evaluate import evaluate, write_outputs
    from glioseg.infer.batch import PredictOptions, load_weights_file, predict_cases
    from glioseg.infer.models import find_members
    from glioseg.infer.settings import InferenceSettings

    cases = discover_cases(test).cases
    scores = {}
    for arm in arms:
        pred = exp.path("test", arm.key, "predictions")
        evaluation = exp.path("test", arm.key, "evaluation")
        if not (evaluation / "per_case.csv").exists():
            exp.log(f"[test] {arm.title}")
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
                f"test-{arm.key}",
                lambda t=todo, g=groups, o=options, p=pred: predict_cases(
                    t, g, p, o, printer=lambda line: None
                ),
            )
            if report.failed:
                raise ConfigError(f"test prediction failed for {report.failed[0][0]}: {report.failed[0][1]}")
            run = evaluate(pred, test, definition=DEFINITION)
            write_outputs(run, evaluation)
            args = [
                "predict",
                test,
                *[x for m in arm.models for x in ("--model", m)],
                "--tta",
                exp.scale.tta,
            ]
            if arm.weights:
                args += ["--weights", arm.weights]
            if arm.postprocess:
                args += ["--postprocess", arm.postprocess]
            exp.command(*args, "--out", pred)
            exp.command(
                "evaluate", "--pred", pred, "--gt", test, "--out", evaluation, "--definition", DEFINITION
            )
        scores[arm.key] = _read_scores(evaluation / "per_case.csv")
    return scores


def _read_scores(per_case_csv: Path) -> dict:
    import pandas as pd

    frame = pd.read_csv(per_case_csv).sort_values("case_id")
    return {
        "case_id": frame["case_id"].astype(str).tolist(),
        **{f"{r}_dice": frame[f"{r}_lesionwise_dice"].astype(float).tolist() for r in REGIONS},
        **{f"{r}_hd95": frame[f"{r}_lesionwise_hd95"].astype(float).tolist() for r in REGIONS},
    }
