"""Supernet checkpoints: safetensors weights plus a JSON header (never a pickle).

The header, stored in the safetensors metadata under ``ofa_edge``, holds the schema version,
the full search-space preset, the number of classes and the input normalisation, so a
checkpoint is self-describing. Writes are atomic (temp file + rename).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.presets import PRESETS, SpacePreset
from ofa_edge.space.supernet import OFASupernet

SCHEMA_VERSION = 1
HEADER_KEY = "ofa_edge"
WEIGHTS_NAME = "supernet.safetensors"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "assets" / "default"


class CheckpointError(OfaEdgeError):
    """A checkpoint is missing, corrupt, or does not match its search space."""


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={HEADER_KEY: json.dumps(header)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a checkpoint, without loading its tensors."""
    path = _resolve(Path(path))
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
        raise CheckpointError(f"{path}: no such checkpoint (give a .safetensors file, a run folder holding "
                              f"{WEIGHTS_NAME}, or a preset name: {', '.join(PRESETS)})")
    return path


def load_supernet(name_or_path: str | os.PathLike, num_classes: int | None = None, **kwargs) -> OFASupernet:
    """A preset name (freshly initialised), a checkpoint path, or a reference OFA ``.pth``."""
    text = str(name_or_path)
    if text == "default" and not (DEFAULT_DIR / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"the default supernet is missing from this install ({DEFAULT_DIR / WEIGHTS_NAME}); "
                              "reinstall ofa-edge or pass --supernet PATH")
    if text in PRESETS:
        return OFASupernet(text, num_classes if num_classes is not None else 1000, **kwargs)
    if text.endswith((".pth", ".pt", ".tar")):
        from ofa_edge.space.reference import load_reference_checkpoint

        return load_reference_checkpoint(text)
    net = load_checkpoint(text)
    if num_classes is not None and num_classes != net.num_classes:
        raise CheckpointError(f"{text}: checkpoint has {net.num_classes} classes, {num_classes} were asked for")
    return net
