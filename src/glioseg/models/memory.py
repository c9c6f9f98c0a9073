"""Training-memory estimate of a network at a patch size, used by the planner.

Activations are counted by running the network once on PyTorch's ``meta`` device (shapes only, no
memory, no arithmetic) and summing the elements of every leaf module's output, which is what
autograd keeps for the backward pass.  Gradient checkpointing keeps only block inputs; its
factor and the safety margin were calibrated against measured peaks on the CPU (the
calibration: docs/performance.md, "Memory estimate").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BYTES_FP32 = 4
#: Fraction of activations kept when MedNeXt blocks are checkpointed (measured, see module doc).
CHECKPOINT_FACTOR = 0.45
#: Leaf outputs miss a few temporaries (residual sums, loss); measured peaks were a little higher.
ACTIVATION_SAFETY = 1.1
#: Framework and allocator overhead (GiB): torch, MONAI and Lightning imported, nothing allocated.
OVERHEAD_GIB = 0.8


@dataclass(frozen=True)
class MemoryEstimate:
    activations_gib: float
    parameters_gib: float
    total_gib: float


def count_activation_elements(network: nn.Module, patch: tuple[int, int, int], in_channels: int) -> int:
    """Elements of all leaf-module outputs in one forward pass of a ``(1, C, *patch)`` input."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        outputs = output if isinstance(output, list | tuple) else [output]
        total += sum(int(o.numel()) for o in outputs if isinstance(o, torch.Tensor))

    handles = [m.register_forward_hook(hook) for m in network.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            network(torch.empty((1, in_channels, *patch), device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


def estimate_training_memory(config, patch: tuple[int, int, int], batch_size: int) -> MemoryEstimate:
    """Peak memory (GiB) of one training step with ``batch_size`` patches (fp32, SGD/AdamW states)."""
    from glioseg.models import build_model

    with torch.device("meta"):
        network = build_model(config, deep_supervision=True)
    network.train()
    elements = count_activation_elements(network, tuple(int(p) for p in patch), config.in_channels)
    if config.arch_kwargs.get("gradient_checkpointing"):
        elements = int(elements * CHECKPOINT_FACTOR)
    n_params = sum(p.numel() for p in network.parameters())
    activations = elements * batch_size * BYTES_FP32 * ACTIVATION_SAFETY / 2**30
    parameters = n_params * BYTES_FP32 * 4 / 2**30  # weights, gradients, two optimiser states
    return MemoryEstimate(activations, parameters, activations + parameters + OVERHEAD_GIB)
