"""Deterministic stratified splits and channel conversion (numpy only)."""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ofa_edge.errors import DataError

if TYPE_CHECKING:  # avoid an import cycle: base.py uses train_val_split
    from ofa_edge.data.base import Dataset


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise DataError("labels must be non-negative class indices.")
    return labels


def _resolve_count(val_size: int | float, n: int) -> int:
    """Turn a count or a fraction in (0, 1) into a number of validation samples."""
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise DataError(f"val_size must be a count or a fraction in (0, 1), got {val_size!r}.")
    if isinstance(val_size, numbers.Integral):
        count = int(val_size)
        if not 0 <= count < n:
            raise DataError(f"val_size={count} is impossible with {n} samples: use 0 <= val_size < {n}, or a fraction.")
        return count
    frac = float(val_size)
    if not 0.0 < frac < 1.0:
        raise DataError(f"val_size={val_size} is neither a count nor a fraction in (0, 1); pass e.g. 5000 or 0.1.")
    count = int(round(frac * n))
    if not 0 < count < n:
        raise DataError(
            f"val_size={val_size} of {n} samples gives {count} validation samples; "
            "use a larger fraction or an explicit count."
        )
    return count


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes proportionally to ``counts`` (largest remainder).

    Balanced classes get equal shares. Leftover units go first to classes that keep at
    least one training sample, largest fractional part first, ties by class index.
    """
    n = int(counts.sum())
    exact = counts * (total / n)
    alloc = np.floor(exact).astype(np.int64)
    left = total - int(alloc.sum())
    order = np.argsort(-(exact - alloc), kind="stable")
    keeps_one = [c for c in order if alloc[c] < counts[c] - 1]
    others = [c for c in order if counts[c] - 1 <= alloc[c] < counts[c]]
    for c in (keeps_one + others)[:left]:
        alloc[c] += 1
    return alloc


def train_val_split(
    labels: np.ndarray, val_size: int | float = 5000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted, disjoint ``(train_idx, val_idx)`` covering ``range(len(labels))``.

    Stratified: each class gives a share of ``val_size`` proportional to its size (equal
    shares for balanced classes, e.g. 500 per class for 5000 of Fashion-MNIST's 10).
    Which samples are drawn depends only on ``labels`` and ``seed``.
    """
    labels = _check_labels(labels)
    n = labels.size
    count = _resolve_count(val_size, n)
    if count == 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    counts = np.bincount(labels)
    alloc = _allocate(counts, count)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(n, dtype=bool)
    for c in np.flatnonzero(alloc):
        members = np.flatnonzero(labels == c)
        is_val[rng.choice(members, size=int(alloc[c]), replace=False)] = True
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Splits:
    """Train/val carved from a dataset's train part; test is the dataset's own test part."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    seed: int

    def counts(self) -> dict[str, int]:
        """Number of samples in each split."""
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of ``name``: train, val or test."""
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}; use train, val or test")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


def make_splits(ds: Dataset, val_size: int | float = 5000, seed: int = 0) -> Splits:
    """Carve a stratified validation set out of ``ds``'s train part; leave test untouched."""
    train_idx, val_idx = train_val_split(ds.train_y, val_size, seed)
    return Splits(
        train_x=ds.train_x[train_idx], train_y=ds.train_y[train_idx],
        val_x=ds.train_x[val_idx], val_y=ds.train_y[val_idx],
        test_x=ds.test_x, test_y=ds.test_y, seed=seed,
    )


#: ITU-R BT.601 luma weights for R, G, B.
LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Convert NHWC uint8 images to ``channels`` (1 or 3) channels.

    1 -> 3 repeats the gray plane, 3 -> 1 uses ITU-R 601 luma, same -> same array.
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.dtype != np.uint8:
        raise DataError(f"to_channels needs NHWC uint8 images, got shape {x.shape} dtype {x.dtype}.")
    have = x.shape[-1]
    if channels not in (1, 3) or have not in (1, 3):
        raise DataError(f"cannot convert {have}-channel images to {channels} channels; only 1 and 3 are supported.")
    if have == channels:
        return x
    if have == 1:
        return np.repeat(x, 3, axis=-1)
    luma = x.astype(np.float32) @ LUMA_601
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
