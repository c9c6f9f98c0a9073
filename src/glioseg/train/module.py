"""The Lightning module: a registry network, the region loss, the recipe's optimiser and schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from glioseg.data.labels import REGIONS
from glioseg.models import ModelConfig, build_model, set_deep_supervision
from glioseg.train.loss import DeepSupervisionLoss
from glioseg.train.plan import Plan
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution region logits ``(B, 3, X, Y, Z)``."""
        return first_output(self.network(x))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        outputs = self.network(batch["image"])
        loss = self.loss(outputs, batch["target"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

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
