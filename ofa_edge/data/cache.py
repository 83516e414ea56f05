"""The decode cache: an image folder decoded once into a uint8 ``.npy``, memory-mapped after.

Two levels, both keyed by :func:`cache_key`, a sha256 over the folder's listing (part,
relative path, class), each file's size and mtime_ns, and :data:`CACHE_VERSION`, so an edited,
added, removed or renamed image gives new keys and is never served stale:

* ``<key>.headers.json``: what the file headers say (distinct sizes, all gray or not, the
  unreadable files), enough to resolve the target size and colour without opening an image;
* ``<data key>.npy`` + ``<data key>.json``: the decoded images (every listed file, in the
  loader's order; a bad file's slot is zeros) for one resolved size and colour, and the files
  that failed to decode. The data key hashes the listing key with the resolved preprocessing,
  so every request that resolves to the same N x N shares one entry.

Files are written to a temporary name and moved in place (``os.replace``); an entry's ``.json``
goes last and marks it complete.
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


def cache_key(rows: Iterable[tuple[str, str, str, int, int]]) -> str:
    """sha256 over (part, relpath, class, size, mtime_ns) rows in order and the version."""
    h = hashlib.sha256(f"ofa-edge image cache v{CACHE_VERSION}\n".encode())
    for part, rel, cls, size, mtime_ns in rows:
        h.update(f"{part}\t{rel}\t{cls}\t{size}\t{mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def data_key(key: str, preprocess: dict[str, Any]) -> str:
    """The key of the decoded images: the listing ``key`` with the resolved ``preprocess``."""
    return hashlib.sha256(f"{key}\n{json.dumps(preprocess, sort_keys=True)}".encode()).hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({**data, "version": CACHE_VERSION}))
        os.replace(tmp, path)
    except OSError as e:
        raise DataError(f"cannot write the image cache in {path.parent}: {e.strerror or e}; "
                        f"free some space or set ${CACHE_ENV} to another folder.") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def load_headers(folder: Path, key: str) -> dict[str, Any] | None:
    """The cached header summary of a listing, or None."""
    try:
        data = json.loads((folder / f"{key}.headers.json").read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("version") == CACHE_VERSION else None


def save_headers(folder: Path, key: str, data: dict[str, Any]) -> None:
    """Store the header summary of a listing (atomically)."""
    _write_json(folder / f"{key}.headers.json", data)


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
    try:
        os.replace(tmp, npy)
    except OSError as e:
        raise DataError(f"cannot write the image cache in {folder}: {e.strerror or e}; "
                        f"free some space or set ${CACHE_ENV} to another folder.") from None
    _write_json(meta_path, meta)


def load_committed(folder: Path, key: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The entry just committed; a DataError if it vanished in between."""
    hit = load_entry(folder, key)
    if hit is None:
        raise DataError(f"the image cache entry {folder / key}.npy vanished while loading; "
                        f"check ${CACHE_ENV} ({folder}).")
    return hit


def drop_temp(tmp: Path) -> None:
    """Remove a temporary entry left by a failed decode."""
    try:
        tmp.unlink()
    except OSError:
        pass
