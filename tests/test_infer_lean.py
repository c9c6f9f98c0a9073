"""The memory-lean nnU-Net forward computes the module's function with fewer live tensors."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glioseg.infer.lean import lean_forward, supports_lean_forward
from glioseg.models import build_model, model_config


def _network(name: str, stages: int, features: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_model(model_config(name, stages, features), deep_supervision=False).eval()
    with torch.no_grad():  # non-trivial affine norm parameters, so a wrong scale/shift would show
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm3d) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net


@pytest.mark.parametrize("shape", [(32, 32, 32), (64, 32, 96)])
def test_lean_forward_equals_the_module(shape):
    net = _network("nnunet", 4, 4)
    assert supports_lean_forward(net)
    x = torch.randn(2, 4, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = net(x)
        got = lean_forward(net, x.clone())
    assert got.shape == expected.shape == (2, 3, *shape)
    # the statistics are reduced in another order than torch's (sum and 2-norm instead of
    # var_mean), so float32 rounding differs by ~1e-5 relative after the network's 14 norms
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    assert x.abs().sum() > 0  # the caller's input is left as it was


def test_other_networks_fall_back_to_their_own_forward():
    net = build_model(model_config("mednext-s-k3", 3, 4), deep_supervision=False).eval()
    assert not supports_lean_forward(net)
    x = torch.randn(1, 4, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(lean_forward(net, x), net(x))


_PEAK_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_infer_lean import _network
from glioseg.infer.lean import lean_forward
torch.set_num_threads(1)
net = _network("nnunet", 3, 16)
x = torch.randn(1, 4, 96, 96, 96)

def status(key):  # kB, from /proc/self/status
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

try:  # reset the peak-RSS mark, so only this pass counts (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    print("nan")
    raise SystemExit(0)
base = status("VmRSS:")
with torch.inference_mode():
    y = lean_forward(net, x) if sys.argv[1] == "lean" else net(x)
print(status("VmHWM:") - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for peak RSS")
def test_lean_forward_holds_fewer_full_resolution_tensors():
    """Peak RSS of one pass (fresh process each): the lean forward needs at least 1.5 fewer
    full-resolution feature maps than the module's forward."""
    tests = str(Path(__file__).parent)
    full_res_kib = 16 * 96**3 * 4 / 1024  # one full-resolution 16-channel float32 map

    def growth(variant: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", _PEAK_SCRIPT.format(tests=tests), variant],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        return float(out.stdout.strip().splitlines()[-1]) / full_res_kib

    module_maps, lean_maps = growth("module"), growth("lean")
    if math.isnan(module_maps) or math.isnan(lean_maps):
        pytest.skip("cannot reset the peak-RSS mark (/proc/self/clear_refs not writable)")
    assert lean_maps <= module_maps - 1.5, (module_maps, lean_maps)


def _cropping_decoder_forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference for sizes the module's forward rejects: its own encoder and decoder modules,
    with each up-sampled tensor cropped at the far end to its skip before concatenation."""
    skips = net.encoder(x)
    below = skips[-1]
    for k, (transpconv, stage) in enumerate(zip(net.decoder.transpconvs, net.decoder.stages, strict=True)):
        skip = skips[-(k + 2)]
        up = transpconv(below)[(..., *(slice(0, s) for s in skip.shape[2:]))]
        below = stage(torch.cat((up, skip), 1))
    return net.decoder.seg_layers[-1](below)


@pytest.mark.parametrize("shape", [(37, 45, 29), (33, 32, 31)])
def test_lean_forward_takes_sizes_the_module_rejects(shape):
    net = _network("nnunet", 4, 4, seed=1)
    x = torch.randn(1, 4, *shape, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        with pytest.raises(RuntimeError):  # the module's decoder cannot concatenate mismatched sizes
            net(x)
        got = lean_forward(net, x.clone())
        expected = _cropping_decoder_forward(net, x)
    assert got.shape == (1, 3, *shape)
    assert torch.allclose(got, expected, atol=2e-5, rtol=1e-4), (got - expected).abs().max()
