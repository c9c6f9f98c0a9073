"""The seed paper's comparison on real anatomy (issue 17): ``glioseg experiment transfer --scale real --real DIR``.

Real cases (``DIR``, e.g. the 21 BraTS 2018 cases) are split once, deterministically, into a
clean **source** part (pre-training) and a **target** part made BraTS-Africa-like with
``glioseg degrade`` (labels untouched); one BraTS 2018 ID is one patient, so no patient is on
both sides. There is no separate test cohort (12 real target cases cannot spare one): every arm
is scored **out of fold** on the target, each case by the fold that did not train on it.

Steps (each skips finished work, so an interrupted run resumes from its finished arms and folds):

1. cohorts (``data/``): ``source-real`` (links to the clean source cases), ``phantoms``
   (synthetic ``adult`` cases; made only while a pre-training on them is unfinished, so a run
   restored from a checkpoint does not remake them), ``source-both`` (links to both), ``target``
   (degraded copies);
2. radiomic features of the target -> random and radiomics-stratified folds;
3. pre-training: nnU-Net on each source (real, phantoms, both), MedNeXt on the real source;
4. cross-validation on the target (``cv/<arm>``): nnU-Net from scratch; fine-tuned from the
   real source on random and on stratified folds; fine-tuned on stratified folds from the
   phantom and the combined sources; MedNeXt fine-tuned from the real source (stratified);
5. the CV-weighted nnU-Net + MedNeXt ensemble: each fold's cases combined with weights chosen
   on the *other* folds' out-of-fold Dice (nested, so the weights never saw the case); its two
   members are cross-validated first and the ensemble made right after them (then the other arms);
6. adaptive post-processing, leave-one-out: each case post-processed with the setting tuned
   (per radiomic cluster, as ``glioseg postprocess tune --clusters``) on the other cases;
7. the pre-trained models (no fine-tuning) predict the whole target (they never saw it);
8. every arm's out-of-fold predictions are scored; report with paired statistics.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from glioseg.data.io import write_text_atomic
from glioseg.errors import ConfigError
from glioseg.experiment.arms import DEFINITION, Arm, read_scores, score_arms
from glioseg.experiment.scales import estimate_cpu_seconds
from glioseg.experiment.transfer import Experiment, open_experiment

_ORIGIN = re.compile(r"^Brats\d*_([^_]+)_")

#: The phantom and combined pre-training sources: their cohort folder and model suffix.
EXTRA_SOURCES = {"synthetic": "phantoms", "both": "source-both"}
#: The cross-validation arms combined by the CV-weighted ensemble (their out-of-fold probabilities).
ENSEMBLE_MEMBERS = ("nnunet-ft-stratified", "mednext-ft-stratified")


def origin(case_id: str) -> str:
    """The contributing collection of a BraTS 2018 ID (``Brats18_TCIA01_201_1`` -> ``TCIA01``).

    >>> origin("Brats18_2013_11_1"), origin("Brats18_CBICA_ABM_1"), origin("case-7")
    ('2013', 'CBICA', 'other')
    """
    found = _ORIGIN.match(case_id)
    return found.group(1) if found else "other"


def _apportion(sizes: dict[str, int], total: int, rng: np.random.Generator) -> dict[str, int]:
    """``total`` shared over the groups in proportion to ``sizes`` (largest remainder; ties by ``rng``)."""
    n = sum(sizes.values())
    exact = {g: sizes[g] * total / n for g in sizes}
    counts = {g: int(exact[g]) for g in sizes}
    tiebreak = dict(zip(sorted(sizes), rng.permutation(len(sizes)), strict=True))
    order = sorted(sizes, key=lambda g: (-(exact[g] - counts[g]), tiebreak[g]))
    for g in order[: total - sum(counts.values())]:
        counts[g] += 1
    return counts


def split_real_cases(case_ids: Sequence[str], n_source: int, n_target: int, seed: int = 0) -> dict:
    """Deterministic source/target split of real cases (one ID = one patient), stratified by collection.

    The cases of each contributing collection (:func:`origin`; a scanner population) are shuffled
    with ``seed``; ``n_source + n_target`` of them are used (the rest recorded as unused), and the
    target's share of each collection is apportioned by largest remainder (ties by ``seed``), so
    every collection is on both sides in proportion.

    >>> ids = [f"Brats18_{o}_{i}_1" for o in ("2013", "CBICA", "TCIA01") for i in range(4)]
    >>> split = split_real_cases(ids, 5, 6)
    >>> len(split["source"]), len(split["target"]), len(split["unused"])
    (5, 6, 1)
    >>> set(split["source"]) & set(split["target"]), split["origins"]["CBICA"]["target"]
    (set(), 2)
    """
    ids = sorted(set(case_ids))
    if n_source < 1 or n_target < 1 or n_source + n_target > len(ids):
        raise ConfigError(
            f"a {n_source} source / {n_target} target split needs {n_source + n_target} real cases; "
            f"{len(ids)} found"
        )
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for case_id in ids:
        groups.setdefault(origin(case_id), []).append(case_id)
    groups = {g: [str(c) for c in rng.permutation(groups[g])] for g in sorted(groups)}
    used = _apportion({g: len(c) for g, c in groups.items()}, n_source + n_target, rng)
    in_target = _apportion(used, n_target, rng)
    target = [c for g, cases in groups.items() for c in cases[: in_target[g]]]
    source = [c for g, cases in groups.items() for c in cases[in_target[g] : used[g]]]
    return {
        "rule": "cases shuffled within each contributing collection; the cases used and the target's share "
        "of each collection apportioned by largest remainder (ties by the seed)",
        "seed": int(seed),
        "source": sorted(source),
        "target": sorted(target),
        "unused": sorted(set(ids) - set(source) - set(target)),
        "origins": {g: {"source": used[g] - in_target[g], "target": in_target[g]} for g in groups},
    }


def _link_cases(folder: Path, cases: dict[str, Path]) -> Path:
    """``folder/<ID>`` -> each case folder (links; the training data finds cases through them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for case_id, source in cases.items():
        link = folder / case_id
        if not link.exists():
            link.symlink_to(source.resolve(), target_is_directory=True)
    return folder


def real_cohorts(exp: Experiment, real: Path) -> dict[str, Path]:
    """The cohorts of a real-anatomy run, made unless present; the split is recorded in ``exp.record``."""
    from glioseg.data.cases import discover_cases
    from glioseg.data.degrade import degrade_case

    s = exp.scale
    found = discover_cases(real)
    if found.errors:
        raise ConfigError(f"real cases in {real}: {found.errors[0]}")
    cases = {c.case_id: c for c in found.cases if c.label is not None}
    split = split_real_cases(sorted(cases), s.real_source, s.n_target, exp.seed)
    state = exp.path("experiment.json")
    earlier = json.loads(state.read_text()).get("split") if state.exists() else None
    if earlier is not None and (earlier["source"], earlier["target"]) != (split["source"], split["target"]):
        raise ConfigError(f"{exp.out} was split from other real cases; use another --out for {real}")
    exp.record["split"] = split
    exp.record["cpu_estimate_seconds"] = estimate_cpu_seconds(s)
    source = _link_cases(exp.path("data", "source-real"), {c: cases[c].folder for c in split["source"]})
    phantoms, both = exp.path("data", "phantoms"), {c: source / c for c in split["source"]}
    pretrained = [exp.path("pretrained", f"nnunet-{tag}", "model.json") for tag in EXTRA_SOURCES]
    if not all(
        p.exists() for p in pretrained
    ):  # only pre-training reads the phantoms (a resumed run may not)
        phantoms = exp.synthetic("phantoms", "adult", s.n_source, exp.seed * 10 + 1)
        both.update({p.name: p for p in sorted(phantoms.iterdir()) if p.is_dir()})
    target = exp.path("data", "target")
    for case_id in split["target"]:
        if not (target / case_id).exists():
            exp.log(f"[data] degrading {case_id} ({s.severity}) -> {target}")
            exp.timed("degrade", lambda c=cases[case_id]: degrade_case(c, target, exp.seed, s.severity))
        exp.command(
            "degrade", cases[case_id].folder, "--out", target, "--seed", exp.seed, "--severity", s.severity
        )
    return {
        "source": source,
        "phantoms": phantoms,
        "source-both": _link_cases(exp.path("data", "source-both"), both),
        "target": target,
        "real": Path(real),
    }


def nested_ensemble(exp: Experiment, members: dict[str, Path], stratified: Path, target: Path) -> Path:
    """Out-of-fold labels of the CV-weighted ensemble of ``members`` (``ensemble/oof``): each fold's
    cases with per-region weights proportional to the members' lesion-wise Dice on the other folds."""
    from glioseg.data.labels import REGIONS
    from glioseg.infer.weights import combine_out_of_fold, proportional_weights, write_weights
    from glioseg.train.splits import load_splits

    path, oof = exp.path("ensemble", "weights.json"), exp.path("ensemble", "oof")
    folds = load_splits(stratified)
    per_case = {k: read_scores(cv / "cv" / "per_case.csv") for k, cv in members.items()}
    docs = []
    for k, fold in enumerate(folds):
        held_out = set(fold["val"])
        scores = np.array(
            [
                [
                    np.mean(
                        [d for c, d in zip(s["case_id"], s[f"{r}_dice"], strict=True) if c not in held_out]
                    )
                    for r in REGIONS
                ]
                for s in per_case.values()
            ]
        )
        weights = proportional_weights(scores)
        docs.append(
            {
                "fold": k,
                "cases": sorted(held_out),
                "regions": list(REGIONS),
                "method": "proportional to the lesion-wise Dice on the other folds' out-of-fold cases",
                "models": [
                    {
                        "name": name,
                        "path": str(members[name]),
                        "cv_lesionwise_dice": dict(zip(REGIONS, map(float, sc), strict=True)),
                        "weights": dict(zip(REGIONS, map(float, w), strict=True)),
                    }
                    for name, sc, w in zip(members, scores, weights, strict=True)
                ],
            }
        )
        combine_out_of_fold(list(members.values()), docs[-1], target, oof, cases=held_out)
    if not path.exists():
        exp.log("[ensemble] per-fold weights from the other folds' out-of-fold lesion-wise Dice")
        write_weights({"method": "nested", "folds": docs}, path)
    return oof


def leave_one_out_postprocessing(exp: Experiment, pred: Path, target: Path) -> Path:
    """``ensemble/oof-pp``: each case post-processed with the setting tuned on the other cases
    (per radiomic cluster of the predictions when it has enough of them); choices in ``postprocess-loo.json``."""
    from glioseg.data.io import load_label, save_nifti
    from glioseg.data.radiomics.clusters import ClusterModel
    from glioseg.postprocess.config import apply_operations
    from glioseg.postprocess.grid import Grid
    from glioseg.postprocess.scoring import stack_scores
    from glioseg.postprocess.selection import leave_one_out
    from glioseg.postprocess.tune import prediction_clusters, score_cohort

    out, record = exp.path("ensemble", "oof-pp"), exp.path("ensemble", "postprocess-loo.json")
    settings = Grid().settings()
    if not record.exists():
        exp.log(
            "[post-processing] leave-one-out tuning per radiomic cluster on the ensemble's out-of-fold labels"
        )
        model = ClusterModel.load(exp.path("splits", "radiomics.model.json"))
        scores, failures = exp.timed(
            "postprocess", lambda: score_cohort(pred, target, settings, DEFINITION, cluster_model=model)
        )
        if failures:
            raise ConfigError(f"post-processing tuning could not use every case: {failures[0]}")
        dice, hd = stack_scores(scores)
        clusters = prediction_clusters(model, scores)
        chosen = leave_one_out(dice, hd, clusters, exp.scale.pp_min_cases_per_cluster)
        cases = {
            s.case_id: {"cluster": int(k), "setting": int(i), "description": settings[i].describe()}
            for s, k, i in zip(scores, clusters, chosen, strict=True)
        }
        write_text_atomic(record, json.dumps({"definition": DEFINITION, "cases": cases}, indent=1) + "\n")
    for case_id, choice in json.loads(record.read_text())["cases"].items():
        if not (out / f"{case_id}.nii.gz").exists():
            labels, image = load_label(pred / f"{case_id}.nii.gz")
            processed = apply_operations(labels, settings[choice["setting"]].operations())
            save_nifti(processed, out / f"{case_id}.nii.gz", reference=image, dtype=np.uint8)
    return out


def define_real_arms(pretrained: dict[str, Path], cv: dict[str, Path], oof: Path, oof_pp: Path) -> list[Arm]:
    """The rows of the real-anatomy table; every arm but the pre-trained ones is read out of fold."""

    def cv_arm(key: str, title: str) -> Arm:
        return Arm(key, title, [cv[key]], predictions=cv[key] / "oof", evaluation=cv[key] / "cv")

    members = [cv[key] for key in ENSEMBLE_MEMBERS]
    return [
        cv_arm("nnunet-scratch", "nnU-Net, trained from scratch"),
        Arm(
            "nnunet-pretrained", "nnU-Net, pre-trained on real cases, no fine-tuning", [pretrained["nnunet"]]
        ),
        Arm(
            "nnunet-pretrained-synthetic",
            "nnU-Net, pre-trained on phantoms, no fine-tuning",
            [pretrained["nnunet-synthetic"]],
        ),
        Arm(
            "nnunet-pretrained-both",
            "nnU-Net, pre-trained on real cases + phantoms, no fine-tuning",
            [pretrained["nnunet-both"]],
        ),
        cv_arm("nnunet-ft-random", "nnU-Net, fine-tuned from real cases, random folds"),
        cv_arm("nnunet-ft-stratified", "nnU-Net, fine-tuned from real cases, stratified folds"),
        cv_arm("nnunet-ft-stratified-synthetic", "nnU-Net, fine-tuned from phantoms, stratified folds"),
        cv_arm(
            "nnunet-ft-stratified-both", "nnU-Net, fine-tuned from real cases + phantoms, stratified folds"
        ),
        cv_arm("mednext-ft-stratified", "MedNeXt, fine-tuned from real cases, stratified folds"),
        Arm("ensemble", "+ CV-weighted ensemble (nnU-Net + MedNeXt, stratified)", members, predictions=oof),
        Arm("ensemble-pp", "+ adaptive post-processing (leave-one-out)", members, predictions=oof_pp),
    ]


def run_real_experiment(
    out: str | Path,
    real: str | Path,
    scale: str = "real",
    seed: int = 0,
    printer: Callable[[str], None] = print,
) -> Path:
    """Run (or resume) the real-anatomy comparison in ``out``; returns the path of ``report.md``."""
    from glioseg.report.experiment import write_report

    exp = open_experiment(out, scale, seed, printer, real=real)
    s = exp.scale
    if not s.is_real:
        raise ConfigError(
            f"scale {scale!r} is not a real-anatomy scale; --real needs --scale real or real-tiny"
        )
    estimate = estimate_cpu_seconds(s)
    exp.log(
        f"[plan] estimated CPU time {sum(estimate.values()) / 3600:.1f} h on a 2-core CPU: "
        + "; ".join(f"{k} {v / 60:.0f} min" for k, v in estimate.items())
    )
    began = time.perf_counter()
    folders = real_cohorts(exp, Path(real))
    exp.save_state()
    splits = exp.splits(folders["target"])
    exp.save_state()
    nnunet = {"nnunet": s.nnunet}
    pretrained = exp.pretrain(folders["source"])
    for tag, cohort in EXTRA_SOURCES.items():
        pretrained[f"nnunet-{tag}"] = exp.pretrain(folders[cohort], nnunet, tag)["nnunet"]
    exp.save_state()
    target, stratified = folders["target"], splits["stratified"]
    # (arm, folds, from scratch with this model or fine-tuned from this pre-trained model), in table order
    plan = {
        "nnunet-scratch": (stratified, s.nnunet, None),
        "nnunet-ft-random": (splits["random"], "", "nnunet"),
        "nnunet-ft-stratified": (stratified, "", "nnunet"),
        "nnunet-ft-stratified-synthetic": (stratified, "", "nnunet-synthetic"),
        "nnunet-ft-stratified-both": (stratified, "", "nnunet-both"),
        "mednext-ft-stratified": (stratified, "", "mednext"),
    }
    # the ensemble's members run first and the ensemble right after them, so that their out-of-fold
    # probabilities (~5 MB a case) are needed only briefly: a checkpoint between work sessions
    # (scripts/experiment_checkpoint.py) need not keep them
    runs = {}
    for key in (*ENSEMBLE_MEMBERS, "ensemble", *plan):
        if key == "ensemble":
            members = {k: runs[k] for k in ENSEMBLE_MEMBERS}
            oof = nested_ensemble(exp, members, stratified, target)
            oof_pp = leave_one_out_postprocessing(exp, oof, target)
        elif key not in runs:
            folds, model, source = plan[key]
            runs[key] = exp.cv_arm(
                key, target, folds, model=model, pretrained=pretrained[source] if source else None
            )
        exp.save_state()
    cv = {key: runs[key] for key in plan}
    arms = define_real_arms(pretrained, cv, oof, oof_pp)
    scores = score_arms(exp, arms, target, stage="oof")
    exp.timings["total_this_run"] = time.perf_counter() - began
    exp.save_state()
    report = write_report(exp, arms, scores, folders, pretrained, cv)
    exp.log(f"report -> {report} (and report.html)")
    return report
