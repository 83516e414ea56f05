"""Dataset loaders: Fashion-MNIST (IDX), .npz archives, and dispatch to image folders.

Every loader returns a :class:`Dataset` with uint8 NHWC images and int64 labels, and
raises :class:`~ofa_edge.errors.DataError` (one line: what is wrong, how to fix it) for
bad input. When a source has no test part, a deterministic stratified 1/6 of it is held
out as test (:data:`TEST_HOLDOUT_FRACTION`, seed :data:`TEST_HOLDOUT_SEED`), so the same
files always give the same train/test split. Image folders live in :mod:`ofa_edge.data.folder`.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np

from ofa_edge.data.base import (  # noqa: F401 - re-exported (older imports use this module)
    CARVED, TEST_HOLDOUT_FRACTION, TEST_HOLDOUT_SEED, Dataset, DatasetNotFound, array_preprocess, describe,
    holdout_test, labels_fingerprint,
)
from ofa_edge.data.decode import GRAY_MODES, pil  # noqa: F401 - re-exported
from ofa_edge.data.folder import IMAGE_SUFFIXES, load_image_folder  # noqa: F401 - re-exported
from ofa_edge.data.idx import read_idx
from ofa_edge.errors import DataError

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_ENV = "OFA_EDGE_FMNIST_DIR"
FMNIST_PACKAGE = "dataset-fashion-mnist"
FMNIST_ALIASES = frozenset({"fashion-mnist", "fmnist", "fashion_mnist"})
FMNIST_STEMS = (("train_x", "train-images-idx3-ubyte"), ("train_y", "train-labels-idx1-ubyte"),
                ("test_x", "t10k-images-idx3-ubyte"), ("test_y", "t10k-labels-idx1-ubyte"))


# ---------------------------------------------------------------- Fashion-MNIST

def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(path: str | Path | None = None) -> Dataset:
    """Load Fashion-MNIST from a folder with Debian's four IDX files (.gz or not).

    ``path`` defaults to ``$OFA_EDGE_FMNIST_DIR``, else :data:`DEFAULT_FASHION_MNIST_DIR`.
    """
    if path is not None:
        folder, how = Path(path).expanduser(), "given with --data"
    elif os.environ.get(FMNIST_ENV):
        folder, how = Path(os.environ[FMNIST_ENV]).expanduser(), f"from ${FMNIST_ENV}"
    else:
        folder, how = DEFAULT_FASHION_MNIST_DIR, "the default"
    install = f"Install it with `apt-get install -y {FMNIST_PACKAGE}`"
    if folder.exists() and not folder.is_dir():
        raise DatasetNotFound(
            f"Fashion-MNIST path {folder} ({how}) is a file; pass --data PATH to the folder holding the IDX files."
        )
    files = {}
    for part, stem in FMNIST_STEMS:
        found = _find_idx(folder, stem)
        if found is None:
            hint = (f"{install}, or pass --data PATH to a folder with the IDX files." if path is None else
                    "Pass --data PATH to a folder with the four IDX files, "
                    f"or omit --data after `apt-get install -y {FMNIST_PACKAGE}`.")
            raise DatasetNotFound(f"Fashion-MNIST not found: no {stem}.gz in {folder} ({how}). {hint}")
        files[part] = found
    arrays = {part: read_idx(f) for part, f in files.items()}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(f"{files[part + '_x']} holds {x.dtype} {x.shape}, not uint8 images (N, H, W); wrong file?")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{files[part + '_y']} holds {y.dtype} {y.shape}, not 1-D integer labels; wrong file?")
        if len(x) != len(y):
            raise DataError(
                f"Fashion-MNIST {part}: {len(x)} images in {files[part + '_x'].name} but {len(y)} labels in "
                f"{files[part + '_y'].name}; a file is truncated or mismatched, reinstall {FMNIST_PACKAGE}."
            )
        arrays[f"{part}_x"] = x[..., None]
    # the labels as stored (train, then t10k) and the four files' names: cheap and stable
    fingerprint = labels_fingerprint([arrays["train_y"], arrays["test_y"]], [stem for _, stem in FMNIST_STEMS])
    return Dataset(name="fashion-mnist", classes=FASHION_MNIST_CLASSES, source=os.path.abspath(folder),
                   kind="fashion-mnist", fingerprint=fingerprint, test_from="t10k", **arrays)


# ---------------------------------------------------------------- npz

def _npz_images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{path}: '{key}' has shape {x.shape}; expected (N, H, W) gray or (N, H, W, C) with C 1 or 3.")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise DataError(f"{path}: float '{key}' must lie in [0, 1]; scale it or save it as uint8.")
        return np.rint(x * 255.0).astype(np.uint8)
    raise DataError(f"{path}: '{key}' has dtype {x.dtype}; save images as uint8 (0..255) or float in [0, 1].")


def _npz_labels(y: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: '{key}' must be 1-D integer labels, got shape {y.shape} dtype {y.dtype}.")
    if len(y) != n:
        raise DataError(f"{path}: {n} images but {len(y)} labels in '{key}'; they must match.")
    if y.size and y.min() < 0:
        raise DataError(f"{path}: '{key}' has negative labels; use class indices 0..K-1.")
    return y.astype(np.int64)


def load_npz(path: str | Path) -> Dataset:
    """Load a .npz with ``x``, ``y`` (and optional ``x_test``, ``y_test``, ``class_names`` or ``classes``).

    Without ``x_test``, a deterministic stratified 1/6 of (x, y) becomes test. The fingerprint
    is a sha256 over the images and labels (uint8 and little-endian int64) with their shapes.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFound(f"npz file not found: {path}; check the path.")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
        if magic[:2] != b"PK":  # every zip archive, hence every .npz, starts with PK
            raise DataError(f"{path} is not a readable .npz archive (no zip header); save it with np.savez(path, x=..., y=...).")
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(
                f"{path} holds object arrays, which are not loaded for safety; "
                "save strings as a str array (e.g. classes=np.array(names))."
            ) from None
        raise DataError(f"{path} is not a readable .npz archive ({e}); save it with np.savez.") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{path} is not a readable .npz archive ({e}); save it with np.savez.") from None
    missing = [k for k in ("x", "y") if k not in data]
    if missing:
        raise DataError(
            f"{path} has no {' or '.join(repr(k) for k in missing)} array "
            f"(found: {', '.join(sorted(data)) or 'none'}); save with np.savez(path, x=images, y=labels)."
        )
    x = _npz_images(data["x"], "x", path)
    y = _npz_labels(data["y"], "y", len(x), path)
    if ("x_test" in data) != ("y_test" in data):
        raise DataError(f"{path} has only one of 'x_test' and 'y_test'; provide both or neither.")
    if "x_test" in data:
        test_x = _npz_images(data["x_test"], "x_test", path)
        test_y = _npz_labels(data["y_test"], "y_test", len(test_x), path)
        train_x, train_y, test_from = x, y, "x_test"
        parts = [x, y, test_x, test_y]
    else:
        parts = [x, y]
        train_x, train_y, test_x, test_y = holdout_test(x, y, str(path))
        test_from = CARVED
    n_classes = int(max(y.max(initial=-1), test_y.max(initial=-1))) + 1
    key = "class_names" if "class_names" in data else "classes"
    if key in data:
        names = data[key]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(f"{path}: '{key}' must be a 1-D string array, got shape {names.shape} dtype {names.dtype}.")
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
        if len(classes) < n_classes:
            raise DataError(f"{path}: labels go up to {n_classes - 1} but '{key}' names only {len(classes)}; name every class.")
        if len(set(classes)) != len(classes):
            raise DataError(f"{path}: '{key}' has duplicate names; each class needs its own name.")
    else:
        classes = tuple(str(i) for i in range(n_classes))
    return Dataset(name=path.stem, classes=classes, train_x=train_x, train_y=train_y,
                   test_x=test_x, test_y=test_y, source=os.path.abspath(path), kind="npz",
                   fingerprint=_npz_fingerprint(parts), test_from=test_from)


