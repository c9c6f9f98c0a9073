"""The seed paper's experiment end to end: transfer learning with stratified fine-tuning folds.

Steps (each skips work that is already finished, so an interrupted run resumes):

1. cohorts: source (default synthetic ``adult``), target (synthetic ``ssa``), held-out test (``ssa``);
2. radiomic features of the target cohort -> random and radiomics-stratified folds;
3. pre-training of nnU-Net and MedNeXt on the source cohort;
4. per architecture, cross-validation on the target cohort: from scratch (stratified folds),
   fine-tuned on random folds, fine-tuned on stratified folds;
5. CV-weighted nnU-Net + MedNeXt ensemble of the stratified fine-tuned models;
6. adaptive post-processing tuned on the ensemble's out-of-fold predictions;
7. every arm predicts the test cohort and is scored with the brats2024-ssa lesion-wise metrics;
8. report (Markdown + HTML): results table, paired differences with bootstrap intervals,
   training curves, overlays of the best/median/worst test cases, commands, seeds, versions.

The test arms of step 7 (the rows of the results table) are defined and scored in
:mod:`glioseg.experiment.arms`.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from glioseg.data.io import write_text_atomic
from glioseg.errors import ConfigError
from glioseg.experiment.arms import DEFINITION, define_arms, score_arms
from glioseg.experiment.scales import SCALES, Scale


@dataclass
class Experiment:
    out: Path
    scale: Scale
    seed: int = 0
    source: Path | None = None
    target: Path | None = None
    test: Path | None = None
    printer: Callable[[str], None] = print
    commands: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    given: dict[str, str | None] = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- helpers
    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def log(self, message: str) -> None:
        self.printer(message)

    def command(self, *args: object) -> None:
        """Record the CLI equivalent of a step, once: a resumed run that redoes a step (e.g. the
        degraded target copies, which are not kept) does not list it again."""
        line = "glioseg " + " ".join(shlex.quote(str(a)) for a in args)
        if line not in self.commands:
            self.commands.append(line)

    def save_state(self) -> None:
        """Write ``experiment.json``: scale, seed, settings, the commands and step times so far, the
        user's folders and ``record`` (what a scale adds, e.g. the real cases' split)."""
        state = {
            "scale": self.scale.name,
            "seed": self.seed,
            "settings": self.scale.to_dict(),
            "commands": self.commands,
            "timings": self.timings,
            **self.given,
            **self.record,
        }
        write_text_atomic(self.path("experiment.json"), json.dumps(state, indent=2) + "\n")

    def timed(self, name: str, func: Callable[[], object]) -> object:
        began = time.perf_counter()
        result = func()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - began
        return result

    @property
    def architectures(self) -> dict[str, str]:
        return {"nnunet": self.scale.nnunet, "mednext": self.scale.mednext}

    # ---------------------------------------------------------------- steps
    def cohorts(self) -> dict[str, Path]:
        s = self.scale
        plan = {
            "source": (self.source, "adult", s.n_source, self.seed * 10 + 1),
            "target": (self.target, "ssa", s.n_target, self.seed * 10 + 2),
            "test": (self.test, "ssa", s.n_test, self.seed * 10 + 3),
        }
        return {
            name: Path(given) if given is not None else self.synthetic(name, domain, n, seed)
            for name, (given, domain, n, seed) in plan.items()
        }

    def synthetic(self, name: str, domain: str, n: int, seed: int) -> Path:
        """``data/<name>``: ``n`` synthetic ``domain`` cases of the scale's grid (generated unless there)."""
        from glioseg.data.synthetic import generate_cohort

        s = self.scale
        folder = self.path("data", name)
        if folder.exists() and len([p for p in folder.iterdir() if p.is_dir()]) >= n:
            return folder
        self.log(f"[data] generating {n} synthetic {domain} cases -> {folder}")
        shape = ",".join(map(str, s.shape))
        self.command(
            "synth",
            folder,
            "--cases",
            n,
            "--domain",
            domain,
            "--seed",
            seed,
            "--shape",
            shape,
            "--spacing",
            s.spacing,
        )
        self.timed("data", lambda: generate_cohort(folder, n, domain, seed, s.shape, s.spacing))
        return folder

    def splits(self, target: Path) -> dict[str, Path]:
        from glioseg.data.radiomics.extract import cohort_features
        from glioseg.train.splits import make_folds, split_cohort

        out = {
            "random": self.path("splits", "random.json"),
            "stratified": self.path("splits", "radiomics.json"),
        }
        if all(p.exists() for p in out.values()):
            return out
        self.log("[splits] radiomic features of the target cohort -> random and radiomics-stratified folds")
        features = self.timed("features", lambda: cohort_features(target))
        frame = features.to_frame()
        self.path("splits").mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.path("splits", "features.csv"), index=False)
        result = self.timed("splits", lambda: split_cohort(frame, self.scale.folds, "radiomics", self.seed))
        write_text_atomic(out["stratified"], json.dumps(result.splits, indent=2) + "\n")
        result.model.save(self.path("splits", "radiomics.model.json"))
        write_text_atomic(
            self.path("splits", "balance.json"), json.dumps(result.stats, indent=2, default=float) + "\n"
        )
        random_folds = make_folds(sorted(frame["case_id"].astype(str)), self.scale.folds, "random", self.seed)
        write_text_atomic(out["random"], json.dumps(random_folds, indent=2) + "\n")
        self.command("features", target, "--out", self.path("splits", "features.csv"))
        self.command(
            "split",
            self.path("splits", "features.csv"),
            "--folds",
            self.scale.folds,
            "--strategy",
            "radiomics",
            "--seed",
            self.seed,
            "--out",
            out["stratified"],
        )
        self.command(
            "split",
            self.path("splits", "features.csv"),
            "--folds",
            self.scale.folds,
            "--strategy",
            "random",
            "--seed",
            self.seed,
            "--out",
            out["random"],
        )
        return out

    def _train_options(self, **kwargs):
        from glioseg.train.run import TrainOptions

        s = self.scale
        common = dict(
            spacing=[s.train_spacing] * 3 if s.train_spacing else None,
            patch=list(s.patch) if s.patch else None,
            base_features=s.base_features,
            augment=s.augment,
            seed=self.seed,
            progress_bar=False,
            val_every=max(1, kwargs.get("epochs", 1)),
            reuse_memory=s.reuse_memory,
        )
        common.update(kwargs)
        return TrainOptions(**common)

    def pretrain(
        self, source: Path, architectures: dict[str, str] | None = None, tag: str = ""
    ) -> dict[str, Path]:
        """Pre-train each of ``architectures`` (default both) on ``source`` into ``pretrained/<arch>[-<tag>]``.

        Every source shares one preprocessing cache (cases are keyed by ID and spacing).  Finished
        weights are stored in float16, as a released pre-trained model is: fine-tuning starts from
        what a user would download, and a run resumed from committed float16 weights is the same run.
        """
        from glioseg.models.checkpoint import store_float16
        from glioseg.train.run import resume, train

        runs = {}
        for arch, model in (architectures or self.architectures).items():
            run = self.path("pretrained", f"{arch}-{tag}" if tag else arch)
            runs[arch] = run
            if (run / "model.json").exists():
                store_float16(run)
                continue
            self.log(f"[pretrain] {model} on the {tag or 'source'} cohort -> {run}")
            if (run / "run.json").exists():
                self.timed(f"pretrain-{run.name}", lambda r=run: resume(r, printer=self._quiet))
            else:
                options = self._train_options(
                    data=str(source),
                    model=model,
                    out=str(run),
                    epochs=self.scale.epochs("pretrain", arch),
                    iters_per_epoch=self.scale.pretrain_iters,
                    cache=str(self.path("cache", "source")),
                    val_fraction=self.scale.pretrain_val_fraction,
                )
                self._record_train("train", options)
                self.timed(f"pretrain-{run.name}", lambda o=options: train(o, printer=self._quiet))
            store_float16(run)
        return runs

    def _quiet(self, line: str) -> None:
        if line.startswith("epoch "):
            self.printer("    " + line)

    def _record_train(self, verb: str, options) -> None:
        args = [verb, options.data]
        if options.pretrained:
            args += ["--pretrained", options.pretrained]
        else:
            args += ["--model", options.model]
        args += ["--out", options.out]
        if options.splits:
            args += ["--splits", options.splits, "--fold", options.fold]
        args += [
            "--epochs",
            options.epochs,
            "--iters-per-epoch",
            options.iters_per_epoch,
            "--seed",
            options.seed,
        ]
        if not options.pretrained:
            if options.spacing:
                args += ["--spacing", options.spacing[0]]
            if options.patch:
                args += ["--patch", ",".join(map(str, options.patch))]
            args += ["--base-features", options.base_features]
        if not options.augment:
            args += ["--no-augment"]
        if not options.splits and options.val_fraction != 0.2:
            args += ["--val-fraction", options.val_fraction]
        if options.reuse_memory:
            args += ["--reuse-memory"]
        self.command(*args)

    def cross_validation(
        self, target: Path, splits: dict[str, Path], pretrained: dict[str, Path]
    ) -> dict[str, Path]:
        runs = {}
        for arch, model in self.architectures.items():
            runs[f"{arch}-scratch"] = self.cv_arm(
                f"{arch}-scratch", target, splits["stratified"], model=model
            )
            for folds in ("random", "stratified"):
                runs[f"{arch}-ft-{folds}"] = self.cv_arm(
                    f"{arch}-ft-{folds}", target, splits[folds], pretrained=pretrained[arch]
                )
        return runs

    def cv_arm(
        self, key: str, target: Path, splits: Path, model: str = "", pretrained: Path | None = None
    ) -> Path:
        """Cross-validate one arm on the target into ``cv/<key>`` (skipped when finished; folds resume):
        from scratch with ``model``, or fine-tuned from ``pretrained``."""
        from glioseg.train.crossval import cross_validate

        s = self.scale
        cv = self.path("cv", key)
        if (cv / "cv_summary.json").exists():
            return cv
        arch = "mednext" if key.startswith("mednext") else "nnunet"
        stage = "finetune" if pretrained else "scratch"
        self.log(f"[cv] {key}: {s.folds}-fold cross-validation -> {cv}")
        options = self._train_options(
            data=str(target),
            model=model,
            out=str(cv),
            splits=str(splits),
            fold="all",
            epochs=s.epochs(stage, arch),
            iters_per_epoch=getattr(s, f"{stage}_iters"),
            pretrained=str(pretrained) if pretrained else None,
            cache=str(self.path("cache", "target")),
        )
        if pretrained:
            options.spacing, options.patch = None, None
        self._record_train("finetune" if pretrained else "train", options)
        self.timed(f"cv-{key}", lambda: cross_validate(options, tta=s.tta, printer=self._quiet))
        return cv

    def ensemble(self, cv_runs: dict[str, Path], target: Path) -> Path:
        from glioseg.infer.weights import combine_out_of_fold, ensemble_weights, write_weights

        path = self.path("ensemble", "weights.json")
        members = [cv_runs["nnunet-ft-stratified"], cv_runs["mednext-ft-stratified"]]
        if not path.exists():
            self.log("[ensemble] weights from cross-validated lesion-wise Dice")
            write_weights(ensemble_weights(members, "proportional"), path)
            self.command("ensemble-weights", *members, "--out", path)
        oof = self.path("ensemble", "oof")
        if not oof.exists() or len(list(oof.glob("*.nii.gz"))) < len(
            list((members[0] / "oof").glob("*.nii.gz"))
        ):
            combine_out_of_fold(members, json.loads(path.read_text()), target, oof)
        return path

    def tune_postprocessing(self, target: Path) -> Path:
        from glioseg.postprocess.tune import tune

        path = self.path("ensemble", "postprocess.json")
        if not path.exists():
            self.log(
                "[post-processing] grid search per radiomic cluster on the ensemble's out-of-fold predictions"
            )
            clusters = self.path("splits", "radiomics.model.json")
            result = self.timed(
                "postprocess",
                lambda: tune(
                    self.path("ensemble", "oof"),
                    target,
                    definition=DEFINITION,
                    cluster_model_path=clusters,
                    min_cluster_cases=self.scale.pp_min_cases_per_cluster,
                ),
            )
            if result.failures:
                raise ConfigError(f"post-processing tuning could not use every case: {result.failures[0]}")
            result.write(path)
            self.command(
                "postprocess",
                "tune",
                "--pred",
                self.path("ensemble", "oof"),
                "--gt",
                target,
                "--out",
                path,
                "--clusters",
                clusters,
                "--definition",
                DEFINITION,
            )
        return path


