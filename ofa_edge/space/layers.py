"""Plain layers: what an extracted subnet is made of (standard torch.nn only, ONNX-exportable).

The supernet uses the same classes for its fixed parts (stem, first block, head), so the
extracted network and the supernet share one definition of those.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ofa_edge.space.ops import activation


class InputNorm(nn.Module):
    """``x * scale + shift`` per channel: the dataset's mean/std normalisation inside the model.

    It is kept as its own op rather than folded into the stem's weights: a fold is exact for the
    scale but not for the shift, because the stem's zero padding would then pad with the mean.
    A deployed model therefore takes plain [0, 1] images.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.register_buffer("scale", 1.0 / std_t, persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> optional BatchNorm2d -> optional activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: str | None = None, bn: bool = True):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2,
                                          groups=groups, bias=False))
        if bn:
            self.add_module("bn", nn.BatchNorm2d(out_channels))
        if act:
            self.add_module("act", activation(act))


class SqueezeExcite(nn.Module):
    """x * hardsigmoid(expand(relu(reduce(mean(x)))))."""

    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.relu(self.reduce(y))))


class MBConv(nn.Module):
    """Inverted bottleneck: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ residual)."""

    def __init__(self, in_channels: int, mid: int, out_channels: int, kernel: int, stride: int,
                 act: str, se_mid: int | None = None, expand: bool = True):
        super().__init__()
        self.expand = ConvBNAct(in_channels, mid, 1, act=act) if expand else None
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid, se_mid) if se_mid else None
        self.project = ConvBNAct(mid, out_channels, 1)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class Head(nn.Module):
    """final 1x1 expand -> global average pool -> 1x1 feature mix (no BN) -> dropout -> classifier."""

    def __init__(self, in_channels: int, expand_width: int, mix_width: int, num_classes: int,
                 dropout: float = 0.0):
        super().__init__()
        self.final_expand = ConvBNAct(in_channels, expand_width, 1, act="hswish")
        self.feature_mix = ConvBNAct(expand_width, mix_width, 1, act="hswish", bn=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(mix_width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_expand(x).mean((2, 3), keepdim=True)
        x = self.feature_mix(x).flatten(1)
        return self.classifier(self.dropout(x))


class SubNet(nn.Module):
    """A static network extracted from a supernet: plain layers, one fixed architecture.

    Input: (N, 3, R, R) images in [0, 1] at the arch's resolution R. Output: logits.
    """

    def __init__(self, input_norm: InputNorm, stem: nn.Module, first_block: nn.Module,
                 blocks: list[nn.Module], head: Head, arch_text: str, space_id: str):
        super().__init__()
        self.input_norm, self.stem, self.first_block = input_norm, stem, first_block
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.arch_text, self.space_id = arch_text, space_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(self.input_norm(x)))
        return self.head(self.blocks(x))
