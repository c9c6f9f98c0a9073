"""CPU inference: time, peak memory and agreement of every mode, against nnunetv2's own predictor.

Usage:
  python benchmarks/cpu_inference.py [--sets brats,demo] [--cv RUN_A RUN_B] [--synthetic 1] [--real 0] [--threads 2]
                                     [--modes fast,default,accurate,reference] [--peer] [--levers]
                                     [--json results.json]

Cases: ``--synthetic N`` full-size synthetic BraTS-Africa-like cases (240x240x155, 1 mm; default
one), plus the first ``--real N`` real BraTS 2018 cases from ../shared/data when present.

Model sets:
  brats     nnU-Net's BraTS 3d_fullres network (1 mm, 128^3 patch, 31 M parameters), fixed-seed
            weights; for ``accurate`` a 2 x 5 ensemble (5 nnU-Net + 5 MedNeXt-M k3, fixed seeds).
            Times are representative; agreement of random weights says little.
  demo      the bundled demonstration model (trained by glioseg, 3 mm): agreement is meaningful.
  cv        ``--cv A B``: two cross-validation folders (e.g. the small experiment's fine-tuned
            nnU-Net and MedNeXt), a trained 2 x 5 ensemble for ``accurate`` vs ``reference``.

Each measurement runs in its own process (peak RSS = ru_maxrss of that process) and segments the
case through ``glioseg.infer.ensemble.segment_case``; agreement is the Dice per region (WT, TC,
ET) between a mode's labels and the ``reference`` mode's labels (sliding windows, overlap 0.5,
Gaussian, all 8 mirrorings), 1 when both are empty; where the case has ground truth (the
synthetic case, real cases) and the weights are trained, also the Dice against that truth.

``--peer`` runs the same network and weights through nnunetv2's nnUNetPredictor (step 0.5,
Gaussian, with and without mirroring) in the same run (needs the bench/dev extra); the
network is written in nnU-Net's results layout in a temporary folder for that.
``--levers`` measures single levers on one 128^3 window and on the whole crop (threads,
channels_last, bf16, int8, torch.compile, ONNX Runtime, overlap, window count) and the machine's
fp32 matrix-product peak.
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

import numpy as np
from provenance import machine_record, write_result  # benchmarks/provenance.py

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


# ----------------------------------------------------------------------------- model sets
def _save_member(folder: Path, config, plan_kwargs: dict, seed: int) -> Path:
    import torch

    from glioseg.models import build_model
    from glioseg.models.checkpoint import canonical_state_dict, save_model
    from glioseg.models.plan import Plan

    torch.manual_seed(seed)
    network = build_model(config)
    plan = Plan(
        model=config.name,
        model_config=config.to_dict(),
        memory_budget_gib=0,
        estimated_memory_gib=0,
        max_features=320,
        batch_size=2,
        **plan_kwargs,
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_model(
        canonical_state_dict(network),
        {"plan": plan.to_dict(), "model_config": config.to_dict(), "seed": seed},
        folder / "model",
    )
    return folder


def brats_members(root: Path, n_nnunet: int, n_mednext: int) -> list[Path]:
    from glioseg.models import model_config

    kwargs = dict(
        target_spacing=[1.0] * 3,
        patch_size=[128] * 3,
        n_stages=6,
        base_features=32,
        median_shape=[140.0, 172.0, 138.0],
    )
    out = []
    for k in range(n_nnunet):
        out.append(_save_member(root / f"nnunet-{k}", model_config("nnunet", 6), kwargs, k))
    for k in range(n_mednext):
        out.append(_save_member(root / f"mednext-{k}", model_config("mednext-m-k3", 6), kwargs, 100 + k))
    return out


def cv_members(paths: list[str]) -> list[Path]:
    return [m for p in paths for m in sorted(Path(p).glob("fold_*")) if (m / "model.safetensors").exists()]


# ----------------------------------------------------------------------------- child process
def child(spec: dict) -> dict:
    from glioseg.runtime import VARIABLE, request_huge_pages

    if spec.get("huge_pages", True):  # as the glioseg command does, before torch allocates
        request_huge_pages()
    else:
        os.environ[VARIABLE] = "0"
    import torch

    torch.set_num_threads(spec["threads"])
    from glioseg.data.cases import discover_cases, load_case
    from glioseg.infer.ensemble import segment_case
    from glioseg.infer.models import ModelGroup, find_members
    from glioseg.infer.settings import InferenceSettings

    data = load_case(discover_cases(spec["case"]).cases[0], with_label=False)
    members = [m for p in spec["members"] for m in find_members(p).members]
    group = ModelGroup(source=Path("ensemble"), members=members)
    t0 = time.perf_counter()
    settings = InferenceSettings(
        tta=spec["tta"],
        overlap=spec["overlap"],
        device="cpu",
        window=spec["window"],
        engine=spec.get("engine", "torch"),
        channels_last=spec.get("channels_last"),  # None: per architecture, as glioseg
        members_per_group=spec.get("members_per_group"),
        lean=spec.get("lean", True),
        native_size=spec.get("native_size", True),
        window_norm=spec.get("window_norm", True),
    )
    prediction = segment_case(data, [group], settings=settings)
    seconds = time.perf_counter() - t0
    np.save(spec["labels_out"], prediction.labels)
    return {"seconds": seconds, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run_child(spec: dict, timeout: float | None = None) -> dict:
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s (--timeout)"}
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": tail[-1] if tail else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def region_dice(a: np.ndarray, b: np.ndarray) -> list[float]:
    from glioseg.data.labels import labels_to_regions

    out = []
    for ra, rb in zip(labels_to_regions(a), labels_to_regions(b), strict=True):
        total = ra.sum() + rb.sum()
        out.append(1.0 if total == 0 else float(2 * (ra & rb).sum() / total))
    return out


def _mode_table() -> dict[str, tuple]:
    """glioseg's named modes plus the single-lever variants measured against them."""
    from glioseg.infer.settings import MODES as NAMED

    table = {name: (m.tta, m.window, m.overlap, m.members_per_group) for name, m in NAMED.items()}
    table |= {
        # name: (tta, window, overlap, members_per_group)
        "whole/none": ("none", "whole", 0.5, 1),
        "whole/full": ("full", "whole", 0.5, 1),
        "slide.5/none": ("none", "sliding", 0.5, 1),
        "slide.25/none": ("none", "sliding", 0.25, 1),
        "whole/spread": ("spread", "whole", 0.5, None),
        "slide.5/spread": ("spread", "sliding", 0.5, None),
        "slide.25/spread": ("spread", "sliding", 0.25, None),
    }
    return table


