"""The candidate blocks of a search space: what a device bench times one by one.

A block is identified by everything that changes its latency: its role (stem, the fixed first
block, an elastic MBConv, the head), channels in and out, kernel, expand, stride, input size,
squeeze-excite and activation. Summing the blocks of an arch gives the uncalibrated latency
estimate ([5/7] calibrates it on whole subnets). Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ofa_edge.space.arch import Arch
from ofa_edge.space.presets import SpacePreset


@dataclass(frozen=True, order=True)
class BlockKey:
    role: str          # stem | first | mbconv | head
    stage: int         # 0 for stem/first/head, 1.. for elastic stages
    in_c: int
    out_c: int
    kernel: int
    expand: int
    stride: int
    in_hw: int
    se: bool
    act: str

    @property
    def id(self) -> str:
        """A readable, unique name, e.g. ``mbconv-s2-i24o24-k5e4-st1-hw7-se-relu``."""
        return (f"{self.role}-s{self.stage}-i{self.in_c}o{self.out_c}-k{self.kernel}e{self.expand}"
                f"-st{self.stride}-hw{self.in_hw}{'-se' if self.se else ''}-{self.act}")

    def to_json(self) -> dict:
        return {**asdict(self), "id": self.id}


def _out(hw: int, stride: int) -> int:
    return math.ceil(hw / stride)


def _fixed(p: SpacePreset, resolution: int) -> tuple[BlockKey, BlockKey, int]:
    hw = _out(resolution, p.stem_stride)
    stem = BlockKey("stem", 0, 3, p.stem_width, 3, 1, p.stem_stride, resolution, False, p.stem_act)
    first = BlockKey("first", 0, p.stem_width, p.first_block_width, 3, 1, 1, hw, False, p.first_block_act)
    return stem, first, hw


def _head(p: SpacePreset, hw: int, num_classes: int) -> BlockKey:
    return BlockKey("head", 0, p.stages[-1].width, num_classes, 1, 1, 1, hw, False, "hswish")


def arch_blocks(p: SpacePreset, arch: Arch, num_classes: int) -> list[BlockKey]:
    """The blocks an arch runs, in order."""
    stem, first, hw = _fixed(p, arch.resolution)
    out, in_c = [stem, first], p.first_block_width
    for s, (spec, stage) in enumerate(zip(p.stages, arch.stages), start=1):
        for i, (k, e) in enumerate(stage):
            stride = spec.stride if i == 0 else 1
            out.append(BlockKey("mbconv", s, in_c, spec.width, k, e, stride, hw, spec.se, spec.act))
            hw, in_c = _out(hw, stride), spec.width
    out.append(_head(p, hw, num_classes))
    return out


def candidate_blocks(p: SpacePreset, resolutions: list[int], num_classes: int) -> list[BlockKey]:
    """Every distinct block any arch of the space can run at these resolutions, sorted."""
    blocks: set[BlockKey] = set()
    for r in resolutions:
        stem, first, hw = _fixed(p, r)
        blocks |= {stem, first}
        in_c = p.first_block_width
        for s, spec in enumerate(p.stages, start=1):
            for k in p.kernel_choices:
                for e in p.expand_choices:
                    blocks.add(BlockKey("mbconv", s, in_c, spec.width, k, e, spec.stride, hw, spec.se, spec.act))
                    blocks.add(BlockKey("mbconv", s, spec.width, spec.width, k, e, 1, _out(hw, spec.stride),
                                        spec.se, spec.act))
            hw, in_c = _out(hw, spec.stride), spec.width
        blocks.add(_head(p, hw, num_classes))
    return sorted(blocks)
