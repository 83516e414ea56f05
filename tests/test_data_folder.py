"""Image folders built from real Fashion-MNIST images: layouts, formats and modes, sizes, the
carved test split, test_files, fingerprints, the decode cache and ``scan``."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from ofa_edge.data import CARVED, DatasetNotFound, load_dataset, load_fashion_mnist, load_image_folder, scan
from ofa_edge.errors import DataError

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("T-shirt-top", "Trouser", "Pullover")
#: (suffix, mode) cycled over the files of a mixed folder
VARIANTS = [("png", "L"), ("jpg", "RGB"), ("bmp", "P"), ("png", "RGBA"), ("png", "I;16"),
            ("png", "LA"), ("JPEG", "L"), ("PNG", "RGB"), ("webp", "L"), ("webp", "RGB"), ("bmp", "RGB")]


@pytest.fixture(scope="module")
def fm():
    try:
        return load_fashion_mnist()
    except DatasetNotFound:
        require(False, "Fashion-MNIST", "apt-get install -y dataset-fashion-mnist")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch) -> Path:
    folder = tmp_path_factory.mktemp("data-cache")
    monkeypatch.setenv("OFA_EDGE_DATA_CACHE", str(folder))
    return folder


def real_images(fm, per_class: int, classes: int = 3) -> list[tuple[int, np.ndarray]]:
    """(class, 28x28 uint8 image) pairs: the first ``per_class`` Fashion-MNIST images of each class."""
    out = []
    for c in range(classes):
        out += [(c, fm.train_x[i, :, :, 0]) for i in np.flatnonzero(fm.train_y == c)[:per_class]]
    return out


def save(path: Path, gray: np.ndarray, mode: str = "L", size: tuple[int, int] | None = None) -> None:
    """Save a real gray image as ``mode`` (RGB-ish modes get a per-channel tint: real colour)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(gray)
    if size is not None:
        im = im.resize(size, Image.Resampling.BILINEAR)
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
    elif mode in ("RGB", "RGBA", "P"):
        tinted = (np.asarray(im, np.float32)[..., None] * np.array([1.0, 0.7, 0.4])).astype(np.uint8)
        im = Image.fromarray(tinted).convert(mode)
        if mode == "RGBA":  # real transparency: alpha is the image itself (dropped when loading)
            im.putalpha(Image.fromarray(np.asarray(Image.fromarray(gray).resize(im.size))))
    elif mode != "L":
        im = im.convert(mode)
    im.save(path)


def make_folder(root: Path, fm, per_class: int = 6, variants=(("png", "L"),), sizes=None, prefix: str = "") -> Path:
    """root/<prefix><class>/<i>.<suffix>, the i-th file in variant i % len(variants)."""
    for i, (c, img) in enumerate(real_images(fm, per_class)):
        suffix, mode = variants[i % len(variants)]
        size = sizes[i % len(sizes)] if sizes else None
        save(root / prefix / CLASSES[c] / f"{i:03d}.{suffix}", img, mode, size)
    return root


# ------------------------------------------------------------- formats, modes, sizes

