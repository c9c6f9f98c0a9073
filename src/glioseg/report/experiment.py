"""The transfer experiment's report: results table, paired differences, curves, overlays, provenance."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np

from glioseg.report.document import Document

ORDER = ("ET", "TC", "WT")  # the order of BraTS result tables


def _fmt(values: list[float], digits: int = 3) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1) if arr.size > 1 else 0:.{digits}f}"


def _claims(arms_by_key: dict, cv_runs: dict) -> list[tuple[str, str, str]]:
    """(claim, baseline arm, compared arm) pairs, as the seed paper argues them, for the arms present
    (the real-anatomy run adds the phantom and combined sources)."""
    candidates = []
    for arch, name in (("nnunet", "nnU-Net"), ("mednext", "MedNeXt")):
        candidates += [
            (f"transfer beats training from scratch ({name})", f"{arch}-scratch", f"{arch}-ft-stratified"),
            (f"stratified folds help ({name})", f"{arch}-ft-random", f"{arch}-ft-stratified"),
        ]
    real = [  # the real-anatomy run's own questions (only its arms have the phantom and combined sources)
        (
            "fine-tuning on the target helps (nnU-Net, real source)",
            "nnunet-pretrained",
            "nnunet-ft-stratified",
        ),
        (
            "phantom pre-training beats training from scratch (nnU-Net)",
            "nnunet-scratch",
            "nnunet-ft-stratified-synthetic",
        ),
        (
            "adding phantoms to the real source helps (nnU-Net)",
            "nnunet-ft-stratified",
            "nnunet-ft-stratified-both",
        ),
    ]
    if "nnunet-ft-stratified-both" in arms_by_key:
        candidates += real
    claims = [c for c in candidates if c[1] in arms_by_key and c[2] in arms_by_key]
    best = max(
        ("nnunet", "mednext"),
        key=lambda a: np.mean(
            [
                json.loads((cv_runs[f"{a}-ft-stratified"] / "cv_summary.json").read_text())["overall"][r][
                    "lesionwise_dice"
                ]
                for r in ORDER
            ]
        ),
    )
    claims.append(
        (f"the ensemble beats the better single model by CV ({best})", f"{best}-ft-stratified", "ensemble")
    )
    claims.append(("post-processing helps", "ensemble", "ensemble-pp"))
    return claims


def verdict(diffs) -> str:
    """One claim's verdict from its per-region paired differences (compared arm minus baseline,
    :func:`glioseg.evaluate.stats.paired_difference`): *reproduced* when every region improves
    significantly, *partly reproduced* when some do and none is significantly worse, *not
    reproduced* when any region is significantly worse, and *inconclusive* when no difference is
    significant (with few cases only large effects can be; the direction is reported).

    >>> from types import SimpleNamespace as D
    >>> verdict([D(mean_difference=0.02, significant=False), D(mean_difference=0.01, significant=False)])
    'inconclusive: better in every region, none significantly'
    >>> verdict([D(mean_difference=0.05, significant=True), D(mean_difference=-0.01, significant=False)])
    'partly reproduced: significantly better in 1 of 2 regions'
    """
    better = [d for d in diffs if d.significant and d.mean_difference > 0]
    worse = [d for d in diffs if d.significant and d.mean_difference < 0]
    if worse:
        return f"not reproduced: significantly worse in {len(worse)} of {len(diffs)} regions"
    if len(better) == len(diffs):
        return "reproduced: significantly better in every region"
    if better:
        return f"partly reproduced: significantly better in {len(better)} of {len(diffs)} regions"
    if all(d.mean_difference > 0 for d in diffs):
        return "inconclusive: better in every region, none significantly"
    return "inconclusive: no significant difference, directions mixed"


def portable_paths(text: str, exp, folders: dict) -> str:
    """``text`` with the machine's folders replaced by names: ``EXP`` for the experiment folder,
    ``SOURCE``/``TARGET``/``TEST`` for user-given cohort folders outside it, so that a committed
    report names no folder of the machine it ran on.

    >>> from types import SimpleNamespace
    >>> exp = SimpleNamespace(out=Path("/home/a/exp"))
    >>> portable_paths("glioseg train /data/t --out /home/a/exp/cv", exp, {"target": Path("/data/t")})
    'glioseg train TARGET --out EXP/cv'
    """
    names = {str(Path(exp.out).resolve()): "EXP", str(exp.out): "EXP"}
    for key, folder in folders.items():
        for form in {str(folder), str(Path(folder).resolve())}:
            if not form.startswith(tuple(names)):
                names[form] = key.upper()
    for path in sorted(names, key=len, reverse=True):  # longest first: nested folders
        text = text.replace(path, names[path])
    return text


def reproduce_command(exp, folders: dict) -> str:
    """The one command that reruns this experiment, with the folders named as in the report:
    ``EXP`` for the experiment folder, ``REAL`` for a real-anatomy run's cases, ``SOURCE``/
    ``TARGET``/``TEST`` for user-given cohorts (cohorts the experiment generated need no option).

    >>> from types import SimpleNamespace
    >>> scale = SimpleNamespace(name="small", is_real=False)
    >>> exp = SimpleNamespace(out=Path("/x/exp"), scale=scale, seed=0)
    >>> reproduce_command(exp, {"source": Path("/x/exp/data/source"), "target": Path("/d/t"),
    ...                         "test": Path("/x/exp/data/test")})
    'glioseg experiment transfer --out EXP --scale small --seed 0 --target TARGET'
    """
    parts = ["glioseg experiment transfer --out EXP", f"--scale {exp.scale.name}", f"--seed {exp.seed}"]
    if exp.scale.is_real:
        return " ".join([*parts, "--real REAL"])
    out = Path(exp.out).resolve()
    for key in ("source", "target", "test"):
        folder = Path(folders[key]).resolve()
        if folder != out and out not in folder.parents:
            parts.append(f"--{key} {key.upper()}")
    return " ".join(parts)


def _cohorts(doc: Document, exp, folders: dict, synthetic: dict) -> None:
    from glioseg.data.cases import discover_cases

    kind = "synthetic" if all(synthetic.values()) else "mixed" if any(synthetic.values()) else "real"
    doc.paragraph(
        f"Scale **{exp.scale.name}**, seed {exp.seed}. Cohorts: "
        + ", ".join(
            f"{k} `{portable_paths(str(folders[k]), exp, folders)}` "
            f"({'synthetic, glioseg synth' if synthetic[k] else 'user data'}, "
            f"{len(discover_cases(folders[k]).cases)} cases)"
            for k in ("source", "target", "test")
        )
        + ". "
        + (
            "**All numbers below are on synthetic phantoms and say nothing about real scans.**"
            if kind == "synthetic"
            else "**Real and synthetic cohorts are mixed in this run; read the cohort list above.**"
            if kind == "mixed"
            else "All cohorts are user-provided data."
        )
    )


def _real_cohorts(doc: Document, exp, folders: dict) -> None:
    """The real-anatomy run's cohorts and its recorded source/target split, case by case."""
    split = exp.record["split"]
    s = exp.scale
    doc.paragraph(
        f"Scale **{s.name}**, seed {exp.seed}. Real anatomy: the {len(split['source']) + len(split['target'])} "
        f"labelled real cases of `REAL` are split without patient overlap (one case ID is one patient) into "
        f"{len(split['source'])} clean **source** cases for pre-training and {len(split['target'])} **target** "
        f"cases made BraTS-Africa-like with `glioseg degrade --severity {s.severity}` (labels untouched). "
        f"Pre-training sources: the real source cases; {s.n_source} synthetic `adult` phantoms "
        "(`glioseg synth`); both together. There is no separate test cohort: every arm is scored out of "
        "fold on the target. Split rule: " + split["rule"] + f" (seed {split['seed']}), so that each "
        "contributing collection is on both sides in proportion."
    )
    doc.table(
        ["collection", "source cases", "target cases"],
        [[g, str(n["source"]), str(n["target"])] for g, n in split["origins"].items()],
    )
    parts = [("source", split["source"]), ("target", split["target"]), ("not used", split["unused"])]
    doc.bullets([f"{name}: " + (", ".join(ids) if ids else "none") for name, ids in parts])


