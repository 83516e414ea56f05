"""Make a torch subnet use only ops that TFLite Micro has kernels for.

onnx2tf turns ``HardSigmoid`` (the SE gate) into TFLite's ``RELU_0_TO_1``, which TFLite Micro
cannot run ("Didn't find op for builtin opcode 'RELU_0_TO_1'"). ``relu6(x + 3) / 6`` is the
same function, exactly, and becomes ADD (with a fused ReLU6) and MUL, which it can.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class HardSigmoidAsRelu6(nn.Module):
    """hardsigmoid(x) = relu6(x + 3) / 6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) * (1.0 / 6.0)


def micro_compatible(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every ``nn.Hardsigmoid`` replaced by ``HardSigmoidAsRelu6``."""
    module = copy.deepcopy(module)
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Hardsigmoid):
                setattr(parent, name, HardSigmoidAsRelu6())
    return module
