"""``glioseg train``, ``glioseg finetune`` and ``glioseg ensemble-weights``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from glioseg.cli._common import console, parse_triple, reports_errors

# Options that train and finetune share: one declaration each, so their names, defaults and help stay the same.
Splits = Annotated[
    Path | None, typer.Option(help="splits.json from glioseg split (nnU-Net splits_final.json shape).")
]
Fold = Annotated[str | None, typer.Option(help="Fold of --splits to train, or 'all' for cross-validation.")]
IterationsPerEpoch = Annotated[int | None, typer.Option(help="Iterations per epoch (default: 250).")]
MemoryBudget = Annotated[
    float | None, typer.Option(help="GiB a training step may use (default: 60% of GPU or RAM).")
]
Devices = Annotated[int, typer.Option(help="GPUs (or CPU processes) per node; >1 uses DDP.")]
Accelerator = Annotated[str, typer.Option(help="auto, cpu or gpu.")]
Precision = Annotated[
    str | None, typer.Option(help="32-true, bf16-mixed or 16-mixed (default: bf16 on GPUs that have it).")
]
Seed = Annotated[int, typer.Option(help="Seed of initialisation, sampling and augmentation.")]
ValEvery = Annotated[int, typer.Option(help="Validate every N epochs.")]
LowQualityAugment = Annotated[
    float, typer.Option(help="Probability of the BraTS-Africa-like degradation per patch.")
]
MirrorConsistency = Annotated[
    float,
    typer.Option(
        help="Weight of a mirror-consistency term: each patch is paired with a mirrored copy (twice the work "
        "per step); makes single-pass inference (--mode fast) closer to the mirrored prediction."
    ),
]
ConsistencyCrop = Annotated[
    float,
    typer.Option(
        help="Side of the mirrored copy as a fraction of the patch; below 1 a random sub-box, which also teaches "
        "independence from window borders (sliding windows, whole-crop passes)."
    ),
]
NumWorkers = Annotated[int, typer.Option(help="Data-loader worker processes.")]
ReuseMemory = Annotated[
    bool,
    typer.Option(
        "--reuse-memory",
        help="Keep freed memory in the process for the next iteration instead of returning it to the system "
        "(glibc): faster CPU training at up to about twice the peak memory (docs/performance.md).",
    ),
]
Cache = Annotated[
    Path | None,
    typer.Option(
        help="Folder for preprocessed cases (default: RUN/preprocessed); share it between runs and folds."
    ),
]
OutOfFoldTTA = Annotated[str, typer.Option(help="Mirroring for the out-of-fold predictions of --fold all.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")]


def _run(options, resume: bool, tta: str) -> None:
    from glioseg.train.crossval import cross_validate
    from glioseg.train.run import resume as resume_run
    from glioseg.train.run import train as train_run

    if options.fold == "all":
        cross_validate(options, tta=tta, printer=console.print)
        console.print(f"fold ensemble -> {options.out} (use it with glioseg predict --model {options.out})")
        return
    if resume:
        result = resume_run(options.out, printer=console.print, devices=options.devices)
    else:
        result = train_run(options, printer=console.print)
    if not result.primary:  # another process of a multi-process run: rank 0 reports
        return
    scores = ", ".join(
        f"{k.removeprefix('val_dice_')} {v:.3f}"
        for k, v in result.metrics.items()
        if k.startswith("val_dice_")
    )
    console.print(
        f"model -> {result.run_dir / 'model.safetensors'} (+ model.json); last validation Dice: {scores or 'n/a'}"
    )


def train(
    data: Path = typer.Argument(..., help="Folder of labelled cases (any BraTS layout)."),
    model: str = typer.Option(
        ..., "--model", "-m", help="nnunet, nnunet-resenc or mednext-{s,b,m,l}-k{3,5}."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (weights, plan, logs, curves)."),
    splits: Splits = None,
    fold: Fold = None,
    epochs: int | None = typer.Option(None, help="Epochs (recipe default: 1000)."),
    iters_per_epoch: IterationsPerEpoch = None,
    spacing: str | None = typer.Option(
        None, help="Target spacing in mm, e.g. 2 or 1,1,1 (default: dataset median)."
    ),
    patch: str | None = typer.Option(None, help="Patch size in voxels, e.g. 128,128,128 (default: planned)."),
    batch_size: int = typer.Option(2, help="Patches per step."),
    base_features: int = typer.Option(
        32, help="Channels of the first stage (nnU-Net: 32); fewer for CPU runs."
    ),
    memory_budget: MemoryBudget = None,
    devices: Devices = 1,
    num_nodes: int = typer.Option(1, help="Nodes for multi-node DDP (see docs/training.md)."),
    accelerator: Accelerator = "auto",
    precision: Precision = None,
    seed: Seed = 0,
    val_every: ValEvery = 1,
    lr: float | None = typer.Option(None, help="Learning rate (recipe default: nnunet 1e-2, mednext 1e-3)."),
    low_quality_augment: LowQualityAugment = 0.0,
    mirror_consistency: MirrorConsistency = 0.0,
    consistency_crop: ConsistencyCrop = 1.0,
    no_augment: bool = typer.Option(
        False, "--no-augment", help="Disable spatial and intensity augmentation."
    ),
    num_workers: NumWorkers = 0,
    reuse_memory: ReuseMemory = False,
    cache: Cache = None,
    allow_empty_labels: bool = typer.Option(False, help="Accept labelled cases without tumour."),
    val_fraction: float = typer.Option(
        0.2,
        min=0.0,
        max=0.9,
        help="Without --splits: share of the cases held out for validation (0: train on all, validate on two of them).",
    ),
    tta: OutOfFoldTTA = "flip",
    resume: Resume = False,
) -> None:
    """Train nnU-Net or MedNeXt from scratch (region-based WT/TC/ET, PyTorch Lightning)."""
    from glioseg.train.run import TrainOptions

    options = TrainOptions(
        data=str(data),
        model=model,
        out=str(out),
        splits=str(splits) if splits else None,
        fold=fold,
        epochs=epochs,
        iters_per_epoch=iters_per_epoch,
        spacing=list(parse_triple(spacing, "--spacing", float)) if spacing else None,
        patch=list(parse_triple(patch, "--patch")) if patch else None,
        batch_size=batch_size,
        base_features=base_features,
        memory_budget_gib=memory_budget,
        devices=devices,
        num_nodes=num_nodes,
        accelerator=accelerator,
        precision=precision,
        seed=seed,
        val_every=val_every,
        lr=lr,
        low_quality_augment=low_quality_augment,
        augment=not no_augment,
        mirror_consistency=mirror_consistency,
        consistency_crop=consistency_crop,
        num_workers=num_workers,
        reuse_memory=reuse_memory,
        cache=str(cache) if cache else None,
        allow_empty_labels=allow_empty_labels,
        val_fraction=val_fraction,
    )
    _run(options, resume, tta)


def finetune(
    data: Path = typer.Argument(..., help="Folder of labelled target cases (e.g. the local cohort)."),
    pretrained: Path = typer.Option(
        ..., "--pretrained", "-p", help="glioseg model/run, or an nnU-Net v2 result folder or .pth."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (a fold) or CV folder (--fold all)."),
    splits: Splits = None,
    fold: Fold = None,
    model: str | None = typer.Option(
        None, "--model", "-m", help="Only to grow a MedNeXt k3 start to k5 (UpKern), e.g. mednext-m-k5."
    ),
    pretrained_fold: int = typer.Option(0, help="Fold to take from an nnU-Net v2 result."),
    epochs: int | None = typer.Option(None, help="Epochs (fine-tuning default: 150)."),
    iters_per_epoch: IterationsPerEpoch = None,
    lr: float | None = typer.Option(None, help="Learning rate (default: a tenth of the recipe's)."),
    warmup_epochs: int | None = typer.Option(None, help="Linear warm-up epochs (default: 5% of the epochs)."),
    freeze_encoder_epochs: int = typer.Option(0, help="Keep the encoder frozen for this many first epochs."),
    batch_size: int | None = typer.Option(None, help="Patches per step (default: the pre-trained plan's)."),
    memory_budget: MemoryBudget = None,
    devices: Devices = 1,
    accelerator: Accelerator = "auto",
    precision: Precision = None,
    seed: Seed = 0,
    val_every: ValEvery = 1,
    low_quality_augment: LowQualityAugment = 0.0,
    mirror_consistency: MirrorConsistency = 0.0,
    consistency_crop: ConsistencyCrop = 1.0,
    num_workers: NumWorkers = 0,
    reuse_memory: ReuseMemory = False,
    cache: Cache = None,
    tta: OutOfFoldTTA = "flip",
    resume: Resume = False,
) -> None:
    """Fine-tune a pre-trained model on a small local cohort, keeping the pre-trained plan."""
    from glioseg.train.run import TrainOptions

    options = TrainOptions(
        data=str(data),
        model=model or "",
        out=str(out),
        splits=str(splits) if splits else None,
        fold=fold,
        epochs=epochs,
        iters_per_epoch=iters_per_epoch,
        lr=lr,
        warmup_epochs=warmup_epochs,
        freeze_encoder_epochs=freeze_encoder_epochs,
        batch_size=batch_size or 2,
        memory_budget_gib=memory_budget,
        devices=devices,
        accelerator=accelerator,
        precision=precision,
        seed=seed,
        val_every=val_every,
        low_quality_augment=low_quality_augment,
        mirror_consistency=mirror_consistency,
        consistency_crop=consistency_crop,
        num_workers=num_workers,
        reuse_memory=reuse_memory,
        cache=str(cache) if cache else None,
        pretrained=str(pretrained),
        pretrained_fold=pretrained_fold,
    )
    if batch_size is None:
        options.batch_size = None  # keep the pre-trained plan's
    _run(options, resume, tta)


def ensemble_weights(
    cv_runs: list[Path] = typer.Argument(
        ..., help="Cross-validation folders (glioseg train/finetune --fold all)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="weights.json to write."),
    method: str = typer.Option(
        "proportional", help="proportional (to CV lesion-wise Dice) or search (grid on OOF probabilities)."
    ),
    data: Path | None = typer.Option(None, help="Labelled data (needed by --method search and --oof-out)."),
    oof_out: Path | None = typer.Option(
        None, help="Also write the weighted ensemble's out-of-fold label maps here (for postprocess tune)."
    ),
) -> None:
    """Ensemble weights per region from cross-validated lesion-wise Dice, for glioseg predict --weights."""
    from glioseg.infer.weights import ensemble_weights as compute
    from glioseg.infer.weights import write_weights

    doc = compute(cv_runs, method, data)
    write_weights(doc, out)
    if oof_out is not None:
        from glioseg.errors import InputError
        from glioseg.infer.weights import combine_out_of_fold

        if data is None:
            raise InputError("--oof-out", "needs --data (the labelled cohort the cross-validation ran on)")
        written = combine_out_of_fold(cv_runs, doc, data, oof_out)
        console.print(f"{len(written)} out-of-fold ensemble label map(s) -> {oof_out}")
    for entry in doc["models"]:
        console.print(
            f"{entry['name']}: "
            + ", ".join(f"{r} {w:.3f}" for r, w in entry["weights"].items())
            + "  (CV lesion-wise Dice "
            + ", ".join(f"{r} {d:.3f}" for r, d in entry["cv_lesionwise_dice"].items())
            + ")"
        )
    console.print(f"weights -> {out}")


def register(app: typer.Typer) -> None:
    app.command(
        epilog="Example: glioseg train data/ssa --model nnunet --out runs/nnunet --epochs 50 --iters-per-epoch 50 "
        "--spacing 2 --patch 64,64,64 --base-features 16"
    )(reports_errors(train))
    app.command(
        epilog="Example: glioseg finetune data/ssa --pretrained runs/nnunet-gli --splits splits.json --fold all "
        "--out runs/nnunet-ft"
    )(reports_errors(finetune))
    app.command(
        name="ensemble-weights",
        epilog="Example: glioseg ensemble-weights runs/nnunet-ft runs/mednext-ft --out weights.json "
        "--data data/local --oof-out runs/oof-ensemble",
    )(reports_errors(ensemble_weights))
