"""``glioseg train``."""

from __future__ import annotations

from pathlib import Path

import typer

from glioseg.cli._common import console, parse_triple, reports_errors


def train(
    data: Path = typer.Argument(..., help="Folder of labelled cases (any BraTS layout)."),
    model: str = typer.Option(..., "--model", "-m", help="nnunet, nnunet-resenc or mednext-{s,b,m,l}-k{3,5}."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (weights, plan, logs, curves)."),
    splits: Path | None = typer.Option(None, help="splits.json (nnU-Net splits_final.json shape)."),
    fold: str | None = typer.Option(None, help="Fold of --splits to train."),
    epochs: int | None = typer.Option(None, help="Epochs (recipe default: 1000)."),
    iters_per_epoch: int | None = typer.Option(None, help="Iterations per epoch (recipe default: 250)."),
    spacing: str | None = typer.Option(None, help="Target spacing in mm, e.g. 2 or 1,1,1 (default: dataset median)."),
    patch: str | None = typer.Option(None, help="Patch size in voxels, e.g. 128,128,128 (default: planned)."),
    batch_size: int = typer.Option(2, help="Patches per step."),
    base_features: int = typer.Option(32, help="Channels of the first stage (nnU-Net: 32); fewer for CPU runs."),
    memory_budget: float | None = typer.Option(None, help="GiB a training step may use (default: 60% of GPU or RAM)."),
    devices: int = typer.Option(1, help="GPUs (or CPU processes) per node; >1 uses DDP."),
    num_nodes: int = typer.Option(1, help="Nodes for multi-node DDP (see docs/training.md)."),
    accelerator: str = typer.Option("auto", help="auto, cpu or gpu."),
    precision: str | None = typer.Option(None, help="32-true, bf16-mixed or 16-mixed (default: bf16 on GPUs that have it)."),
    seed: int = typer.Option(0, help="Seed of initialisation, sampling and augmentation."),
    val_every: int = typer.Option(1, help="Validate every N epochs."),
    lr: float | None = typer.Option(None, help="Learning rate (recipe default: nnunet 1e-2, mednext 1e-3)."),
    low_quality_augment: float = typer.Option(0.0, help="Probability of the BraTS-Africa-like degradation per patch."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Disable spatial and intensity augmentation."),
    num_workers: int = typer.Option(0, help="Data-loader worker processes."),
    cache: Path | None = typer.Option(None, help="Folder for preprocessed cases (default: RUN/preprocessed); share it between folds."),
    allow_empty_labels: bool = typer.Option(False, help="Accept labelled cases without tumour."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train nnU-Net or MedNeXt on labelled cases (region-based WT/TC/ET, PyTorch Lightning)."""
    from glioseg.train.run import TrainOptions
    from glioseg.train.run import resume as resume_run
    from glioseg.train.run import train as train_run

    if resume:
        result = resume_run(out, printer=console.print, devices=devices)
    else:
        options = TrainOptions(
            data=str(data), model=model, out=str(out), splits=str(splits) if splits else None, fold=fold,
            epochs=epochs, iters_per_epoch=iters_per_epoch,
            spacing=list(parse_triple(spacing, "--spacing", float)) if spacing else None,
            patch=list(parse_triple(patch, "--patch")) if patch else None,
            batch_size=batch_size, base_features=base_features, memory_budget_gib=memory_budget,
            devices=devices, num_nodes=num_nodes, accelerator=accelerator, precision=precision, seed=seed,
            val_every=val_every, lr=lr, low_quality_augment=low_quality_augment, augment=not no_augment,
            num_workers=num_workers, cache=str(cache) if cache else None, allow_empty_labels=allow_empty_labels,
        )
        result = train_run(options, printer=console.print)
    scores = ", ".join(f"{k.removeprefix('val_dice_')} {v:.3f}" for k, v in result.metrics.items() if k.startswith("val_dice_"))
    console.print(f"model -> {result.run_dir / 'model.safetensors'} (+ model.json); last validation Dice: {scores or 'n/a'}")


def register(app: typer.Typer) -> None:
    app.command(
        epilog="Example: glioseg train data/ssa --model nnunet --out runs/nnunet --epochs 50 --iters-per-epoch 50 "
        "--spacing 2 --patch 64,64,64 --base-features 16"
    )(reports_errors(train))
