"""Batch augmentation for small gray images, on tensors (fast on CPU, seeded)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad_crop: int = 2, hflip: bool = True,
                  erase: float = 0.0) -> torch.Tensor:
    """x: (N, C, H, W) float in [0, 1]. Random crop after zero padding, horizontal flip,
    optional random erasing of one rectangle (up to a quarter of the image)."""
    n, _, h, w = x.shape
    if pad_crop:
        padded = F.pad(x, (pad_crop,) * 4)
        oy = torch.randint(0, 2 * pad_crop + 1, (n,), generator=gen)
        ox = torch.randint(0, 2 * pad_crop + 1, (n,), generator=gen)
        rows = (oy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w)[None, :])[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    if hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if erase > 0:
        hit = torch.rand(n, generator=gen) < erase
        eh = torch.randint(h // 8, h // 2 + 1, (n,), generator=gen)
        ew = torch.randint(w // 8, w // 2 + 1, (n,), generator=gen)
        y0 = (torch.rand(n, generator=gen) * (h - eh + 1)).long()
        x0 = (torch.rand(n, generator=gen) * (w - ew + 1)).long()
        ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
        my = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
        mx = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
        mask = (my[:, :, None] & mx[:, None, :] & hit[:, None, None])[:, None]
        x = x.masked_fill(mask, 0.0)
    return x
