"""Dataset loaders: Fashion-MNIST (IDX), image folders (Pillow) and .npz archives.

Every loader returns a :class:`Dataset` with uint8 NHWC images and int64 labels, and
raises :class:`~ofa_edge.errors.DataError` (one line: what is wrong, how to fix it) for
bad input. When a source has no test part, a deterministic stratified 1/6 of it is held
out as test (:data:`TEST_HOLDOUT_FRACTION`, seed :data:`TEST_HOLDOUT_SEED`), so the same
files always give the same train/test split.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ofa_edge.data.idx import read_idx
from ofa_edge.data.splits import Splits, train_val_split
from ofa_edge.errors import DataError

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_ENV = "OFA_EDGE_FMNIST_DIR"
FMNIST_PACKAGE = "dataset-fashion-mnist"
FMNIST_ALIASES = frozenset({"fashion-mnist", "fmnist", "fashion_mnist"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
TEST_HOLDOUT_FRACTION = 1 / 6
TEST_HOLDOUT_SEED = 0


class DatasetNotFound(DataError):
    """The dataset's files are not where we looked."""


def _check_images(x: np.ndarray, what: str) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype != np.uint8 or x.shape[-1] not in (1, 3):
        shape = getattr(x, "shape", None)
        raise DataError(f"{what} must be uint8 NHWC with 1 or 3 channels, got shape {shape} dtype {getattr(x, 'dtype', None)}.")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images (uint8 NHWC) and int64 labels for a train and a test part."""

    name: str
    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str

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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.train_x.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self, part: str = "train") -> list[int]:
        """Samples per class in ``part`` ('train' or 'test')."""
        y = getattr(self, f"{part}_y")
        return [int(n) for n in np.bincount(y, minlength=self.num_classes)]

    def info(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.classes),
            "image_shape": list(self.image_shape),
            "dtype": str(self.train_x.dtype),
            "counts": {"train": len(self.train_y), "test": len(self.test_y)},
            "per_class": {
                part: dict(zip(self.classes, self.class_counts(part))) for part in ("train", "test")
            },
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
        "source": ds.source,
        "image_shape": list(ds.image_shape),
        "dtype": str(ds.train_x.dtype),
        "num_classes": ds.num_classes,
        "counts": {name: int(len(y)) for name, y in (("train", train_y), ("val", val_y), ("test", ds.test_y))},
        "seed": None if splits is None else int(splits.seed),
        "classes": [
            {"index": i, "name": c, **{name: int(per[name][i]) for name in per}}
            for i, c in enumerate(ds.classes)
        ],
    }


def _holdout_test(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, ...]:
    """Split (x, y) into train and a stratified 1/6 test, always the same way."""
    n = len(y)
    if n < 2:
        raise DataError(f"{what} has {n} sample(s); need at least 2 to hold out a test part, or provide one.")
    n_test = max(1, int(round(n * TEST_HOLDOUT_FRACTION)))
    tr, te = train_val_split(y, n_test, seed=TEST_HOLDOUT_SEED)
    return x[tr], y[tr], x[te], y[te]


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
    for part, stem in (("train_x", "train-images-idx3-ubyte"), ("train_y", "train-labels-idx1-ubyte"),
                       ("test_x", "t10k-images-idx3-ubyte"), ("test_y", "t10k-labels-idx1-ubyte")):
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
    return Dataset(name="fashion-mnist", classes=FASHION_MNIST_CLASSES, source=str(folder), **arrays)


# ---------------------------------------------------------------- image folders

def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow: pip install pillow") from None
    return Image


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_images(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        found = sorted(p for p in (folder / c).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            kinds = "/".join(s[1:] for s in sorted(IMAGE_SUFFIXES))
            raise DataError(f"class folder {folder / c} has no images ({kinds}); add some or remove the folder.")
        files += found
        labels += [i] * len(found)
    return files, labels


def _decode(files: list[Path], image_size: int | None, root: Path) -> np.ndarray:
    """Decode images with Pillow into one uint8 NHWC array (gray if all are gray)."""
    Image = _pil()
    modes, sizes = [], set()
    for f in files:
        try:
            with Image.open(f) as im:
                modes.append(im.mode)
                sizes.add(im.size)
        except Exception as e:  # PIL raises many types for a bad file
            raise DataError(f"cannot read image {f}: {e}. Remove or replace the file.") from None
    mode = "L" if all(m in GRAY_MODES for m in modes) else "RGB"
    if image_size is None and len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
        raise DataError(
            f"images in {root} have different sizes ({shown}{', ...' if len(sizes) > 4 else ''}); "
            "pass an image size (--image-size N) to resize them all to N x N."
        )
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    w, h = (image_size, image_size) if image_size else next(iter(sizes))
    out = np.empty((len(files), h, w, 1 if mode == "L" else 3), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im, dtype=np.uint8).reshape(h, w, -1)
        except Exception as e:
            raise DataError(f"cannot decode image {f}: {e}. Remove or replace the file.") from None
    return out


def load_image_folder(path: str | Path, image_size: int | None = None) -> Dataset:
    """Load ``path/<class>/*.png|jpg|...`` (or ``path/train/<class>`` + ``path/test/<class>``).

    Classes are the sorted sub-folder names. Without train/test folders, a deterministic
    stratified 1/6 becomes test. ``image_size`` resizes every image to N x N (bilinear).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetNotFound(f"image folder not found: {root} is not a directory; pass a folder with one sub-folder per class.")
    try:
        return _load_image_folder(root, image_size)
    except OSError as e:
        raise DataError(f"cannot read image folder {root}: {e}. Check the path and its permissions.") from None


def _load_image_folder(root: Path, image_size: int | None) -> Dataset:
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        have, miss = ("train", "test") if has_train else ("test", "train")
        raise DataError(
            f"{root} has a {have}/ folder but no {miss}/ folder; add {miss}/ with the same class "
            f"folders, or put the class folders directly in {root}."
        )
    if has_train:
        classes = _class_dirs(root / "train")
        test_classes = _class_dirs(root / "test")
        if classes != test_classes:
            diff = sorted(set(classes) ^ set(test_classes))
            raise DataError(
                f"{root}/train and {root}/test must have the same class folders; "
                f"they differ in: {', '.join(diff)}."
            )
    else:
        classes = _class_dirs(root)
    if not classes:
        raise DataError(f"no class sub-folders in {root}; put each class's images in its own sub-folder, e.g. {root}/cat/1.png.")
    if has_train:
        tr_files, tr_y = _list_images(root / "train", classes)
        te_files, te_y = _list_images(root / "test", classes)
        x = _decode(tr_files + te_files, image_size, root)
        y = np.asarray(tr_y + te_y, dtype=np.int64)
        n = len(tr_files)
        parts = (x[:n], y[:n], x[n:], y[n:])
    else:
        files, labels = _list_images(root, classes)
        parts = _holdout_test(_decode(files, image_size, root), np.asarray(labels, dtype=np.int64), str(root))
    train_x, train_y, test_x, test_y = parts
    return Dataset(name=root.name or str(root), classes=tuple(classes), train_x=train_x, train_y=train_y,
                   test_x=test_x, test_y=test_y, source=str(root))


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
    """Load a .npz with ``x``, ``y`` (and optional ``x_test``, ``y_test``, ``classes``).

    Without ``x_test``, a deterministic stratified 1/6 of (x, y) becomes test.
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
        train_x, train_y = x, y
    else:
        train_x, train_y, test_x, test_y = _holdout_test(x, y, str(path))
    n_classes = int(max(y.max(initial=-1), test_y.max(initial=-1))) + 1
    if "classes" in data:
        names = data["classes"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(f"{path}: 'classes' must be a 1-D string array, got shape {names.shape} dtype {names.dtype}.")
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
        if len(classes) < n_classes:
            raise DataError(f"{path}: labels go up to {n_classes - 1} but 'classes' names only {len(classes)}; name every class.")
        if len(set(classes)) != len(classes):
            raise DataError(f"{path}: 'classes' has duplicate names; each class needs its own name.")
    else:
        classes = tuple(str(i) for i in range(n_classes))
    return Dataset(name=path.stem, classes=classes, train_x=train_x, train_y=train_y,
                   test_x=test_x, test_y=test_y, source=str(path))


# ---------------------------------------------------------------- dispatch

def resize_dataset(ds: Dataset, image_size: int) -> Dataset:
    """Resize every image of ``ds`` to image_size x image_size (bilinear, Pillow)."""
    if ds.image_shape[:2] == (image_size, image_size):
        return ds
    Image = _pil()

    def resize(x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), image_size, image_size, x.shape[-1]), dtype=np.uint8)
        for i, img in enumerate(x):
            im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            out[i] = np.asarray(im.resize((image_size, image_size), Image.Resampling.BILINEAR)).reshape(out.shape[1:])
        return out

    return replace(ds, train_x=resize(ds.train_x), test_x=resize(ds.test_x))


def load_dataset(name_or_path: str, data: str | Path | None = None, image_size: int | None = None) -> Dataset:
    """Load by name ('fashion-mnist', 'fmnist', 'fashion_mnist'), .npz file, or image folder.

    For a name, ``data`` overrides where its files are; otherwise ``name_or_path`` (or, if
    that does not exist, ``data``) is the .npz file or image folder. ``image_size``
    resizes images to N x N.
    """
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image size must be a positive integer, got {image_size!r}.")
    if str(name_or_path).strip().lower() in FMNIST_ALIASES:
        ds = load_fashion_mnist(data)
        return resize_dataset(ds, image_size) if image_size else ds
    for cand in (name_or_path, data):
        if cand is None:
            continue
        p = Path(cand).expanduser()
        if p.is_dir():
            return load_image_folder(p, image_size)
        if p.is_file():
            if p.suffix.lower() != ".npz":
                raise DataError(f"{p} is a file but not a .npz archive; pass a .npz with x and y, or an image folder.")
            ds = load_npz(p)
            return resize_dataset(ds, image_size) if image_size else ds
    raise DatasetNotFound(
        f"unknown dataset {name_or_path!r}: pass 'fashion-mnist' (or fmnist, fashion_mnist), "
        "a .npz file with arrays x and y, or a folder with one sub-folder of images per class."
    )
