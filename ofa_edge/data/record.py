"""The dataset record: which images a supernet was trained on, and how they become model input.

A supernet checkpoint carries, in its header, a :class:`DatasetRecord` (the dataset's kind and
reference, a fingerprint, the class names in label order, the input channels, the trained
resolutions, the split rule and where the test split comes from) and an *input contract*
(:func:`input_contract`). Every command that reads images opens them through
:func:`open_record_data`, so nothing after training assumes a particular dataset, and ``--data
PATH`` can point the same record at another copy of the images or at a user's own held-out set.
Labels are always mapped by class name, never by folder position.

A checkpoint without a record (the shipped one and every run before records existed) means
Fashion-MNIST with val 5,000, seed 0 and test t10k (:data:`LEGACY_RECORD`).

numpy only (no torch): the runner side never imports this, but ``ofa-edge data`` does.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ofa_edge.data.splits import Splits, _resolve_count, train_val_split
from ofa_edge.errors import DataError
from ofa_edge.fileio import atomic_path

RECORD_VERSION = 1
CALIBRATION_NAME = "calibration.npz"
#: BN-recalibration images stored with a run (the first ``n`` of calibration_indices(train, 2000, 0))
CALIBRATION_IMAGES = 2000
#: int8-calibration images stored with a run (the first of the train split)
QUANT_IMAGES = 200


@dataclass(frozen=True)
class DatasetRecord:
    """What a supernet was trained on (stored in the checkpoint header under ``dataset``)."""

    kind: str                       # "fashion-mnist" | "folder" | "npz"
    ref: str                        # a registered name, or an absolute path
    fingerprint: dict               # {"files": N, "sha256": hex of sorted (relative path, label)}
    classes: tuple[str, ...]        # class names in label order
    channels: int                   # channels of the source images (1 gray, 3 RGB); the model takes 3
    resolutions: tuple[int, ...]    # trained resolutions
    val_size: int | float = 5000    # the split rule: val carved out of train (count or fraction) ...
    seed: int = 0                   # ... with this seed
    test_from: str = "t10k"         # where the test split comes from
    test_files: tuple[str, ...] | None = None  # the carved test split, file by file (relative paths)
    image_size: int | None = None   # the size images were decoded to (None: the source size)
    legacy: bool = field(default=False, compare=False)  # no record in the header: the documented default

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "kind": self.kind, "ref": self.ref, "fingerprint": dict(self.fingerprint),
                "classes": list(self.classes), "channels": self.channels, "resolutions": list(self.resolutions),
                "split": {"val_size": self.val_size, "seed": self.seed, "test_from": self.test_from},
                "test_files": list(self.test_files) if self.test_files is not None else None,
                "image_size": self.image_size}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "DatasetRecord":
        if d.get("version") != RECORD_VERSION:
            raise DataError(f"dataset record version {d.get('version')!r}; this ofa-edge reads {RECORD_VERSION}")
        split = d.get("split") or {}
        files = d.get("test_files")
        return cls(kind=d["kind"], ref=d["ref"], fingerprint=dict(d["fingerprint"]), classes=tuple(d["classes"]),
                   channels=int(d["channels"]), resolutions=tuple(int(r) for r in d["resolutions"]),
                   val_size=split.get("val_size", 5000), seed=int(split.get("seed", 0)),
                   test_from=split.get("test_from", "t10k"), test_files=tuple(files) if files is not None else None,
                   image_size=d.get("image_size"))

    @classmethod
    def from_dataset(cls, ds, val_size: int | float, seed: int, resolutions) -> "DatasetRecord":
        """The record of a loaded :class:`~ofa_edge.data.Dataset`."""
        kind = getattr(ds, "kind", "folder")
        ref = kind if kind == "fashion-mnist" else str(Path(ds.source).expanduser().resolve())
        files = getattr(ds, "test_files", None)
        pre = getattr(ds, "preprocess", None) or {}
        return cls(kind=kind, ref=ref, fingerprint=dict(getattr(ds, "fingerprint", {}) or {}), classes=ds.classes,
                   channels=ds.image_shape[2], resolutions=tuple(sorted(set(int(r) for r in resolutions))),
                   val_size=val_size, seed=seed, test_from=getattr(ds, "test_from", "t10k"),
                   test_files=tuple(files) if files is not None else None, image_size=pre.get("size"))

    def describe(self) -> str:
        """One line: what and where."""
        n = self.fingerprint.get("files")
        count = f", {n:,} files" if isinstance(n, int) else ""
        where = self.kind if self.ref == self.kind else f"{self.kind} {self.ref}"
        return f"{where} ({len(self.classes)} classes{count})"


#: What a checkpoint without a dataset record was trained on.
LEGACY_RECORD = DatasetRecord(
    kind="fashion-mnist", ref="fashion-mnist", fingerprint={}, channels=1, resolutions=(),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
    val_size=5000, seed=0, test_from="t10k", legacy=True)


def record_from_header(header: dict) -> DatasetRecord:
    """The dataset record of a checkpoint header; the documented default when it has none."""
    if header.get("dataset"):
        return DatasetRecord.from_json(header["dataset"])
    trained = tuple(header.get("trained_resolutions") or ())
    return replace(LEGACY_RECORD, resolutions=trained)


def input_contract(source_channels: int, mean, std) -> dict[str, Any]:
    """How an image becomes model input; machine-readable, the same in headers and manifests.

    The model takes float32 NCHW in [0, 1] with 3 channels; gray images are repeated to 3
    channels; images are resized bilinearly (antialiased when shrinking); the normalisation by
    ``mean``/``std`` is *inside* the model, so a consumer must not apply it again.
    """
    return {"channels": 3, "source_channels": int(source_channels), "color": "RGB",
            "gray_to_rgb": "repeat", "resize": "bilinear", "antialias": "when shrinking",
            "range": [0.0, 1.0], "normalization_in_model": True,
            "in_model_mean": [float(m) for m in mean], "in_model_std": [float(s) for s in std]}


# ---------------------------------------------------------------- opening the images of a record


@dataclass(frozen=True, eq=False)
class RecordData(Splits):
    """The splits a command scores, labels in the record's class order, and where they came from."""

    record: DatasetRecord = LEGACY_RECORD
    source: str = ""                # where the images were read
    matches: bool = False           # the images are the recorded dataset (fingerprint equal)
    note: str = ""                  # which split is scored, in words
    fingerprint: dict = field(default_factory=dict)  # of the images read
    bn_source: str = "the training split"  # where BN-recalibration images come from, in words


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def class_mapping(found: tuple[str, ...], known: tuple[str, ...], source: str) -> np.ndarray:
    """For each class of ``found`` (a dataset's order), its label in ``known`` (the record's).

    Names match exactly, else after folding case and punctuation ("T-shirt/top" == "t-shirt_top").
    A class the record does not know is refused.
    """
    exact = {c: i for i, c in enumerate(known)}
    folded = {_norm(c): i for i, c in enumerate(known)}
    out = []
    for c in found:
        i = exact.get(c, folded.get(_norm(c)))
        if i is None:
            shown = ", ".join(known[:6]) + (", ..." if len(known) > 6 else "")
            raise DataError(f"{source} has a class {c!r} that the supernet was not trained on (its classes: "
                            f"{shown}); remove that class folder or pass the right --data")
        out.append(i)
    return np.asarray(out, dtype=np.int64)


