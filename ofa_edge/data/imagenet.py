"""ImageNet-style evaluation data for supernets that record ImageNet (OFA's published ones).

``--data`` points at one of:

* ImageNet val as class folders: ``val/<wnid>/*.JPEG`` (pass ``val/`` itself);
* an ImageNet root with ``val/<wnid>/`` and a train-like ``train/<wnid>/``;
* flat image files plus a labels file, either in the folder (``labels.txt``, ``val_labels.txt``,
  ``val.txt``, ``LOC_val_solution.csv``) or passed as the file itself. Lines are
  ``<file> <label>`` (space, tab or comma), the label a WordNet id or a class index in the
  sorted-wnid order; Kaggle's ``LOC_val_solution.csv`` is read as it is.

Images are read with the reference's evaluation preprocessing (shorter side to ceil(r / 0.875),
centre crop r; ``decode.center_crop_box``), which depends on the resolution r, so they are kept as
an :class:`ImageList` that decodes, and caches on disk, once per resolution.

BN recalibration uses the train folder when there is one, else a marked slice of val (seeded,
left out of the scored images); the returned data says which.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ofa_edge.data import cache
from ofa_edge.data.decode import Runner, decode_all
from ofa_edge.data.folder import IMAGE_SUFFIXES, _subdirs, folder_fingerprint
from ofa_edge.errors import DataError

#: The reference's evaluation crop: the centre 87.5% of the shorter side.
EVAL_CROP = 0.875
LABEL_FILES = ("labels.txt", "val_labels.txt", "val.txt", "LOC_val_solution.csv")
#: Without a train folder, at most this many val images (seeded) recalibrate BN and are not scored.
VAL_SLICE_MAX = 2000
WNID = re.compile(r"n\d{8}")


@dataclass(eq=False)
class ImageList:
    """Image files read lazily at a resolution: ``at(r)`` gives uint8 (N, r, r, 3), decoded with
    the reference's evaluation preprocessing and cached per resolution (memory and disk).
    Slicing or indexing with an index array gives another ImageList of those files."""

    paths: tuple[str, ...]
    stats: tuple[tuple[int, int], ...]  # (size, mtime_ns) of each file: part of the cache key
    cache_dir: str | None = None
    _decoded: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> "ImageList":
        if isinstance(index, slice):
            picked = range(len(self.paths))[index]
        else:
            picked = np.arange(len(self.paths))[np.asarray(index)].reshape(-1)
        return ImageList(tuple(self.paths[i] for i in picked), tuple(self.stats[i] for i in picked), self.cache_dir)

    def at(self, resolution: int) -> np.ndarray:
        """The images at ``resolution`` (uint8 NHWC), decoded once."""
        if resolution not in self._decoded:
            self._decoded[resolution] = _decode_at(self, int(resolution))
        return self._decoded[resolution]


def images_at(images, resolution: int) -> np.ndarray:
    """``images`` as a uint8 NHWC array: an ImageList decoded at ``resolution``; an array as it is."""
    return images.at(resolution) if isinstance(images, ImageList) else images


def _decode_at(images: ImageList, resolution: int) -> np.ndarray:
    preprocess = {"resize_shorter_to": f"ceil({resolution} / {EVAL_CROP})", "crop": "center",
                  "size": resolution, "interpolation": "bilinear", "color": "RGB"}
    if not images.paths:
        return np.zeros((0, resolution, resolution, 3), np.uint8)
    key = cache.data_key(cache.cache_key(("eval", p, "", s, m) for p, (s, m) in zip(images.paths, images.stats)),
                         preprocess)
    folder = cache.cache_dir(images.cache_dir)
    hit = cache.load_entry(folder, key)
    if hit is not None:
        return hit[0]
    tmp = cache.new_entry(folder, key, (len(images.paths), resolution, resolution, 3))
    try:
        with Runner(len(images.paths)) as runner:
            failed = decode_all(str(tmp), list(enumerate(images.paths)), "RGB", resolution, runner, crop=EVAL_CROP)
        if failed:
            first = min(failed)
            raise DataError(f"bad image {images.paths[first]}: {failed[first]}; fix or remove it "
                            f"({len(failed)} bad file(s) among {len(images.paths):,})")
        cache.commit_entry(folder, key, tmp, {"shape": [len(images.paths), resolution, resolution, 3],
                                              "preprocess": preprocess, "bad": []})
    finally:
        cache.drop_temp(tmp)
    return cache.load_committed(folder, key)[0]


# ---------------------------------------------------------------- listing


@dataclass(frozen=True)
class Part:
    """One part of an ImageNet-style folder: files (absolute) and labels in the record's order."""

    where: str
    files: tuple[str, ...]
    labels: np.ndarray


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; fix it or remove it from the dataset.") from None
    return int(st.st_size), int(st.st_mtime_ns)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name[name.rfind("."):].lower() in IMAGE_SUFFIXES


