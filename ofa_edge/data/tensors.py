"""From uint8 NHWC images to model input: float32 NCHW (channels_last), 3 channels, [0, 1].

This is the whole preprocessing contract of every ofa-edge model (the normalisation is inside
the model). Imports torch, so it is not re-exported by ``ofa_edge.data``.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ofa_edge.data.imagenet import images_at


def resize_float(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) floats to ``resolution`` (antialiased when shrinking)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=resolution < x.shape[-1])


def to_model_input(images, resolution: int | None = None) -> torch.Tensor:
    """uint8 (N, H, W, 1 or 3) -> float32 (N, 3, R, R) in [0, 1], channels_last. ``images``: an
    array, a tensor, or an :class:`~ofa_edge.data.imagenet.ImageList` (decoded at ``resolution``)."""
    if resolution is not None:
        images = images_at(images, resolution)
    x = torch.as_tensor(images)
    if x.dim() != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, H, W, 1 or 3), got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if resolution is not None:
        x = resize_float(x, resolution)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last)


def batches(images: np.ndarray | torch.Tensor, resolution: int | None, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Model-ready batches of ``images`` in order."""
    for start in range(0, len(images), batch_size):
        yield to_model_input(images[start:start + batch_size], resolution)
