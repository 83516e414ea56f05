"""ofa-edge: one once-for-all supernet, specialised for many edge devices without retraining.

This package's top level stays free of heavy imports (torch, tensorflow), so that the CLI
starts fast and the device-side runner never pulls them in.
"""
from __future__ import annotations

__version__ = "0.1.0"

from ofa_edge.errors import OfaEdgeError

__all__ = ["OfaEdgeError", "__version__"]