def _class_folder_part(folder: Path, classes: Sequence[str]) -> Part:
    """``folder/<wnid>/*``: every class folder must be one of the record's classes."""
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for name in _subdirs(folder):
        if name not in index:
            shown = ", ".join(list(classes)[:3])
            raise DataError(f"{folder / name} is not one of the supernet's {len(classes):,} classes (WordNet ids "
                            f"like {shown}, ...); remove that folder or pass ImageNet's val/<wnid>/ folders")
        try:
            with os.scandir(folder / name) as it:
                found = sorted(e.name for e in it if _is_image(e.name))
        except OSError as e:
            raise DataError(f"cannot list {folder / name}: {e.strerror or e}; check its permissions.") from None
        files += [str(folder / name / f) for f in found]
        labels += [index[name]] * len(found)
    if not files:
        raise DataError(f"no images in the class folders of {folder}; expected {folder}/<wnid>/*.JPEG")
    return Part(str(folder), tuple(files), np.asarray(labels, np.int64))


def _parse_label(text: str, classes: Sequence[str], index: dict[str, int], where: str) -> int:
    if text in index:
        return index[text]
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    raise DataError(f"{where}: label {text!r} is neither one of the supernet's WordNet ids nor a class index "
                    f"0-{len(classes) - 1} (sorted-wnid order); fix the labels file")


def _labels_file_part(labels: Path, classes: Sequence[str]) -> Part:
    """Flat files named by a labels file (paths relative to the labels file's folder)."""
    index = {c: i for i, c in enumerate(classes)}
    base = labels.parent
    try:
        lines = labels.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the labels file {labels}: {e}; pass a text file of '<file> <wnid>' lines") from None
    kaggle = bool(lines) and lines[0].replace(" ", "").lower().startswith("imageid,predictionstring")
    files, out = [], []
    for number, line in enumerate(lines[1:] if kaggle else lines, start=2 if kaggle else 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{labels}:{number}"
        if kaggle:
            name, _, rest = line.partition(",")
            label_text = rest.split()[0] if rest.split() else ""
        else:
            fields = re.split(r"[\s,]+", line)
            if len(fields) == 1 and fields[0].isdigit():
                raise DataError(f"{where}: a line with a number and no file name: this looks like the devkit's "
                                "ILSVRC2012_validation_ground_truth.txt, whose ids are not the sorted-wnid order; "
                                "write '<file> <wnid>' lines instead")
            if len(fields) < 2:
                raise DataError(f"{where}: expected '<file> <label>', got {line!r}")
            name, label_text = fields[0], fields[1]
        path = base / name
        if not path.is_file() and not Path(name).suffix and (base / f"{name}.JPEG").is_file():
            path = base / f"{name}.JPEG"  # Kaggle's ImageId has no extension
        if not path.is_file():
            raise DataError(f"{where}: {path} is missing; the labels file and the images must be in one folder")
        files.append(str(path))
        out.append(_parse_label(label_text, classes, index, where))
    if not files:
        raise DataError(f"the labels file {labels} lists no images; write one '<file> <wnid>' line per image")
    return Part(str(labels), tuple(files), np.asarray(out, np.int64))


def _labels_file_in(folder: Path) -> Path | None:
    found = [folder / n for n in LABEL_FILES if (folder / n).is_file()]
    if len(found) > 1:
        raise DataError(f"{folder} has several labels files ({', '.join(p.name for p in found)}); "
                        "pass the one to use as --data")
    return found[0] if found else None


def _has_wnid_dirs(folder: Path) -> bool:
    return folder.is_dir() and any(WNID.fullmatch(n) for n in _subdirs(folder))


def list_imagenet(data: str | os.PathLike, classes: Sequence[str]) -> tuple[Part, Part | None]:
    """(the images to score, the train-like images or None) of ``data`` in any accepted layout."""
    root = Path(os.path.abspath(Path(data).expanduser()))
    if root.is_file():
        return _labels_file_part(root, classes), None
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder; pass ImageNet's val/ (val/<wnid>/*.JPEG) or a "
                        "folder of images with a labels file")
    if _has_wnid_dirs(root / "val"):
        train = _class_folder_part(root / "train", classes) if _has_wnid_dirs(root / "train") else None
        return _class_folder_part(root / "val", classes), train
    if _subdirs(root) and not any(_is_image(p.name) for p in root.iterdir()):
        return _class_folder_part(root, classes), None
    labels = _labels_file_in(root)
    if labels is None:
        raise DataError(f"{root} has neither <wnid>/ class folders nor a labels file ({', '.join(LABEL_FILES)}); "
                        "pass ImageNet's val/ folder, or add a labels file of '<file> <wnid>' lines")
    return _labels_file_part(labels, classes), None