def test_mixed_formats_and_modes_give_rgb_at_the_stated_size(tmp_path, fm) -> None:
    from PIL import Image

    from ofa_edge.data.decode import decode_image

    root = make_folder(tmp_path / "mixed", fm, per_class=10, variants=VARIANTS, sizes=[None, (36, 36), (20, 30)])
    ds = load_dataset(str(root), image_size=32)
    assert ds.kind == "folder" and ds.classes == tuple(sorted(CLASSES)) and ds.image_shape == (32, 32, 3)
    assert ds.preprocess == {"channels": 3, "resize": "bilinear", "size": 32, "color": "RGB", "alpha": "dropped"}
    assert len(ds.train_y) + len(ds.test_y) == 30 and ds.source == str(root)
    rows = {bytes(r) for r in np.concatenate([ds.train_x, ds.test_x])}
    for path in sorted(root.rglob("*.*")):  # each file is exactly Pillow's RGB + bilinear resize
        with Image.open(path) as im:
            mode = im.mode
            im = im.convert("RGB") if mode != "I;16" else Image.fromarray((np.asarray(im) // 257).astype(np.uint8)).convert("RGB")
            want = np.asarray(im.resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=None))
        got = decode_image(str(path), "RGB", 32)
        assert np.abs(got.astype(int) - want).max() <= 1, (path, mode)
        assert bytes(got) in rows
    with pytest.raises(DataError, match="image size"):  # mixed sizes and no size given
        load_dataset(str(root))
    assert load_dataset(str(root), max_size=32).image_shape == (32, 32, 3)  # min(32, largest side 36)
    assert load_dataset(str(root), max_size=64).image_shape == (36, 36, 3)  # min(64, 36)


def test_gray_folder_is_one_channel_and_keeps_pixels(tmp_path, fm) -> None:
    root = make_folder(tmp_path / "g", fm, per_class=6, variants=[("png", "L"), ("png", "I;16"), ("bmp", "L")])
    ds = load_image_folder(root)
    assert ds.image_shape == (28, 28, 1) and ds.preprocess["color"] == "L" and ds.preprocess["size"] == 28
    source = sorted(bytes(img) for _, img in real_images(fm, 6))
    assert sorted(bytes(r[..., 0]) for r in np.concatenate([ds.train_x, ds.test_x])) == source  # 16-bit /257 exact


def test_non_square_needs_a_size_and_is_stretched(tmp_path, fm) -> None:
    root = make_folder(tmp_path / "ns", fm, per_class=3, sizes=[(24, 32)])
    with pytest.raises(DataError, match="non-square .*--image-size"):
        load_image_folder(root)
    assert load_image_folder(root, image_size=16).image_shape == (16, 16, 1)
    assert load_image_folder(root, max_size=28).image_shape == (28, 28, 1)


# ------------------------------------------------------------- layouts and the test split

def test_flat_layout_carves_a_recorded_reproducible_test_split(tmp_path, fm, _cache) -> None:
    root = make_folder(tmp_path / "flat", fm, per_class=12)
    ds = load_image_folder(root)
    assert ds.test_from == CARVED and len(ds.test_y) == 6 and np.bincount(ds.test_y).tolist() == [2, 2, 2]
    assert len(ds.test_files) == 6 and all(not f.startswith("/") and "\\" not in f for f in ds.test_files)
    assert all((root / f).is_file() for f in ds.test_files)
    assert [sorted(CLASSES).index(f.split("/")[0]) for f in ds.test_files] == ds.test_y.tolist()
    shutil.rmtree(_cache)  # a cold cache gives the same split and the same pixels
    again = load_image_folder(root)
    assert again.test_files == ds.test_files
    given = load_image_folder(root, test_files=reversed(ds.test_files))  # the record gives it back
    assert given.test_files == ds.test_files and given.test_from == CARVED
    np.testing.assert_array_equal(given.test_x, ds.test_x)
    np.testing.assert_array_equal(again.test_x, ds.test_x)
    np.testing.assert_array_equal(again.train_y, ds.train_y)


def test_test_files_are_honoured(tmp_path, fm) -> None:
    root = make_folder(tmp_path / "tf", fm, per_class=6)
    wanted = [f"{c}/{i:03d}.png" for c, i in (("Pullover", 12), ("Trouser", 6), ("Trouser", 7))]
    ds = load_dataset(str(root), test_files=wanted)
    assert sorted(ds.test_files) == sorted(wanted) and len(ds.train_y) == 15 and ds.test_from.startswith("listed")
    assert sorted(ds.test_y.tolist()) == [0, 2, 2]  # Pullover=0, T-shirt-top=1, Trouser=2
    full = load_dataset(str(root), test_files=[f"./{w}" for w in wanted])  # "./" is the same path
    np.testing.assert_array_equal(full.test_x, ds.test_x)
    assert ds.fingerprint == load_dataset(str(root)).fingerprint  # the split is not the identity
    with pytest.raises(DataError, match=r"Trouser/999\.png is missing") as e:
        load_dataset(str(root), test_files=wanted + ["Trouser/999.png"])
    assert "\n" not in str(e.value)


def test_split_layout_train_val_test(tmp_path, fm) -> None:
    imgs = real_images(fm, 9)
    for i, (c, img) in enumerate(imgs):
        part = ("train", "train", "train", "train", "train", "val", "test", "test", "test")[i % 9]
        if part == "test" and c == 1:
            continue  # test/ may lack a class
        save(tmp_path / "s" / part / CLASSES[c] / f"{i:03d}.png", img)
    root = tmp_path / "s"
    ds = load_image_folder(root)
    assert ds.test_from == "test/" and ds.test_files is None
    assert len(ds.train_y) == 18 and np.bincount(ds.test_y, minlength=3).tolist() == [3, 3, 0]  # val/ joins train
    info = scan(root)
    assert info["layout"] == "train/val/test folders" and info["counts"] == {"train": 15, "val": 3, "test": 6}
    assert info["fingerprint"] == ds.fingerprint
    shutil.rmtree(root / "test")  # no test/: carved out of train/ and val/
    carved = load_image_folder(root)
    assert carved.test_from == CARVED and len(carved.test_y) == 3
    assert all(f.split("/")[0] in ("train", "val") for f in carved.test_files)
    save(root / "test" / "Sandal" / "0.png", imgs[0][1])  # a test class train/ lacks
    with pytest.raises(DataError, match="class folder 'Sandal'") as e:
        load_image_folder(root)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------- fingerprint

def test_fingerprint_is_the_listing_and_survives_a_move(tmp_path, fm, monkeypatch) -> None:
    root = make_folder(tmp_path / "a" / "fp", fm, per_class=4)
    ds = load_image_folder(root)
    lines = sorted(f"{p.relative_to(root).as_posix()}\t{p.parent.name}\n" for p in root.rglob("*.png"))
    assert ds.fingerprint == {"files": 12, "sha256": hashlib.sha256("".join(lines).encode()).hexdigest()}
    assert load_image_folder(root).fingerprint == ds.fingerprint
    moved = tmp_path / "b" / "elsewhere"
    shutil.move(str(root), moved)
    with monkeypatch.context() as patch:  # moved: still a cache hit
        patch.setattr("ofa_edge.data.folder._decode", _no_decode)
        again = load_image_folder(moved)
    assert again.fingerprint == ds.fingerprint and again.test_files == ds.test_files and again.source == str(moved)
    monkeypatch.setenv("OFA_EDGE_DATA_CACHE", str(tmp_path / "c2"))
    (moved / "Trouser" / "004.png").rename(moved / "Trouser" / "004b.png")
    renamed = load_image_folder(moved).fingerprint
    assert renamed != ds.fingerprint
    (moved / "Trouser" / "004b.png").rename(moved / "Pullover" / "004b.png")  # relabelled
    assert load_image_folder(moved).fingerprint not in (ds.fingerprint, renamed)


# ------------------------------------------------------------- cache

def _no_decode(*args, **kwargs):
    raise AssertionError("decoded although the cache should have been hit")


def test_cache_hit_opens_no_image_and_an_edit_invalidates_it(tmp_path, fm, monkeypatch, _cache) -> None:
    import PIL.Image

    root = make_folder(tmp_path / "c", fm, per_class=6, variants=[("png", "L"), ("jpg", "RGB")])
    first = load_image_folder(root)
    names = sorted(p.name for p in _cache.iterdir())
    assert len(names) == 3 and not any(n.startswith(".") for n in names)  # headers, .npy, .json; no temp files
    assert sum(n.endswith(".npy") for n in names) == 1 and sum(n.endswith(".headers.json") for n in names) == 1
    real_open = PIL.Image.open
    with monkeypatch.context() as patch:
        patch.setattr(PIL.Image, "open", _no_decode)
        patch.setattr("ofa_edge.data.folder._decode", _no_decode)
        hit = load_image_folder(root)
        np.testing.assert_array_equal(hit.train_x, first.train_x)
        assert hit.fingerprint == first.fingerprint and hit.test_files == first.test_files
        same_size = load_image_folder(root, max_size=64)  # another request resolving to 28 x 28: the same entry
        np.testing.assert_array_equal(same_size.test_x, first.test_x)
        assert len(list(_cache.iterdir())) == 3
        hit.train_x[0] = 0  # copy-on-write: the cache file is untouched
    np.testing.assert_array_equal(load_image_folder(root).train_x, first.train_x)

    opened = []
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    edited = root / first.test_files[0]
    save(edited, 255 - real_images(fm, 1)[0][1], "RGB")  # new content, size and mtime
    after = load_image_folder(root)
    assert opened and after.test_files == first.test_files
    assert not np.array_equal(after.test_x[0], first.test_x[0])
    np.testing.assert_array_equal(after.test_x[1:], first.test_x[1:])


def test_parallel_decode_matches_in_process(tmp_path, fm, monkeypatch) -> None:
    import ofa_edge.data.decode as decode

    root = make_folder(tmp_path / "p", fm, per_class=20, variants=VARIANTS[:4])
    serial = load_image_folder(root, image_size=30, cache_dir=tmp_path / "c1")
    monkeypatch.setattr(decode, "PARALLEL_MIN", 1)
    monkeypatch.setattr(decode, "CHUNK", 7)
    monkeypatch.setenv(decode.WORKERS_ENV, "2")
    pools = []
    real_pool = decode.ProcessPoolExecutor
    monkeypatch.setattr(decode, "ProcessPoolExecutor", lambda *a, **k: pools.append(1) or real_pool(*a, **k))
    parallel = load_image_folder(root, image_size=30, cache_dir=tmp_path / "c2")
    assert pools == [1]  # one pool for headers and decoding
    np.testing.assert_array_equal(parallel.train_x, serial.train_x)
    np.testing.assert_array_equal(parallel.test_x, serial.test_x)


# ------------------------------------------------------------- scan, data info, bench

def test_scan_reads_headers_only(tmp_path, fm, monkeypatch) -> None:
    variants = [("png", "L"), ("jpg", "RGB"), ("bmp", "P"), ("png", "RGBA"), ("webp", "RGB"), ("webp", "L")]
    root = make_folder(tmp_path / "sc", fm, per_class=6, variants=variants, sizes=[None, (40, 40)])
    with monkeypatch.context() as patch:
        patch.setattr("ofa_edge.data.decode.decode_image", _no_decode)
        info = scan(root)
    assert info["counts"] == {"train": 15, "val": 0, "test": 3} and info["test_from"] == CARVED
    assert info["modes"] == {"RGB": 9, "L": 3, "P": 3, "RGBA": 3} and info["channels"] == 3  # WebP has no gray
    assert info["formats"] == {"PNG": 6, "WEBP": 6, "JPEG": 3, "BMP": 3}
    assert info["sizes"]["min"] == [28, 28] and info["sizes"]["max"] == [40, 40] and info["sizes"]["distinct"] == 2
    assert info["bad"] == [] and [c["name"] for c in info["classes"]] == sorted(CLASSES)
    assert info["fingerprint"] == load_image_folder(root, image_size=32).fingerprint


def test_cli_data_info_on_a_folder(tmp_path, fm, capsys) -> None:
    from ofa_edge.cli import main

    root = make_folder(tmp_path / "cli", fm, per_class=6, variants=VARIANTS[:2])
    assert main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "train 15 / val 0 / test 3" in out and "carved" in out and "L 9, RGB 9" in out
    assert main(["data", "info", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "folder" and info["counts"]["test"] == 3


def test_bench_decode_tiny(tmp_path, fm) -> None:
    env = {**os.environ, "OFA_EDGE_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_decode.py"), "--tiny"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    data = json.loads((tmp_path / "decode.json").read_text())
    fig = data["figures"]
    assert data["benchmark"] == "decode" and data["machine"]["cores"] and data["settings"]["tiny"]
    assert fig["images"] == 500 and fig["image_shape"] == [32, 32, 3] and fig["warm_s"] < fig["cold_s"]
