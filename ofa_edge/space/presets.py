"""Search-space presets: plain data describing an OFA-MobileNetV3 style elastic network.

A preset fixes the skeleton (stem, a fixed first block, elastic stages, head) and the elastic
choices. Facts for the paper's spaces are from the OFA paper (Cai et al., ICLR 2020) and its
reference code, as collected in ../shared/DESIGN.md §3. Torch-free.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ofa_edge.errors import OfaEdgeError

ACTIVATIONS = ("relu", "hswish")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never going below 90% of it (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class StageSpec:
    """One elastic stage: all its blocks share width and activation; the first one strides."""

    width: int
    stride: int
    act: str
    se: bool


@dataclass(frozen=True)
class SpacePreset:
    """The skeleton and the elastic choices of a space. ``id`` keys everything derived from it."""

    id: str
    stem_width: int
    stem_stride: int
    first_block_width: int
    stages: tuple[StageSpec, ...]
    final_expand_width: int
    feature_mix_width: int
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[int, ...] = (3, 4, 6)
    depth_choices: tuple[int, ...] = (2, 3, 4)
    resolutions: tuple[int, ...] = (224,)
    stem_act: str = "hswish"
    first_block_act: str = "relu"
    se_reduction: int = 4
    description: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not self.stages:
            problems.append("at least one stage")
        for s in self.stages:
            if s.act not in ACTIVATIONS:
                problems.append(f"activation {s.act!r} (use {', '.join(ACTIVATIONS)})")
            if s.stride not in (1, 2):
                problems.append(f"stride {s.stride}")
        if any(k % 2 == 0 for k in self.kernel_choices):
            problems.append("odd kernel sizes only")
        if sorted(set(self.kernel_choices)) != list(self.kernel_choices):
            problems.append("kernel choices sorted and unique")
        if min(self.depth_choices) < 1:
            problems.append("depths of at least 1")
        if problems:
            raise OfaEdgeError(f"search space {self.id!r} is malformed: {'; '.join(problems)}")

    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "SpacePreset":
        try:
            fields = dict(data)
            fields["stages"] = tuple(StageSpec(**s) for s in fields["stages"])
            for key in ("kernel_choices", "expand_choices", "depth_choices", "resolutions"):
                fields[key] = tuple(fields[key])
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise OfaEdgeError(f"malformed search-space description: {exc}") from None

    def fingerprint(self) -> str:
        """A stable JSON form, used to check that a checkpoint matches its preset."""
        return json.dumps(self.to_json(), sort_keys=True)


def _mbv3(width_mult: float) -> SpacePreset:
    """OFA-MobileNetV3 at a width multiplier, as in the reference's OFAMobileNetV3."""
    base = [16, 16, 24, 40, 80, 112, 160, 960, 1280]
    w = [make_divisible(b * width_mult) for b in base]
    strides, acts, ses = (2, 2, 2, 1, 2), ("relu", "relu", "hswish", "hswish", "hswish"), (False, True, False, True, True)
    return SpacePreset(
        id=f"ofa-mbv3-w{width_mult:.1f}",
        stem_width=w[0],
        stem_stride=2,
        first_block_width=w[1],
        stages=tuple(StageSpec(w[2 + i], strides[i], acts[i], ses[i]) for i in range(5)),
        final_expand_width=w[7],
        feature_mix_width=w[8],
        resolutions=tuple(range(128, 225, 4)),
        description=f"OFA-MobileNetV3 w{width_mult:.1f} (Cai et al., ICLR 2020), ImageNet-size inputs 128-224 px",
    )


PRESETS: dict[str, SpacePreset] = {
    p.id: p
    for p in (
        _mbv3(1.0),
        _mbv3(1.2),
        SpacePreset(
            id="ofa-mbv3-tiny",
            stem_width=16,
            stem_stride=2,
            first_block_width=16,
            stages=(
                StageSpec(16, 2, "relu", False),
                StageSpec(24, 2, "relu", True),
                StageSpec(40, 1, "hswish", False),
                StageSpec(48, 2, "hswish", True),
                StageSpec(64, 1, "hswish", True),
            ),
            final_expand_width=384,
            feature_mix_width=512,
            resolutions=tuple(range(24, 65, 4)),
            description="The OFA-MobileNetV3 elastic structure shrunk for 24-64 px images "
                        "(Fashion-MNIST): feature maps 14/7/4/4/2/2 at 28 px; 1.5-7.0M MACs at 28 px",
        ),
        SpacePreset(
            id="ofa-mbv3-ci",
            stem_width=8,
            stem_stride=2,
            first_block_width=8,
            stages=(
                StageSpec(8, 2, "relu", False),
                StageSpec(16, 2, "relu", True),
                StageSpec(16, 1, "hswish", False),
                StageSpec(24, 2, "hswish", True),
                StageSpec(24, 1, "hswish", True),
            ),
            final_expand_width=96,
            feature_mix_width=128,
            resolutions=(28, 32),
            description="A tiny space for fast tests: full elastic structure, narrow widths",
        ),
    )
}


def get_preset(name: str) -> SpacePreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise OfaEdgeError(f"unknown search space {name!r} (presets: {', '.join(PRESETS)})") from None
