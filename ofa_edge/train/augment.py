"""Batch augmentation for small gray images, seeded per sample.

Each image's random crop, flip and erased rectangle depend only on a key (the seed, phase and
epoch) and the image's index in the training set: not on the batch it lands in, the rank that
loads it, or the device. The random numbers are drawn on the CPU (a counter-based hash in
numpy) and the augmentation is applied on whatever device the batch is on.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_DRAWS = 8  # uniforms per sample: crop y, crop x, flip, erase hit, erase h, erase w, erase y0, erase x0


def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_uniforms(key: int, index: torch.Tensor | np.ndarray, draws: int = _DRAWS) -> np.ndarray:
    """(N, draws) float64 uniforms in [0, 1) that depend only on ``key`` and each sample index."""
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        state = _mix(_mix(np.uint64(key % 2**63) + _GOLDEN) ^ (idx * _GOLDEN + np.uint64(1)))
        counters = (np.arange(1, draws + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        bits = _mix(state[:, None] + counters)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def augment_batch(x: torch.Tensor, key: int, index: torch.Tensor | np.ndarray, pad_crop: int = 2,
                  hflip: bool = True, erase: float = 0.0) -> torch.Tensor:
    """x: (N, C, H, W) float in [0, 1], sample ``index`` (N,) into the training set. Random crop
    after zero padding, horizontal flip, optional random erasing of one rectangle (up to a
    quarter of the image); the same for a sample whatever its batch, rank or device."""
    n, c, h, w = x.shape
    u = sample_uniforms(key, index)

    def ints(col: int, low: np.ndarray | int, count: np.ndarray | int) -> torch.Tensor:
        """low + floor(u * count): an integer in [low, low + count) per sample, on x's device."""
        return torch.from_numpy(low + np.floor(u[:, col] * count).astype(np.int64)).to(x.device)

    dev = x.device
    if pad_crop:
        padded = F.pad(x, (pad_crop,) * 4)
        oy, ox = ints(0, 0, 2 * pad_crop + 1), ints(1, 0, 2 * pad_crop + 1)
        rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
        x = padded[torch.arange(n, device=dev)[:, None, None, None],
                   torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    if hflip:
        flip = torch.from_numpy(u[:, 2] < 0.5).to(dev)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if erase > 0:
        hit = torch.from_numpy(u[:, 3] < erase).to(dev)
        eh_np = h // 8 + np.floor(u[:, 4] * (h // 2 - h // 8 + 1)).astype(np.int64)
        ew_np = w // 8 + np.floor(u[:, 5] * (w // 2 - w // 8 + 1)).astype(np.int64)
        y0, x0 = ints(6, 0, h - eh_np + 1), ints(7, 0, w - ew_np + 1)
        eh, ew = torch.from_numpy(eh_np).to(dev), torch.from_numpy(ew_np).to(dev)
        ys, xs = torch.arange(h, device=dev)[None, :], torch.arange(w, device=dev)[None, :]
        my = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
        mx = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
        mask = (my[:, :, None] & mx[:, None, :] & hit[:, None, None])[:, None]
        x = x.masked_fill(mask, 0.0)
    return x
