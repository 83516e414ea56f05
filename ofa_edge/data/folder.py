"""Image folders: ``root/<class>/*`` or ``root/{train,val,test}/<class>/*``, decoded once and cached.

Files are png, jpg/jpeg, bmp and webp (any case; hidden files and other suffixes are ignored;
sub-folders of a class folder are not searched). Classes are the sorted class folder names of
``root`` (or of ``root/train``). Images of ``val/`` join the train part (the recipe carves its
own validation split out of train); ``test/`` is the untouched test part and may lack a class,
but may not add one. Without ``test/``, a stratified 1/6 of the images (seed 0) is carved off
as test and listed file by file in ``Dataset.test_files``, which ``test_files=`` gives back.

Every image becomes uint8 N x N (bilinear, no crop: the aspect ratio is not kept): gray ("L",
one channel) when every file is gray, else RGB; alpha is dropped, 16-bit gray is scaled to 8
bits, palette images are colour. The decoded array is cached (see :mod:`ofa_edge.data.cache`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np

from ofa_edge.data import cache
from ofa_edge.data.base import CARVED, Dataset, DatasetNotFound, holdout_indices
from ofa_edge.data.decode import GRAY_MODES, Probe, Runner, decode_all, probe_all
from ofa_edge.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Entry:
    """One listed image: its path relative to the root (posix), class index, folder part, stat."""

    rel: str
    label: int
    part: str  # "train", "val" or "test": the folder it is in ("train" in a flat layout)
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Listing:
    """The files of an image folder, by part, then class, then name."""

    root: Path
    layout: str  # "flat" (root/<class>) or "split" (root/train/<class>, ...)
    classes: tuple[str, ...]
    entries: tuple[Entry, ...]


def _subdirs(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"cannot list {folder}: {e.strerror or e}; check its permissions.") from None


def _images(folder: Path, part: str, prefix: str, label: int) -> list[Entry]:
    """The image entries of one class folder (a directory named like an image is kept: it is bad)."""
    out, others = [], 0
    try:
        with os.scandir(folder) as it:
            found = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot list {folder}: {e.strerror or e}; check its permissions.") from None
    for e in found:
        if e.name[e.name.rfind("."):].lower() not in IMAGE_SUFFIXES:
            others += e.is_file()
            continue
        try:
            st = e.stat()
            size, mtime = int(st.st_size), int(st.st_mtime_ns)
        except OSError:  # a dangling link: reading it fails later, with a reason
            size, mtime = -1, 0
        out.append(Entry(f"{prefix}{e.name}", label, part, size, mtime))
    if not out:
        kinds = "/".join(sorted(s[1:] for s in IMAGE_SUFFIXES))
        extra = f" ({others} other file(s) ignored)" if others else ""
        raise DataError(f"class folder {folder} has no images ({kinds}){extra}; add some or remove the folder.")
    return out


def list_folder(root: Path) -> Listing:
    """List ``root`` in either layout; DataError for a bad layout, empty class folder or one class."""
    if not root.is_dir():
        raise DatasetNotFound(f"image folder not found: {root} is not a directory; "
                              "pass a folder with one sub-folder per class.")
    split = (root / "train").is_dir() and bool(_subdirs(root / "train"))
    if not split:
        for part in ("val", "test"):
            if (root / part).is_dir() and _subdirs(root / part) and not (root / "train").exists():
                raise DataError(f"{root} has a {part}/ folder of class folders but no train/; add "
                                f"train/<class>/ folders, or put the class folders directly in {root}.")
    base = root / "train" if split else root
    classes = _subdirs(base)
    if not classes:
        raise DataError(f"no class sub-folders in {root}; put each class's images in its own sub-folder, "
                        f"e.g. {root}/cat/1.png.")
    index = {c: i for i, c in enumerate(classes)}
    entries: list[Entry] = []
    for part in PARTS if split else ("train",):
        folder = root / part if split else root
        if part != "train" and not folder.is_dir():
            continue
        for c in _subdirs(folder):
            if c not in index:
                raise DataError(f"{folder} has a class folder '{c}' that {base} lacks; every {part} class "
                                f"must also be a train class (add {base}/{c} or remove {folder}/{c}).")
        prefix = f"{part}/" if split else ""
        for c in (c for c in classes if (folder / c).is_dir()):
            entries += _images(folder / c, part, f"{prefix}{c}/", index[c])
    if len(classes) == 1:
        raise DataError(f"{base} has only one class folder ({classes[0]}); a classifier needs at least two "
                        "classes: add another class folder.")
    return Listing(root, "split" if split else "flat", tuple(classes), tuple(entries))


def _normal_rel(name: str) -> str:
    return PurePosixPath(str(name).replace(os.sep, "/")).as_posix().removeprefix("./")


def assign(listing: Listing, test_files: Iterable[str] | None = None
           ) -> tuple[list[int], list[int], str, bool]:
    """(train, test) indices into ``listing.entries``, ``test_from``, and whether test is listed by file.

    ``test_files``: exactly these relative paths are test; the rest of train/ and val/ is train.
    Else ``test/`` is test, else a stratified 1/6 is carved (seed 0). Given files equal to the
    carve keep ``test_from`` :data:`CARVED`.
    """
    entries = listing.entries
    has_test = any(e.part == "test" for e in entries)
    carve = None if has_test else holdout_indices(np.array([e.label for e in entries], np.int64), str(listing.root))
    if test_files is not None:
        where = {e.rel: i for i, e in enumerate(entries)}
        wanted = {_normal_rel(f) for f in test_files}
        if not wanted:
            raise DataError(f"test_files for {listing.root} is empty; give the test images' relative paths.")
        for rel in sorted(wanted):
            if rel not in where:
                what = "is not an image in a class folder of" if (listing.root / rel).exists() else "is missing from"
                raise DataError(f"test file {rel} {what} {listing.root}; the dataset changed since its "
                                "test split was recorded (restore the file or pass the right folder).")
        test = sorted(where[r] for r in wanted)
        chosen = set(test)
        train = [i for i, e in enumerate(entries) if i not in chosen and e.part != "test"]
        same = carve is not None and test == carve[1].tolist()  # the recorded carve, given back
        return train, test, CARVED if same else f"listed: {len(test)} test files", True
    if carve is None:
        return ([i for i, e in enumerate(entries) if e.part != "test"],
                [i for i, e in enumerate(entries) if e.part == "test"], "test/", False)
    return carve[0].tolist(), carve[1].tolist(), CARVED, True


def folder_fingerprint(rows: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``{"files": n, "sha256": hex}`` over the sorted lines "relpath<TAB>class<LF>"."""
    lines = sorted(f"{rel}\t{cls}\n" for rel, cls in rows)
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape"))
    return {"files": len(lines), "sha256": h.hexdigest()}


