"""Read IDX files (the MNIST / Fashion-MNIST format), gzipped or plain.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian
uint32 per dimension, then the payload in C order (big-endian for multi-byte types).
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ofa_edge.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

#: IDX dtype code -> numpy dtype (big-endian as stored on disk).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    """Return the file's bytes, gunzipped when it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}. Check the path.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, expected an IDX file.") from None
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e.strerror or e}. Check its permissions.") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"corrupt or truncated gzip file {path} ({e}). Re-download or reinstall it."
        ) from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file into a native-endian, writable array shaped as its header says.

    Raises DataError for a missing file, bad magic number, unknown dtype code, or a
    payload whose length does not match the header's dimensions.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path} is too short ({len(data)} bytes) to be an IDX file; it is truncated or not IDX.")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"bad IDX magic number 0x{data[:4].hex()} in {path}: expected 0x0000 then dtype and ndim bytes; "
            "this is not an IDX file."
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(f"unknown IDX dtype code 0x{code:02x} in {path}; supported codes are {known}.")
    if ndim == 0:
        raise DataError(f"IDX file {path} declares 0 dimensions; it is corrupt.")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"IDX file {path} is truncated inside its header ({len(data)} of {header_len} bytes).")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: header dims {dims} need {expected} payload bytes, found {actual}. "
            "Re-download or reinstall it."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX (gzipped if ``compress``, default: when the name ends in .gz)."""
    path = Path(path)
    arr = np.asarray(array)
    codes = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: c for c, dt in IDX_DTYPES.items()}
    native = arr.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"cannot write dtype {arr.dtype} as IDX; use one of uint8, int8, int16, int32, float32, float64.")
    code = codes[native]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(payload, compresslevel=1) if compress else payload)
    return path
