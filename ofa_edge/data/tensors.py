"""From uint8 NHWC arrays to model input: float32 NCHW, 3 channels, [0, 1], at a resolution.

This is the whole preprocessing contract of every ofa-edge model (the normalisation is inside
the model). Imports torch, so it is not re-exported by ``ofa_edge.data``.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ofa_edge.data.splits import to_channels


def to_model_input(images: np.ndarray, resolution: int | None = None) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, 3, R, R) in [0, 1]; bilinear resize when R differs."""
    x = torch.from_numpy(np.ascontiguousarray(to_channels(images, 3))).permute(0, 3, 1, 2).float().div_(255.0)
    if resolution is not None and x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=resolution < x.shape[-1]).clamp_(0.0, 1.0)
    return x


def batches(images: np.ndarray, resolution: int | None, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Model-ready batches of ``images`` in order."""
    for start in range(0, len(images), batch_size):
        yield to_model_input(images[start:start + batch_size], resolution)
