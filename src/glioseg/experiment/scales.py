"""Sizes of the transfer experiment: ``tiny`` (CI), ``small`` (a laptop CPU), ``full`` (the paper, GPUs),
and the real-anatomy scales ``real`` (a 2-core CPU, <= 6 h) and ``real-tiny`` (its code path in CI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Scale:
    """Everything that changes between experiment sizes.

    Cohort sizes are numbers of synthetic cases (ignored for a cohort the user provides).
    ``shape``/``spacing`` are the generated grids; ``train_spacing`` the networks' spacing.

    A real-anatomy scale (``real_source > 0``, :mod:`glioseg.experiment.real`) splits real cases
    into ``real_source`` clean pre-training cases and ``n_target`` target cases degraded with
    ``glioseg degrade --severity <severity>``; ``n_source`` is then the number of synthetic
    ``adult`` phantoms of the phantom source cohorts, and there is no test cohort (``n_test`` 0):
    every arm is scored out of fold on the target.  ``mednext_*_epochs`` (None: as nnU-Net)
    shorten the slower MedNeXt's stages; ``pretrain_val_fraction`` is the share of the source
    held out of pre-training to validate it.  ``reuse_memory`` trains with
    :attr:`glioseg.train.run.TrainOptions.reuse_memory` (faster on the CPU for about twice the
    peak memory; docs/performance.md).
    """

    name: str
    n_source: int
    n_target: int
    n_test: int
    shape: tuple[int, int, int]
    spacing: float
    train_spacing: float | None
    patch: tuple[int, int, int] | None
    base_features: int
    nnunet: str
    mednext: str
    folds: int
    pretrain_epochs: int
    pretrain_iters: int
    finetune_epochs: int
    finetune_iters: int
    scratch_epochs: int
    scratch_iters: int
    tta: str
    augment: bool = True
    pp_min_cases_per_cluster: int = 5
    real_source: int = 0
    severity: str = "moderate"
    pretrain_val_fraction: float = 0.2
    mednext_pretrain_epochs: int | None = None
    mednext_finetune_epochs: int | None = None
    reuse_memory: bool = False

    @property
    def is_real(self) -> bool:
        return self.real_source > 0

    def epochs(self, stage: str, arch: str) -> int:
        """Epochs of ``stage`` (``pretrain``, ``finetune`` or ``scratch``) for ``arch`` (``nnunet``/``mednext``)."""
        own = {"pretrain": self.mednext_pretrain_epochs, "finetune": self.mednext_finetune_epochs}
        if arch == "mednext" and own.get(stage) is not None:
            return own[stage]
        return getattr(self, f"{stage}_epochs")

    def to_dict(self) -> dict:
        return asdict(self)


SCALES: dict[str, Scale] = {
    # checks the machinery in CI, a few minutes on 2 CPU cores; numbers mean nothing
    "tiny": Scale(
        name="tiny",
        n_source=4,
        n_target=6,
        n_test=3,
        shape=(48, 48, 40),
        spacing=4.0,
        train_spacing=None,
        patch=(32, 32, 32),
        base_features=8,
        nnunet="nnunet",
        mednext="mednext-s-k3",
        folds=3,
        pretrain_epochs=3,
        pretrain_iters=6,
        finetune_epochs=1,
        finetune_iters=3,
        scratch_epochs=1,
        scratch_iters=3,
        tta="none",
        augment=False,
        pp_min_cases_per_cluster=3,
    ),
    # the documented CPU experiment (about 90 minutes on a 2-core laptop); full-size synthetic
    # cases trained at 3 mm with narrow networks
    "small": Scale(
        name="small",
        n_source=16,
        n_target=20,
        n_test=10,
        shape=(240, 240, 155),
        spacing=1.0,
        train_spacing=3.0,
        patch=(40, 40, 40),
        base_features=8,
        nnunet="nnunet",
        mednext="mednext-s-k3",
        folds=5,
        pretrain_epochs=12,
        pretrain_iters=50,
        finetune_epochs=4,
        finetune_iters=20,
        scratch_epochs=8,
        scratch_iters=20,
        tta="flip",
    ),
    # the paper's settings: 1 mm, 128^3-class patches (planned), 5 folds, 150 fine-tuning epochs; for GPUs
    "full": Scale(
        name="full",
        n_source=200,
        n_target=60,
        n_test=30,
        shape=(240, 240, 155),
        spacing=1.0,
        train_spacing=1.0,
        patch=None,
        base_features=32,
        nnunet="nnunet",
        mednext="mednext-m-k3",
        folds=5,
        pretrain_epochs=1000,
        pretrain_iters=250,
        finetune_epochs=150,
        finetune_iters=250,
        scratch_epochs=1000,
        scratch_iters=250,
        tta="full",
    ),
}

# the real-anatomy comparison (issue 17) on a 2-core CPU: 21 real BraTS 2018 cases split 9 clean
# source / 12 degraded target, 3 folds on the target, the brats-2mm release's plan (2 mm, 64^3,
# 16 base features); iterations chosen so that estimate_cpu_seconds stays under 6 h
SCALES["real"] = Scale(
    name="real",
    n_source=30,
    n_target=12,
    n_test=0,
    shape=(240, 240, 155),
    spacing=1.0,
    train_spacing=2.0,
    patch=(64, 64, 64),
    base_features=16,
    nnunet="nnunet",
    mednext="mednext-s-k3",
    folds=3,
    pretrain_epochs=24,
    pretrain_iters=25,
    finetune_epochs=8,
    finetune_iters=25,
    scratch_epochs=24,
    scratch_iters=25,
    tta="flip",
    pp_min_cases_per_cluster=5,
    real_source=9,
    severity="moderate",
    pretrain_val_fraction=0.0,
    mednext_pretrain_epochs=12,
    mednext_finetune_epochs=6,
    reuse_memory=True,
)
# the real-anatomy code path in CI: `tiny`'s networks on 2 clean + 4 degraded real cases (trained at
# 4 mm), 2 small phantoms, 2 folds
SCALES["real-tiny"] = replace(
    SCALES["tiny"],
    name="real-tiny",
    n_source=2,
    n_target=4,
    n_test=0,
    train_spacing=4.0,
    folds=2,
    pretrain_epochs=1,
    pretrain_iters=2,
    finetune_iters=1,
    scratch_iters=1,
    real_source=2,
    pretrain_val_fraction=0.0,
)

#: Seconds per training iteration of the ``real`` plan (2 mm, 64^3, batch 2, 16 base features) on the
#: project's 2-core CPU: nnU-Net 2.1 s inside ``glioseg train`` (docs/performance.md; the brats-2mm
#: folds took 35-55 min per 1,000 iterations), MedNeXt-S k3 3.4 s in channels_last_3d (ibid.).
ITERATION_SECONDS = {"nnunet": 2.1, "mednext": 3.5}
#: Seconds per case of the other steps on that CPU (full-size 240x240x155 cases): out-of-fold
#: prediction with left-right mirroring, degrading, generating a phantom, preprocessing for training,
#: radiomic features, scoring one case under every post-processing setting, lesion-wise evaluation.
#: Degrading and features are about half what a ``real-tiny`` run measured on the shared machine
#: (63 s and 28 s per case with a training job beside it).
CASE_SECONDS = {
    "predict-nnunet": 6.0,
    "predict-mednext": 15.0,
    "degrade": 30.0,
    "phantom": 6.0,
    "preprocess": 4.0,
    "features": 15.0,
    "postprocess-scoring": 30.0,
    "evaluate": 2.0,
}


def estimate_cpu_seconds(scale: Scale) -> dict[str, float]:
    """Planned CPU seconds per stage of a real-anatomy run of ``scale`` (the budget it is sized for).

    >>> total = sum(estimate_cpu_seconds(SCALES["real"]).values())
    >>> total < 6 * 3600
    True
    """
    s, it, case = scale, ITERATION_SECONDS, CASE_SECONDS
    n_target, n_source = s.n_target, s.real_source + s.n_source
    iters = {
        (stage, arch): s.epochs(stage, arch) * getattr(s, f"{stage}_iters")
        for stage in ("pretrain", "finetune", "scratch")
        for arch in it
    }
    # pre-training: nnU-Net on each of the three sources, MedNeXt on the real source (for the ensemble)
    pretrain_nnunet = 3 * iters["pretrain", "nnunet"] * it["nnunet"]
    pretrain_mednext = iters["pretrain", "mednext"] * it["mednext"]
    # cross-validation: nnU-Net from scratch + 4 fine-tuned arms (real random/stratified, phantom, both);
    # MedNeXt fine-tuned stratified; each fold also validates once at its end (its held-out cases)
    cv_nnunet = s.folds * (iters["scratch", "nnunet"] + 4 * iters["finetune", "nnunet"]) * it["nnunet"]
    cv_mednext = s.folds * iters["finetune", "mednext"] * it["mednext"]
    validation = n_target * (5 * case["predict-nnunet"] + case["predict-mednext"]) / 2
    oof = n_target * (5 * case["predict-nnunet"] + case["predict-mednext"])
    return {
        "data (degrade, phantoms, preprocessing, features)": n_target * (case["degrade"] + case["preprocess"])
        + s.n_source * case["phantom"]
        + n_source * case["preprocess"]
        + n_target * case["features"],
        "pre-training nnU-Net x 3 sources": pretrain_nnunet,
        "pre-training MedNeXt (real source)": pretrain_mednext,
        "cross-validation nnU-Net (scratch + 4 fine-tuned arms)": cv_nnunet,
        "cross-validation MedNeXt (fine-tuned, stratified)": cv_mednext,
        "prediction (validation, out of fold, 3 pre-trained arms)": validation
        + oof
        + 3 * n_target * case["predict-nnunet"],
        "post-processing (leave-one-out scoring) and evaluation": n_target
        * (case["postprocess-scoring"] + 12 * case["evaluate"]),
    }
