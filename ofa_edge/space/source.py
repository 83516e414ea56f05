"""One way for every command to open ``--supernet``.

A supernet source is a preset name (freshly initialised), ``default`` (the one shipped in the
package), a run folder, an ofa-edge ``.safetensors`` checkpoint, or a reference OFA checkpoint
file (``ofa_mbv3_d234_e346_k357_w1.0`` / ``_w1.2``, any name, torch zip or legacy
serialisation, loaded weights-only). :func:`open_supernet` returns what commands need: the
net, its header, a stable weights id and the folder of its side files (``accuracy_predictor.json``,
``calibration.npz``). A raw reference file has no such folder: convert it once with ``ofa-edge
import-reference`` (which also imports the reference accuracy predictor).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.presets import PRESETS


@dataclass
class SupernetSource:
    """An opened supernet source. ``net`` is built on first use (searching needs the header only)."""

    given: str                 # as the user gave it
    kind: str                  # "preset" | "checkpoint" (ofa-edge safetensors) | "reference" (raw OFA file)
    header: dict               # an ofa-edge header (a reference file gets the one import-reference writes)
    path: Path | None          # the weights file (None for a preset)
    folder: Path | None        # where side files live (None for a raw reference file)
    _net: object = field(default=None, repr=False)

    @cached_property
    def sha256(self) -> str | None:
        """The weights file's sha256 (None for a preset)."""
        from ofa_edge.fileio import sha256_file

        return sha256_file(self.path) if self.path is not None else None

    @property
    def weights_id(self) -> str:
        """Stable across runs: the weights file's sha256 prefix, or ``init-<preset>``."""
        return self.sha256[:12] if self.sha256 else f"init-{self.given}"

    @property
    def space_id(self) -> str:
        return self.header["space_id"]

    @property
    def net(self):
        """The supernet (eval mode); built once per source object, on first use."""
        if self._net is None:
            from ofa_edge.space.checkpoint import load_checkpoint
            from ofa_edge.space.reference import load_reference_checkpoint

            self._net = (load_reference_checkpoint(self.path) if self.kind == "reference"
                         else load_checkpoint(self.path))
        return self._net

    def side_file(self, name: str, what: str, fix: str) -> Path:
        """``folder/name``, or one line saying why there is none and how to get one."""
        if self.folder is None:
            raise OfaEdgeError(f"no {what} for {self.given}: it is a raw reference OFA checkpoint, which has no run "
                               f"folder; convert it once with ofa-edge import-reference {self.given} --out DIR "
                               f"[--acc-predictor FILE] and pass --supernet DIR")
        path = self.folder / name
        if not path.is_file():
            raise OfaEdgeError(f"no {what} at {path}: {fix}")
        return path


_REFERENCE_HEADERS: dict[tuple, tuple[str, str]] = {}  # (path, size, mtime) -> (header, sha256)


def open_supernet(source, num_classes: int | None = None) -> SupernetSource:
    """Open any supernet source (see the module docstring); an opened one is returned as it is.

    ``num_classes`` is for presets (default 1,000); a checkpoint with another count is an error."""
    if isinstance(source, SupernetSource):
        return source
    from ofa_edge.space.checkpoint import (CheckpointError, _resolve, check_default_installed, detect_format,
                                           header_of, read_header, supernet_dir)
    from ofa_edge.space.supernet import OFASupernet

    text = str(source)
    check_default_installed(text)
    if text in PRESETS:
        net = OFASupernet(text, num_classes if num_classes is not None else 1000).eval()
        return SupernetSource(text, "preset", header_of(net), None, supernet_dir(text), net)
    path = _resolve(Path(text))
    if detect_format(path) == "safetensors":
        opened = SupernetSource(text, "checkpoint", read_header(path), path, supernet_dir(text))
    else:
        opened = _open_reference(text, path)
    if num_classes is not None and num_classes != opened.header["num_classes"]:
        raise CheckpointError(f"{text}: checkpoint has {opened.header['num_classes']} classes, {num_classes} "
                              "were asked for")
    return opened


def _open_reference(text: str, path: Path) -> SupernetSource:
    """A raw reference file: converted in memory; its header is the one import-reference writes
    (kept per file for this process, so opening it again costs no second conversion)."""
    from ofa_edge.fileio import sha256_file
    from ofa_edge.space.checkpoint import header_of
    from ofa_edge.space.reference import from_reference_state_dict, read_reference_state, reference_header

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    net = None
    if key not in _REFERENCE_HEADERS:
        state, stored = read_reference_state(path)
        net = from_reference_state_dict(state, str(path))
        sha = sha256_file(path)
        header = {**header_of(net), **reference_header(net, path, sha, stored)}
        _REFERENCE_HEADERS[key] = (json.dumps(header), sha)  # as JSON: exactly what an import would read back
    header, sha = _REFERENCE_HEADERS[key]
    opened = SupernetSource(text, "reference", json.loads(header), path, None, net)
    opened.__dict__["sha256"] = sha  # cached_property's slot: no second hash
    return opened


__all__ = ["SupernetSource", "open_supernet"]