def _has_idx(path: Path) -> bool:
    return path.is_dir() and any(path.glob("train-images-idx3-ubyte*"))


def _load(record: DatasetRecord, data: str | os.PathLike | None, skip_bad: bool, test_files=None):
    from ofa_edge.data.datasets import load_dataset

    if record.kind == "fashion-mnist" and (data is None or _has_idx(Path(data).expanduser())):
        return load_dataset("fashion-mnist", data=data)
    target = record.ref if data is None else str(data)
    kwargs: dict[str, Any] = {"image_size": record.image_size}
    if skip_bad:
        kwargs["skip_bad"] = True
    if test_files is not None:
        kwargs["test_files"] = list(test_files)
    return load_dataset(target, **kwargs)


def open_record_data(record: DatasetRecord, data: str | os.PathLike | None = None, skip_bad: bool = False,
                     log: Callable[[str], None] | None = None) -> RecordData:
    """Load the images of ``record`` (or of ``data``, which overrides where they are), map their
    labels to the record's classes, and split them as the record says.

    With the recorded images (the fingerprint matches), train/val/test are exactly the run's. With
    other images (``--data`` with a user's own set) the test split is their own test part (a
    ``test/`` folder, t10k or ``x_test``), or every image when they have none; val is carved by
    the record's rule. ``log`` receives one line saying which split is scored.
    """
    if record.kind == "imagenet":  # images read per resolution (the reference's resize and crop)
        from ofa_edge.data.imagenet import open_imagenet_data

        return open_imagenet_data(record, data, log)
    ds = _load(record, data, skip_bad)
    fp = getattr(ds, "fingerprint", None) or {}
    if record.legacy:  # no fingerprint recorded: Fashion-MNIST's IDX files are the recorded dataset
        matches = getattr(ds, "kind", None) == "fashion-mnist"
    else:
        matches = fp == record.fingerprint
    if matches and record.test_files is not None and tuple(getattr(ds, "test_files", None) or ()) != record.test_files:
        ds = _load(record, data, skip_bad, test_files=record.test_files)
    mapping = class_mapping(tuple(ds.classes), tuple(record.classes), ds.source)
    train_x, train_y = ds.train_x, mapping[ds.train_y]
    test_x, test_y = ds.test_x, mapping[ds.test_y]
    if matches:
        note = f"the recorded dataset ({record.describe()}); test split: {record.test_from}"
    else:
        own = getattr(ds, "test_from", "")
        if own.startswith("carved"):
            # a held-out set without its own test part: every image of it is scored
            test_x, test_y = np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])
            note = (f"{ds.source} is not the dataset the supernet was trained on (fingerprint differs): "
                    f"scoring all {len(test_y):,} of its images as the test split")
        else:
            note = (f"{ds.source} is not the dataset the supernet was trained on (fingerprint differs): "
                    f"scoring its own test split ({own or 'test'}, {len(test_y):,} images)")
    n_val = record.val_size
    try:
        _resolve_count(n_val, len(train_y))
    except DataError:
        n_val = 0.1 if len(train_y) >= 20 else 0  # a small held-out set: val is a tenth of its train part
    tr, va = train_val_split(train_y, n_val, seed=record.seed) if n_val else (np.arange(len(train_y)), np.zeros(0, np.int64))
    if log:
        log(note)
    return RecordData(train_x=train_x[tr], train_y=train_y[tr], val_x=train_x[va], val_y=train_y[va],
                      test_x=test_x, test_y=test_y, seed=record.seed, record=record, source=ds.source,
                      matches=matches, note=note, fingerprint=dict(fp))