def bad_file_error(root: Path, rel: str, why: str) -> DataError:
    return DataError(f"bad image {root / rel}: {why}; fix or remove it, or pass --skip-bad to skip bad files.")


def check_classes(listing: Listing, kept: Iterable[Entry], n_bad: int) -> None:
    """Every class keeps at least one image after skipping bad files."""
    counts = np.bincount([e.label for e in kept], minlength=len(listing.classes))
    for c in np.flatnonzero(counts == 0):
        where = listing.root / ("train" if listing.layout == "split" else "") / listing.classes[c]
        raise DataError(f"class folder {where} has no readable images ({n_bad} bad file(s) skipped); "
                        "fix them or remove the folder.")


def resolve_size(sizes: set[tuple[int, int]], image_size: int | None, max_size: int | None, root: Path) -> int:
    """The N of N x N: ``image_size``; else min(``max_size``, largest side); else the one square size."""
    if image_size:
        return image_size
    if max_size:
        return min(max_size, max(max(s) for s in sizes))
    if len(sizes) == 1 and len({*next(iter(sizes))}) == 1:
        return next(iter(sizes))[0]
    shown = ", ".join(f"{a}x{b}" for a, b in sorted(sizes)[:4]) + (", ..." if len(sizes) > 4 else "")
    what = "different sizes" if len(sizes) > 1 else "non-square images"
    raise DataError(f"images in {root} have {what} ({shown}); pass an image size (--image-size N) "
                    "to resize them all to N x N.")


def _headers(paths: Sequence[str], folder: Path, key: str, runner: Runner) -> dict[str, Any]:
    """{"sizes": distinct [w, h], "gray": bool, "bad": [[index, reason]]} from the headers (cached)."""
    found = cache.load_headers(folder, key)
    if found is not None:
        return found
    probes = probe_all(paths, runner)
    good: list[Probe] = [p for p in probes if not isinstance(p, str)]
    heads = {"sizes": sorted({(p[1], p[2]) for p in good}), "gray": all(p[0] in GRAY_MODES for p in good),
             "bad": [[k, p] for k, p in enumerate(probes) if isinstance(p, str)]}
    cache.save_headers(folder, key, heads)
    return heads


