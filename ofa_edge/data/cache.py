"""The decode cache: an image folder decoded once into a uint8 ``.npy``, memory-mapped after.

An entry is ``<key>.npy`` (every listed file's image, in the loader's order; a bad file's
slot is zeros) and ``<key>.json`` (the resolved preprocessing and the bad files). The key is
a sha256 over the folder's listing (relative path, class, part), each file's size and
mtime_ns, the requested preprocessing and :data:`CACHE_VERSION`, so an edited, added,
removed or renamed image gives a new key and is never served stale. Both files are written
to a temporary name and moved in place (``os.replace``); the ``.json`` goes last and marks
the entry complete.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ofa_edge.errors import DataError

CACHE_ENV = "OFA_EDGE_DATA_CACHE"
DEFAULT_CACHE = Path("~/.cache/ofa-edge/data")
#: Bump when the decoded bytes or the entry layout change: old entries are then never read.
CACHE_VERSION = 1


def cache_dir(given: str | os.PathLike | None = None) -> Path:
    """``given``, else ``$OFA_EDGE_DATA_CACHE``, else ``~/.cache/ofa-edge/data``; created."""
    folder = Path(given or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the image cache folder {folder}: {e.strerror or e}; "
                        f"set ${CACHE_ENV} to a writable folder.") from None
    return folder


def cache_key(rows: Iterable[tuple[str, str, str, int, int]], settings: dict[str, Any]) -> str:
    """sha256 over (part, relpath, class, size, mtime_ns) rows in order, settings and the version."""
    h = hashlib.sha256(f"ofa-edge image cache v{CACHE_VERSION}\n".encode())
    h.update(json.dumps(settings, sort_keys=True).encode() + b"\n")
    for part, rel, cls, size, mtime_ns in rows:
        h.update(f"{part}\t{rel}\t{cls}\t{size}\t{mtime_ns}\n".encode())
    return h.hexdigest()


def _paths(folder: Path, key: str) -> tuple[Path, Path]:
    return folder / f"{key}.npy", folder / f"{key}.json"


def load_entry(folder: Path, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The cached images (memory-mapped copy-on-write: writes stay private) and meta, or None."""
    npy, meta_path = _paths(folder, key)
    try:
        meta = json.loads(meta_path.read_text())
        x = np.load(npy, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION or list(x.shape) != meta.get("shape") or x.dtype != np.uint8:
        return None
    return np.asarray(x), meta


def new_entry(folder: Path, key: str, shape: tuple[int, ...]) -> Path:
    """Create the temporary ``.npy`` (zeros, ``shape``) that decode workers fill in place."""
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    except OSError as e:
        raise DataError(f"cannot write the image cache in {folder}: {e.strerror or e}; "
                        f"free some space or set ${CACHE_ENV} to another folder.") from None
    del out
    return tmp


def commit_entry(folder: Path, key: str, tmp: Path, meta: dict[str, Any]) -> None:
    """Move the filled ``tmp`` into place, then write the meta that marks the entry complete."""
    npy, meta_path = _paths(folder, key)
    meta_tmp = meta_path.with_name(f".{key}.{os.getpid()}.tmp.json")
    try:
        os.replace(tmp, npy)
        meta_tmp.write_text(json.dumps({**meta, "version": CACHE_VERSION}))
        os.replace(meta_tmp, meta_path)
    except OSError as e:
        raise DataError(f"cannot write the image cache in {folder}: {e.strerror or e}; "
                        f"free some space or set ${CACHE_ENV} to another folder.") from None
    finally:
        for path in (tmp, meta_tmp):
            if path.exists():
                path.unlink()


def drop_temp(tmp: Path) -> None:
    """Remove a temporary entry left by a failed decode."""
    try:
        tmp.unlink()
    except OSError:
        pass
