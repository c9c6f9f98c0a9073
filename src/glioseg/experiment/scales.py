"""Sizes of the transfer experiment: ``tiny`` (CI), ``small`` (a laptop CPU), ``full`` (the paper, GPUs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Scale:
    """Everything that changes between experiment sizes.

    Cohort sizes are numbers of synthetic cases (ignored for a cohort the user provides).
    ``shape``/``spacing`` are the generated grids; ``train_spacing`` the networks' spacing.
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
