"""ImageNet-style evaluation data: the accepted layouts, the reference's resize-and-centre-crop
decoded and cached per resolution, where BN recalibration draws from, and bad input as one line.
The images are real (tests/imagenet_folder.py)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from imagenet_folder import WNIDS, flatten, make_imagenet_folder
from ofa_edge.data import imagenet
from ofa_edge.data.decode import center_crop_box, decode_image
from ofa_edge.data.record import DatasetRecord, open_record_data
from ofa_edge.errors import DataError

CLASSES = tuple(WNIDS.read_text().split())
RECORD = DatasetRecord(kind="imagenet", ref="imagenet", fingerprint={}, classes=CLASSES, channels=3,
                       resolutions=(128, 160), val_size=10000, seed=0, test_from="val")


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "val"
    make_imagenet_folder(root, per_class=10)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_EDGE_DATA_CACHE", str(tmp_path / "data-cache"))


def _by_name(part) -> dict[str, int]:
    return {Path(f).name: int(y) for f, y in zip(part.files, part.labels)}


def test_center_crop_box_is_the_reference_resize_then_centre_crop():
    """Shorter side to ceil(r / 0.875), the longer one truncated to keep the aspect ratio, the
    centre r x r with offsets rounded half to even (torchvision's Resize(int) and CenterCrop)."""
    assert center_crop_box(500, 375, 224, 0.875) == ((341, 256), (58, 16, 282, 240))
    assert center_crop_box(375, 500, 128, 0.875) == ((147, 196), (10, 34, 138, 162))
    assert center_crop_box(256, 256, 224, 0.875) == ((256, 256), (16, 16, 240, 240))


def test_decode_keeps_the_aspect_ratio_and_takes_the_centre(val):
    from PIL import Image

    path = next((val / "n04350905").iterdir())
    got = decode_image(str(path), "RGB", 160, crop=0.875)
    with Image.open(path) as im:
        size, box = center_crop_box(*im.size, 160, 0.875)
        expected = np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR).crop(box))
        stretched = decode_image(str(path), "RGB", 160)
    assert got.shape == (160, 160, 3) and np.array_equal(got, expected)
    assert not np.array_equal(got, stretched)  # a stretch is not the reference's crop


def test_every_layout_gives_the_same_files_and_labels(val, tmp_path):
    folders, _ = imagenet.list_imagenet(val, CLASSES)
    expected = _by_name(folders)
    assert len(expected) == 30 and set(expected.values()) == {CLASSES.index(w) for w in
                                                              ("n04350905", "n03871628", "n03595614")}
    root = tmp_path / "root"
    shutil.copytree(val, root / "val")
    shutil.copytree(val, root / "train")
    scored, train = imagenet.list_imagenet(root, CLASSES)
    assert _by_name(scored) == expected and _by_name(train) == expected
    labels = flatten(val, tmp_path / "flat")                       # wnid labels, found in the folder
    assert _by_name(imagenet.list_imagenet(tmp_path / "flat", CLASSES)[0]) == expected
    by_index = flatten(val, tmp_path / "indexed", lambda w: str(CLASSES.index(w)))
    by_index = by_index.rename(by_index.with_name("my_labels.txt"))  # any name when passed as --data
    assert _by_name(imagenet.list_imagenet(by_index, CLASSES)[0]) == expected
    kaggle = tmp_path / "flat" / "LOC_val_solution.csv"             # Kaggle's ImageId has no extension
    rows = [line.split() for line in labels.read_text().splitlines()]
    kaggle.write_text("ImageId,PredictionString\n" + "".join(f"{Path(f).stem},{w} 1 2 3 4\n" for f, w in rows))
    assert _by_name(imagenet.list_imagenet(kaggle, CLASSES)[0]) == expected


def test_images_are_decoded_once_per_resolution_and_cached(val, monkeypatch):
    scored, _ = imagenet.list_imagenet(val, CLASSES)
    first = imagenet._image_list(scored.files, None)
    x128 = first.at(128)
    assert x128.shape == (30, 128, 128, 3) and x128.dtype == np.uint8 and x128.std() > 10
    assert first[:5].at(128).shape == (5, 128, 128, 3)

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagenet, "decode_all", no_decode)
    again = imagenet._image_list(scored.files, None)
    assert np.array_equal(again.at(128), x128)  # from the disk cache
    with pytest.raises(AssertionError, match="decoded again"):
        again.at(160)  # another resolution is another crop
    path = Path(scored.files[0])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        imagenet._image_list(scored.files, None).at(128)  # an edited file is decoded again


def test_val_only_recalibrates_on_a_marked_slice_that_is_not_scored(val):
    lines: list[str] = []
    rd = open_record_data(RECORD, val, log=lines.append)
    assert "marked slice of 3 val images" in rd.bn_source and "not scored" in rd.bn_source
    assert len(rd.train_y) == 3 and len(rd.test_y) == len(rd.val_y) == 27
    assert not set(rd.train_x.paths) & set(rd.test_x.paths)
    assert lines == [rd.note] and "marked slice" in rd.note
    assert len(set(rd.test_y[:6].tolist())) > 1  # shuffled: a prefix is not one class


def test_a_train_folder_recalibrates_bn_and_val_is_scored(val, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(val, root / "val")
    make_imagenet_folder(root / "train", per_class=12, seed=1)
    rd = open_record_data(RECORD, root)
    assert rd.bn_source.startswith(f"train folder {root / 'train'}")
    assert len(rd.test_y) == 30 and len(rd.val_y) + len(rd.train_y) == 36
    assert all("/train/" in p for p in rd.train_x.paths + rd.val_x.paths)
    assert sorted(rd.test_x.paths) == sorted(str(p) for p in (root / "val").glob("*/*.JPEG"))


@pytest.mark.parametrize("case, needle", [
    ("none", "pass --data PATH"),
    ("unknown class", "is not one of the supernet's 1,000 classes"),
    ("devkit labels", "ILSVRC2012_validation_ground_truth"),
    ("missing file", "is missing"),
    ("bad label", "neither one of the supernet's WordNet ids nor a class index"),
    ("no layout", "neither <wnid>/ class folders nor a labels file"),
])
def test_bad_imagenet_data_is_one_line(val, tmp_path, case, needle):
    data = None
    if case == "unknown class":
        data = tmp_path / "val"
        shutil.copytree(val, data)
        (data / "cats").mkdir()
    elif case in ("devkit labels", "missing file", "bad label"):
        data = tmp_path / "labels.txt"
        data.write_text({"devkit labels": "490\n361\n", "missing file": "nope.JPEG n04350905\n",
                         "bad label": f"{next((val / 'n04350905').iterdir())} cat\n"}[case])
    elif case == "no layout":
        data = tmp_path / "flat"
        data.mkdir()
        shutil.copy(next((val / "n04350905").iterdir()), data)
    with pytest.raises(DataError) as caught:
        open_record_data(RECORD, data)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_corrupt_image_is_one_line_naming_it(val, tmp_path):
    data = tmp_path / "val"
    shutil.copytree(val, data)
    (data / "n04350905" / "broken.JPEG").write_bytes(b"")
    rd = open_record_data(RECORD, data)
    with pytest.raises(DataError) as caught:
        imagenet.images_at(rd.test_x, 128)
    message = str(caught.value)
    assert "broken.JPEG" in message and "empty file" in message and "\n" not in message
    assert not list((tmp_path / "data-cache").glob("*.npy"))  # nothing half-written in the cache
