"""The :class:`Dataset` every loader returns, the test hold-out rule and ``describe`` (numpy only)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ofa_edge.data.splits import Splits, train_val_split
from ofa_edge.errors import DataError

#: A source without a test part gives this stratified fraction of its images to test ...
TEST_HOLDOUT_FRACTION = 1 / 6
#: ... drawn with this seed, so the same files always give the same split.
TEST_HOLDOUT_SEED = 0
#: ``Dataset.test_from`` of a carved test split (starts with "carved", which callers test for).
CARVED = f"carved: stratified 1/6, seed {TEST_HOLDOUT_SEED}"


class DatasetNotFound(DataError):
    """The dataset's files are not where we looked."""


def _check_images(x: np.ndarray, what: str) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype != np.uint8 or x.shape[-1] not in (1, 3):
        shape = getattr(x, "shape", None)
        raise DataError(f"{what} must be uint8 NHWC with 1 or 3 channels, got shape {shape} dtype {getattr(x, 'dtype', None)}.")


def array_preprocess(x: np.ndarray, resized: bool = False) -> dict[str, Any]:
    """The ``Dataset.preprocess`` of images that came as arrays (IDX, .npz, in memory)."""
    h, w, c = (int(v) for v in x.shape[1:])
    return {"channels": c, "resize": "bilinear" if resized else "none", "size": h if h == w else None,
            "color": "L" if c == 1 else "RGB", "alpha": "none"}


def labels_fingerprint(parts: list[np.ndarray], names: list[str] = ()) -> dict[str, Any]:
    """``{"files": samples, "sha256": ...}`` over label bytes (in order) and ``names``: cheap, stable."""
    h = hashlib.sha256()
    for y in parts:
        h.update(np.ascontiguousarray(y).tobytes())
    for name in names:
        h.update(name.encode() + b"\n")
    return {"files": int(sum(len(y) for y in parts)), "sha256": h.hexdigest()}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images (uint8 NHWC) and int64 labels for a train and a test part.

    ``kind`` is "fashion-mnist", "folder" or "npz" ("arrays" when built in memory);
    ``fingerprint`` identifies the images ({"files": count, "sha256": hex});
    ``test_from`` says where test comes from ("t10k", "test/", "x_test", or :data:`CARVED`);
    ``test_files`` lists a folder's test images (relative posix paths) when test is carved
    or was given; ``preprocess`` says how files became arrays; ``skipped`` lists bad files
    left out (relative paths).
    """

    name: str
    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str
    kind: str = "arrays"
    fingerprint: dict = field(default_factory=dict)
    test_from: str = ""
    test_files: tuple[str, ...] | None = None
    preprocess: dict = field(default_factory=dict)
    skipped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if not self.classes:
            raise DataError(f"dataset {self.name} has no classes.")
        for part in ("train", "test"):
            x, y = getattr(self, f"{part}_x"), np.asarray(getattr(self, f"{part}_y"))
            _check_images(x, f"{self.name} {part} images")
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise DataError(f"{self.name} {part} labels must be 1-D integers, got shape {y.shape} dtype {y.dtype}.")
            if len(y) != len(x):
                raise DataError(f"{self.name} {part} has {len(x)} images but {len(y)} labels; they must match.")
            if y.size and (y.min() < 0 or y.max() >= len(self.classes)):
                raise DataError(f"{self.name} {part} labels must lie in [0, {len(self.classes)}), found {y.min()}..{y.max()}.")
            object.__setattr__(self, f"{part}_y", y.astype(np.int64, copy=False))
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(
                f"{self.name} train images are {self.train_x.shape[1:]} but test images are "
                f"{self.test_x.shape[1:]}; both must have the same H, W, C."
            )
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", labels_fingerprint(
                [self.train_y.astype("<i8"), self.test_y.astype("<i8")], [repr(self.train_x.shape[1:])]))
        if not self.preprocess:
            object.__setattr__(self, "preprocess", array_preprocess(self.train_x))
        if self.test_files is not None:
            object.__setattr__(self, "test_files", tuple(self.test_files))
        object.__setattr__(self, "skipped", tuple(self.skipped))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.train_x.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def reference(self) -> str:
        """What to pass to ``load_dataset`` to load it again: a registered name or the path."""
        return self.kind if self.kind == "fashion-mnist" else self.source

    def class_counts(self, part: str = "train") -> list[int]:
        """Samples per class in ``part`` ('train' or 'test')."""
        y = getattr(self, f"{part}_y")
        return [int(n) for n in np.bincount(y, minlength=self.num_classes)]

    def info(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "classes": list(self.classes),
            "image_shape": list(self.image_shape),
            "dtype": str(self.train_x.dtype),
            "counts": {"train": len(self.train_y), "test": len(self.test_y)},
            "per_class": {
                part: dict(zip(self.classes, self.class_counts(part))) for part in ("train", "test")
            },
            "fingerprint": dict(self.fingerprint),
            "test_from": self.test_from,
            "preprocess": dict(self.preprocess),
            "skipped": len(self.skipped),
        }


def describe(ds: Dataset, splits: Splits | None = None) -> dict[str, Any]:
    """JSON-able summary for ``ofa-edge data info``: counts per split, shape, classes, source.

    Without ``splits`` the val count is 0 and train is the dataset's whole train part.
    """
    train_y = splits.train_y if splits is not None else ds.train_y
    val_y = splits.val_y if splits is not None else np.zeros(0, dtype=np.int64)
    per = {
        name: np.bincount(y, minlength=ds.num_classes)
        for name, y in (("train", train_y), ("val", val_y), ("test", ds.test_y))
    }
    return {
        "name": ds.name,
        "kind": ds.kind,
        "source": ds.source,
        "image_shape": list(ds.image_shape),
        "dtype": str(ds.train_x.dtype),
        "num_classes": ds.num_classes,
        "counts": {name: int(len(y)) for name, y in (("train", train_y), ("val", val_y), ("test", ds.test_y))},
        "seed": None if splits is None else int(splits.seed),
        "test_from": ds.test_from,
        "fingerprint": dict(ds.fingerprint),
        "preprocess": dict(ds.preprocess),
        "skipped": list(ds.skipped),
        "classes": [
            {"index": i, "name": c, **{name: int(per[name][i]) for name in per}}
            for i, c in enumerate(ds.classes)
        ],
    }


def holdout_indices(y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: a stratified 1/6 test, always the same for the same labels."""
    n = len(y)
    if n < 2:
        raise DataError(f"{what} has {n} sample(s); need at least 2 to hold out a test part, or provide one.")
    n_test = max(1, int(round(n * TEST_HOLDOUT_FRACTION)))
    return train_val_split(np.asarray(y), n_test, seed=TEST_HOLDOUT_SEED)


def holdout_test(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, ...]:
    """Split (x, y) into train and a stratified 1/6 test, always the same way."""
    tr, te = holdout_indices(y, what)
    return x[tr], y[tr], x[te], y[te]
