"""The search space: validation, seeded sampling, extremes, mutation, crossover and counting.

Torch-free, so search and the device side can use it without the training stack.
"""
from __future__ import annotations

import random
from math import prod

from ofa_edge.space.arch import Arch, ArchError
from ofa_edge.space.presets import SpacePreset, get_preset

Rng = random.Random


def _rng(seed: int | Rng | None) -> Rng:
    return seed if isinstance(seed, random.Random) else random.Random(seed)


class SearchSpace:
    """All subnets of one preset. ``id`` keys every artefact derived from it."""

    def __init__(self, preset: SpacePreset | str):
        self.preset = get_preset(preset) if isinstance(preset, str) else preset

    @property
    def id(self) -> str:
        return self.preset.id

    @property
    def num_stages(self) -> int:
        return len(self.preset.stages)

    def __repr__(self) -> str:
        return f"SearchSpace({self.id!r})"

    # ------------------------------------------------------------ validation
    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it belongs to this space, else raise ArchError naming the bad part."""
        p = self.preset
        if arch.resolution not in p.resolutions:
            raise ArchError(f"arch {arch}: resolution {arch.resolution} is not in space {self.id} "
                            f"({_choices(p.resolutions)})")
        if len(arch.stages) != self.num_stages:
            raise ArchError(f"arch {arch}: {len(arch.stages)} stages, space {self.id} has {self.num_stages}")
        for s, stage in enumerate(arch.stages, start=1):
            if len(stage) not in p.depth_choices:
                raise ArchError(f"arch {arch}: stage {s} has depth {len(stage)}, allowed "
                                f"{_choices(p.depth_choices)}")
            for b, (k, e) in enumerate(stage, start=1):
                if k not in p.kernel_choices:
                    raise ArchError(f"arch {arch}: stage {s} block {b} kernel {k}, allowed "
                                    f"{_choices(p.kernel_choices)}")
                if e not in p.expand_choices:
                    raise ArchError(f"arch {arch}: stage {s} block {b} expand {e}, allowed "
                                    f"{_choices(p.expand_choices)}")
        return arch

    def parse(self, text: str) -> Arch:
        """Parse ``max``, ``min`` or an arch's text form, and validate it."""
        if text == "max":
            return self.largest()
        if text == "min":
            return self.smallest()
        return self.validate(Arch.parse(text))

    def __contains__(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
            return True
        except ArchError:
            return False

    # ------------------------------------------------------------ extremes and sampling
    def largest(self, resolution: int | None = None) -> Arch:
        p = self.preset
        block = (max(p.kernel_choices), max(p.expand_choices))
        return Arch(resolution or max(p.resolutions), tuple((block,) * p.max_depth for _ in p.stages))

    def smallest(self, resolution: int | None = None) -> Arch:
        p = self.preset
        block = (min(p.kernel_choices), min(p.expand_choices))
        return Arch(resolution or min(p.resolutions), tuple((block,) * min(p.depth_choices) for _ in p.stages))

    def uniform(self, kernel: int, expand: int, depth: int, resolution: int) -> Arch:
        """One kernel, expand and depth for every block: the 'uniformly scaled' baselines."""
        return self.validate(Arch(resolution, tuple(((kernel, expand),) * depth for _ in self.preset.stages)))

    def _block(self, rng: Rng) -> tuple[int, int]:
        return rng.choice(self.preset.kernel_choices), rng.choice(self.preset.expand_choices)

    def sample(self, seed: int | Rng | None = None, resolution: int | None = None) -> Arch:
        """A uniformly random arch (per block kernel/expand, per stage depth, resolution)."""
        rng, p = _rng(seed), self.preset
        stages = tuple(tuple(self._block(rng) for _ in range(rng.choice(p.depth_choices))) for _ in p.stages)
        return Arch(resolution or rng.choice(p.resolutions), stages)

    def sample_many(self, n: int, seed: int = 0) -> list[Arch]:
        rng = _rng(seed)
        return [self.sample(rng) for _ in range(n)]

    # ------------------------------------------------------------ evolution
    def mutate(self, arch: Arch, prob: float = 0.1, seed: int | Rng | None = None) -> Arch:
        """Resample each choice with probability ``prob`` (the reference's mutation, p = 0.1)."""
        rng, p = _rng(seed), self.preset
        coin, choice = rng.random, rng.choice
        kernels, expands = p.kernel_choices, p.expand_choices
        resolution = choice(p.resolutions) if coin() < prob else arch.resolution
        stages = []
        for stage in arch.stages:
            if coin() < prob:
                depth = choice(p.depth_choices)
                stage = stage[:depth] + tuple(self._block(rng) for _ in range(depth - len(stage)))
            blocks = list(stage)
            for i, (k, e) in enumerate(stage):
                if coin() < prob:
                    blocks[i] = (choice(kernels), blocks[i][1])
                if coin() < prob:
                    blocks[i] = (blocks[i][0], choice(expands))
            stages.append(tuple(blocks))
        return Arch(resolution, tuple(stages))

    def crossover(self, a: Arch, b: Arch, seed: int | Rng | None = None) -> Arch:
        """Each choice from either parent with equal probability (a block beyond the shorter
        parent's depth comes from the longer one)."""
        rng = _rng(seed)
        coin = rng.random
        resolution = a.resolution if coin() < 0.5 else b.resolution
        stages = []
        for sa, sb in zip(a.stages, b.stages):
            depth = len(sa) if coin() < 0.5 else len(sb)
            blocks = []
            for i in range(depth):
                if i < len(sa) and i < len(sb):
                    blocks.append(((sa[i] if coin() < 0.5 else sb[i])[0], (sa[i] if coin() < 0.5 else sb[i])[1]))
                else:
                    blocks.append(sa[i] if i < len(sa) else sb[i])
            stages.append(tuple(blocks))
        return Arch(resolution, tuple(stages))

    # ------------------------------------------------------------ counting
    def count(self, include_resolution: bool = False) -> int:
        """The exact number of distinct subnets (7,371**5 for ofa-mbv3-w1.0)."""
        p = self.preset
        per_block = len(p.kernel_choices) * len(p.expand_choices)
        per_stage = sum(per_block ** d for d in p.depth_choices)
        total = prod(per_stage for _ in p.stages)
        return total * len(p.resolutions) if include_resolution else total


def _choices(values) -> str:
    return "{" + ", ".join(str(v) for v in values) + "}"
