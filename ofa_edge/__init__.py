"""ofa-edge: one once-for-all supernet, specialised for many edge devices without retraining.

This package's top level stays free of heavy imports (torch, tensorflow), so that the CLI
starts fast and the device-side runner never pulls them in. ``load_supernet`` and
``OFASupernet`` import torch on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

from ofa_edge.errors import OfaEdgeError
from ofa_edge.space import Arch, SearchSpace

_LAZY = {
    "load_supernet": "ofa_edge.space.checkpoint",
    "save_supernet": "ofa_edge.space.checkpoint",
    "OFASupernet": "ofa_edge.space.supernet",
    "recalibrate_bn": "ofa_edge.space.bn",
}

__all__ = ["Arch", "OfaEdgeError", "SearchSpace", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ofa_edge' has no attribute {name!r}")
