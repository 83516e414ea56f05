"""The training checkpoint folder: weights, optimizer tensors, teacher and a JSON state,
replaced atomically as a whole (write a temp folder, then two renames)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.checkpoint import CheckpointError, save_supernet

CKPT = "checkpoint"


def write_checkpoint(out: Path, net, state: dict, tensors: dict[str, torch.Tensor],
                     teacher: torch.nn.Module | None) -> None:
    """Write ``out/checkpoint/`` atomically: a crash leaves the old one or the new one."""
    tmp = out / f".{CKPT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_supernet(net, tmp / "supernet.safetensors")
    save_file(tensors or {"empty": torch.zeros(1)}, str(tmp / "trainer.safetensors"))
    if teacher is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()},
                  str(tmp / "teacher.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    final, old = out / CKPT, out / f".{CKPT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def read_checkpoint(out: Path) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """(folder, state, trainer tensors) of ``out``'s checkpoint; one clear error when there is
    none or it is corrupt."""
    ckpt = out / CKPT
    if not ckpt.exists() and (out / f".{CKPT}.old").exists():
        ckpt = out / f".{CKPT}.old"  # a crash between the two renames
    if not (ckpt / "state.json").is_file():
        raise OfaEdgeError(f"{out}: no checkpoint to resume (expected {ckpt}/state.json)")
    try:
        state = json.loads((ckpt / "state.json").read_text())
        trainer = load_file(str(ckpt / "trainer.safetensors"))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{ckpt}: corrupt training checkpoint ({type(exc).__name__}: {exc})") from None
    return ckpt, state, trainer
