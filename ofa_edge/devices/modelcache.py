"""A folder of converted model files, reused across devices and runs.

A file is keyed by what makes it: the space, the supernet's weights, the block (or subnet),
the format and precision, and the converter version. A second device with the same runtime
therefore converts nothing again. Files appear atomically, so a killed conversion leaves no
half-written model behind. Default folder: ``$OFA_EDGE_CACHE`` or ``~/.cache/ofa-edge/models``.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable

from converters import Format


def default_cache_dir() -> Path:
    return Path(os.environ.get("OFA_EDGE_CACHE") or Path.home() / ".cache" / "ofa-edge" / "models")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


class ModelCache:
    """``path(...)`` names a model's file; ``get(..., make)`` converts it only when missing."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def path(self, space_id: str, weights_id: str, name: str, fmt: Format, converter: str) -> Path:
        # Arch texts are long and hold '|': a readable prefix plus a digest keeps names short.
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        stem = f"{_safe(name)[:60]}-{digest}"
        return self.root / _safe(space_id) / _safe(weights_id) / _safe(converter) / fmt.name / (stem + fmt.suffix)

    def get(self, space_id: str, weights_id: str, name: str, fmt: Format, converter: str,
            make: Callable[[Path], object]) -> Path:
        """The cached file, made by ``make(path)`` first if it is not there yet."""
        path = self.path(space_id, weights_id, name, fmt, converter)
        if path.is_file() and path.stat().st_size > 0:
            self.hits += 1
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
        if not path.is_file():
            raise RuntimeError(f"conversion wrote no {path}")
        self.misses += 1
        return path
