"""Each candidate block as a tiny stand-alone torch model, with the supernet's own weights.

A block model takes the activation the block sees inside a subnet, ``(1, in_c, in_hw, in_hw)``
float32 (the stem takes the image, with the input normalisation), and returns what the block
hands on. The head includes global pooling and the classifier.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ofa_edge.devices.blocks import BlockKey
from ofa_edge.space.supernet import OFASupernet, extract_block


def block_module(net: OFASupernet, key: BlockKey) -> nn.Module:
    """A plain eval-mode module that runs ``key`` exactly as a subnet of ``net`` would."""
    if key.role == "stem":
        module: nn.Module = nn.Sequential(copy.deepcopy(net.input_norm), copy.deepcopy(net.stem))
    elif key.role == "first":
        module = copy.deepcopy(net.first_block)
    elif key.role == "head":
        module = copy.deepcopy(net.head)
    elif key.role == "mbconv":
        shape = (key.in_c, key.out_c, key.stride)
        source = next((b for b in net.stage_blocks(key.stage - 1)
                       if (b.in_channels, b.out_channels, b.stride) == shape), None)
        if source is None:
            raise ValueError(f"block {key.id} does not belong to space {net.space.id}")
        with torch.no_grad():
            module = extract_block(source, key.kernel, key.expand)
    else:
        raise ValueError(f"unknown block role {key.role!r}")
    return module.eval()


def block_input_shape(key: BlockKey) -> tuple[int, int, int, int]:
    """NCHW shape of the block's input, batch 1."""
    return (1, key.in_c, key.in_hw, key.in_hw)
