"""A user's own image folder from training to a verified bundle, with Fashion-MNIST made unavailable.

The folder is built from real Fashion-MNIST images written as PNG, JPEG, BMP and WEBP files, some
gray and some RGB, at different sizes, into class folders whose names are not Fashion-MNIST's.
Then, through the real command line and with the data layer pointed at an empty folder for
Fashion-MNIST (so any hidden dependency on the demo fails): train, predictor fit, bench, eval and
deploy to this machine. The checkpoint header records the dataset; eval reads it from there;
``--data`` maps labels by class name.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, bench_spec_yaml, require_fmnist

CLASSES = ["ankle boot", "bag", "coat", "dress", "pullover", "sandal", "shirt", "sneaker", "trouser", "tshirt"]
#: Fashion-MNIST label of each folder above
FMNIST_LABEL = [9, 8, 4, 3, 2, 5, 6, 7, 1, 0]
PER_CLASS = 80
FORMATS = [("png", "L", 28), ("jpg", "RGB", 32), ("bmp", "L", 30), ("webp", "RGB", 28)]


def write_folder(root: Path, source_x: np.ndarray, source_y: np.ndarray, classes: list[str], per_class: int,
                 offset: int = 0) -> dict[str, int]:
    """Real images into ``root/<class>/``: formats, modes and sizes cycle per image. Returns
    relative path -> Fashion-MNIST label."""
    from PIL import Image

    written = {}
    for name in classes:
        label = FMNIST_LABEL[CLASSES.index(name)]
        picks = np.flatnonzero(source_y == label)[offset:offset + per_class]
        (root / name).mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(picks):
            suffix, mode, size = FORMATS[k % len(FORMATS)]
            im = Image.fromarray(source_x[i, ..., 0]).convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            rel = f"{name}/img{k:03d}.{suffix}"
            im.save(root / rel, quality=95) if suffix == "jpg" else im.save(root / rel)
            written[rel] = int(label)
    return written


@pytest.fixture(scope="module")
def own(tmp_path_factory, run_cli, block_cache):
    """Train a tiny supernet on the folder, fit its predictor and bench this machine, all with
    Fashion-MNIST hidden; returns the paths and the hidden-demo environment."""
    require_fmnist()
    from ofa_edge.data import load_fashion_mnist

    root = tmp_path_factory.mktemp("own-data")
    fm = load_fashion_mnist()
    folder = root / "my images"
    write_folder(folder, fm.train_x, fm.train_y, CLASSES, PER_CLASS)
    (root / "no-fmnist").mkdir()
    env = {**os.environ, "OFA_EDGE_FMNIST_DIR": str(root / "no-fmnist"),
           "OFA_EDGE_DATA_CACHE": str(root / "cache"), "OFA_EDGE_THREADS": "1"}
    recipe = yaml.safe_load((REPO / "recipes" / "ci-tiny.yaml").read_text())
    recipe.update(name="own-data", dataset="fashion-mnist", val_size=0.1, batch_size=32, eval_images=48,
                  bn_calibration_images=128, resolutions=[28, 32], eval_resolution=28)
    recipe.pop("train_subset")
    recipe["phases"] = [{"name": "sandwich", "epochs": 6, "lr": 0.1, "kernel": [3, 5, 7], "expand": [3, 4, 6],
                         "depth": [2, 3, 4], "subnets_per_step": 3, "rule": "sandwich", "kd_ratio": 1.0}]
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run = root / "run"
    steps = {}
    steps["train"] = run_cli("train", "--recipe", str(root / "recipe.yaml"), "--data", str(folder), "--out", str(run),
                             env=env)
    steps["predictor"] = run_cli("predictor", "fit", "--supernet", str(run), "--samples", "6", "--holdout", "3",
                                 "--workers", "1", env=env)
    spec = bench_spec_yaml(root / "own.yaml", {"transport": "local"}, str(root / "work"), name="own-local")
    steps["bench"] = run_cli("bench", "--spec", str(spec), "--supernet", str(run), "--out", str(root / "runs"),
                             "--resolution", "28", "--kernels", "3", "--expands", "3,6", "--subnets", "6",
                             "--cache", str(block_cache), "--no-progress", env=env)
    return {"root": root, "folder": folder, "run": run, "env": env, "spec": spec, "steps": steps}


def test_train_predictor_and_bench_run_without_fashion_mnist(own):
    for name, result in own["steps"].items():
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
    run = own["run"]
    assert (run / "supernet.safetensors").is_file() and (run / "accuracy_predictor.json").is_file()
    assert (run / "calibration.npz").is_file()
    report = json.loads((run / "accuracy_predictor.json").read_text())["report"]
    assert report["dataset"]["recorded"] is True


def test_the_checkpoint_header_records_the_dataset(own):
    from ofa_edge.data import load_dataset
    from ofa_edge.data.record import DatasetRecord, record_from_header
    from ofa_edge.space.checkpoint import read_header

    header = read_header(own["run"])
    record = record_from_header(header)
    assert DatasetRecord.from_json(record.to_json()) == record  # the header round-trips
    assert record.kind == "folder" and record.ref == str(own["folder"].resolve())
    assert list(record.classes) == CLASSES  # label order = the sorted class folders
    assert record.channels == 3 and record.resolutions == (28, 32)
    assert record.val_size == 0.1 and record.seed == 0
    n = PER_CLASS * len(CLASSES)
    assert record.fingerprint["files"] == n
    # no test/ folder: a stratified test split was carved and recorded file by file
    assert record.test_files and len(record.test_files) == round(n / 6)
    assert all((own["folder"] / f).is_file() for f in record.test_files)
    ds = load_dataset(str(own["folder"]), image_size=record.image_size)
    assert ds.fingerprint == record.fingerprint and tuple(ds.test_files) == record.test_files
    contract = header["input"]
    assert contract["normalization_in_model"] is True and contract["channels"] == 3
    assert contract["source_channels"] == 3 and contract["resize"] == "bilinear" and contract["range"] == [0.0, 1.0]


def _eval(own, run_cli, *extra):
    result = run_cli("eval", "--supernet", str(own["run"]), "--arch", "max", "--split", "test", "--json", *extra,
                     env=own["env"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_eval_reads_the_record_and_data_moves_with_the_images(own, run_cli, tmp_path):
    from ofa_edge.data.record import record_from_header
    from ofa_edge.space.checkpoint import read_header

    record = record_from_header(read_header(own["run"]))
    first = _eval(own, run_cli)
    assert first["dataset"]["recorded"] is True and first["images"] == len(record.test_files)
    assert first["dataset"]["fingerprint"] == record.fingerprint
    # the same images at another path score the same split the same way
    moved = tmp_path / "elsewhere"
    shutil.copytree(own["folder"], moved)
    again = _eval(own, run_cli, "--data", str(moved))
    assert again["dataset"]["recorded"] is True and again["archs"] == first["archs"]


def test_data_with_an_unknown_class_is_refused(own, run_cli, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(own["folder"] / "bag", bad / "bag")
    shutil.copytree(own["folder"] / "coat", bad / "giraffe")
    result = run_cli("eval", "--supernet", str(own["run"]), "--split", "test", "--data", str(bad), env=own["env"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "'giraffe'" in result.stderr


def test_a_held_out_folder_lacking_classes_keeps_the_other_labels(own, run_cli, tmp_path):
    """Held-out images (not in the training folder) of 3 classes: each label is the record's label
    of its class name, not the folder's position among 3."""
    from ofa_edge.data import load_fashion_mnist
    from ofa_edge.data.record import open_record_data, record_from_header
    from ofa_edge.space.checkpoint import read_header

    fm = load_fashion_mnist()
    held = tmp_path / "held out"
    kept = ["sneaker", "trouser", "tshirt"]
    written = write_folder(held, fm.test_x, fm.test_y, kept, 12)
    record = record_from_header(read_header(own["run"]))
    data = open_record_data(record, held)
    assert not data.matches and "all 36" in data.note  # a held-out set without test/: every image is scored
    assert sorted(set(data.test_y.tolist())) == sorted(CLASSES.index(c) for c in kept)
    assert np.bincount(data.test_y, minlength=len(CLASSES))[[CLASSES.index(c) for c in kept]].tolist() == [12] * 3
    result = _eval(own, run_cli, "--data", str(held))
    assert result["dataset"]["recorded"] is False and result["images"] == len(written)


