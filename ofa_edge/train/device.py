"""Choosing the torch device and the autocast precision; one code path for CPU and CUDA.

Callers pass the resolved ``torch.device`` down to every function that makes tensors; nothing
here sets a global default device.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ofa_edge.errors import OfaEdgeError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``cpu``; ``cuda`` or ``cuda:N``.

    Raises ``OfaEdgeError`` (one line) when CUDA is asked for but not available.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OfaEdgeError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise OfaEdgeError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise OfaEdgeError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); "
                           "use --device cpu or auto")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise OfaEdgeError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return device


def amp_dtype(name: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device``: ``auto``/None -> bf16 on CUDA, off on
    the CPU; ``bf16`` -> bf16; ``fp16`` -> fp16 (CUDA only); ``off`` -> None (fp32)."""
    name = (name or "auto").strip().lower()
    if name not in AMP_CHOICES:
        raise OfaEdgeError(f"unknown --amp {name!r}; use {', '.join(AMP_CHOICES)}")
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if name == "fp16" and device.type != "cuda":
        raise OfaEdgeError("--amp fp16 (with its loss scaler) is for CUDA; on the CPU use --amp bf16 or off")
    return _AMP_DTYPES.get(name)


@contextlib.contextmanager
def autocast(device: torch.device, amp: torch.dtype | str | None) -> Iterator[None]:
    """Autocast to ``amp`` (a dtype, or an ``--amp`` name) on ``device``; fp32 when None/off."""
    dtype = amp_dtype(amp, device) if isinstance(amp, str) else amp
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
