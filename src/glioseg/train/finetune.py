"""Fine-tuning from pre-trained weights: the pre-trained plan travels to the target data.

A pre-trained start is a glioseg model (``model.safetensors`` + ``model.json``, or its run
folder) or an nnU-Net v2 result (imported on the fly, see :mod:`glioseg.models.nnunet_import`).
Fine-tuning keeps the pre-trained plan — normalisation, spacing, patch size and topology — so
the network sees the target cohort exactly as it saw the source cohort; only parameters that
cannot be copied (different shape or absent) keep a fresh initialisation.  A MedNeXt k3 start
can be grown to k5 (UpKern).

Defaults when fine-tuning (each can be overridden): 150 epochs, learning rate a tenth of the
recipe's (nnU-Net 1e-3, MedNeXt 1e-4) with a linear warm-up over the first 5 % of epochs
(at least one), then poly decay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from glioseg.errors import ConfigError, InputError
from glioseg.models import ModelConfig, model_config
from glioseg.models.plan import Plan
from glioseg.train.recipes import Recipe

FINETUNE_EPOCHS = 150
FINETUNE_LR_FACTOR = 0.1
FINETUNE_WARMUP_FRACTION = 0.05


def is_nnunet_result(path: Path) -> bool:
    return path.suffix == ".pth" or (
        path.is_dir() and ((path / "plans.json").exists() or any(path.glob("*/plans.json")))
    )


def load_pretrained(
    source: str | Path, fold: int | str = 0
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and description (``plan``, ``model_config``) of a pre-trained start."""
    from glioseg.models.checkpoint import read_model_files

    path = Path(source)
    if not path.exists():
        raise InputError(path, "pre-trained model not found")
    if is_nnunet_result(path):
        from glioseg.models.nnunet_import import import_nnunet

        imported = import_nnunet(path, fold=fold)
        return imported.state_dict, imported.info()
    if path.is_dir() and not (path / "model.safetensors").exists():
        folds = sorted(path.glob("fold_*/model.safetensors"))
        if folds:
            raise InputError(
                path, f"is a cross-validation folder; pass one of its folds, e.g. {folds[0].parent}"
            )
    return read_model_files(path)


def transfer_plan(
    info: dict[str, Any], model: str | None, batch_size: int | None
) -> tuple[Plan, ModelConfig, bool]:
    """The plan to fine-tune with, the target model configuration and whether UpKern is needed."""
    if "plan" not in info or "model_config" not in info:
        raise ConfigError("the pre-trained model's description has no plan or model configuration")
    plan = Plan.from_dict(info["plan"])
    source = ModelConfig.from_dict(info["model_config"])
    target = source
    upkern = False
    if model and model != plan.model:
        same_family = (
            model.startswith("mednext") and plan.model.startswith("mednext") and model[:-1] == plan.model[:-1]
        )
        if not same_family:
            raise ConfigError(
                f"fine-tuning keeps the pre-trained architecture ({plan.model}); omit --model or pass --model "
                f"{plan.model} (only a MedNeXt kernel change, e.g. k3 -> k5, is converted)"
            )
        target = model_config(model, source.n_stages, int(source.arch_kwargs["init_filters"]))
        upkern = int(target.arch_kwargs["kernel_size"]) != int(source.arch_kwargs["kernel_size"])
        plan.model = model
        plan.model_config = target.to_dict()
    if batch_size is not None:
        plan.batch_size = int(batch_size)
    return plan, target, upkern


def initial_state_for(
    state: dict[str, torch.Tensor],
    info: dict[str, Any],
    target: ModelConfig,
    network: torch.nn.Module,
    upkern: bool,
) -> list[str]:
    """Load pre-trained weights into ``network`` (UpKern first if needed); return reinitialised names."""
    from glioseg.models.transfer import transfer_state_dict, upkern_state_dict

    if upkern:
        state = upkern_state_dict(state, ModelConfig.from_dict(info["model_config"]), target)
    return transfer_state_dict(state, network).reinitialised


def finetune_recipe(base: Recipe, options) -> Recipe:
    """The recipe fine-tuning uses: fewer epochs, a tenth of the learning rate, a linear warm-up."""
    epochs = options.epochs or FINETUNE_EPOCHS
    warmup = (
        options.warmup_epochs
        if options.warmup_epochs is not None
        else max(1, round(FINETUNE_WARMUP_FRACTION * epochs))
    )
    return base.with_(epochs=epochs, lr=options.lr or base.lr * FINETUNE_LR_FACTOR, warmup_epochs=warmup)


def pretrained_note(pretrained, options) -> dict[str, Any]:
    """What run.json records about the pre-trained start of a fine-tuning run."""
    _, info, target, upkern = pretrained
    return {
        "source": str(options.pretrained),
        "model": (info.get("plan") or {}).get("model"),
        "imported_from": info.get("imported_from"),
        "upkern": bool(upkern),
        "trained_on": info.get("trained_on"),
    }
