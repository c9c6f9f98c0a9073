"""Training throughput and peak memory of nnU-Net and MedNeXt at the BraTS plan and at CPU plans.

Usage: python benchmarks/train_throughput.py [--steps 2] [--device cpu|cuda] [--only NAME] [--layout auto|default]
    [--json benchmarks/results/train_throughput.json]

Each configuration runs in its own process (so peak memory is its own): build the network
through the registry, then ``--steps`` timed training steps (forward with deep supervision,
region Dice+BCE loss, backward, optimiser step of the model's recipe) after one warm-up step,
on random inputs of the plan's patch and batch size.  Prints iterations per second and peak
memory (CPU: peak RSS of the process; CUDA: ``torch.cuda.max_memory_allocated``).  A
configuration whose planner estimate exceeds the machine's free memory is skipped and says so.
``--layout auto`` (default) uses the memory layout ``glioseg train`` uses
(``glioseg.models.prefers_channels_last``: ``channels_last_3d`` for MedNeXt on the CPU);
``--layout default`` keeps PyTorch's default layout, to measure that lever.

``--json`` also writes every row with where and with what it ran (``benchmarks/provenance.py``);
docs/performance.md quotes that file (``scripts/docs_numbers.py``).

The comparison with nnunetv2's own trainer (same network, data, patch and batch, with the share
of loading and augmentation): ``benchmarks/train_peer.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from provenance import machine_record, write_result  # benchmarks/provenance.py

CONFIGS = [
    # name, model, patch, batch, base features, description
    ("brats-nnunet", "nnunet", 128, 2, 32, "BraTS plan: 1 mm, 128^3, batch 2 (nnU-Net 3d_fullres)"),
    ("brats-mednext-m", "mednext-m-k3", 128, 2, 32, "BraTS plan: 1 mm, 128^3, batch 2 (MedNeXt-M k3)"),
    ("cpu-nnunet", "nnunet", 64, 2, 16, "CPU plan: 2 mm, 64^3, batch 2, 16 base features"),
    ("cpu-mednext-m", "mednext-m-k3", 64, 2, 16, "CPU plan: 2 mm, 64^3, batch 2, 16 base features"),
    ("cpu-mednext-s", "mednext-s-k3", 64, 2, 16, "release brats-2mm: 2 mm, 64^3, batch 2, 16 base features"),
    ("small-nnunet", "nnunet", 40, 2, 8, "experiment 'small': 3 mm, 40^3, batch 2, 8 base features"),
    ("small-mednext-s", "mednext-s-k3", 40, 2, 8, "experiment 'small': 3 mm, 40^3, batch 2, 8 base features"),
    ("tiny-nnunet", "nnunet", 32, 2, 8, "test plan: 4 mm, 32^3, batch 2, 8 base features"),
    ("tiny-mednext-s", "mednext-s-k3", 32, 2, 8, "test plan: 4 mm, 32^3, batch 2, 8 base features"),
]


def run_one(
    model: str, patch: int, batch: int, base: int, steps: int, device: str, layout: str = "auto"
) -> dict:
    import torch

    from glioseg.models import build_model, model_config, prefers_channels_last
    from glioseg.models.plan import n_stages_for_patch
    from glioseg.train.loss import DeepSupervisionLoss
    from glioseg.train.recipes import build_optimizer, recipe_for

    torch.manual_seed(0)
    config = model_config(model, n_stages_for_patch((patch,) * 3), base)
    network = build_model(config).to(device).train()
    channels_last = layout == "auto" and prefers_channels_last(config.family, device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    optimizer = build_optimizer(recipe_for(model), network.parameters())
    loss_fn = DeepSupervisionLoss()
    x = torch.randn(batch, 4, patch, patch, patch, device=device)
    y = (torch.rand(batch, 3, patch, patch, patch, device=device) > 0.8).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(network(x), y)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "s_per_iter": seconds,
        "it_per_s": 1.0 / seconds,
        "peak_gib": peak,
        "params_m": sum(p.numel() for p in network.parameters()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default=None, help="run only configurations whose name contains this")
    parser.add_argument("--layout", choices=("auto", "default"), default="auto")
    parser.add_argument("--json", default=None, help="also write every row here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, patch, batch, base = args.child.split(":")
        print(
            json.dumps(
                run_one(model, int(patch), int(batch), int(base), args.steps, args.device, args.layout)
            )
        )
        return

    import torch

    from glioseg.models import model_config
    from glioseg.models.memory import estimate_training_memory
    from glioseg.models.plan import n_stages_for_patch

    machine = machine_record()
    free_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / 2**30
    if args.device == "cuda":
        free_gib = torch.cuda.mem_get_info()[0] / 2**30
        print(f"device: {torch.cuda.get_device_name(0)}, bf16 autocast")
    else:
        print(
            f"device: CPU ({platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}), fp32"
        )
    print(f"free memory at start: {free_gib:.1f} GiB; {args.steps} timed steps after 1 warm-up step\n")
    print(
        f"{'configuration':18s} {'model':14s} {'params':>7s} {'s/iter':>8s} {'iter/s':>8s} {'peak GiB':>9s} {'estimate':>9s}"
    )
    rows = []
    for name, model, patch, batch, base, description in CONFIGS:
        if args.only and args.only not in name:
            continue
        config = model_config(model, n_stages_for_patch((patch,) * 3), base)
        estimate = estimate_training_memory(config, (patch,) * 3, batch).total_gib
        row = {"name": name, "model": model, "description": description, "estimate_gib": estimate}
        rows.append(row)
        if estimate > 0.9 * free_gib:
            row["skipped"] = f"needs about {estimate:.1f} GiB, {free_gib:.1f} GiB free"
            print(
                f"{name:18s} {model:14s} skipped: needs about {estimate:.1f} GiB, {free_gib:.1f} GiB free  ({description})"
            )
            continue
        child = [
            sys.executable,
            __file__,
            "--child",
            f"{model}:{patch}:{batch}:{base}",
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            "--layout",
            args.layout,
        ]
        proc = subprocess.run(child, capture_output=True, text=True)
        if proc.returncode != 0:
            row["failed"] = proc.stderr.strip().splitlines()[-1] if proc.stderr else str(proc.returncode)
            print(
                f"{name:18s} {model:14s} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}"
            )
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(r)
        print(
            f"{name:18s} {model:14s} {r['params_m']:6.1f}M {r['s_per_iter']:8.2f} {r['it_per_s']:8.3f} {r['peak_gib']:9.2f} {estimate:9.2f}  ({description})"
        )
    if args.json:
        command = f"OMP_NUM_THREADS=2 python benchmarks/train_throughput.py --steps {args.steps}"
        command += f" --device {args.device}" if args.device != "cpu" else ""
        command += f" --layout {args.layout}" if args.layout != "auto" else ""
        command += f" --only {args.only}" if args.only else ""
        result = {"command": command, "device": args.device, "steps": args.steps, "layout": args.layout}
        print(f"wrote {write_result(args.json, {**result, 'rows': rows, **machine})}")


if __name__ == "__main__":
    main()
