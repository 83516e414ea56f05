"""The elastic OFA-MobileNetV3 supernet: set an arch, run it, extract it as a plain network."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ofa_edge.space.arch import Arch
from ofa_edge.space.layers import ConvBNAct, Head, InputNorm, MBConv, SubNet
from ofa_edge.space.ops import DynamicBatchNorm2d, DynamicMBConv
from ofa_edge.space.presets import SpacePreset, get_preset
from ofa_edge.space.searchspace import SearchSpace


class OFASupernet(nn.Module):
    """One network holding every subnet of a search space.

    Input contract (supernet, extracted subnets, exported models alike): 3-channel images in
    [0, 1], NCHW; the dataset's mean/std normalisation is the model's first op.
    """

    def __init__(self, preset: SpacePreset | str, num_classes: int,
                 input_mean: Sequence[float] = (0.0, 0.0, 0.0), input_std: Sequence[float] = (1.0, 1.0, 1.0),
                 dropout: float = 0.1):
        super().__init__()
        self.space = SearchSpace(get_preset(preset) if isinstance(preset, str) else preset)
        p = self.space.preset
        self.num_classes = num_classes
        self.input_norm = InputNorm(input_mean, input_std)
        self.stem = ConvBNAct(3, p.stem_width, 3, p.stem_stride, act=p.stem_act)
        self.first_block = MBConv(p.stem_width, p.stem_width, p.first_block_width, 3, 1,
                                  p.first_block_act, expand=False)
        blocks, in_channels = [], p.first_block_width
        for stage in p.stages:
            for i in range(p.max_depth):
                blocks.append(DynamicMBConv(in_channels, stage.width, stage.stride if i == 0 else 1,
                                            stage.act, stage.se, p.kernel_choices, p.expand_choices,
                                            p.se_reduction))
                in_channels = stage.width
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(in_channels, p.final_expand_width, p.feature_mix_width, num_classes, dropout)
        self._init_weights()
        self.set_active(self.space.largest())

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------ arch
    @property
    def input_mean(self) -> tuple[float, ...]:
        return self.input_norm.mean

    @property
    def input_std(self) -> tuple[float, ...]:
        return self.input_norm.std

    def stage_blocks(self, stage: int) -> list[DynamicMBConv]:
        d = self.space.preset.max_depth
        return list(self.blocks[stage * d:(stage + 1) * d])

    def set_active(self, arch: Arch | str) -> Arch:
        """Make the supernet run as ``arch`` (text form, ``max``/``min``, or an Arch)."""
        arch = self.space.parse(arch) if isinstance(arch, str) else self.space.validate(arch)
        for s, stage in enumerate(arch.stages):
            for block, (k, e) in zip(self.stage_blocks(s), stage):
                block.set_active(k, e)
        self.active_arch = arch
        return arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(self.input_norm(x)))
        for s, stage in enumerate(self.active_arch.stages):
            for block in self.stage_blocks(s)[:len(stage)]:
                x = block(x)
        return self.head(x)

    # ------------------------------------------------------------ extraction
    @torch.no_grad()
    def extract(self, arch: Arch | str | None = None) -> SubNet:
        """A plain torch.nn network for ``arch`` with its own copies of the active weights
        (transformed kernels baked in). It is in the same train/eval mode as the supernet."""
        arch = self.set_active(arch) if arch is not None else self.active_arch
        blocks = []
        for s, stage in enumerate(arch.stages):
            for block, (k, e) in zip(self.stage_blocks(s), stage):
                blocks.append(extract_block(block, k, e))
        sub = SubNet(copy.deepcopy(self.input_norm), copy.deepcopy(self.stem), copy.deepcopy(self.first_block),
                     blocks, copy.deepcopy(self.head), str(arch), self.space.id)
        return sub.train(self.training)

    def costs(self, arch: Arch | str | None = None, runtime: str = "tflite-micro"):
        """MACs, params, peak SRAM (int8) and flash (int8) of ``arch``, from the arch alone."""
        from ofa_edge.space.costs import arch_costs

        arch = self.space.parse(arch) if isinstance(arch, str) else (arch or self.active_arch)
        return arch_costs(self.space.preset, arch, self.num_classes, runtime=runtime)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Sort every block's middle channels by importance (before the elastic-expand phase)."""
        for block in self.blocks:
            block.sort_channels()


def _copy_bn(src: DynamicBatchNorm2d, dst: nn.BatchNorm2d, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:channels])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


def extract_block(block: DynamicMBConv, kernel: int, expand: int) -> MBConv:
    mid = block.mid_channels(expand)
    se_mid = block.se.mid_channels(mid) if block.se is not None else None
    out = MBConv(block.in_channels, mid, block.out_channels, kernel, block.stride, block.act_name, se_mid)
    out.expand.conv.weight.copy_(block.expand_conv.active_weight(block.in_channels, mid))
    _copy_bn(block.expand_bn, out.expand.bn, mid)
    out.depthwise.conv.weight.copy_(block.depthwise.active_weight(mid, kernel))
    _copy_bn(block.depthwise_bn, out.depthwise.bn, mid)
    if block.se is not None:
        rw, rb, ew, eb = block.se.active_weights(mid)
        for dst, src in zip((out.se.reduce.weight, out.se.reduce.bias, out.se.expand.weight, out.se.expand.bias),
                            (rw, rb, ew, eb)):
            dst.copy_(src)
    out.project.conv.weight.copy_(block.project_conv.active_weight(mid, block.out_channels))
    _copy_bn(block.project_bn, out.project.bn, block.out_channels)
    return out
