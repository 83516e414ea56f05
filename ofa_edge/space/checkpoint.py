"""Supernet checkpoints: safetensors weights plus a JSON header (never a pickle).

The header, stored in the safetensors metadata under ``ofa_edge``, holds the schema version,
the full search-space preset, the number of classes and the input normalisation, so a
checkpoint is self-describing. Writes are atomic (temp file + rename).

A file's format is told from its first bytes, never from its name (:func:`detect_format`):
ofa-edge's safetensors, or a reference OFA checkpoint in torch's zip or legacy serialisation.
Commands open any supernet source through :func:`ofa_edge.space.source.open_supernet`.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ofa_edge.errors import OfaEdgeError
from ofa_edge.fileio import atomic_path
from ofa_edge.space.presets import PRESETS, SpacePreset
from ofa_edge.space.supernet import OFASupernet

SCHEMA_VERSION = 1
HEADER_KEY = "ofa_edge"
WEIGHTS_NAME = "supernet.safetensors"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "assets" / "default"


class CheckpointError(OfaEdgeError):
    """A checkpoint is missing, corrupt, or does not match its search space."""


#: what every "not a supernet checkpoint" message offers instead
ACCEPTED_FORMATS = ("accepted: an ofa-edge supernet (a run folder, or safetensors with an ofa-edge header) or a "
                    "reference OFA checkpoint (ofa_mbv3_d234_e346_k357_w1.0 / _w1.2) in torch's zip or legacy "
                    "serialisation")
# torch's legacy serialisation starts with a protocol-2 pickle of its magic number (a 10-byte LONG1)
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def detect_format(path: str | os.PathLike) -> str:
    """``"safetensors"``, ``"torch-zip"`` or ``"torch-legacy"``, from the file's first bytes.

    Anything else is a CheckpointError of one line saying what the file looks like and which
    formats are accepted."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if size >= 10 and head[8:9] == b"{" and not _printable(head[:8]):
        if 8 + int.from_bytes(head[:8], "little") <= size:
            return "safetensors"
        what = "a truncated safetensors file (its header runs past the end of the file)"
    elif head.startswith(b"PK\x03\x04"):
        what = _describe_zip(path)
        if what is None:
            return "torch-zip"
    elif head.startswith(TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    else:
        what = describe_bytes(head, size)
    raise CheckpointError(f"{path} is {what}: not an ofa-edge supernet checkpoint, and cannot read it as a "
                          f"weights-only torch checkpoint ({ACCEPTED_FORMATS})")


def _describe_zip(path: Path) -> str | None:
    """None for a torch zip checkpoint, else what the zip archive is."""
    if not zipfile.is_zipfile(path):
        return "a truncated or damaged zip archive (no central directory at its end)"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"a damaged zip archive ({exc})"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return None
    return f"a zip archive of {len(names)} files that is not a torch checkpoint (no data.pkl)"


def _printable(data: bytes) -> bool:
    return all(32 <= b < 127 or b in (9, 10, 13) for b in data)


def describe_bytes(head: bytes, size: int) -> str:
    """What a file that is no checkpoint looks like, from its first bytes, in a few words."""
    if size == 0:
        return "empty (0 bytes)"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle that is not a torch checkpoint (no torch magic number)"
    known = [(b"\x1f\x8b", "a gzip file"), (b"\x89HDF", "an HDF5 file"), (b"\x93NUMPY", "a NumPy .npy file"),
             (b"\x7fELF", "an executable (ELF)"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image")]
    for magic, name in known:
        if head.startswith(magic):
            return name
    if head[4:8] == b"TFL3":
        return "a TFLite model"
    try:  # a multi-byte character may be cut at the end of the 64 bytes
        text = head.decode("utf-8") if _printable(head) else None
    except UnicodeDecodeError:
        text = None
    if text is None and not any(b < 32 and b not in (9, 10, 13) for b in head):
        text = head.decode("utf-8", errors="ignore")
    if text:
        return f"a text file ({size:,} bytes, starting {' '.join(text.split())[:40]!r})"
    return f"binary data ({size:,} bytes, starting {head[:8].hex(' ')})"


def header_of(net: OFASupernet) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "ofa-edge-supernet",
        "space_id": net.space.id,
        "preset": net.space.preset.to_json(),
        "num_classes": net.num_classes,
        "input_mean": list(net.input_mean),
        "input_std": list(net.input_std),
    }


def save_supernet(net: OFASupernet, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``net`` to ``path`` (a .safetensors file, or a folder that gets supernet.safetensors)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / WEIGHTS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {**header_of(net), **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    with atomic_path(path, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(header)})
    return path


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a checkpoint, without loading its tensors."""
    path = _resolve(Path(path))
    fmt = detect_format(path)
    if fmt != "safetensors":
        raise CheckpointError(f"{path}: a reference OFA checkpoint ({fmt}) has no ofa-edge header; open it with "
                              "ofa_edge.space.source.open_supernet, or convert it once with ofa-edge import-reference")
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100_000_000:
                raise ValueError("bad header size")
            meta = json.loads(f.read(size)).get("__metadata__") or {}
        header = json.loads(meta[HEADER_KEY])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not an ofa-edge supernet checkpoint ({type(exc).__name__}: {exc}); "
                              "re-save it with ofa_edge.space.checkpoint.save_supernet") from None
    if header.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(f"{path}: checkpoint schema_version {header.get('schema_version')!r}, "
                              f"this ofa-edge reads {SCHEMA_VERSION}")
    return header


def load_checkpoint(path: str | os.PathLike) -> OFASupernet:
    """Build the supernet its header describes and load its weights, checking every tensor."""
    path = _resolve(Path(path))
    header = read_header(path)
    preset = SpacePreset.from_json(header["preset"])
    net = OFASupernet(preset, int(header["num_classes"]), header["input_mean"], header["input_std"])
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt weights ({exc}); the file may be truncated") from None
    load_state(net, tensors, str(path))
    return net.eval()


def load_state(net: torch.nn.Module, tensors: dict, source: str) -> None:
    """Copy ``tensors`` into ``net``; any missing, unexpected or mis-shaped key is one clear error."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            raise CheckpointError(f"{source}: does not match the search space: {len(items)} {label} "
                                  f"tensors ({', '.join(items[:3])}{more})")
    net.load_state_dict(tensors, strict=True)


def supernet_dir(name_or_path: str | os.PathLike) -> Path:
    """The folder of a supernet: ``default`` is the one shipped in the package."""
    if str(name_or_path) == "default":
        return DEFAULT_DIR
    path = Path(name_or_path)
    return path if path.is_dir() else path.parent


def checkpoint_file(name_or_path: str | os.PathLike) -> Path:
    """The .safetensors file of ``default``, a run folder or a checkpoint path (CheckpointError
    when there is none)."""
    return _resolve(Path(name_or_path))


def _resolve(path: Path) -> Path:
    if str(path) == "default":
        path = DEFAULT_DIR
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint (give a run folder holding {WEIGHTS_NAME}, "
                              f"a .safetensors file, a reference OFA checkpoint file, or a preset name: "
                              f"{', '.join(PRESETS)})")
    return path


def check_default_installed(name_or_path: str | os.PathLike) -> None:
    if str(name_or_path) == "default" and not (DEFAULT_DIR / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"the default supernet is missing from this install ({DEFAULT_DIR / WEIGHTS_NAME}); "
                              "reinstall ofa-edge or pass --supernet PATH")


def load_supernet(name_or_path: str | os.PathLike, num_classes: int | None = None, **kwargs) -> OFASupernet:
    """A preset name (freshly initialised), an ofa-edge checkpoint or run folder, or a reference OFA
    checkpoint file (any name: the format is read from the file's first bytes)."""
    text = str(name_or_path)
    check_default_installed(text)
    if text in PRESETS:
        return OFASupernet(text, num_classes if num_classes is not None else 1000, **kwargs)
    path = _resolve(Path(text))
    if detect_format(path) != "safetensors":
        from ofa_edge.space.reference import load_reference_checkpoint

        net = load_reference_checkpoint(path)
    else:
        net = load_checkpoint(path)
    if num_classes is not None and num_classes != net.num_classes:
        raise CheckpointError(f"{text}: checkpoint has {net.num_classes} classes, {num_classes} were asked for")
    return net