def write_report(exp, arms, scores: dict, folders: dict, pretrained: dict, cv_runs: dict) -> Path:
    from glioseg.data.cases import discover_cases, load_case
    from glioseg.data.io import load_label
    from glioseg.evaluate.stats import paired_difference
    from glioseg.models.checkpoint import package_versions
    from glioseg.report.preview import render_preview

    out = exp.out
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    real = exp.scale.is_real
    scored = "target" if real else "test"
    doc = Document("glioseg transfer experiment" + (" on real anatomy" if real else ""))
    if real:
        synthetic = {"source": False, "phantoms": True, "source-both": True, "target": False}
        _real_cohorts(doc, exp, folders)
    else:
        synthetic = {k: exp_folder_is_synthetic(exp, k) for k in ("source", "target", "test")}
        _cohorts(doc, exp, folders, synthetic)
    n_scored = len(scores[arms[0].key]["case_id"])
    doc.paragraph(
        f"Metric: BraTS lesion-wise Dice and HD95 (mm), definition `brats2024-ssa`, on the {n_scored} "
        + (
            "target cases, out of fold: each case is predicted by the fold that did not train on it (the "
            "pre-trained-only arms never saw the target); "
            if real
            else "held-out test cases; "
        )
        + "mean ± standard deviation over cases."
    )
    doc.heading("Results")
    header = ["arm"] + [f"Dice {r}" for r in ORDER] + [f"HD95 {r}" for r in ORDER]
    rows = []
    for arm in arms:
        s = scores[arm.key]
        rows.append(
            [arm.title]
            + [_fmt(s[f"{r}_dice"]) for r in ORDER]
            + [f"{np.mean(s[f'{r}_hd95']):.1f}" for r in ORDER]
        )
    doc.table(header, rows)

    doc.heading(f"Paired differences on the {scored} cases")
    doc.paragraph(
        "Mean per-case difference of lesion-wise Dice (compared arm minus baseline), 95 % percentile bootstrap interval "
        "(10,000 resamples, seed 0) and two-sided Wilcoxon signed-rank p. A difference is called significant when the "
        "interval excludes 0 and p < 0.05."
    )
    arms_by_key = {a.key: a for a in arms}
    claim_rows, verdicts = [], []
    comparisons = {}
    for claim, base, new in _claims(arms_by_key, cv_runs):
        diffs = []
        for region in ORDER:
            d = paired_difference(scores[base][f"{region}_dice"], scores[new][f"{region}_dice"])
            diffs.append(d)
            claim_rows.append(
                [
                    claim,
                    region,
                    f"{d.mean_difference:+.3f}",
                    f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}]",
                    f"{d.p_wilcoxon:.3f}",
                    "yes" if d.significant else "no",
                ]
            )
        claim_verdict = verdict(diffs)
        verdicts.append(f"{claim}: **{claim_verdict}**")
        comparisons[claim] = {
            "baseline": base,
            "compared": new,
            "verdict": claim_verdict,
            "regions": {r: d.to_dict() for r, d in zip(ORDER, diffs, strict=True)},
        }
    doc.table(["claim", "region", "mean diff", "95 % CI", "Wilcoxon p", "significant"], claim_rows)
    doc.heading("What this run reproduces", 3)
    doc.bullets(verdicts)

    doc.heading("Cross-validation on the target cohort (out-of-fold, lesion-wise Dice)")
    cv_rows = []
    for key, cv in cv_runs.items():
        overall = json.loads((cv / "cv_summary.json").read_text())["overall"]
        cv_rows.append([key] + [f"{overall[r]['lesionwise_dice']:.3f}" for r in ORDER])
    doc.table(["cross-validation"] + [f"Dice {r}" for r in ORDER], cv_rows)
    balance = out / "splits" / "balance.json"
    if balance.exists():
        stats = json.loads(balance.read_text())
        doc.paragraph(
            f"Fold balance (chi-square of validation fold x radiomic cluster; 0 = perfect): radiomics-stratified "
            f"{stats.get('cluster_chi2', float('nan')):.2f}, median of 200 random splits "
            f"{stats.get('random_cluster_chi2_median', float('nan')):.2f}."
        )
    weights = json.loads((out / "ensemble" / "weights.json").read_text())
    for entry in weights.get("folds", [weights]):
        doc.paragraph(
            "Ensemble weights"
            + (f" of fold {entry['fold']} (chosen on the other folds)" if "fold" in entry else "")
            + " (proportional to CV lesion-wise Dice): "
            + "; ".join(
                f"{m['name']}: " + ", ".join(f"{r} {m['weights'][r]:.2f}" for r in ORDER)
                for m in entry["models"]
            )
        )

    doc.heading("Training curves")
    curves = [(f"pretrained-{a}", pretrained[a] / "training_curve.png") for a in pretrained]
    curves += [(f"{k}-fold0", cv / "fold_0" / "training_curve.png") for k, cv in cv_runs.items()]
    for name, src in curves:
        if src.exists():
            shutil.copy(src, figures / f"curve-{name}.png")
            doc.image(f"figures/curve-{name}.png", f"training curve: {name}")

    doc.heading(f"{scored.capitalize()} cases: best, median and worst of the final arm")
    final = scores[arms[-1].key]
    per_case = np.mean([final[f"{r}_dice"] for r in ORDER], axis=0)
    order = np.argsort(per_case)
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    cases = discover_cases(folders[scored]).by_id()
    for name, index in picks.items():
        case_id = final["case_id"][index]
        data = load_case(cases[case_id])
        pred, _ = load_label(arms[-1].predictions / f"{case_id}.nii.gz")
        png = figures / f"case-{name}.png"
        render_preview(
            data.image,
            data.affine,
            png,
            data.label,
            title=f"{case_id} ({name}): ground truth; last row prediction",
            compare_labels=pred,
            compare_title="prediction",
        )
        doc.image(
            f"figures/{png.name}",
            f"{name} {scored} case {case_id}: mean lesion-wise Dice {per_case[index]:.3f}",
        )

    doc.heading("Provenance")
    settings = exp.scale.to_dict()
    doc.paragraph("Scale settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".")
    versions = package_versions()
    import torch

    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    )
    doc.paragraph(
        f"Machine: {platform.platform()}, {device}. Packages: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + "."
    )
    total = sum(v for k, v in exp.timings.items() if k != "total_this_run")
    doc.paragraph(
        "Time per step (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in exp.timings.items() if k != "total_this_run")
        + f"; sum {total:.0f} s (each step as timed by the invocation that finished it: a step "
        "interrupted and resumed counts only its last part)."
    )
    trained = _training_time(exp.out)
    if trained["runs"]:
        doc.paragraph(
            f"Network training, summed over the `training_time` of each of the {trained['runs']} "
            f"trained networks' model.json (kept across resumes): {trained['wall_seconds'] / 3600:.2f} h "
            f"wall, {trained['cpu_seconds'] / 3600:.2f} h of CPU time (all cores together)."
        )
    if "cpu_estimate_seconds" in exp.record:
        estimate = exp.record["cpu_estimate_seconds"]
        doc.paragraph(
            f"Planned CPU time (2-core CPU, `glioseg.experiment.scales.estimate_cpu_seconds`): "
            f"{sum(estimate.values()) / 3600:.1f} h: "
            + "; ".join(f"{k} {v / 60:.0f} min" for k, v in estimate.items())
            + "."
        )
    doc.paragraph(
        "To reproduce this run on a fresh clone (`make install` first; the run resumes from its finished "
        "steps when interrupted): `" + reproduce_command(exp, folders) + "`."
    )
    doc.paragraph(
        "Equivalent commands, in order (the experiment ran them through the Python API); EXP is the "
        "experiment folder (`--out`), SOURCE, TARGET and TEST (REAL) the cohort folders given to it:"
    )
    doc.code(portable_paths("\n".join(exp.commands), exp, folders) + "\n")
    doc.write(out / "report.md", out / "report.html")
    from glioseg.data.io import write_text_atomic

    write_text_atomic(
        out / "results.json",
        json.dumps(
            {
                "scale": exp.scale.name,
                "seed": exp.seed,
                "synthetic": synthetic,
                "scored_on": scored,
                **exp.record,
                "arms": [{"key": a.key, "title": a.title, "scores": scores[a.key]} for a in arms],
                "comparisons": comparisons,
                "timings": exp.timings,
                "versions": versions,
            },
            indent=1,
        )
        + "\n",
    )
    return out / "report.md"


def exp_folder_is_synthetic(exp, name: str) -> bool:
    given = {"source": exp.source, "target": exp.target, "test": exp.test}[name]
    return given is None


def _training_time(out: Path) -> dict[str, float]:
    """Wall and CPU seconds of every network trained under ``out`` (pre-trained models and
    cross-validation folds), from the ``training_time`` each run's model.json records."""
    total = {"runs": 0, "wall_seconds": 0.0, "cpu_seconds": 0.0}
    for meta in sorted(m for sub in ("pretrained", "cv") for m in (Path(out) / sub).glob("**/model.json")):
        timing = json.loads(meta.read_text(encoding="utf-8")).get("training_time") or {}
        if "wall_seconds" in timing:
            total["runs"] += 1
            total["wall_seconds"] += timing["wall_seconds"]
            total["cpu_seconds"] += timing.get("cpu_seconds", 0.0)
    return total
