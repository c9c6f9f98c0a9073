"""The Lightning module: a registry network, the region loss, the recipe's optimiser and schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from glioseg.data.labels import REGIONS
from glioseg.models import ModelConfig, build_model, prefers_channels_last, set_deep_supervision
from glioseg.models.plan import Plan
from glioseg.train.loss import DeepSupervisionLoss, mirror_consistency
from glioseg.train.recipes import PolySchedule, Recipe, build_optimizer


def first_output(outputs: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Full-resolution logits of a network that may return deep-supervision lists."""
    return outputs if isinstance(outputs, torch.Tensor) else outputs[0]


def region_dice(probabilities: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard Dice per region of ``(3, ...)`` tensors; 1 when both masks are empty."""
    pred = probabilities > threshold
    truth = target > 0.5
    dims = tuple(range(1, pred.ndim))
    inter = (pred & truth).sum(dims).float()
    total = pred.sum(dims).float() + truth.sum(dims).float()
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


def random_mirror_axes(generator: torch.Generator | None = None) -> tuple[int, ...]:
    """One of the seven non-empty subsets of the spatial axes ``(2, 3, 4)``, uniformly.

    Examples
    --------
    >>> axes = random_mirror_axes(torch.Generator().manual_seed(0))
    >>> 1 <= len(axes) <= 3 and set(axes) <= {2, 3, 4}
    True
    """
    code = int(torch.randint(1, 8, (1,), generator=generator))
    return tuple(axis for bit, axis in enumerate((2, 3, 4)) if code >> bit & 1)


def paired_crop(
    patch: tuple[int, ...], fraction: float, n_stages: int, generator: torch.Generator | None = None
) -> tuple[slice, ...] | None:
    """A random sub-box of a patch for the consistency pair, as an index of ``(B, C, X, Y, Z)`` tensors.

    Each side is ``fraction`` of the patch's, rounded down to a multiple of the network's total
    down-sampling ``2 ** (n_stages - 1)`` (at least one multiple); ``None`` when that is the whole
    patch. Comparing a patch's prediction with that of a sub-box at a random offset teaches the
    network to predict a voxel the same wherever the window's border lies, as sliding windows and
    whole-crop inference need.

    Examples
    --------
    >>> box = paired_crop((40, 40, 40), 0.8, 4, torch.Generator().manual_seed(0))
    >>> [s.stop - s.start for s in box[2:]]
    [32, 32, 32]
    >>> paired_crop((40, 40, 40), 1.0, 4) is None
    True
    """
    step = 2 ** (n_stages - 1)
    sides = [max(step, int(fraction * size) // step * step) for size in patch]
    if sides == list(patch):
        return None
    starts = [
        int(torch.randint(0, size - side + 1, (1,), generator=generator))
        for size, side in zip(patch, sides, strict=True)
    ]
    return (slice(None), slice(None), *(slice(a, a + side) for a, side in zip(starts, sides, strict=True)))


class SegmentationModule(L.LightningModule):
    """Trains a region-based segmentation network.

    Parameters
    ----------
    plan : Plan (network configuration, patch size)
    recipe : Recipe (optimiser, schedule)
    """

    def __init__(self, plan: Plan, recipe: Recipe):
        super().__init__()
        self.plan = plan
        self.recipe = recipe
        self.config = ModelConfig.from_dict(plan.model_config)
        self.network = build_model(self.config, deep_supervision=True)
        self.loss = DeepSupervisionLoss()
        self._val_scores: list[torch.Tensor] = []
        self._channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution region logits ``(B, 3, X, Y, Z)``."""
        return first_output(self.network(x))

    def on_fit_start(self) -> None:
        # MedNeXt trains faster in channels_last_3d on the CPU (glioseg.models.prefers_channels_last)
        self._channels_last = prefers_channels_last(self.config.family, self.device.type)
        if self._channels_last:
            self.network.to(memory_format=torch.channels_last_3d)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, target = batch["image"], batch["target"]
        if self._channels_last:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        weight = self.recipe.mirror_consistency
        if weight <= 0:
            outputs = self.network(image)
            loss = self.loss(outputs, target)
        else:
            loss = self._consistency_step(image, target, weight)
        self.log(
            "train_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=image.shape[0],
            sync_dist=True,
        )
        return loss

    def _consistency_step(self, image: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
        """Loss on the patches and on a mirrored (and, if ``consistency_crop`` < 1, cropped) copy of
        them, plus ``weight`` times the mirror consistency of the two predictions where they overlap."""
        axes = random_mirror_axes()
        n = image.shape[0]
        crop = paired_crop(tuple(image.shape[2:]), self.recipe.consistency_crop, self.plan.n_stages)
        if crop is None:  # the whole patch: one network call on the doubled batch
            outputs = self.network(torch.cat([image, image.flip(axes)]))
            loss = self.loss(outputs, torch.cat([target, target.flip(axes)]))
            logits = first_output(outputs)
            consistency = mirror_consistency(logits[:n], logits[n:], axes)
        else:
            outputs = self.network(image)
            paired = self.network(image[crop].flip(axes))
            loss = 0.5 * (self.loss(outputs, target) + self.loss(paired, target[crop].flip(axes)))
            consistency = mirror_consistency(first_output(outputs)[crop], first_output(paired), axes)
        self.log(
            "train_mirror_consistency",
            consistency,
            on_step=False,
            on_epoch=True,
            batch_size=n,
            sync_dist=True,
        )
        return loss + weight * consistency

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.recipe.freeze_encoder_epochs
        for name, param in self.network.named_parameters():
            if _is_encoder(name, self.config.family):
                param.requires_grad_(not frozen)

    def on_validation_epoch_start(self) -> None:
        set_deep_supervision(self.network, self.config, False)
        self._val_scores = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        from monai.inferers import sliding_window_inference

        logits = sliding_window_inference(
            batch["image"],
            roi_size=tuple(self.plan.patch_size),
            sw_batch_size=max(1, self.plan.batch_size),
            predictor=self,
            overlap=0.25,
            mode="gaussian",
        )
        probabilities = torch.sigmoid(logits.float())
        for b in range(probabilities.shape[0]):
            self._val_scores.append(region_dice(probabilities[b], batch["target"][b]).cpu())

    def on_validation_epoch_end(self) -> None:
        set_deep_supervision(self.network, self.config, True)
        if not self._val_scores:
            return
        scores = torch.stack(self._val_scores).mean(0)
        for name, value in zip(REGIONS, scores, strict=True):
            self.log(f"val_dice_{name}", value, prog_bar=False, sync_dist=True)
        self.log("val_dice_mean", scores.mean(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.recipe, self.network.parameters())
        schedule = PolySchedule(self.recipe.epochs, self.recipe.warmup_epochs, self.recipe.poly_exponent)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def _is_encoder(parameter_name: str, family: str) -> bool:
    if family == "nnunet":
        return parameter_name.startswith("encoder.")
    return parameter_name.startswith(("stem.", "enc_stages.", "down_blocks."))
