"""Search spaces and architectures. Importing this package never imports torch."""
from __future__ import annotations

from ofa_edge.space.arch import Arch, ArchError
from ofa_edge.space.presets import PRESETS, SpacePreset, StageSpec, get_preset, make_divisible
from ofa_edge.space.searchspace import SearchSpace

__all__ = ["Arch", "ArchError", "PRESETS", "SearchSpace", "SpacePreset", "StageSpec", "get_preset",
           "make_divisible"]
