"""Tests for ofa_edge.data: IDX, loaders, splits, channels (real Fashion-MNIST where noted)."""
from __future__ import annotations

import gzip
import json
import sys

import numpy as np
import pytest

from ofa_edge.data import (
    FASHION_MNIST_CLASSES,
    Dataset,
    DatasetNotFound,
    describe,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    load_npz,
    make_splits,
    read_idx,
    to_channels,
    train_val_split,
    write_idx,
)
from conftest import require
from ofa_edge.errors import DataError

@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch) -> None:
    """Decoded image folders go to a temporary cache, never ~/.cache."""
    monkeypatch.setenv("OFA_EDGE_DATA_CACHE", str(tmp_path_factory.mktemp("data-cache")))


@pytest.fixture(scope="module")
def fmnist() -> Dataset:
    """The real Fashion-MNIST; a missing dataset skips, and fails under CI (conftest.require)."""
    try:
        return load_fashion_mnist()
    except DatasetNotFound:
        require(False, "Fashion-MNIST", "apt-get install -y dataset-fashion-mnist")


# ------------------------------------------------------------- real Fashion-MNIST

def test_fmnist_shapes_and_counts(fmnist: Dataset) -> None:
    assert fmnist.train_x.shape == (60000, 28, 28, 1)
    assert fmnist.test_x.shape == (10000, 28, 28, 1)
    assert fmnist.train_x.dtype == np.uint8 and fmnist.test_x.dtype == np.uint8
    assert fmnist.train_y.dtype == np.int64 and fmnist.train_y.shape == (60000,)
    assert fmnist.image_shape == (28, 28, 1)
    assert fmnist.classes == FASHION_MNIST_CLASSES and fmnist.num_classes == 10
    assert np.bincount(fmnist.train_y).tolist() == [6000] * 10
    assert np.bincount(fmnist.test_y).tolist() == [1000] * 10
    assert fmnist.train_x.max() > 200 and fmnist.train_x.min() == 0  # real pixels, not zeros


def test_fmnist_info_is_json(fmnist: Dataset) -> None:
    info = json.loads(json.dumps(fmnist.info()))
    assert info["counts"] == {"train": 60000, "test": 10000}
    assert info["image_shape"] == [28, 28, 1] and info["dtype"] == "uint8"
    assert info["per_class"]["train"]["Ankle boot"] == 6000
    assert info["per_class"]["test"]["T-shirt/top"] == 1000


def test_fmnist_splits_deterministic_disjoint_stratified(fmnist: Dataset) -> None:
    tr, va = train_val_split(fmnist.train_y, 5000, seed=0)
    tr2, va2 = train_val_split(fmnist.train_y, 5000, seed=0)
    _, va3 = train_val_split(fmnist.train_y, 5000, seed=1)
    np.testing.assert_array_equal(va, va2)
    np.testing.assert_array_equal(tr, tr2)
    assert not np.array_equal(va, va3)
    assert len(va) == 5000 and len(tr) == 55000
    assert np.intersect1d(tr, va).size == 0
    np.testing.assert_array_equal(np.union1d(tr, va), np.arange(60000))
    assert np.all(np.diff(va) > 0) and np.all(np.diff(tr) > 0)
    assert np.bincount(fmnist.train_y[va]).tolist() == [500] * 10


def test_fmnist_make_splits(fmnist: Dataset) -> None:
    a, b, c = make_splits(fmnist, seed=0), make_splits(fmnist, seed=0), make_splits(fmnist, seed=7)
    np.testing.assert_array_equal(a.val_x, b.val_x)
    np.testing.assert_array_equal(a.train_y, b.train_y)
    assert not np.array_equal(a.val_y, c.val_y) or not np.array_equal(a.val_x, c.val_x)
    assert a.test_x is fmnist.test_x and a.test_y is fmnist.test_y
    assert len(a.train_y) == 55000 and len(a.val_y) == 5000 and a.seed == 0
    d = json.loads(json.dumps(describe(fmnist, a)))
    assert d["counts"] == {"train": 55000, "val": 5000, "test": 10000}
    assert d["classes"][0] == {"index": 0, "name": "T-shirt/top", "train": 5500, "val": 500, "test": 1000}
    assert d["source"] == fmnist.source


def test_load_dataset_aliases(fmnist: Dataset) -> None:
    for name in ("fmnist", "fashion_mnist"):
        ds = load_dataset(name)
        assert ds.train_x.shape == fmnist.train_x.shape and ds.classes == fmnist.classes


