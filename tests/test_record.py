"""The dataset record and the calibration images kept with a run (fast unit tests; the whole path
from an image folder to a bundle is in test_own_data.py)."""
from __future__ import annotations

import numpy as np
import pytest

from ofa_edge.data.record import (LEGACY_RECORD, Calibration, DatasetRecord, calibration_indices, class_mapping,
                                  input_contract, load_calibration, record_from_header, save_calibration)
from ofa_edge.errors import DataError


def test_a_header_without_a_record_means_the_documented_default():
    record = record_from_header({"schema_version": 1, "trained_resolutions": [24, 28, 32]})
    assert record.legacy and record.kind == "fashion-mnist" and record.val_size == 5000 and record.seed == 0
    assert record.test_from == "t10k" and record.resolutions == (24, 28, 32)
    assert record.classes[0] == "T-shirt/top" and len(record.classes) == 10
    assert LEGACY_RECORD.resolutions == ()


def test_the_shipped_checkpoint_has_no_record_and_reads_as_fashion_mnist():
    from ofa_edge.space.checkpoint import read_header

    header = read_header("default")
    assert "dataset" not in header  # never re-saved: its sha256 is in committed results
    assert record_from_header(header).kind == "fashion-mnist"


def test_a_record_round_trips_through_json():
    record = DatasetRecord(kind="folder", ref="/data/pets", fingerprint={"files": 3, "sha256": "ab"},
                           classes=("cat", "dog"), channels=3, resolutions=(28, 32), val_size=0.1, seed=4,
                           test_from="carved: stratified 1/6, seed 0", test_files=("cat/1.png",), image_size=32)
    assert DatasetRecord.from_json(record.to_json()) == record
    with pytest.raises(DataError, match="version"):
        DatasetRecord.from_json({**record.to_json(), "version": 99})


def test_labels_follow_class_names_not_positions():
    known = ("T-shirt/top", "Trouser", "Pullover", "Dress")
    # a folder with a subset, in another order, with folder-safe spellings
    assert class_mapping(("dress", "t-shirt_top", "Trouser"), known, "x").tolist() == [3, 0, 1]
    with pytest.raises(DataError, match="'giraffe'") as err:
        class_mapping(("Dress", "giraffe"), known, "/data/held-out")
    assert "\n" not in str(err.value) and "/data/held-out" in str(err.value)


def test_stored_calibration_gives_the_same_images_as_the_train_split(tmp_path):
    x = np.random.RandomState(0).randint(0, 256, (3000, 8, 8, 1)).astype(np.uint8)
    save_calibration(tmp_path, Calibration.from_train(x))
    stored = load_calibration(tmp_path)
    assert len(stored.bn_x) == 2000 and np.array_equal(stored.quant_x, x[:200])
    for n in (2000, 500, 37):
        assert np.array_equal(stored.bn_images(n), x[calibration_indices(3000, n, 0)])
    assert load_calibration(tmp_path / "none") is None
    (tmp_path / "calibration.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt"):
        load_calibration(tmp_path)


def test_the_input_contract_says_normalisation_is_inside_the_model():
    contract = input_contract(1, (0.28,) * 3, (0.35,) * 3)
    assert contract["normalization_in_model"] is True and "mean" not in contract and "std" not in contract
    assert contract["channels"] == 3 and contract["source_channels"] == 1 and contract["gray_to_rgb"] == "repeat"
    assert contract["range"] == [0.0, 1.0] and contract["resize"] == "bilinear"