def open_experiment(
    out: str | Path,
    scale: str,
    seed: int = 0,
    printer: Callable[[str], None] = print,
    **given: str | Path | None,
) -> Experiment:
    """The experiment in ``out`` at ``scale``, with the commands and timings of earlier runs read back
    from ``experiment.json`` (an interrupted run resumes); ``given`` are the user's cohort folders."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    folders = {k: Path(v) if v else None for k, v in given.items()}
    cohorts = {k: folders.pop(k, None) for k in ("source", "target", "test")}
    exp = Experiment(Path(out), SCALES[scale], seed, **cohorts, printer=printer)
    exp.given = {k: str(v) if v else None for k, v in given.items()}
    exp.out.mkdir(parents=True, exist_ok=True)
    state_file = exp.path("experiment.json")
    previous = json.loads(state_file.read_text()) if state_file.exists() else {}
    if previous and previous.get("scale") != scale:
        raise ConfigError(
            f"{out} holds a {previous.get('scale')!r} experiment; use another --out for {scale!r}"
        )
    exp.commands = list(dict.fromkeys(previous.get("commands", [])))
    exp.timings = previous.get("timings", {})
    return exp


def run_transfer_experiment(
    out: str | Path,
    scale: str = "tiny",
    source: str | Path | None = None,
    target: str | Path | None = None,
    test: str | Path | None = None,
    seed: int = 0,
    printer: Callable[[str], None] = print,
) -> Path:
    """Run (or resume) the experiment in ``out``; returns the path of ``report.md``."""
    from glioseg.report.experiment import write_report

    if scale in SCALES and SCALES[scale].is_real:
        raise ConfigError(f"scale {scale!r} builds its cohorts from real cases: give them with --real")
    exp = open_experiment(out, scale, seed, printer, source=source, target=target, test=test)
    began = time.perf_counter()
    folders = exp.cohorts()
    exp.save_state()
    splits = exp.splits(folders["target"])
    exp.save_state()
    pretrained = exp.pretrain(folders["source"])
    exp.save_state()
    cv_runs = exp.cross_validation(folders["target"], splits, pretrained)
    exp.save_state()
    weights = exp.ensemble(cv_runs, folders["target"])
    pp = exp.tune_postprocessing(folders["target"])
    exp.save_state()
    arms = define_arms(exp.architectures, pretrained, cv_runs, weights, pp)
    scores = score_arms(exp, arms, folders["test"])
    exp.timings["total_this_run"] = time.perf_counter() - began
    exp.save_state()
    report = write_report(exp, arms, scores, folders, pretrained, cv_runs)
    exp.log(f"report -> {report} (and report.html)")
    return report