def _npz_fingerprint(arrays: list[np.ndarray]) -> dict:
    """sha256 over (shape, bytes) of x, y (and x_test, y_test); files = the number of samples."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.astype("<i8") if a.dtype != np.uint8 else a
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return {"files": int(sum(len(a) for a in arrays[1::2])), "sha256": h.hexdigest()}


# ---------------------------------------------------------------- dispatch

def resize_dataset(ds: Dataset, image_size: int) -> Dataset:
    """Resize every image of ``ds`` to image_size x image_size (bilinear, Pillow)."""
    if ds.image_shape[:2] == (image_size, image_size):
        return ds
    Image = pil()

    def resize(x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), image_size, image_size, x.shape[-1]), dtype=np.uint8)
        for i, img in enumerate(x):
            im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            out[i] = np.asarray(im.resize((image_size, image_size), Image.Resampling.BILINEAR,
                                          reducing_gap=None)).reshape(out.shape[1:])
        return out

    train_x = resize(ds.train_x)
    return replace(ds, train_x=train_x, test_x=resize(ds.test_x), preprocess=array_preprocess(train_x, resized=True))


def _check_size(value: int | None, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DataError(f"{what} must be a positive integer, got {value!r}.")


def _sized(ds: Dataset, image_size: int | None, max_size: int | None) -> Dataset:
    """``image_size`` if given; else at most ``max_size`` (only shrinks, and only when larger)."""
    if image_size:
        return resize_dataset(ds, image_size)
    side = max(ds.image_shape[:2])
    return resize_dataset(ds, max_size) if max_size and side > max_size else ds


def load_dataset(name_or_path: str, data: str | Path | None = None, image_size: int | None = None, *,
                 max_size: int | None = None, skip_bad: bool = False, test_files: Iterable[str] | None = None,
                 cache_dir: str | Path | None = None) -> Dataset:
    """Load by name ('fashion-mnist', 'fmnist', 'fashion_mnist'), .npz file, or image folder.

    For a name, ``data`` overrides where its files are; otherwise ``name_or_path`` (or, if
    that does not exist, ``data``) is the .npz file or image folder. ``image_size`` resizes
    images to N x N; else ``max_size`` caps N at the largest trained resolution (N is then
    min(max_size, the largest source side)). ``skip_bad``, ``test_files`` and ``cache_dir``
    are for image folders (see :func:`~ofa_edge.data.folder.load_image_folder`).
    """
    _check_size(image_size, "image size")
    _check_size(max_size, "max size")
    if str(name_or_path).strip().lower() in FMNIST_ALIASES:
        _no_test_files(test_files, "Fashion-MNIST")
        return _sized(load_fashion_mnist(data), image_size, max_size)
    for cand in (name_or_path, data):
        if cand is None:
            continue
        p = Path(cand).expanduser()
        if p.is_dir():
            return load_image_folder(p, image_size, max_size=max_size, skip_bad=skip_bad,
                                     test_files=test_files, cache_dir=cache_dir)
        if p.is_file():
            if p.suffix.lower() != ".npz":
                raise DataError(f"{p} is a file but not a .npz archive; pass a .npz with x and y, or an image folder.")
            _no_test_files(test_files, str(p))
            return _sized(load_npz(p), image_size, max_size)
    raise DatasetNotFound(
        f"unknown dataset {name_or_path!r}: pass 'fashion-mnist' (or fmnist, fashion_mnist), "
        "a .npz file with arrays x and y, or a folder with one sub-folder of images per class."
    )


def _no_test_files(test_files: Iterable[str] | None, what: str) -> None:
    if test_files is not None:
        raise DataError(f"test_files lists image files, but {what} is not an image folder; "
                        "its test part is fixed (drop test_files).")
