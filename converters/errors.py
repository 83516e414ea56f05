"""The converters' one error type."""
from __future__ import annotations

from ofa_edge.errors import OfaEdgeError


class ConversionError(OfaEdgeError):
    """A model could not be converted; the message says which step failed and why."""
