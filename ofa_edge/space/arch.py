"""An architecture of the elastic space: per-block kernel and expand, per-stage depth, resolution.

An ``Arch`` stores only the active blocks, so two archs that run the same subnet are equal.
Text form (compact, parses back): ``r32|k3e4,k5e6|k7e3,k3e3,k3e4|...``: the resolution, then one
group per stage with one ``k<kernel>e<expand>`` per active block (depth = the number of blocks).
Torch-free.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property

from ofa_edge.errors import OfaEdgeError

_BLOCK = re.compile(r"^k(\d+)e(\d+)$")


class ArchError(OfaEdgeError):
    """An arch is malformed or outside its search space."""


@dataclass(frozen=True, order=True)
class Arch:
    resolution: int
    stages: tuple[tuple[tuple[int, int], ...], ...]  # per stage, per active block: (kernel, expand)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(stage) for stage in self.stages)

    @property
    def blocks(self) -> tuple[tuple[int, int], ...]:
        """The active blocks in order, as (kernel, expand)."""
        return tuple(block for stage in self.stages for block in stage)

    @cached_property
    def text(self) -> str:
        """The compact text form, computed once (search keys its caches by it)."""
        groups = (",".join(f"k{k}e{e}" for k, e in stage) for stage in self.stages)
        return f"r{self.resolution}|" + "|".join(groups)

    def __str__(self) -> str:
        return self.text

    def __hash__(self) -> int:
        """Hashed once: search keys its caches by arch, and meets the same arch many times."""
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = self.__dict__["_hash"] = hash((self.resolution, self.stages))
            return value

    def __repr__(self) -> str:
        return f"Arch('{self}')"

    @classmethod
    def parse(cls, text: str) -> "Arch":
        """Parse the text form; raise ArchError saying which part is wrong."""
        parts = text.strip().split("|")
        if len(parts) < 2 or not re.fullmatch(r"r\d+", parts[0]):
            raise ArchError(f"cannot parse arch {text!r}: expected 'r<resolution>|k3e4,k5e6|...' "
                            "(one group of blocks per stage)")
        stages = []
        for i, group in enumerate(parts[1:], start=1):
            blocks = []
            for token in group.split(","):
                m = _BLOCK.match(token.strip())
                if not m:
                    raise ArchError(f"cannot parse arch {text!r}: stage {i} has {token!r}, expected "
                                    "k<kernel>e<expand> such as k5e4")
                blocks.append((int(m.group(1)), int(m.group(2))))
            stages.append(tuple(blocks))
        return cls(int(parts[0][1:]), tuple(stages))

    def to_json(self) -> dict:
        return {
            "resolution": self.resolution,
            "stages": [[{"kernel": k, "expand": e} for k, e in stage] for stage in self.stages],
            "text": str(self),
        }

    @classmethod
    def from_json(cls, data: dict | str) -> "Arch":
        if isinstance(data, str):
            data = json.loads(data)
        try:
            stages = tuple(tuple((int(b["kernel"]), int(b["expand"])) for b in stage) for stage in data["stages"])
            arch = cls(int(data["resolution"]), stages)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchError(f"malformed arch JSON: {exc!r}") from None
        if "text" in data and data["text"] != str(arch):
            raise ArchError(f"arch JSON disagrees with itself: text {data['text']!r} vs {str(arch)!r}")
        return arch

    def to_reference(self, max_depth: int) -> dict:
        """The reference OFA form: ``ks``, ``e`` per block slot (skipped slots repeat the stage's
        last active block), ``d`` per stage, and ``r``."""
        ks, es = [], []
        for stage in self.stages:
            padded = list(stage) + [stage[-1]] * (max_depth - len(stage))
            ks += [k for k, _ in padded]
            es += [e for _, e in padded]
        return {"ks": ks, "e": es, "d": list(self.depths), "r": self.resolution}

    @classmethod
    def from_reference(cls, ks: list[int], e: list[int], d: list[int], r: int) -> "Arch":
        if len(ks) != len(e) or len(ks) % len(d):
            raise ArchError(f"reference arch lists do not fit: {len(ks)} ks, {len(e)} e, {len(d)} d")
        slots = len(ks) // len(d)
        stages = tuple(
            tuple((ks[s * slots + i], e[s * slots + i]) for i in range(depth)) for s, depth in enumerate(d)
        )
        return cls(int(r), stages)
