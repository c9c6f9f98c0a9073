"""``glioseg train``: discover -> fingerprint -> preprocess -> plan -> train -> export.

A run folder holds::

    RUN/run.json              options, split, recipe, seed (what was asked for)
    RUN/fingerprint.json      dataset fingerprint
    RUN/plan.json             the plan (also inside model.json)
    RUN/checkpoints/last.safetensors   full training state for --resume (no pickle)
    RUN/logs/                 CSV (metrics.csv) and TensorBoard logs
    RUN/training_curve.png    loss and validation Dice per epoch
    RUN/model.safetensors     final weights
    RUN/model.json            plan, model configuration, recipe, split, seed, versions, metrics
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.data.cases import Case, discover_cases
from glioseg.data.io import check_output_folder, remove_stale_parts, write_text_atomic
from glioseg.data.preprocess import PreprocessedCache
from glioseg.errors import ConfigError, InputError
from glioseg.models.checkpoint import DISCLAIMER
from glioseg.models.plan import Plan, add_preprocessed_statistics, header_fingerprint, make_plan
from glioseg.runtime import keep_freed_memory
from glioseg.train.ranks import await_run_record, is_primary_process
from glioseg.train.recipes import Recipe, recipe_for
from glioseg.train.splits import load_splits


@dataclass
class TrainOptions:
    """Everything ``glioseg train`` can be told (CLI flags map one to one)."""

    data: str
    model: str
    out: str
    splits: str | None = None
    fold: str | None = None  # "0".."k-1" or "all"
    epochs: int | None = None
    iters_per_epoch: int | None = None
    spacing: list[float] | None = None
    patch: list[int] | None = None
    batch_size: int | None = 2  # None: the pre-trained plan's (fine-tuning)
    base_features: int = 32
    memory_budget_gib: float | None = None
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    precision: str | None = None
    seed: int = 0
    val_every: int = 1
    lr: float | None = None
    warmup_epochs: int | None = None
    freeze_encoder_epochs: int | None = None
    low_quality_augment: float = 0.0
    mirror_consistency: float | None = None  # weight of the mirror-consistency term (None: the recipe's, 0)
    consistency_crop: float | None = None  # side of the paired copy as a fraction of the patch (None: 1)
    augment: bool = True
    num_workers: int = 0
    cache: str | None = None
    allow_empty_labels: bool = False
    val_fraction: float = 0.2
    pretrained: str | None = None  # fine-tune from this model (glioseg model files or an nnU-Net v2 result)
    pretrained_fold: int = 0  # fold to take from an nnU-Net result
    progress_bar: bool = True
    reuse_memory: bool = False  # keep freed memory for the next iteration (glioseg.runtime.keep_freed_memory)


@dataclass
class RunResult:
    run_dir: Path
    plan: Plan
    metrics: dict[str, float] = field(default_factory=dict)
    primary: bool = True  # False in the other processes of a multi-process run (they write nothing)


def _labelled_cases(root: Path) -> list[Case]:
    found = discover_cases(root)
    if found.errors:
        first = found.errors[0]
        more = f" (and {len(found.errors) - 1} more)" if len(found.errors) > 1 else ""
        raise InputError(first.path, f"{first.problem}{more}; fix or remove the case before training")
    labelled = [c for c in found.cases if c.label is not None]
    if not labelled:
        raise InputError(
            root, f"no labelled case among {len(found.cases)} found (training needs <ID>-seg.nii.gz files)"
        )
    return labelled


def resolve_split(
    cases: list[Case], splits: str | None, fold: str | None, val_fraction: float, seed: int
) -> tuple[list[str], list[str], str]:
    """Training and validation case IDs, and a description of where they came from."""
    ids = [c.case_id for c in cases]
    if splits is not None:
        path = Path(splits)
        folds = load_splits(path)
        if fold is None:
            raise ConfigError("--splits needs --fold (a fold number, or 'all' for fine-tuning every fold)")
        if fold == "all":
            raise ConfigError(
                "--fold all is cross-validation: run it through glioseg.train.crossval.cross_validate"
            )
        k = int(fold)
        if not 0 <= k < len(folds):
            raise ConfigError(f"--fold {k} does not exist in {path} ({len(folds)} folds)")
        train, val = list(folds[k]["train"]), list(folds[k]["val"])
        missing = sorted(set(train + val) - set(ids))
        if missing:
            raise InputError(
                path, f"fold {k} names {len(missing)} case(s) not labelled in the data, e.g. {missing[0]}"
            )
        return train, val, f"{path.name} fold {k}"
    if len(ids) >= 5 and val_fraction > 0:
        rng = np.random.default_rng(seed)
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_val = max(1, int(round(val_fraction * len(ids))))
        return (
            sorted(order[n_val:]),
            sorted(order[:n_val]),
            f"random hold-out of {n_val} case(s), seed {seed}",
        )
    return ids, ids[: min(2, len(ids))], "no hold-out (fewer than 5 cases): validation on training cases"


def _default_precision(accelerator: str) -> str:
    import torch

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


@dataclass
class Prepared:
    """Everything a run needs, decided before any training."""

    plan: Plan
    recipe: Recipe
    split: dict[str, Any]
    cache: PreprocessedCache
    pretrained: tuple | None = None  # (state, info, target config, upkern)


def prepare(options: TrainOptions, printer=print) -> Prepared:
    """Everything before training: checks, split, fingerprint, preprocessing, plan. Raises before any training."""
    from glioseg.models.memory import estimate_training_memory

    data = Path(options.data)
    out = Path(options.out)
    pretrained = None
    if options.pretrained:
        from glioseg.train.finetune import load_pretrained, transfer_plan

        state, info = load_pretrained(options.pretrained, options.pretrained_fold)
        pre_plan, target_config, upkern = transfer_plan(info, options.model or None, options.batch_size)
        if options.spacing and not np.allclose(options.spacing, pre_plan.target_spacing):
            raise ConfigError(
                f"fine-tuning keeps the pre-trained spacing {pre_plan.target_spacing} mm; omit --spacing"
            )
        if options.patch and list(options.patch) != list(pre_plan.patch_size):
            raise ConfigError(f"fine-tuning keeps the pre-trained patch {pre_plan.patch_size}; omit --patch")
        pretrained = (state, info, target_config, upkern)
    cases = _labelled_cases(data)
    train_ids, val_ids, split_note = resolve_split(
        cases, options.splits, options.fold, options.val_fraction, options.seed
    )
    by_id = {c.case_id: c for c in cases}
    used = [by_id[i] for i in sorted(set(train_ids) | set(val_ids))]
    fingerprint = header_fingerprint([by_id[i] for i in train_ids])
    model_name = pre_plan.model if pretrained else options.model
    recipe = recipe_for(model_name).with_(
        epochs=options.epochs,
        iters_per_epoch=options.iters_per_epoch,
        lr=options.lr,
        warmup_epochs=options.warmup_epochs,
        freeze_encoder_epochs=options.freeze_encoder_epochs,
        val_every=options.val_every,
        augment=options.augment,
        low_quality_augment=options.low_quality_augment,
        mirror_consistency=options.mirror_consistency,
        consistency_crop=options.consistency_crop,
    )
    if recipe.mirror_consistency < 0 or not 0 < recipe.consistency_crop <= 1:
        raise ConfigError(
            f"--mirror-consistency must be >= 0 (got {recipe.mirror_consistency}) and --consistency-crop in (0, 1] "
            f"(got {recipe.consistency_crop})"
        )
    if pretrained:
        from glioseg.train.finetune import finetune_recipe

        recipe = finetune_recipe(recipe, options)
        spacing = tuple(pre_plan.target_spacing)
        estimate = estimate_training_memory(
            pretrained[2], tuple(pre_plan.patch_size), pre_plan.batch_size
        ).total_gib
        budget = options.memory_budget_gib
        if budget is not None and estimate > budget:
            raise ConfigError(
                f"the pre-trained plan needs about {estimate:.1f} GiB per training step, more than the memory "
                f"budget of {budget:.1f} GiB; lower --batch-size or raise --memory-budget"
            )
    else:
        spacing = tuple(options.spacing) if options.spacing else tuple(fingerprint.median_spacing)
        if options.patch:  # a given patch is checked against the memory budget before any preprocessing
            make_plan(
                fingerprint,
                options.model,
                spacing,
                tuple(options.patch),
                options.batch_size or 2,
                options.base_features,
                memory_budget_gib=options.memory_budget_gib,
            )
    cache = PreprocessedCache(options.cache or out / "preprocessed", spacing)
    infos, labels = [], []
    empty = []
    for case in used:
        info = cache.ensure(case, seed=options.seed)
        _, label, _ = cache.load(case.case_id, mmap=True)
        if case.case_id in train_ids:
            infos.append(info)
            labels.append(label)
        if label is not None and not np.any(label):
            empty.append(case.case_id)
    if empty and not options.allow_empty_labels:
        raise InputError(
            by_id[empty[0]].label,
            f"segmentation has no tumour ({len(empty)} case(s) like this, e.g. {', '.join(empty[:3])}); "
            "check the files or pass --allow-empty-labels",
        )
    fingerprint = add_preprocessed_statistics(fingerprint, infos, None, labels)
    if pretrained:
        plan = pre_plan
    else:
        plan = make_plan(
            fingerprint,
            options.model,
            spacing,
            tuple(options.patch) if options.patch else None,
            options.batch_size or 2,
            options.base_features,
            memory_budget_gib=options.memory_budget_gib,
        )
    for case in used:
        shape = cache.info(case.case_id).shape
        if any(p > s for p, s in zip(plan.patch_size, shape, strict=True)):
            raise ConfigError(
                f"patch {'x'.join(map(str, plan.patch_size))} is larger than case {case.case_id} "
                f"({'x'.join(map(str, shape))} voxels at {'x'.join(f'{s:g}' for s in plan.target_spacing)} mm); "
                "use a smaller --patch or a coarser --spacing"
            )
    split = {"train": train_ids, "val": val_ids, "source": split_note}
    out.mkdir(parents=True, exist_ok=True)
    fingerprint.save(out / "fingerprint.json")
    plan.save(out / "plan.json")
    return Prepared(plan, recipe, split, cache, pretrained)


def train(options: TrainOptions, printer=print, extra_callbacks: list | None = None) -> RunResult:
    """Train one model as described by ``options``; returns where it went and its last validation scores."""
    out = Path(options.out)
    if not is_primary_process(options.devices * options.num_nodes):
        return _follow(options, extra_callbacks)
    run_json = out / "run.json"
    for folder in (out, options.cache):
        if folder:
            check_output_folder(folder)
    if run_json.exists():
        raise ConfigError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    fresh = not out.exists()
    try:
        prepared = prepare(options, printer)
    except BaseException:  # a run stopped before training leaves nothing (a shared --cache stays)
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        raise
    from glioseg.train.finetune import pretrained_note

    record = {
        "options": asdict(options),
        "split": prepared.split,
        "recipe": prepared.recipe.to_dict(),
        "seed": options.seed,
        "pretrained": pretrained_note(prepared.pretrained, options) if prepared.pretrained else None,
        "disclaimer": DISCLAIMER,
    }
    write_text_atomic(run_json, json.dumps(record, indent=1) + "\n")
    return _fit(
        out,
        prepared.plan,
        prepared.recipe,
        prepared.split,
        prepared.cache,
        options,
        prepared.pretrained,
        None,
        printer,
        extra_callbacks,
    )


def _follow(options: TrainOptions, extra_callbacks: list | None) -> RunResult:
    """A non-zero rank: rank 0 checks and prepares the run folder; this process waits for its run.json,
    makes sure the cases are in its cache (a no-op on a shared cache) and joins the training (DDP starts
    every process from rank 0's weights)."""
    out = Path(options.out)
    record = await_run_record(out, asdict(options))
    plan = Plan.load(out / "plan.json")
    cache = PreprocessedCache(options.cache or out / "preprocessed", tuple(plan.target_spacing))
    by_id = discover_cases(Path(options.data)).by_id()
    for case_id in sorted(set(record["split"]["train"]) | set(record["split"]["val"])):
        cache.ensure(by_id[case_id], seed=options.seed)
    recipe = Recipe.from_dict(record["recipe"])
    quiet = lambda *args, **kwargs: None  # noqa: E731 (rank 0 reports)
    return _fit(out, plan, recipe, record["split"], cache, options, None, None, quiet, extra_callbacks)


def resume(
    out: str | Path, printer=print, extra_callbacks: list | None = None, devices: int | None = None
) -> RunResult:
    """Continue a killed run from ``RUN/checkpoints/last.safetensors`` with its stored options."""
    out = Path(out)
    run_json = out / "run.json"
    last = out / "checkpoints" / "last.safetensors"
    if not run_json.exists():
        raise InputError(out, "no run to resume here (run.json missing)")
    record = json.loads(run_json.read_text())
    options = TrainOptions(**record["options"])
    if devices is not None:
        options.devices = devices
    plan = Plan.load(out / "plan.json")
    recipe = Recipe.from_dict(record["recipe"])
    cache = PreprocessedCache(options.cache or out / "preprocessed", tuple(plan.target_spacing))
    for case_id in sorted(set(record["split"]["train"]) | set(record["split"]["val"])):
        if not cache.paths(case_id)["meta"].exists():
            raise InputError(cache.folder, f"preprocessed case {case_id} is missing; start a new run instead")
    if (out / "model.json").exists() and not last.exists():
        raise InputError(out, "this run already finished")
    if is_primary_process(options.devices * options.num_nodes):  # what a killed run was writing
        for folder in (out, out / "checkpoints", out / "logs"):
            remove_stale_parts(folder)
    return _fit(
        out,
        plan,
        recipe,
        record["split"],
        cache,
        options,
        None,
        last if last.exists() else None,
        printer,
        extra_callbacks,
    )


def _fit(
    out, plan, recipe, split, cache, options, pretrained, ckpt_path, printer, extra_callbacks
) -> RunResult:
    import logging
    import warnings

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from torch.utils.data import DataLoader

    from glioseg.models.checkpoint import canonical_state_dict, load_tree, save_model
    from glioseg.train.callbacks import (
        DataEpoch,
        EpochSummary,
        RandomState,
        SafeCheckpointIO,
        SaveLast,
        TrainingCurve,
        plot_training_curve,
        restore_metrics_history,
        stash_metrics_history,
        training_time,
    )
    from glioseg.train.data import CaseDataset, PatchDataset
    from glioseg.train.module import SegmentationModule

    if options.reuse_memory:
        keep_freed_memory()  # the same large tensors every iteration: reuse them, do not refault
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    L.seed_everything(options.seed, workers=True, verbose=False)
    module = SegmentationModule(plan, recipe)
    if pretrained is not None and ckpt_path is None:
        from glioseg.train.finetune import initial_state_for

        state, info, target, upkern = pretrained
        reinitialised = initial_state_for(state, info, target, module.network, upkern)
        printer(
            f"pre-trained weights loaded{' (UpKern k3 -> k5)' if upkern else ''}; "
            f"{len(reinitialised)} tensor(s) keep a fresh initialisation"
            + (
                f": {', '.join(reinitialised[:4])}{' ...' if len(reinitialised) > 4 else ''}"
                if reinitialised
                else ""
            )
        )
    world = options.devices * options.num_nodes
    dataset = PatchDataset(
        cache,
        split["train"],
        plan.patch_size,
        # every process makes iters_per_epoch steps on its own share (Lightning's distributed sampler)
        samples_per_epoch=recipe.iters_per_epoch * plan.batch_size * world,
        batch_size=plan.batch_size,
        seed=options.seed,
        oversample=recipe.oversample_foreground,
        augment=recipe.augment,
        low_quality_probability=recipe.low_quality_augment,
        processes=world,
    )
    start_epoch = 0
    if ckpt_path is not None:
        start_epoch = int(load_tree(ckpt_path).get("epoch", 0)) + 1
    dataset.set_epoch(start_epoch)
    loader = DataLoader(
        dataset,
        batch_size=plan.batch_size,
        shuffle=False,
        num_workers=options.num_workers,
        persistent_workers=False,
        drop_last=True,
    )
    val_loader = DataLoader(CaseDataset(cache, split["val"]), batch_size=1, num_workers=0)
    callbacks = [
        SaveLast(out / "checkpoints" / "last.safetensors"),
        DataEpoch(dataset),
        RandomState(),
        EpochSummary(printer),
        TrainingCurve(out / "logs", out / "training_curve.png"),
    ]
    if options.progress_bar:
        callbacks.append(TQDMProgressBar())
    callbacks += list(extra_callbacks or [])
    trainer = L.Trainer(
        max_epochs=recipe.epochs,
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        # the lowest deep-supervision output has weight 0 (nnU-Net), so its head takes no part in the loss
        strategy="ddp_find_unused_parameters_true" if world > 1 else "auto",
        precision=options.precision or _default_precision(options.accelerator),
        logger=[
            CSVLogger(out, name="logs", version="csv"),
            TensorBoardLogger(out, name="logs", version="tensorboard"),
        ],
        callbacks=callbacks,
        plugins=[SafeCheckpointIO()],
        check_val_every_n_epoch=recipe.val_every,
        gradient_clip_val=recipe.grad_clip,
        gradient_clip_algorithm="norm",
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_checkpointing=False,
        enable_progress_bar=options.progress_bar,
        log_every_n_steps=max(1, min(50, recipe.iters_per_epoch)),
        default_root_dir=out,
    )
    torch.set_float32_matmul_precision("high")
    if ckpt_path is not None and is_primary_process(world):
        stash_metrics_history(out / "logs")  # the CSV logger would delete the epochs logged so far
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=val_loader, ckpt_path=ckpt_path)
    if trainer.interrupted:
        raise KeyboardInterrupt
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_") or k == "train_loss"
    }
    if trainer.global_rank == 0:
        restore_metrics_history(out / "logs")  # one complete metrics.csv again, then its curve
        plot_training_curve(out / "logs", out / "training_curve.png")
        info = {
            "plan": plan.to_dict(),
            "model_config": plan.model_config,
            "recipe": recipe.to_dict(),
            "split": split,
            "seed": options.seed,
            "epochs_trained": trainer.current_epoch,
            "training_time": training_time(out / "logs"),
            "metrics": metrics,
            "trained_on": str(options.data),
            "disclaimer": DISCLAIMER,
        }
        save_model(canonical_state_dict(module.network), info, out / "model")
    return RunResult(out, plan, metrics, primary=trainer.global_rank == 0)