def test_data_module_does_not_import_torch() -> None:
    import subprocess
    from pathlib import Path

    code = "import sys, ofa_edge.data; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ------------------------------------------------------------- IDX

@pytest.mark.parametrize("name", ["a-idx3-ubyte.gz", "a-idx3-ubyte", "gz-without-suffix"])
def test_idx_round_trip(tmp_path, name) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / name, arr, compress=name != "a-idx3-ubyte")
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (name != "a-idx3-ubyte")
    out = read_idx(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_other_dtypes(tmp_path, dtype) -> None:
    arr = (np.arange(6) - 2).astype(dtype).reshape(3, 2)
    out = read_idx(write_idx(tmp_path / "x.idx", arr))
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)


def test_idx_bad_magic(tmp_path) -> None:
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00\x00\x00\x02" + b"ab")
    with pytest.raises(DataError, match="magic") as e:
        read_idx(bad)
    assert str(bad) in str(e.value)


def test_idx_unknown_dtype(tmp_path) -> None:
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"a")
    with pytest.raises(DataError, match="dtype code 0x07"):
        read_idx(bad)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_payload(tmp_path, compress) -> None:
    path = tmp_path / "t.idx"
    payload = bytes([0, 0, 8, 2]) + np.array([10, 10], ">u4").tobytes() + bytes(50)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(DataError, match="truncated") as e:
        read_idx(path)
    assert "\n" not in str(e.value)


def test_idx_truncated_gzip_and_header(tmp_path) -> None:
    good = gzip.compress(bytes([0, 0, 8, 1]) + np.array([1000], ">u4").tobytes() + bytes(1000))
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="header"):
        read_idx(path)
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope")


# ------------------------------------------------------------- Fashion-MNIST folder handling

def test_fmnist_missing_default_names_package_and_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OFA_EDGE_FMNIST_DIR", str(tmp_path))
    with pytest.raises(DataError) as e:
        load_fashion_mnist()
    msg = str(e.value)
    assert "dataset-fashion-mnist" in msg and str(tmp_path) in msg and "train-images-idx3-ubyte" in msg


def test_fmnist_missing_given_path(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data=missing)
    assert str(missing) in str(e.value)


def _write_fake_fmnist(folder, gz: bool, n_train=12, n_test=6) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8))


@pytest.mark.parametrize("gz", [True, False])
def test_fmnist_from_given_folder(tmp_path, gz) -> None:
    _write_fake_fmnist(tmp_path, gz)
    ds = load_fashion_mnist(tmp_path)
    assert ds.train_x.shape == (12, 28, 28, 1) and ds.test_x.shape == (6, 28, 28, 1)
    assert ds.train_y.tolist() == [i % 10 for i in range(12)] and ds.source == str(tmp_path)


def test_fmnist_label_count_mismatch(tmp_path) -> None:
    _write_fake_fmnist(tmp_path, True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="12 images .* 11 labels"):
        load_fashion_mnist(tmp_path)


# ------------------------------------------------------------- image folders

def _png(path, size=(4, 4), value=0, mode="L") -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


def test_image_folder_loads_and_carves_test(tmp_path) -> None:
    for ci, cls in enumerate(["cat", "ant", "bee"]):
        for i in range(6):
            _png(tmp_path / cls / f"{i}.{'PNG' if i == 0 else 'png'}", value=10 * ci + i)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path)
    assert ds.classes == ("ant", "bee", "cat")
    assert ds.image_shape == (4, 4, 1) and ds.train_x.dtype == np.uint8
    assert len(ds.train_y) == 15 and len(ds.test_y) == 3
    assert np.bincount(ds.test_y).tolist() == [1, 1, 1]
    # Pixel values identify the class folder: ant=10..15, bee=20..25, cat=0..5.
    for x, y in zip(np.concatenate([ds.train_x, ds.test_x]), np.concatenate([ds.train_y, ds.test_y])):
        assert {0: 10, 1: 20, 2: 0}[int(y)] <= int(x[0, 0, 0]) < {0: 10, 1: 20, 2: 0}[int(y)] + 6
    again = load_image_folder(tmp_path)
    np.testing.assert_array_equal(again.test_x, ds.test_x)