def test_deploy_the_folder_supernet_to_this_machine(own, run_cli):
    from ofa_edge.data.record import record_from_header
    from ofa_edge.space.checkpoint import read_header

    record = record_from_header(read_header(own["run"]))
    out = own["root"] / "bundles"
    result = run_cli("deploy", "--spec", str(own["spec"]), "--supernet", str(own["run"]), "--runs",
                     str(own["root"] / "runs"), "--out", str(out), "--no-bench", env=own["env"])
    assert result.returncode in (0, 1), result.stderr  # 1: verification failed, reported in the bundle
    bundle = out / ("own-local" if result.returncode == 0 else "own-local.failed")  # a failed one never replaces
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["dataset"]["fingerprint"] == record.fingerprint
    assert manifest["dataset"]["classes"] == CLASSES and manifest["dataset"]["recorded"] is True
    acc = manifest["accuracy"]
    assert acc["split"] == "test" and acc["images"] == len(record.test_files)  # the folder's own test split
    assert 0 <= acc["device"] <= 1 and manifest["agreement"] >= 0.99
    assert manifest["input"]["normalization_in_model"] is True and "mean" not in manifest["input"]
    assert result.returncode == 0, manifest["verification"]


def test_deploy_without_the_training_set(own, run_cli, tmp_path):
    """The training folder is gone: BN recalibration and int8 calibration come from the images
    kept with the run, and the bundle is verified on the user's held-out folder (--data)."""
    from ofa_edge.data import load_fashion_mnist

    fm = load_fashion_mnist()
    held = tmp_path / "held out"
    write_folder(held / "test", fm.test_x, fm.test_y, CLASSES, 10)
    write_folder(held / "train", fm.test_x, fm.test_y, CLASSES, 3, offset=10)
    away = own["folder"].with_name("moved away")
    own["folder"].rename(away)
    try:
        out = tmp_path / "bundles"
        result = run_cli("deploy", "--spec", str(own["spec"]), "--supernet", str(own["run"]), "--runs",
                         str(own["root"] / "runs"), "--out", str(out), "--no-bench", "--data", str(held),
                         env=own["env"])
    finally:
        away.rename(own["folder"])
    assert result.returncode in (0, 1), result.stderr
    bundle = out / ("own-local" if result.returncode == 0 else "own-local.failed")  # a failed one never replaces
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["dataset"]["recorded"] is False and manifest["dataset"]["scored"] == str(held.resolve())
    assert manifest["accuracy"]["images"] == 10 * len(CLASSES)  # its own test/ split
    assert "its own test split" in manifest["dataset"]["note"]


def test_predictor_fit_on_other_images_keeps_its_scores_apart(own, run_cli, tmp_path):
    """Scores are cached per arch: a fit on another dataset (--data) must not reuse or extend the
    recorded dataset's scores."""
    from ofa_edge.data import load_fashion_mnist

    fm = load_fashion_mnist()
    other = tmp_path / "other"
    write_folder(other, fm.test_x, fm.test_y, CLASSES, 12)
    out = tmp_path / "fit"
    result = run_cli("predictor", "fit", "--supernet", str(own["run"]), "--samples", "2", "--holdout", "1",
                     "--workers", "1", "--data", str(other), "--out", str(out), env=own["env"])
    assert result.returncode == 0, result.stderr
    assert "not the dataset the supernet was trained on" in result.stdout
    assert not (out / "accuracy_data.jsonl").exists() and len(list(out.glob("accuracy_data.*.jsonl"))) == 1
    report = json.loads((out / "accuracy_predictor.json").read_text())["report"]
    assert report["dataset"]["recorded"] is False and report["dataset"]["source"] == str(other.resolve())
