"""Training throughput against nnunetv2's own trainer on the same data, network, patch and batch.

Usage: python benchmarks/train_peer.py [--data ../shared/data/brats2018] [--cases 5] [--iters 20]
           [--threads 2] [--json out.json]

Both sides train the same nnU-Net ``PlainConvUNet`` (5 stages, 16-256 features, deep
supervision) on random 64^3 patches at 2 mm, batch 2, on the CPU, on the same real cases:

- glioseg: ``glioseg.train.run.prepare`` (fingerprint, preprocess, plan) with the release's
  settings, then the training data path of ``glioseg train`` (``PatchDataset``: nnU-Net-style
  augmentation and, in 20 % of the patches, the BraTS-Africa-like degradation) and the Lightning
  module's training step (region Dice + BCE with deep supervision, SGD);
- nnunetv2: its fingerprint, planner (target spacing overwritten to 2 mm) and preprocessor, the
  plans edited to the same patch, batch and network, then ``nnUNetTrainer``'s own data loader
  (single-threaded augmentation, ``nnUNet_n_proc_DA=0``, like glioseg's ``--num-workers 0``) and
  ``train_step``.

Per side it prints the seconds per iteration split into loading + augmentation and the network
step (forward, loss, backward, optimiser), so that a starving network shows, and the ratio of
the two totals.  Each side runs in its own process with ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import cpu_model, machine_record, write_result  # benchmarks/provenance.py

PATCH, SPACING, BATCH, BASE, STAGES = 64, 2.0, 2, 16, 5
DATASET_ID = 902
CHANNELS = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}  # nnU-Net channel k = glioseg channel k
TO_NNUNET = [
    0,
    2,
    1,
    3,
]  # glioseg 1 NETC, 2 SNFH, 3 ET -> nnU-Net's BraTS convention (1 edema, 2 necrosis, 3 ET)
REGION_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}


def _timed_batches(next_batch, step, iters: int) -> dict:
    """Mean seconds per iteration of loading (``next_batch``) and of the step, after one warm-up."""
    step(next_batch())
    load = compute = 0.0
    for _ in range(iters):
        t0 = time.perf_counter()
        batch = next_batch()
        t1 = time.perf_counter()
        step(batch)
        compute += time.perf_counter() - t1
        load += t1 - t0
    return {"load_s": load / iters, "step_s": compute / iters, "s_per_iter": (load + compute) / iters}


def glioseg_side(data: str, cases: list[str], work: Path, iters: int) -> dict:
    import torch
    from torch.utils.data import default_collate

    from glioseg.train.data import PatchDataset
    from glioseg.train.module import SegmentationModule
    from glioseg.train.recipes import build_optimizer
    from glioseg.train.run import TrainOptions, prepare

    subset = work / "glioseg-data"
    subset.mkdir()
    for case in cases:
        (subset / case).symlink_to(Path(data).resolve() / case)
    options = TrainOptions(
        data=str(subset),
        model="nnunet",
        out=str(work / "glioseg-run"),
        spacing=[SPACING] * 3,
        patch=[PATCH] * 3,
        base_features=BASE,
        batch_size=BATCH,
        val_fraction=0.0,
        low_quality_augment=0.2,
        progress_bar=False,
    )
    prepared = prepare(options, printer=lambda line: None)
    plan, recipe = prepared.plan, prepared.recipe
    assert plan.n_stages == STAGES, plan.n_stages
    dataset = PatchDataset(
        prepared.cache,
        prepared.split["train"],
        plan.patch_size,
        samples_per_epoch=(iters + 1) * BATCH,
        batch_size=BATCH,
        seed=0,
        low_quality_probability=0.2,
    )
    module = SegmentationModule(plan, recipe)
    optimizer = build_optimizer(recipe, module.network.parameters())
    index = iter(range(len(dataset)))

    def next_batch():
        return default_collate([dataset[next(index)] for _ in range(BATCH)])

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        loss = module.loss(module.network(batch["image"]), batch["target"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.network.parameters(), 12)
        optimizer.step()

    module.train()
    result = _timed_batches(next_batch, step, iters)
    result["params_m"] = sum(p.numel() for p in module.network.parameters()) / 1e6
    return result


def _write_raw(data: str, cases: list[str], raw: Path) -> Path:
    import nibabel as nib
    import numpy as np

    from glioseg.data.cases import discover_cases, load_case

    root = raw / f"Dataset{DATASET_ID}_GliosegPeer"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    found = discover_cases(data).by_id()
    for case_id in cases:
        case = load_case(found[case_id])
        for k in range(4):
            nib.save(
                nib.Nifti1Image(case.image[k].astype(np.float32), case.affine),
                root / "imagesTr" / f"{case_id}_{k:04d}.nii.gz",
            )
        labels = np.asarray(TO_NNUNET, dtype=np.uint8)[case.label]
        nib.save(nib.Nifti1Image(labels, case.affine), root / "labelsTr" / f"{case_id}.nii.gz")
    dataset = {
        "channel_names": CHANNELS,
        "labels": REGION_LABELS,
        "regions_class_order": [1, 2, 3],
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return root


def nnunet_side(iters: int, threads: int) -> dict:
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    name = convert_id_to_dataset_name(DATASET_ID)
    extract_fingerprints([DATASET_ID], num_processes=1, verbose=False, show_progress_bar=False)
    plan_experiments(
        [DATASET_ID], overwrite_target_spacing=(SPACING,) * 3, overwrite_plans_name="nnUNetPlansPeer"
    )
    plans_file = Path(nnUNet_preprocessed) / name / "nnUNetPlansPeer.json"
    plans = json.loads(plans_file.read_text())
    config = plans["configurations"]["3d_fullres"]
    config.update(patch_size=[PATCH] * 3, batch_size=BATCH, spacing=[SPACING] * 3)
    arch = config["architecture"]["arch_kwargs"]
    arch.update(
        n_stages=STAGES,
        features_per_stage=[min(BASE * 2**i, 320) for i in range(STAGES)],
        kernel_sizes=[[3, 3, 3]] * STAGES,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (STAGES - 1),
        n_conv_per_stage=[2] * STAGES,
        n_conv_per_stage_decoder=[2] * (STAGES - 1),
    )
    plans_file.write_text(json.dumps(plans, indent=1))
    preprocess(
        [DATASET_ID],
        plans_identifier="nnUNetPlansPeer",
        configurations=("3d_fullres",),
        num_processes=(1,),
        show_progress_bar=False,
    )
    dataset_json = json.loads((Path(nnUNet_preprocessed) / name / "dataset.json").read_text())
    # the planner sets torch's threads to the augmentation processes; training runs with --threads and
    # single-threaded augmentation in this process (nnUNet_n_proc_DA=0 breaks the planner, so set it now)
    os.environ["nnUNet_n_proc_DA"] = "0"
    torch.set_num_threads(threads)
    trainer = nnUNetTrainer(
        {**plans, "continue_training": False}, "3d_fullres", 0, dataset_json, torch.device("cpu")
    )
    trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch, trainer.num_epochs = iters, 1, 1
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    result = _timed_batches(lambda: next(trainer.dataloader_train), trainer.train_step, iters)
    result["params_m"] = sum(p.numel() for p in trainer.network.parameters()) / 1e6
    result["patch"] = trainer.configuration_manager.patch_size
    return result


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    cases = args.case_ids.split(",")
    if args.child == "glioseg":
        result = glioseg_side(args.data, cases, work, args.iters)
    else:
        result = nnunet_side(args.iters, args.threads)
    print(json.dumps(result, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/brats2018")
    parser.add_argument(
        "--cases", type=int, default=5, help="cases used by both sides (nnU-Net's split needs 5)"
    )
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", choices=("glioseg", "nnunet"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--case-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from glioseg.data.cases import discover_cases

    found = discover_cases(args.data)
    cases = sorted(c.case_id for c in found.cases if c.label is not None)[: args.cases]
    if len(cases) < 5:
        sys.exit(f"{args.data}: needs at least 5 labelled cases, found {len(cases)}")
    import torch

    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores, {args.threads} torch threads; "
        f"torch {torch.__version__}; {len(cases)} real cases, {PATCH}^3 at {SPACING:g} mm, batch {BATCH}, "
        f"{args.iters} timed iterations after 1 warm-up"
    )
    results = {
        **machine_record(("nnunetv2",)),
        "threads": args.threads,
        "cases": cases,
        "iters": args.iters,
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        _write_raw(args.data, cases, base / "raw")
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(args.threads),
            "nnUNet_raw": str(base / "raw"),
            "nnUNet_preprocessed": str(base / "preprocessed"),
            "nnUNet_results": str(base / "results"),
            "nnUNet_n_proc_DA": "1",
        }
        for side in ("glioseg", "nnunet"):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    side,
                    "--work",
                    tmp,
                    "--case-ids",
                    ",".join(cases),
                    "--iters",
                    str(args.iters),
                    "--threads",
                    str(args.threads),
                    "--data",
                    args.data,
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                sys.exit(f"{side} side failed:\n{proc.stderr[-3000:]}")
            results[side] = r = json.loads(proc.stdout.strip().splitlines()[-1])
            share = r["load_s"] / r["s_per_iter"]
            print(
                f"{side:8s} {r['params_m']:5.2f} M parameters: {r['s_per_iter']:.2f} s/iter = loading+augmentation "
                f"{r['load_s']:.2f} s ({share:.0%}) + network step {r['step_s']:.2f} s"
            )
    ratio = results["nnunet"]["s_per_iter"] / results["glioseg"]["s_per_iter"]
    results["nnunet_over_glioseg"] = ratio
    print(f"nnunetv2 / glioseg seconds per iteration: {ratio:.2f} (above 1: glioseg is faster)")
    if args.json:
        write_result(args.json, results)


if __name__ == "__main__":
    main()