def _decode(paths: Sequence[str], bad: dict[int, str], pre: dict[str, Any], folder: Path, key: str,
            runner: Runner) -> tuple[np.ndarray, dict]:
    """Decode every readable file into a new cache entry, commit it; returns the memory map and meta."""
    n, channels = pre["size"], pre["channels"]
    tmp = cache.new_entry(folder, key, (len(paths), n, n, channels))
    try:
        items = [(k, p) for k, p in enumerate(paths) if k not in bad]
        failed = decode_all(str(tmp), items, pre["color"], n, runner)
        meta = {"shape": [len(paths), n, n, channels], "preprocess": pre,
                "bad": sorted([k, why] for k, why in failed.items())}
        cache.commit_entry(folder, key, tmp, meta)
    finally:
        cache.drop_temp(tmp)
    return cache.load_committed(folder, key)


def _images_of(root: Path, entries: Sequence[Entry], classes: Sequence[str], n_train: int, image_size: int | None,
               max_size: int | None, skip_bad: bool, cache_dir: str | Path | None) -> tuple[np.ndarray, dict, dict]:
    """The decoded images of ``entries`` (cached), their preprocessing and {index: reason} bad files."""
    paths = [str(root / e.rel) for e in entries]
    key = cache.cache_key(("train" if k < n_train else "test", e.rel, classes[e.label], e.size, e.mtime_ns)
                          for k, e in enumerate(entries))
    folder = cache.cache_dir(cache_dir)
    with Runner(len(entries)) as runner:
        heads = _headers(paths, folder, key, runner)
        bad = {int(k): why for k, why in heads["bad"]}
        if bad and not skip_bad:
            raise bad_file_error(root, entries[min(bad)].rel, bad[min(bad)])
        if len(bad) == len(entries):
            raise DataError(f"no readable images in {root}; every listed file is bad "
                            f"(e.g. {entries[0].rel}: {bad[0]}).")
        n = resolve_size({tuple(s) for s in heads["sizes"]}, image_size, max_size, root)
        color = "L" if heads["gray"] else "RGB"
        pre = {"channels": 1 if color == "L" else 3, "resize": "bilinear", "size": n, "color": color,
               "alpha": "dropped"}
        dkey = cache.data_key(key, pre)
        hit = cache.load_entry(folder, dkey)
        x, meta = hit if hit is not None else _decode(paths, bad, pre, folder, dkey, runner)
    bad.update({int(k): why for k, why in meta["bad"]})
    return x, pre, bad


def _check_size(value: int | None, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DataError(f"{what} must be a positive integer, got {value!r}.")


def load_image_folder(path: str | Path, image_size: int | None = None, *, max_size: int | None = None,
                      skip_bad: bool = False, test_files: Iterable[str] | None = None,
                      cache_dir: str | Path | None = None) -> Dataset:
    """Load an image folder (see the module doc) as a :class:`Dataset` of kind "folder".

    ``image_size`` resizes to N x N; without it N is min(``max_size``, the largest side), or
    the images' one square size. ``skip_bad`` leaves out unreadable files (``Dataset.skipped``).
    ``test_files`` (relative paths) is the test part instead of test/ or the carve.
    """
    _check_size(image_size, "image size")
    _check_size(max_size, "max size")
    root = Path(os.path.abspath(Path(path).expanduser()))
    listing = list_folder(root)
    train, test, test_from, listed = assign(listing, test_files)
    entries = [listing.entries[i] for i in train + test]
    n_train, names = len(train), listing.classes
    x, pre, bad = _images_of(root, entries, names, n_train, image_size, max_size, skip_bad, cache_dir)
    if bad and not skip_bad:
        raise bad_file_error(root, entries[min(bad)].rel, bad[min(bad)])
    keep = [k for k in range(len(entries)) if k not in bad]
    check_classes(listing, (entries[k] for k in keep), len(bad))
    y = np.array([e.label for e in entries], dtype=np.int64)
    if bad:
        tr = np.array([k for k in keep if k < n_train], dtype=np.int64)
        te = np.array([k for k in keep if k >= n_train], dtype=np.int64)
        train_x, train_y, test_x, test_y = x[tr], y[tr], x[te], y[te]
    else:  # views of the memory map: nothing is copied
        tr, te = range(n_train), range(n_train, len(entries))
        train_x, train_y, test_x, test_y = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    return Dataset(
        name=root.name or str(root), classes=names, train_x=train_x, train_y=train_y, test_x=test_x,
        test_y=test_y, source=str(root), kind="folder",
        fingerprint=folder_fingerprint((entries[k].rel, names[entries[k].label]) for k in keep),
        test_from=test_from, test_files=tuple(entries[k].rel for k in te) if listed else None,
        preprocess=pre, skipped=tuple(entries[k].rel for k in sorted(bad)))