# ---------------------------------------------------------------- calibration images kept with a run


def calibration_indices(n_train: int, n: int, seed: int = 0) -> np.ndarray:
    """A fixed, seeded choice of ``n`` training images for BN recalibration (sorted)."""
    return np.sort(np.random.default_rng(seed + 12345).permutation(n_train)[:n])


def save_calibration(folder: str | os.PathLike, calib: "Calibration") -> Path:
    """Store the BN-recalibration and int8-calibration images in ``folder`` (atomically), so bench
    and deploy work on a machine that lacks the training set."""
    path = Path(folder) / CALIBRATION_NAME
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, bn_x=np.ascontiguousarray(calib.bn_x), bn_index=calib.bn_index,
                            n_train=np.int64(calib.n_train), quant_x=np.ascontiguousarray(calib.quant_x))
    return path


@dataclass(frozen=True)
class Calibration:
    """BN-recalibration and int8-calibration images of a run (uint8 NHWC)."""

    bn_x: np.ndarray
    bn_index: np.ndarray
    n_train: int
    quant_x: np.ndarray

    def bn_images(self, n: int) -> np.ndarray:
        """The images ``calibration_indices(n_train, n, 0)`` picks (n at most the stored count)."""
        if n >= len(self.bn_index):
            return self.bn_x
        wanted = calibration_indices(self.n_train, n, 0)
        return self.bn_x[np.searchsorted(self.bn_index, wanted)]

    @classmethod
    def from_train(cls, train_x: np.ndarray) -> "Calibration":
        """The calibration images of a train split (uint8 NHWC)."""
        from ofa_edge.data.imagenet import ImageList

        n_train = len(train_x)
        index = calibration_indices(n_train, min(CALIBRATION_IMAGES, n_train), 0)
        if isinstance(train_x, ImageList):  # decoded later, at the subnet's resolution
            return cls(bn_x=train_x[index], bn_index=index, n_train=n_train, quant_x=train_x[:QUANT_IMAGES])
        return cls(bn_x=np.ascontiguousarray(train_x[index]), bn_index=index, n_train=n_train,
                   quant_x=np.ascontiguousarray(train_x[:QUANT_IMAGES]))

    @classmethod
    def from_data(cls, data: RecordData) -> "Calibration":
        return cls.from_train(data.train_x)


def load_calibration(folder: str | os.PathLike) -> Calibration | None:
    """The calibration images stored in a run folder, or None when it has none."""
    path = Path(folder) / CALIBRATION_NAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return Calibration(bn_x=z["bn_x"], bn_index=z["bn_index"], n_train=int(z["n_train"]), quant_x=z["quant_x"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is corrupt ({exc}); delete it and rerun `ofa-edge train --resume` "
                        "or pass --data PATH to the training images") from None
