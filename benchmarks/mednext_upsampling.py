"""MedNeXt's up-sampling convolutions on the CPU: ``channels_last_3d`` against the default memory format.

Usage: OMP_NUM_THREADS=2 python benchmarks/mednext_upsampling.py [--json benchmarks/results/mednext_upsampling.json]

glioseg runs MedNeXt in ``channels_last_3d`` on the CPU (faster for its depth-wise and 1x1x1
convolutions), except the depth-wise transposed convolutions of the up-sampling blocks, which
``glioseg.models.mednext.build_mednext`` runs in the default format. This script prints

1. each such layer of MedNeXt-S k3 (16 base features) alone, in ``channels_last_3d`` and in the
   default format, at the sizes of a 2 mm brain crop;
2. the whole network with and without that choice (MONAI's own layers), in ``channels_last_3d``:
   one inference pass over a 64 x 80 x 64 crop and one training step (batch 2, 64^3 patches,
   forward and backward), each the median of ``--repeats`` runs after a warm-up.

Weights are random (speed does not depend on them); the outputs of both variants are compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import machine_record, write_result  # noqa: E402

from glioseg.models import build_model, model_config, set_deep_supervision  # noqa: E402
from glioseg.models.mednext import ContiguousConvTranspose3d  # noqa: E402


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _network(patched: bool) -> nn.Module:
    torch.manual_seed(0)
    network = build_model(model_config("mednext-s-k3", 5, base_features=16))
    if not patched:  # back to MONAI's own forward of the transposed convolutions
        for module in network.modules():
            if isinstance(module, ContiguousConvTranspose3d):
                module.__class__ = nn.ConvTranspose3d
    return network.to(memory_format=torch.channels_last_3d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    result = {**machine_record(), "threads": torch.get_num_threads(), "layers": [], "network": {}}

    print("depth-wise transposed convolution (kernel 3, stride 2), one 2 mm crop:")
    for channels, shape in ((32, (36, 44, 36)), (64, (18, 22, 18)), (128, (9, 11, 9)), (256, (5, 6, 5))):
        conv = nn.ConvTranspose3d(channels, channels, 3, stride=2, padding=1, groups=channels)
        x = torch.randn(1, channels, *shape)
        with torch.no_grad():
            default = _median_seconds(lambda conv=conv, x=x: conv(x), args.repeats)
            conv_cl = conv.to(memory_format=torch.channels_last_3d)
            x_cl = x.contiguous(memory_format=torch.channels_last_3d)
            last = _median_seconds(lambda conv=conv_cl, x=x_cl: conv(x), args.repeats)
        row = {"channels": channels, "shape": list(shape), "default_s": default, "channels_last_s": last}
        result["layers"].append(row)
        print(
            f"  {channels:3d} ch {shape}: default {default * 1e3:7.1f} ms, channels_last {last * 1e3:7.1f} ms"
        )

    crop = torch.randn(1, 4, 64, 80, 64).contiguous(memory_format=torch.channels_last_3d)
    patches = torch.randn(2, 4, 64, 64, 64).contiguous(memory_format=torch.channels_last_3d)
    outputs = {}
    for label, patched in (("monai", False), ("glioseg", True)):
        network = _network(patched)
        set_deep_supervision(network, model_config("mednext-s-k3", 5, 16), False)
        network.eval()
        with torch.no_grad():
            outputs[label] = network(crop)
            infer = _median_seconds(lambda network=network: network(crop), args.repeats)
        network = _network(patched).train()

        def step(network=network) -> None:
            network.zero_grad()
            sum(o.float().mean() for o in network(patches)).backward()

        train = _median_seconds(step, args.repeats)
        result["network"][label] = {"inference_s": infer, "train_step_s": train}
        print(f"MedNeXt-S k3, 16 features, {label:7s}: inference {infer:.2f} s, training step {train:.2f} s")
    difference = float((outputs["glioseg"] - outputs["monai"]).abs().max())
    result["max_abs_difference"] = difference
    ours, theirs = result["network"]["glioseg"], result["network"]["monai"]
    print(
        f"speed-up: inference {theirs['inference_s'] / ours['inference_s']:.2f}x, "
        f"training step {theirs['train_step_s'] / ours['train_step_s']:.2f}x; "
        f"largest output difference {difference:.2e}"
    )
    if args.json:
        write_result(args.json, result)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
