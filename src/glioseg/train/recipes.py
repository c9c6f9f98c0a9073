"""Optimisation recipes of the seed paper's two architectures.

``nnunet``: SGD, momentum 0.99, Nesterov, lr 1e-2, weight decay 3e-5, poly decay (exponent 0.9),
gradient norm clipped at 12 (nnU-Net v2 defaults).
``mednext``: AdamW, lr 1e-3, eps 1e-4, weight decay 3e-5, poly decay (MedNeXt paper).
Both: 250 iterations per epoch (nnU-Net's epoch), foreground oversampling of one third.
Optional for both: ``mirror_consistency`` > 0 pairs every sampled patch with a mirrored copy in
the same step (the step's batch doubles) and adds that weight times
:func:`glioseg.train.loss.mirror_consistency` to the loss; with ``consistency_crop`` < 1 the
copy is a random sub-box of the patch (:func:`glioseg.train.module.paired_crop`), which also
teaches independence from where a window's border lies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True)
class Recipe:
    """Optimiser, schedule and sampling settings."""

    name: str
    optimizer: str  # "sgd" | "adamw"
    lr: float
    weight_decay: float = 3e-5
    momentum: float = 0.99
    nesterov: bool = True
    eps: float = 1e-8
    poly_exponent: float = 0.9
    warmup_epochs: int = 0
    epochs: int = 1000
    iters_per_epoch: int = 250
    val_every: int = 1
    oversample_foreground: float = 0.33
    grad_clip: float | None = 12.0
    augment: bool = True
    low_quality_augment: float = 0.0  # probability per sample of the ssa degradation
    freeze_encoder_epochs: int = 0
    mirror_consistency: float = 0.0  # weight of glioseg.train.loss.mirror_consistency (0: off)
    consistency_crop: float = (
        1.0  # side of the mirrored copy as a fraction of the patch (< 1: a random sub-box)
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def with_(self, **changes: Any) -> Recipe:
        """Copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPES: dict[str, Recipe] = {
    "nnunet": Recipe(name="nnunet", optimizer="sgd", lr=1e-2, momentum=0.99, nesterov=True, grad_clip=12.0),
    "mednext": Recipe(name="mednext", optimizer="adamw", lr=1e-3, eps=1e-4, grad_clip=None),
}


def recipe_for(model_name: str) -> Recipe:
    """The recipe of a registry model name (``mednext-*`` -> mednext, ``nnunet*`` -> nnunet)."""
    return RECIPES["mednext" if model_name.startswith("mednext") else "nnunet"]


def build_optimizer(recipe: Recipe, parameters) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def lr_factor(epoch: int, recipe: Recipe) -> float:
    """Multiplier of the base learning rate at ``epoch``: linear warm-up, then poly decay.

    Examples
    --------
    >>> r = RECIPES["nnunet"].with_(epochs=10)
    >>> round(lr_factor(0, r), 3), round(lr_factor(5, r), 3)
    (1.0, 0.536)
    """
    return poly_factor(epoch, recipe.epochs, recipe.warmup_epochs, recipe.poly_exponent)


def poly_factor(epoch: int, epochs: int, warmup_epochs: int = 0, exponent: float = 0.9) -> float:
    """``(1 - progress) ** exponent`` after ``warmup_epochs`` of linear warm-up."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    span = max(epochs - warmup_epochs, 1)
    progress = min(max(epoch - warmup_epochs, 0) / span, 1.0)
    return (1.0 - progress) ** exponent


class PolySchedule:
    """Callable for ``LambdaLR`` whose state (saved by the scheduler) is plain numbers."""

    def __init__(self, epochs: int, warmup_epochs: int = 0, exponent: float = 0.9):
        self.epochs = int(epochs)
        self.warmup_epochs = int(warmup_epochs)
        self.exponent = float(exponent)

    def __call__(self, epoch: int) -> float:
        return poly_factor(epoch, self.epochs, self.warmup_epochs, self.exponent)