def test_image_folder_rgb_and_train_test_layout(tmp_path) -> None:
    for part in ("train", "test"):
        for cls in ("a", "b"):
            _png(tmp_path / part / cls / "0.png", value=50, mode="RGB")
            _png(tmp_path / part / cls / "1.jpg", value=50)
    ds = load_dataset(str(tmp_path))
    assert ds.image_shape == (4, 4, 3) and len(ds.train_y) == 4 and len(ds.test_y) == 4
    assert ds.classes == ("a", "b")
    (tmp_path / "test" / "b").rename(tmp_path / "test" / "c")
    with pytest.raises(DataError, match="class folder 'c' that .*train lacks"):
        load_image_folder(tmp_path)
    (tmp_path / "test" / "c").rename(tmp_path / "test" / "a2")
    (tmp_path / "test" / "a2").rename(tmp_path / "test" / "b")
    (tmp_path / "test" / "a").rename(tmp_path / "test_a_gone")  # test/ may lack a class
    ds = load_image_folder(tmp_path)
    assert len(ds.test_y) == 2 and set(ds.test_y.tolist()) == {1} and ds.test_from == "test/"


def test_image_folder_mixed_sizes(tmp_path) -> None:
    _png(tmp_path / "a" / "0.png", size=(4, 4))
    _png(tmp_path / "a" / "1.png", size=(6, 5))
    _png(tmp_path / "b" / "0.png", size=(4, 4))
    with pytest.raises(DataError, match="image size"):
        load_image_folder(tmp_path)
    ds = load_image_folder(tmp_path, image_size=8)
    assert ds.image_shape == (8, 8, 1)
    assert len(ds.train_y) + len(ds.test_y) == 3


def test_image_folder_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path)
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="only one class"):
        load_image_folder(tmp_path)
    _png(tmp_path / "b" / "0.png")
    with pytest.raises(DataError, match="broken.png"):
        load_image_folder(tmp_path)


# ------------------------------------------------------------- npz

def test_npz_gray_carves_stratified_test(tmp_path) -> None:
    x = np.arange(24 * 5 * 5, dtype=np.uint8).reshape(24, 5, 5)
    y = np.arange(24) % 2
    np.savez(tmp_path / "g.npz", x=x, y=y, classes=np.array(["even", "odd"]))
    ds = load_npz(tmp_path / "g.npz")
    assert ds.image_shape == (5, 5, 1) and ds.classes == ("even", "odd")
    assert len(ds.test_y) == 4 and np.bincount(ds.test_y).tolist() == [2, 2]
    both = np.concatenate([ds.train_x, ds.test_x])[..., 0]
    assert sorted(map(bytes, both)) == sorted(map(bytes, x))


def test_npz_nhwc_float_and_explicit_test(tmp_path) -> None:
    x = np.full((6, 3, 3, 3), 0.5, dtype=np.float32)
    np.savez(tmp_path / "c.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]),
             x_test=np.zeros((2, 3, 3, 3), np.uint8), y_test=np.array([2, 0]))
    ds = load_dataset(str(tmp_path / "c.npz"))
    assert ds.image_shape == (3, 3, 3) and ds.classes == ("0", "1", "2")
    assert len(ds.train_y) == 6 and ds.test_y.tolist() == [2, 0]
    assert np.all(ds.train_x == 128)


def test_npz_errors(tmp_path) -> None:
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(DataError, match="'y'"):
        load_npz(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "int.npz", x=np.zeros((4, 2, 2), np.int32), y=np.zeros(4, int))
    with pytest.raises(DataError, match="dtype int32"):
        load_npz(tmp_path / "int.npz")
    np.savez(tmp_path / "f.npz", x=np.full((4, 2, 2), 2.0), y=np.zeros(4, int))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_npz(tmp_path / "f.npz")
    np.savez(tmp_path / "n.npz", x=np.zeros((4, 2, 2), np.uint8), y=np.zeros(3, int))
    with pytest.raises(DataError, match="4 images but 3 labels"):
        load_npz(tmp_path / "n.npz")
    (tmp_path / "junk.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "missing.npz")


def test_load_dataset_unknown(tmp_path) -> None:
    with pytest.raises(DataError, match="fashion-mnist.*npz.*folder"):
        load_dataset("cifar-1000")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="not a .npz"):
        load_dataset(str(tmp_path / "x.csv"))


# ------------------------------------------------------------- splits and channels

