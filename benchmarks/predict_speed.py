"""Seconds and peak RAM per full-size case for glioseg predict on CPU.

Usage: python benchmarks/predict_speed.py [--plans demo,brats] [--tta none,flip,full] [--folds 5]
                                          [--brats-tta none] [--brats-folds 2] [--threads 2]
                                          [--json benchmarks/results/predict_speed.json]

For each plan and setting, one child process loads a full-size synthetic BraTS-Africa-like case
(240x240x155, 1 mm), segments it through the same code as ``glioseg predict`` (preprocessing,
sliding windows with overlap 0.5 and Gaussian weighting, mirroring TTA, restoration to the input
grid, thresholding) and reports wall seconds and its peak resident memory (ru_maxrss).

Plans:
  demo   the bundled demonstration model (nnU-Net, 12 base features, 3 mm, 40^3 patch)
  brats  nnU-Net's BraTS 3d_fullres network (1 mm, 128^3 patch, 32-320 features, 31 M
         parameters) with fixed-seed random weights: timing does not depend on the weights
The 5-fold ensemble uses five members of the same plan (different seeds) with flip TTA.  At the
BraTS plan one member with one pass takes minutes on a 2-core CPU, so by default it is measured
without mirroring and as a 2-member ensemble (``--brats-tta``, ``--brats-folds``): members are
streamed one at a time, so peak memory does not grow with the member count and time grows
linearly with members x mirrorings.  ``--json`` also writes every row with where and with what it
ran (``benchmarks/provenance.py``); docs/performance.md quotes that file (``scripts/docs_numbers.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import machine_record, write_result  # benchmarks/provenance.py


def make_brats_member(folder: Path, seed: int) -> Path:
    import torch

    from glioseg.models import build_model, model_config
    from glioseg.models.checkpoint import canonical_state_dict, save_model
    from glioseg.models.plan import Plan

    torch.manual_seed(seed)
    config = model_config("nnunet", 6)
    network = build_model(config)
    plan = Plan(
        model="nnunet",
        target_spacing=[1.0] * 3,
        patch_size=[128] * 3,
        batch_size=2,
        n_stages=6,
        base_features=32,
        max_features=320,
        memory_budget_gib=0,
        estimated_memory_gib=0,
        median_shape=[140.0, 172.0, 138.0],
        model_config=config.to_dict(),
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_model(
        canonical_state_dict(network),
        {"plan": plan.to_dict(), "model_config": config.to_dict()},
        folder / "model",
    )
    return folder


def make_demo_member(folder: Path, seed: int) -> Path:
    import json as _json

    import torch

    from glioseg.models import ModelConfig, build_model
    from glioseg.models.catalog import DEMO_MODEL
    from glioseg.models.checkpoint import canonical_state_dict, save_model

    info = _json.loads((DEMO_MODEL / "model.json").read_text())
    if seed == 0:
        return DEMO_MODEL
    torch.manual_seed(seed)
    network = build_model(ModelConfig.from_dict(info["model_config"]))
    folder.mkdir(parents=True, exist_ok=True)
    save_model(
        canonical_state_dict(network),
        {"plan": info["plan"], "model_config": info["model_config"]},
        folder / "model",
    )
    return folder


def child(case_dir: str, members: list[str], tta: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from glioseg.data.cases import discover_cases, load_case
    from glioseg.infer.ensemble import segment_case
    from glioseg.infer.models import ModelGroup, find_members
    from glioseg.infer.settings import InferenceSettings

    data = load_case(discover_cases(case_dir).cases[0], with_label=False)
    group = ModelGroup(source=Path("ensemble"), members=[m for p in members for m in find_members(p).members])
    t0 = time.perf_counter()
    segment_case(data, [group], settings=InferenceSettings(tta=tta, device="cpu"))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", default="demo,brats")
    parser.add_argument("--tta", default="none,flip,full")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--brats-tta", default="none")
    parser.add_argument("--brats-folds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", default=None, help="also write every row here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(spec["case"], spec["members"], spec["tta"], args.threads)))
        return

    from glioseg.data.synthetic import generate_case, write_case

    machine, rows = machine_record(), []
    print(
        f"CPU: {platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}; full-size synthetic case"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        case_dir = write_case(generate_case(2024, 1, "ssa"), root / "cases")
        print(f"{'plan':6s} {'members':>7s} {'TTA':5s} {'seconds':>8s} {'peak RSS GiB':>13s}")
        for plan in args.plans.split(","):
            maker = make_brats_member if plan == "brats" else make_demo_member
            folds, ttas, ensemble_tta = args.folds, args.tta.split(","), "flip"
            if plan == "brats":
                folds, ttas, ensemble_tta = (
                    args.brats_folds,
                    args.brats_tta.split(","),
                    args.brats_tta.split(",")[0],
                )
            members = [str(maker(root / f"{plan}-{k}", k)) for k in range(max(folds, 1))]
            settings = [(1, t) for t in ttas] + ([(folds, ensemble_tta)] if folds > 1 else [])
            for n, tta in settings:
                spec = json.dumps({"case": str(case_dir), "members": members[:n], "tta": tta})
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", spec, "--threads", str(args.threads)],
                    capture_output=True,
                    text=True,
                )
                row = {"plan": plan, "members": n, "tta": tta}
                rows.append(row)
                if proc.returncode:
                    row["failed"] = proc.stderr.strip().splitlines()[-1]
                    print(f"{plan:6s} {n:7d} {tta:5s} failed: {row['failed']}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                row.update(r)
                print(f"{plan:6s} {n:7d} {tta:5s} {r['seconds']:8.1f} {r['peak_gib']:13.2f}", flush=True)
    if args.json:
        command = (
            f"OMP_NUM_THREADS={args.threads} python benchmarks/predict_speed.py --plans {args.plans} --tta {args.tta} "
            f"--folds {args.folds} --brats-tta {args.brats_tta} --brats-folds {args.brats_folds} "
            f"--threads {args.threads}"
        )
        result = {"command": command, "threads": args.threads, "rows": rows}
        print(f"wrote {write_result(args.json, {**result, **machine})}")


if __name__ == "__main__":
    main()