# ---------------------------------------------------------------- splits for the commands


def _image_list(files: Sequence[str], cache_dir: str | None) -> ImageList:
    return ImageList(tuple(files), tuple(_stat(f) for f in files), cache_dir)


def open_imagenet_data(record, data: str | os.PathLike | None, log: Callable[[str], None] | None = None,
                       cache_dir: str | None = None):
    """The RecordData of an ImageNet record: images as :class:`ImageList` (decoded per resolution).

    With a train folder: test is val, val is a seeded carve of ``record.val_size`` train images,
    BN recalibration draws from the rest of train. Without one: a marked, seeded slice of val
    (at most :data:`VAL_SLICE_MAX`, a tenth at most) recalibrates BN and is not scored; val and
    test are the same remaining images.
    """
    from ofa_edge.data.record import RecordData, calibration_indices
    from ofa_edge.data.splits import train_val_split

    if data is None:
        raise DataError(f"this supernet records ImageNet ({len(record.classes):,} classes) and ofa-edge ships no "
                        "ImageNet: pass --data PATH, ImageNet's val/ (val/<wnid>/*.JPEG) or image files with a "
                        "labels file of '<file> <wnid>' lines")
    scored, train = list_imagenet(data, record.classes)
    names = record.classes
    base = Path(scored.where) if Path(scored.where).is_dir() else Path(scored.where).parent
    fingerprint = folder_fingerprint((os.path.relpath(f, base), names[y]) for f, y in zip(scored.files, scored.labels))
    # Listings are sorted by class: scored images are shuffled (seeded), so that the first N of
    # them (deploy's --eval-images, eval's --images) are a fair sample of every class.
    shuffle = np.random.default_rng(record.seed + 1).permutation
    if train is not None:
        n_val = record.val_size if record.val_size < len(train.labels) else 0.1
        tr, va = train_val_split(train.labels, n_val, seed=record.seed)
        va = va[shuffle(len(va))]
        train_x, train_y = _image_list([train.files[i] for i in tr], cache_dir), train.labels[tr]
        val_x, val_y = _image_list([train.files[i] for i in va], cache_dir), train.labels[va]
        order = shuffle(len(scored.labels))
        test_x, test_y = _image_list([scored.files[i] for i in order], cache_dir), scored.labels[order]
        bn_source = f"train folder {train.where} ({len(train_y):,} images outside the val carve)"
        note = (f"{scored.where}: scoring {len(test_y):,} val images as the test split; val split: "
                f"{len(val_y):,} images carved from {train.where} (seed {record.seed}); BN recalibration: {bn_source}")
    else:
        n_slice = max(1, min(VAL_SLICE_MAX, len(scored.labels) // 10))
        marked = calibration_indices(len(scored.labels), n_slice, record.seed)
        rest = np.setdiff1d(np.arange(len(scored.labels)), marked)
        rest = rest[shuffle(len(rest))]
        train_x, train_y = _image_list([scored.files[i] for i in marked], cache_dir), scored.labels[marked]
        val_x = test_x = _image_list([scored.files[i] for i in rest], cache_dir)
        val_y = test_y = scored.labels[rest]
        bn_source = (f"a marked slice of {n_slice:,} val images of {scored.where} (seed {record.seed}), "
                     "not scored; pass an ImageNet root with train/ to recalibrate on training images")
        note = (f"{scored.where}: no train folder, so BN recalibration uses {bn_source}; val and test are the "
                f"other {len(test_y):,} images")
    if log:
        log(note)
    return RecordData(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x, test_y=test_y,
                      seed=record.seed, record=record, source=scored.where, matches=False, note=note,
                      fingerprint=fingerprint, bn_source=bn_source)