def test_train_val_split_fraction_and_bad_sizes() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 30])
    tr, va = train_val_split(labels, 0.1, seed=3)
    assert np.bincount(labels[va], minlength=3).tolist() == [1, 2, 3]
    assert len(tr) + len(va) == 60 and np.intersect1d(tr, va).size == 0
    for bad in (60, -1, 1.0, 0.0, 1.5, "10", True):
        with pytest.raises(DataError, match="val_size"):
            train_val_split(labels, bad)
    tr, va = train_val_split(labels, 0)
    assert len(va) == 0 and len(tr) == 60


def test_to_channels() -> None:
    gray = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 1)
    rgb = to_channels(gray, 3)
    assert rgb.shape == (2, 3, 3, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray[..., 0])
    assert to_channels(rgb, 3) is rgb
    np.testing.assert_array_equal(to_channels(rgb, 1), gray)  # luma of equal channels = gray
    pure = np.zeros((1, 1, 1, 3), np.uint8)
    pure[..., 0] = 255
    assert to_channels(pure, 1).item() == 76  # round(0.299 * 255)
    with pytest.raises(DataError):
        to_channels(gray, 2)
    with pytest.raises(DataError):
        to_channels(gray.astype(np.float32), 3)


def test_npz_object_array_rejected(tmp_path) -> None:
    np.savez(tmp_path / "o.npz", x=np.zeros((4, 2, 2), np.uint8), y=np.zeros(4, int),
             classes=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match="object arrays"):
        load_npz(tmp_path / "o.npz")


# ------------------------------------------------------------- dataset identity (kind, fingerprint, test_from)

def test_fmnist_identity(fmnist: Dataset) -> None:
    assert fmnist.kind == "fashion-mnist" and fmnist.reference == "fashion-mnist" and fmnist.test_from == "t10k"
    assert fmnist.fingerprint["files"] == 70000 and len(fmnist.fingerprint["sha256"]) == 64
    assert load_dataset("fmnist").fingerprint == fmnist.fingerprint and fmnist.test_files is None
    assert fmnist.preprocess == {"channels": 1, "resize": "none", "size": 28, "color": "L", "alpha": "none"}
    assert fmnist.skipped == () and fmnist.source == "/usr/share/datasets/fashion-mnist"


def test_fmnist_max_size_and_test_files(tmp_path) -> None:
    _write_fake_fmnist(tmp_path, True)
    assert load_dataset("fashion-mnist", data=tmp_path, max_size=32).image_shape == (28, 28, 1)
    small = load_dataset("fashion-mnist", data=tmp_path, max_size=16)
    assert small.image_shape == (16, 16, 1) and small.preprocess["resize"] == "bilinear"
    assert small.preprocess["size"] == 16 and small.fingerprint == load_fashion_mnist(tmp_path).fingerprint
    with pytest.raises(DataError, match="not an image folder"):
        load_dataset("fashion-mnist", data=tmp_path, test_files=["a.png"])


def test_npz_identity_and_class_names(tmp_path) -> None:
    x = np.arange(12 * 4 * 4, dtype=np.uint8).reshape(12, 4, 4)
    y = np.arange(12) % 3
    np.savez(tmp_path / "a.npz", x=x, y=y, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(str(tmp_path / "a.npz"))
    assert ds.kind == "npz" and ds.classes == ("a", "b", "c") and ds.test_from.startswith("carved")
    assert ds.fingerprint["files"] == 12 and ds.source == str(tmp_path / "a.npz") and ds.test_files is None
    assert load_npz(tmp_path / "a.npz").fingerprint == ds.fingerprint
    np.savez(tmp_path / "b.npz", x=x, y=(y + 1) % 3, class_names=np.array(["a", "b", "c"]))
    assert load_npz(tmp_path / "b.npz").fingerprint != ds.fingerprint
    np.savez(tmp_path / "c.npz", x=x, y=y, x_test=x[:2], y_test=y[:2])
    both = load_npz(tmp_path / "c.npz")
    assert both.test_from == "x_test" and both.fingerprint["files"] == 14


def test_dataset_built_in_memory_gets_defaults() -> None:
    x = np.zeros((4, 3, 3, 3), np.uint8)
    ds = Dataset(name="m", classes=("a", "b"), train_x=x, train_y=np.array([0, 1, 0, 1]), test_x=x[:2],
                 test_y=np.array([0, 1]), source="memory")
    assert ds.kind == "arrays" and ds.fingerprint["files"] == 6 and ds.preprocess["channels"] == 3
    assert ds.test_files is None and ds.skipped == () and json.dumps(ds.info())