def _resolve(table: dict[str, tuple], mode: str) -> tuple:
    """(tta, window, overlap, members_per_group, levers) of a mode name; ``levers`` is a dict of
    the child's ``lean``, ``native_size``, ``huge_pages`` and ``window_norm`` settings.

    Suffixes switch single levers off: ``+module`` runs nnU-Net through the module's own forward
    instead of :func:`glioseg.infer.lean.lean_forward` (the whole crop is then padded to
    multiples of 32); ``+padded`` keeps the lean forward but pads the crop all the same;
    ``+nothp`` leaves PyTorch's allocations on ordinary 4 kB pages (:mod:`glioseg.runtime`);
    ``+globalnorm`` normalises whole-crop passes with the whole crop's statistics instead of
    window-matched ones (:mod:`glioseg.infer.window_norm`).
    """
    base, *flags = mode.split("+")
    known = ("module", "padded", "nothp", "globalnorm")
    if base not in table or any(f not in known for f in flags):
        raise SystemExit(
            f"unknown mode {mode!r}; expected one of {', '.join(table)} with optional "
            f"suffixes {', '.join('+' + k for k in known)}"
        )
    lean = "module" not in flags
    levers = {
        "lean": lean,
        "native_size": lean and "padded" not in flags,
        "huge_pages": "nothp" not in flags,
        "window_norm": "globalnorm" not in flags,
    }
    return (*table[base], levers)


