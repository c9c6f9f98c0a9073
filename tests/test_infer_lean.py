"""The memory-lean nnU-Net forward computes the module's function with fewer live tensors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glioseg.infer import lean
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


@pytest.mark.parametrize(("shape", "slab_bytes"), [((32, 32, 32), None), ((64, 32, 96), None), ((64, 32, 96), 2**16)])
def test_lean_forward_equals_the_module(shape, slab_bytes, monkeypatch):
    """Also with tiny slabs, so every convolution runs in slabs along the first axis."""
    if slab_bytes:
        monkeypatch.setattr(lean, "SLAB_BYTES", slab_bytes)
    net = _network("nnunet", 4, 4)
    assert supports_lean_forward(net)
    x = torch.randn(2, 4, *shape)
    with torch.inference_mode():
        expected = net(x)
        got = lean_forward(net, x.clone())
    assert got.shape == expected.shape == (2, 3, *shape)
    assert torch.allclose(got, expected, atol=2e-5, rtol=1e-4), (got - expected).abs().max()
    assert x.abs().sum() > 0  # the caller's input is left as it was


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 1, 1), (3, 2, 1), (1, 1, 0), (2, 2, 0), (5, 1, 2)])
def test_slabbed_convolution_equals_one_call(kernel, stride, padding, monkeypatch):
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(5, 7, kernel, stride, padding)
    x = torch.randn(1, 5, 23, 12, 10)  # odd length along the slab axis
    monkeypatch.setattr(lean, "SLAB_BYTES", 5 * 12 * 10 * 4 * 3)  # a few planes per slab
    with torch.inference_mode():
        expected = conv(x)
        got = lean._conv(conv, x, conv.weight, conv.bias)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5)
        accumulated = lean._conv(conv, x, conv.weight, None, out=torch.ones_like(expected))
        assert torch.allclose(accumulated, expected - conv.bias.view(1, -1, 1, 1, 1) + 1, atol=1e-5)


def test_other_networks_fall_back_to_their_own_forward():
    net = build_model(model_config("mednext-s-k3", 3, 4), deep_supervision=False).eval()
    assert not supports_lean_forward(net)
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.inference_mode():
        assert torch.equal(lean_forward(net, x), net(x))


_PEAK_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {tests!r})
from test_infer_lean import _network
from glioseg.infer.lean import lean_forward
torch.set_num_threads(1)
net = _network("nnunet", 3, 16)
x = torch.randn(1, 4, 96, 96, 96)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.inference_mode():
    y = lean_forward(net, x) if sys.argv[1] == "lean" else net(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def test_lean_forward_holds_fewer_full_resolution_tensors():
    """Peak RSS of one pass (fresh process each): the lean forward needs at least 1.5 fewer
    full-resolution feature maps than the module's forward."""
    tests = str(Path(__file__).parent)
    full_res_kib = 16 * 96**3 * 4 / 1024  # one full-resolution 16-channel float32 map

    def growth(variant: str) -> float:
        out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT.format(tests=tests), variant], capture_output=True,
                             text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return float(out.stdout.strip().splitlines()[-1]) / full_res_kib

    module_maps, lean_maps = growth("module"), growth("lean")
    assert lean_maps <= module_maps - 1.5, (module_maps, lean_maps)