# ----------------------------------------------------------------------------- nnU-Net peer
def write_nnunet_results(member: Path, out: Path) -> Path:
    """The member as an nnU-Net v2 results folder (plans.json, dataset.json, fold_0/checkpoint_final.pth).

    Only for the peer measurement: the checkpoint is written with torch.save because that is
    the format nnunetv2 reads; glioseg itself never loads such files without weights_only.
    """
    import torch

    from glioseg.infer.models import find_members

    (m,) = find_members(member).members
    network = m.load("cpu")
    state = network.state_dict()
    arch = dict(m.info["model_config"]["arch_kwargs"])
    trainer_dir = out / "Dataset999_Bench" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (trainer_dir / "fold_0").mkdir(parents=True, exist_ok=True)
    plans = {
        "dataset_name": "Dataset999_Bench",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [140, 172, 138],
        "image_reader_writer": "NibabelIO",
        "transpose_forward": [2, 1, 0],
        "transpose_backward": [2, 1, 0],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": m.plan.patch_size,
                "median_image_size_in_voxels": [140, 172, 138],
                "spacing": m.plan.target_spacing,
                "normalization_schemes": ["ZScoreNormalization"] * 4,
                "use_mask_for_norm": [True] * 4,
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {
                    "is_seg": False,
                    "order": 3,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_seg_kwargs": {
                    "is_seg": True,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": arch,
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": True,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(i): {
                "max": 1.0,
                "mean": 0.0,
                "median": 0.0,
                "min": 0.0,
                "percentile_00_5": 0.0,
                "percentile_99_5": 1.0,
                "std": 1.0,
            }
            for i in range(4)
        },
    }
    dataset = {
        "channel_names": {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"},
        "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]},
        "regions_class_order": [2, 1, 3],
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (trainer_dir / "plans.json").write_text(json.dumps(plans, indent=1))
    (trainer_dir / "dataset.json").write_text(json.dumps(dataset, indent=1))
    torch.save(
        {
            "network_weights": state,
            "trainer_name": "nnUNetTrainer",
            "init_args": {"configuration": "3d_fullres"},
            "inference_allowed_mirroring_axes": (0, 1, 2),
            "current_epoch": 0,
        },
        trainer_dir / "fold_0" / "checkpoint_final.pth",
    )
    return trainer_dir


def peer_child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=spec["mirroring"],
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(spec["results"], use_folds=(0,))
    case = Path(spec["case"])
    cid = case.name
    files = [str(next(case.glob(f"*{m}.nii.gz"))) for m in ("t1n", "t1c", "t2w", "t2f")]
    t0 = time.perf_counter()
    predictor.predict_from_files(
        [files],
        [str(Path(spec["out"]) / cid)],
        num_processes_preprocessing=1,
        num_processes_segmentation_export=1,
    )
    return {
        "seconds": time.perf_counter() - t0,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


# ----------------------------------------------------------------------------- levers
LEVERS = ("window", "channels_last", "bf16", "threads", "compile", "whole", "onnx", "empty", "matmul", "int8")


def levers(member: Path, case_dir: Path, threads: int, only: tuple[str, ...] = LEVERS) -> list[dict]:
    import torch

    from glioseg.data.cases import discover_cases, load_case
    from glioseg.data.preprocess import preprocess_case
    from glioseg.infer.models import find_members
    from glioseg.infer.windows import padded_shape

    torch.set_num_threads(threads)
    (m,) = find_members(member).members
    net = m.load("cpu")
    data = load_case(discover_cases(case_dir).cases[0], with_label=False)
    image, _, info = preprocess_case(data, tuple(m.plan.target_spacing))
    rows = []

    def timed(key, name, fn, repeat=2, note=""):
        """Time ``fn`` (after a warm-up) as lever ``key``; None when ``key`` was not asked for."""
        if key not in only:
            return None
        rows.append({"lever": name, "seconds": _mean_seconds(fn, repeat=repeat), "note": note})
        print(f"  {name:44s} {rows[-1]['seconds']:8.2f} s  {note}", flush=True)
        return rows[-1]

    window = torch.randn(1, 4, 128, 128, 128)
    flops = count_flops(net, window.shape)
    with torch.inference_mode():
        row = timed("window", "one 128^3 window, fp32, torch", lambda: net(window))
        if row:
            row["gflops"] = flops / 1e9
            row["note"] = f"{flops / 1e12:.3f} TFLOP -> {flops / row['seconds'] / 1e9:.0f} GFLOP/s"
            print(f"    {row['note']}")
        cl_net = net.to(memory_format=torch.channels_last_3d)
        cl_win = window.contiguous(memory_format=torch.channels_last_3d)
        timed("channels_last", "  + channels_last_3d", lambda: cl_net(cl_win))
        net = net.to(memory_format=torch.contiguous_format)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            timed("bf16", "  + bf16 autocast (no native bf16 on this CPU?)", lambda: net(window), repeat=1)
        torch.set_num_threads(1)
        timed("threads", "  with 1 thread", lambda: net(window), repeat=1)
        torch.set_num_threads(threads)
        if "compile" in only:
            try:
                t0 = time.perf_counter()
                compiled = torch.compile(net)
                compiled(window)
                compile_s = time.perf_counter() - t0
                timed(
                    "compile",
                    "  + torch.compile",
                    lambda: compiled(window),
                    note=f"(compilation {compile_s:.0f} s)",
                )
            except Exception as exc:  # compile needs a C++ toolchain; report instead of failing
                rows.append(
                    {
                        "lever": "  + torch.compile",
                        "seconds": float("nan"),
                        "note": f"failed: {type(exc).__name__}",
                    }
                )
        crop = torch.from_numpy(image)[None]
        padded = padded_shape(image.shape[1:], 32)
        row = timed(
            "whole",
            "whole brain crop, one pass",
            lambda: net(torch.nn.functional.pad(crop, _pads(image.shape[1:], padded))),
            repeat=1,
            note=f"crop {tuple(image.shape[1:])} padded to {padded}",
        )
        if row:
            whole_flops = count_flops(net, (1, 4, *padded))
            row["gflops"] = whole_flops / 1e9
            row["note"] += f", {whole_flops / 1e12:.2f} TFLOP"
    if "onnx" in only:
        try:
            from glioseg.infer.onnx_engine import onnx_predictor

            ort = onnx_predictor(m, threads)
            timed("onnx", "one 128^3 window, ONNX Runtime", lambda: ort(window), repeat=1)
        except Exception as exc:
            rows.append(
                {"lever": "one 128^3 window, ONNX Runtime", "seconds": float("nan"), "note": f"failed: {exc}"}
            )
    if "int8" in only:
        rows += int8_convolutions()
    # windows with no brain after cropping, at overlap 0.5
    from monai.inferers.utils import _get_scan_interval, dense_patch_slices

    shape = image.shape[1:]
    interval = _get_scan_interval(shape, (128,) * 3, 3, (0.5,) * 3)
    slices = dense_patch_slices(shape, (128,) * 3, interval)
    brain = np.any(image != 0, axis=0)
    empty = sum(not brain[tuple(s)].any() for s in slices)
    rows.append(
        {
            "lever": "sliding windows without brain",
            "seconds": float("nan"),
            "note": f"{empty} of {len(slices)} windows at overlap 0.5 (nothing to skip after cropping)"
            if empty == 0
            else f"{empty} of {len(slices)} windows",
        }
    )
    print(f"  {rows[-1]['note']}")
    if "matmul" not in only:
        return rows
    a = torch.randn(4096, 4096)
    a @ a
    t0 = time.perf_counter()
    for _ in range(3):
        a @ a
    peak = 3 * 2 * 4096**3 / (time.perf_counter() - t0) / 1e9
    rows.append(
        {
            "lever": "fp32 matrix product 4096^2 (machine peak)",
            "seconds": float("nan"),
            "note": f"{peak:.0f} GFLOP/s",
        }
    )
    print(f"  fp32 matmul peak: {peak:.0f} GFLOP/s")
    return rows


def int8_convolutions() -> list[dict]:
    """fp32 against int8 (fbgemm, per-channel weights) 3x3x3 convolutions at the BraTS nnU-Net's
    first three stages' sizes, quantising the input and de-quantising the output as a quantised
    network between instance norms would have to."""
    import torch
    import torch.ao.nn.quantized as nnq

    torch.backends.quantized.engine = "fbgemm"
    rows = []
    for c, size in ((32, 128), (64, 64), (128, 32)):
        conv = torch.nn.Conv3d(c, c, 3, padding=1)
        x = torch.randn(1, c, size, size, size)
        q = nnq.Conv3d(c, c, 3, padding=1)
        q.set_weight_bias(
            torch.quantize_per_channel(
                conv.weight.detach(), torch.full((c,), 0.01), torch.zeros(c, dtype=torch.long), 0, torch.qint8
            ),
            conv.bias.detach(),
        )
        q.scale, q.zero_point = 0.05, 64

        flops = 2 * c * c * 27 * size**3
        with torch.inference_mode():
            seconds = [_mean_seconds(conv, x), _mean_seconds(_int8_pass, q, x)]
        note = (
            f"fp32 {seconds[0]:.3f} s ({flops / seconds[0] / 1e9:.0f} GFLOP/s), int8 {seconds[1]:.3f} s "
            f"({flops / seconds[1] / 1e9:.0f} GOP/s): int8 {seconds[0] / seconds[1]:.2f}x"
        )
        rows.append(
            {"lever": f"3x3x3 conv {c}->{c} at {size}^3, fp32 vs int8", "seconds": seconds[1], "note": note}
        )
        print(f"  {rows[-1]['lever']:44s} {note}", flush=True)
    return rows


def _int8_pass(q, x):
    """Quantise ``x``, convolve in int8, de-quantise: one layer of an int8 network between float norms."""
    import torch

    return q(torch.quantize_per_tensor(x, 0.05, 64, torch.quint8)).dequantize()


def _mean_seconds(fn, *args, repeat: int = 3) -> float:
    """Mean seconds of ``fn(*args)`` over ``repeat`` calls after one warm-up."""
    fn(*args)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn(*args)
    return (time.perf_counter() - t0) / repeat


def _pads(shape, target):
    pads = []
    for size, goal in zip(reversed(shape), reversed(target), strict=True):
        pads += [(goal - size) // 2, goal - size - (goal - size) // 2]
    return pads


def count_flops(net, shape) -> float:
    """FLOPs (2 per multiply-add) of one forward pass, counted on PyTorch's meta device (no arithmetic)."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(net).to("meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(torch.empty(tuple(shape), device="meta"))
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="brats,demo")
    parser.add_argument("--cv", nargs="*", default=[])
    parser.add_argument("--real", type=int, default=0)
    parser.add_argument(
        "--synthetic", type=int, default=1, help="full-size synthetic cases (seed 2024, index 1..N)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--modes",
        default="fast,default,accurate,reference",
        help="named modes and/or variants: " + ", ".join(_mode_table()),
    )
    parser.add_argument("--peer", action="store_true")
    parser.add_argument("--peer-mirroring", default="off,on", help="nnunetv2 runs: off, on or off,on")
    parser.add_argument(
        "--brats-reference",
        action="store_true",
        help="also compute the BraTS-plan reference (8 mirrorings x sliding windows: ~20 min per case)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="stop any single measurement after this many seconds"
    )
    parser.add_argument("--levers", action="store_true")
    parser.add_argument("--lever-list", default=",".join(LEVERS), help="which levers: " + ", ".join(LEVERS))
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--peer-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.peer_child:
        print(json.dumps(peer_child(json.loads(args.peer_child))))
        return

    from glioseg.data.synthetic import generate_case, write_case
    from glioseg.models.catalog import DEMO_MODEL

    global MODES
    MODES = _mode_table()

    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads"
    )
    results: dict = {
        **machine_record(),
        "machine": platform.platform(),
        "threads": args.threads,
        "command": "python benchmarks/cpu_inference.py " + " ".join(sys.argv[1:]),
        "rows": [],
        "levers": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = [
            write_case(generate_case(2024, i, "ssa"), root / "cases") for i in range(1, args.synthetic + 1)
        ]
        if args.real and (SHARED / "brats2018").is_dir():
            cases += sorted(p for p in (SHARED / "brats2018").iterdir() if p.is_dir())[: args.real]
        sets = {}
        for name in args.sets.split(","):
            if name == "brats":
                members = brats_members(root / "brats", 5, 5)
                sets["brats"] = {"single": [members[0]], "ensemble": members}
            elif name == "demo":
                sets["demo"] = {"single": [DEMO_MODEL], "ensemble": None}
        if args.cv:
            members = cv_members(args.cv)
            sets["cv"] = {"single": members[:1], "ensemble": members}
        modes = [m for m in args.modes.split(",") if m]
        header = f"{'set':6s} {'case':22s} {'mode':15s} {'members':>7s} {'seconds':>8s} {'peak GiB':>9s} {'Dice vs reference WT/TC/ET':>28s}"
        print(header)
        truths: dict[Path, np.ndarray | None] = {}  # each case's ground truth, read once
        for set_name, spec in sets.items():
            for case in cases:
                if set_name != "brats" and case not in truths:  # random BraTS weights: no truth Dice
                    truths[case] = _truth(case)
                truth = truths.get(case)
                # The yardstick of a mode is the reference prediction of the same members: one
                # member for single-model modes, the whole ensemble for ensemble modes (not
                # computed for the random-weight BraTS ensemble: 10 models x 8 mirrorings at 1 mm
                # take hours on a 2-core CPU).
                runs = []
                if "reference" in modes and (set_name != "brats" or args.brats_reference):
                    runs.append(("reference", spec["single"]))
                    if spec["ensemble"] and set_name != "brats":
                        runs.append(("reference", spec["ensemble"]))
                for mode in (m for m in modes if m != "reference"):
                    per_group = _resolve(MODES, mode)[3]
                    runs.append(
                        (mode, spec["ensemble"] if per_group is None and spec["ensemble"] else spec["single"])
                    )
                references: dict[int, np.ndarray] = {}
                single_labels: dict[str, np.ndarray] = {}
                for mode, members in runs:
                    tta, window, overlap, per_group, levers = _resolve(MODES, mode)
                    out = root / f"{set_name}-{case.name}-{mode.replace('/', '_')}-{len(members)}.npy"
                    r = run_child(
                        {
                            "case": str(case),
                            "members": [str(m) for m in members],
                            "tta": tta,
                            "window": window,
                            "overlap": overlap,
                            "members_per_group": per_group,
                            "threads": args.threads,
                            **levers,
                            "labels_out": str(out),
                        },
                        args.timeout,
                    )
                    row = {"set": set_name, "case": case.name, "mode": mode, "members": len(members), **r}
                    if "error" not in r:
                        labels = np.load(out)
                        if len(members) == 1:
                            single_labels[mode] = labels
                        if mode == "reference":
                            references[len(members)] = labels
                        elif len(members) in references:
                            row["dice_vs_reference"] = region_dice(labels, references[len(members)])
                        if truth is not None:
                            row["dice_vs_truth"] = region_dice(labels, truth)
                    results["rows"].append(row)
                    dice = "/".join(f"{d:.3f}" for d in row.get("dice_vs_reference", [])) or "-"
                    text = row.get("error") or f"{row['seconds']:8.1f} {row['peak_gib']:9.2f} {dice:>28s}"
                    if row.get("dice_vs_truth"):
                        text += "   vs truth " + "/".join(f"{d:.3f}" for d in row["dice_vs_truth"])
                    print(
                        f"{set_name:6s} {case.name[:22]:22s} {mode:15s} {len(members):7d} {text}", flush=True
                    )
                if args.peer and set_name == "brats":
                    results_dir = write_nnunet_results(spec["single"][0], root / "nnunet_results")
                    for mirroring in [m == "on" for m in args.peer_mirroring.split(",")]:
                        out_dir = root / f"peer-{mirroring}"
                        out_dir.mkdir()
                        proc = subprocess.run(
                            [
                                sys.executable,
                                __file__,
                                "--peer-child",
                                json.dumps(
                                    {
                                        "results": str(results_dir),
                                        "case": str(case),
                                        "out": str(out_dir),
                                        "mirroring": mirroring,
                                        "threads": args.threads,
                                    }
                                ),
                            ],
                            capture_output=True,
                            text=True,
                        )
                        if proc.returncode:
                            r = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
                        else:
                            r = json.loads(proc.stdout.strip().splitlines()[-1])
                            import nibabel as nib

                            pred = np.asarray(nib.load(out_dir / f"{case.name}.nii.gz").dataobj).astype(
                                np.uint8
                            )
                            r["dice_vs_reference"] = (
                                region_dice(pred, references[1]) if 1 in references else None
                            )
                            # the same computation in glioseg (sliding, overlap 0.5, Gaussian, same mirroring)
                            same = single_labels.get("reference" if mirroring else "slide.5/none")
                            if same is not None:
                                r["dice_vs_glioseg_same_setting"] = region_dice(pred, same)
                        mode = f"nnunetv2 {'TTA' if mirroring else 'noTTA'}"
                        results["rows"].append(
                            {"set": set_name, "case": case.name, "mode": mode, "members": 1, **r}
                        )
                        dice = "/".join(f"{d:.3f}" for d in (r.get("dice_vs_reference") or [])) or "-"
                        text = r.get("error") or f"{r['seconds']:8.1f} {r['peak_gib']:9.2f} {dice:>28s}"
                        if r.get("dice_vs_glioseg_same_setting"):
                            text += "   vs glioseg, same setting: " + "/".join(
                                f"{d:.3f}" for d in r["dice_vs_glioseg_same_setting"]
                            )
                        print(f"{set_name:6s} {case.name[:22]:22s} {mode:15s} {1:7d} {text}", flush=True)
        if args.levers and "brats" in sets:
            print("\nlevers (BraTS nnU-Net, synthetic case, preprocessed crop):")
            results["levers"] = levers(
                sets["brats"]["single"][0], cases[0], args.threads, tuple(args.lever_list.split(","))
            )
    ratios = _ratios(results["rows"])
    if ratios:
        print("\nratios:")
        for line in ratios:
            print("  " + line)
    results["ratios"] = ratios
    if args.json:
        write_result(args.json, results)


def _truth(case: Path) -> np.ndarray | None:
    """The case's ground-truth labels (canonical), or None when it has none."""
    from glioseg.data.cases import discover_cases, load_case_label

    found = discover_cases(case).cases
    return load_case_label(found[0]) if found and found[0].label is not None else None


def _ratios(rows: list[dict]) -> list[str]:
    def find(set_name, case, mode):
        return next(
            (
                r
                for r in rows
                if r["set"] == set_name and r["case"] == case and r["mode"] == mode and "seconds" in r
            ),
            None,
        )

    lines = []
    for case in sorted({r["case"] for r in rows}):
        fast = find("brats", case, "fast")
        ref = next(
            (
                r
                for r in rows
                if r["set"] == "brats"
                and r["case"] == case
                and r["mode"] == "reference"
                and r["members"] == 1
                and "seconds" in r
            ),
            None,
        )
        peer, peer_tta = find("brats", case, "nnunetv2 noTTA"), find("brats", case, "nnunetv2 TTA")
        if fast and peer:
            lines.append(
                f"{case}: nnunetv2 without mirroring / glioseg fast = {peer['seconds'] / fast['seconds']:.1f}x"
            )
        if fast and peer_tta:
            lines.append(
                f"{case}: nnunetv2 with mirroring / glioseg fast = {peer_tta['seconds'] / fast['seconds']:.1f}x"
            )
        same = find("brats", case, "slide.5/none")
        if same and peer:
            lines.append(
                f"{case}: nnunetv2 without mirroring / glioseg sliding without mirroring (same computation) = "
                f"{peer['seconds'] / same['seconds']:.2f}x"
            )
        if ref and peer_tta:
            lines.append(
                f"{case}: nnunetv2 with mirroring / glioseg reference (same computation) = "
                f"{peer_tta['seconds'] / ref['seconds']:.2f}x"
            )
    return lines


if __name__ == "__main__":
    main()
