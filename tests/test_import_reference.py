"""Reference OFA checkpoints in every command: format detection from the first bytes,
``ofa-edge import-reference`` checked against the reference implementation (PyPI ``ofa``),
a raw extension-less legacy file accepted by ``--supernet``, and bad files as one line."""
from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from ofa_edge.cli import main
from reference_ofa import randomised, reference_imports

WNIDS = Path(__file__).resolve().parents[1] / "ofa_edge" / "assets" / "imagenet" / "wnids.txt"


@pytest.fixture(scope="module")
def reference_net():
    torch.set_num_threads(1)
    return randomised(1.0, 0)


@pytest.fixture(scope="module")
def files(reference_net, tmp_path_factory):
    """(a) torch zip, {"state_dict": ...}, a .pth name; (b) torch's legacy serialisation, no
    wrapper, no extension (like the published files)."""
    folder = tmp_path_factory.mktemp("reference")
    zipped = folder / "ofa_w1.0_zip.pth"
    torch.save({"state_dict": reference_net.state_dict()}, zipped)
    legacy = folder / "ofa_mbv3_d234_e346_k357_w1.0"
    torch.save(reference_net.state_dict(), legacy, _use_new_zipfile_serialization=False)
    assert zipped.read_bytes()[:4] == b"PK\x03\x04" and legacy.read_bytes()[:2] == b"\x80\x02"
    return {"zip": zipped, "legacy": legacy, "folder": folder}


@pytest.fixture(scope="module")
def imported(files, run_cli):
    """Both files through ``ofa-edge import-reference`` (the real CLI, a subprocess each)."""
    out = {}
    for kind in ("zip", "legacy"):
        run = files["folder"] / f"run-{kind}"
        r = run_cli("import-reference", str(files[kind]), "--out", str(run), timeout=240)
        assert r.returncode == 0, r.stderr
        assert f"into {run}" in r.stdout and "ofa-mbv3-w1.0" in r.stdout, r.stdout
        assert sorted(p.name for p in run.iterdir()) == ["supernet.safetensors"]
        assert not [p for p in run.parent.iterdir() if ".tmp-" in p.name]
        out[kind] = run
    return out


def test_wnids_file_is_imagenet_sorted_and_cited():
    wnids = WNIDS.read_text().split()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"  # tench ... toilet tissue
    readme = (WNIDS.parent / "README.md").read_text()
    assert hashlib.sha256(WNIDS.read_bytes()).hexdigest() in readme
    assert "timm" in readme and "Apache" in readme
    pyproject = (WNIDS.parents[3] / "pyproject.toml").read_text()
    assert '"assets/imagenet/*"' in pyproject  # installed with the package


def test_import_matches_the_reference_implementation(reference_net, imported):
    """5 random archs (and the largest/smallest): the imported subnets' outputs equal the
    reference's within a relative tolerance of 1e-5; both serialisations give the same weights."""
    from safetensors.torch import load_file

    from ofa_edge.space.source import open_supernet

    a, b = (load_file(str(imported[k] / "supernet.safetensors")) for k in ("zip", "legacy"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ours = open_supernet(str(imported["zip"])).net
    assert ours.space.id == "ofa-mbv3-w1.0" and ours.num_classes == 1000
    mean = torch.tensor(ours.input_mean).view(1, 3, 1, 1)
    std = torch.tensor(ours.input_std).view(1, 3, 1, 1)
    space = ours.space
    archs = [space.largest(128), space.smallest(128)] + [space.sample(100 + i, resolution=128) for i in range(5)]
    assert len({str(a) for a in archs}) == len(archs)
    for arch in archs:
        lists = arch.to_reference(space.preset.max_depth)
        reference_net.set_active_subnet(ks=lists["ks"], e=lists["e"], d=lists["d"])
        ref_sub = reference_net.get_active_subnet(preserve_weight=True).eval()
        our_sub = ours.extract(arch).eval()
        x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            expected = ref_sub((x - mean) / std)
            got = our_sub(x)
        rel = ((got - expected).abs().max() / expected.abs().max()).item()
        assert rel <= 1e-5, f"{arch}: relative error {rel:.2e}"


def test_header_records_imagenet_resolutions_preprocessing_and_source(files, imported):
    from ofa_edge.data.record import record_from_header
    from ofa_edge.space.checkpoint import read_header

    header = read_header(imported["legacy"])
    assert header["space_id"] == "ofa-mbv3-w1.0" and header["num_classes"] == 1000
    assert header["trained_resolutions"] == list(range(128, 225, 4))
    record = record_from_header(header)
    assert record.classes == tuple(WNIDS.read_text().split()) and record.channels == 3
    assert list(record.resolutions) == list(range(128, 225, 4))
    assert header["input"]["normalization_in_model"] is True
    assert header["input_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert header["input_std"] == pytest.approx([0.229, 0.224, 0.225])
    pre = header["eval_preprocessing"]
    assert pre["resize"] == "shorter-side" and pre["crop_fraction"] == 0.875 and pre["crop"] == "center"
    assert pre["interpolation"] == "bilinear"
    src = header["imported_from"]
    assert src["file"] == "ofa_mbv3_d234_e346_k357_w1.0" and src["serialisation"] == "torch-legacy"
    assert src["wrapped"] is False and src["sha256"] == hashlib.sha256(files["legacy"].read_bytes()).hexdigest()
    zipped = read_header(imported["zip"])["imported_from"]
    assert zipped["serialisation"] == "torch-zip" and zipped["wrapped"] is True


def test_raw_extension_less_file_is_a_supernet_everywhere(files, imported, tmp_path, run_cli):
    """open_supernet gives the raw file the import's header and id; ``ofa-edge eval`` scores it on a
    tiny folder of wnid-named classes; search and predictor fit, which need side files, say in
    one line to import it first."""

    from ofa_edge.space.checkpoint import read_header
    from ofa_edge.space.source import open_supernet

    raw = open_supernet(str(files["legacy"]))
    assert raw.kind == "reference" and raw.folder is None
    assert raw.weights_id == hashlib.sha256(files["legacy"].read_bytes()).hexdigest()[:12]
    assert raw.header == read_header(imported["legacy"])
    from imagenet_folder import make_imagenet_folder

    wnids = WNIDS.read_text().split()
    data = tmp_path / "val"
    make_imagenet_folder(data, per_class=4)  # real photos, val/<wnid>/*.JPEG
    r = run_cli("eval", "--supernet", str(files["legacy"]), "--data", str(data), "--arch", "min",
                "--resolution", "128", "--split", "test", "--json", "--device", "cpu", cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["space"] == "ofa-mbv3-w1.0" and result["images"] == 11  # one image recalibrates BN
    assert "marked slice of 1 val images" in result["bn_calibration_source"]
    assert (tmp_path / result["logged_to"]).is_file()  # runs/ under the working folder: a raw file has no run folder
    assert result["dataset"]["classes"] == wnids and 0 <= result["archs"][0]["top1"] <= 1
    r = run_cli("eval", "--supernet", str(files["legacy"]), "--arch", "min", "--resolution", "128", timeout=240)
    assert r.returncode == 2 and "pass --data PATH" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(Exception, match="raw reference OFA checkpoint.*import-reference"):
        from ofa_edge.search.run import _accuracy_predictor

        _accuracy_predictor(str(files["legacy"]))


def test_bench_takes_the_raw_file_up_to_its_readiness_step(files, tmp_path, capsys, monkeypatch):
    """bench loads the raw file, plans w1.0's blocks at 128 px, then stops at the device's
    readiness (its python is missing): one line, nothing converted."""
    import yaml

    from ofa_edge.space import source

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "device_specs" / "local.yaml").read_text())
    spec["device"] = {"python": str(tmp_path / "no-such-python"), "work_dir": str(tmp_path / "work")}
    spec["budgets"] = {"resolution": [128, 224]}
    spec_file = tmp_path / "missing-python.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    opened, real = [], source.open_supernet
    monkeypatch.setattr(source, "open_supernet", lambda *a, **k: opened.append(real(*a, **k)) or opened[-1])
    _one_line(capsys, ["bench", "--spec", str(spec_file), "--supernet", str(files["legacy"]), "--quick",
                       "--resolution", "128", "--out", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache"),
                       "--no-progress"], "no-such-python")
    assert [o.kind for o in opened] == ["reference"] and opened[0]._net.space.id == "ofa-mbv3-w1.0"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.tflite"))


def test_w12_is_detected_and_an_existing_out_is_refused(tmp_path, capsys):
    from ofa_edge.space.source import open_supernet

    path = tmp_path / "ofa_mbv3_d234_e346_k357_w1.2"
    torch.save(randomised(1.2, 3).state_dict(), path, _use_new_zipfile_serialization=False)
    src = open_supernet(str(path))
    assert src.space_id == "ofa-mbv3-w1.2" and src.header["imported_from"]["serialisation"] == "torch-legacy"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    _one_line(capsys, ["import-reference", str(path), "--out", str(tmp_path / "taken")], "already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ofa_mbv3_d234_e346_k357_w1.2", "taken"]


def _one_line(capsys, argv: list[str], *needles: str) -> str:
    """``ofa-edge argv`` in process: exit 2 and one line on stderr, an error of ours (no traceback)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ofa-edge: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_files_are_one_line_and_exit_2(files, tmp_path, capsys):
    zipped, legacy = files["zip"].read_bytes(), files["legacy"].read_bytes()
    cases = {
        "truncated.pth": (zipped[: len(zipped) // 2], "truncated"),
        "truncated_legacy": (legacy[: len(legacy) // 2], "truncated"),
        "empty": (b"", "empty"),
        "foreign.pth": (pickle.dumps({"weights": [1.0, 2.0]}, protocol=2), "a Python pickle"),
        "notes.pth": (b"these are not weights\n" * 10, "a text file"),
    }
    for name, (content, what) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        for argv in (["import-reference", str(path), "--out", str(tmp_path / f"out-{name}")],
                     ["search", "--spec", "stm32f746", "--supernet", str(path)]):
            err = _one_line(capsys, argv, str(path), what)
            if what != "truncated":
                assert "accepted:" in err and "torch's zip or legacy serialisation" in err, err
        assert not (tmp_path / f"out-{name}").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # a pickle of Python objects is refused by the weights-only load, in one line
    objects = tmp_path / "model.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "optimizer": torch.optim.SGD}, objects)
    _one_line(capsys, ["import-reference", str(objects), "--out", str(tmp_path / "o")], "weights-only")
    # a bad --acc-predictor after the supernet was written: nothing is left behind
    _one_line(capsys, ["import-reference", str(files["legacy"]), "--out", str(tmp_path / "o"), "--acc-predictor",
                       str(tmp_path / "notes.pth")], "notes.pth")
    assert not (tmp_path / "o").exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_acc_predictor_is_imported_and_search_runs_on_the_folder(files, tmp_path, capsys):
    """--acc-predictor (the ofa.nas layout, random weights): accuracy_predictor.json predicts what
    the predictor import gives, and ``search`` runs on the run folder at once (the MCU cost model
    as the latency source: no bench tables needed)."""
    import numpy as np

    from ofa_edge.predictors.accuracy import AccuracyPredictor
    from ofa_edge.predictors.reference_import import import_reference_predictor
    from ofa_edge.space.searchspace import SearchSpace

    with reference_imports():
        from ofa.nas.accuracy_predictor import AccuracyPredictor as NasPredictor
        from ofa.nas.accuracy_predictor import MobileNetArchEncoder
    space = SearchSpace("ofa-mbv3-w1.0")
    encoder = MobileNetArchEncoder(image_size_list=list(space.preset.resolutions), ks_list=[3, 5, 7],
                                   expand_list=[3, 4, 6], depth_list=[2, 3, 4])
    torch.manual_seed(5)
    nas = NasPredictor(encoder, hidden_size=400, n_layers=3, device="cpu")
    predictor_file = tmp_path / "acc_predictor.pth"
    torch.save(nas.state_dict(), predictor_file)
    run = tmp_path / "run"
    assert main(["import-reference", str(files["legacy"]), "--out", str(run), "--acc-predictor",
                 str(predictor_file), "--name", "ofa-w1.0"]) == 0
    assert "with the accuracy predictor" in capsys.readouterr().out
    assert {"supernet.safetensors", "accuracy_predictor.json", "accuracy_predictor.npz"} <= {p.name for p in run.iterdir()}
    archs = [space.sample(i, resolution=r) for i, r in enumerate((128, 160, 224))]
    np.testing.assert_array_equal(AccuracyPredictor.load(run / "accuracy_predictor.json").predict(space, archs),
                                  import_reference_predictor(predictor_file, space).predict(space, archs))
    assert main(["search", "--spec", "stm32f746", "--supernet", str(run), "--latency-ms", "1e6", "--sram-kb", "1e6",
                 "--flash-kb", "1e6", "--population", "8", "--generations", "2"]) == 0
    assert "space ofa-mbv3-w1.0" in capsys.readouterr().out


def test_import_reference_has_help_with_an_example(capsys):
    with pytest.raises(SystemExit) as e:
        main(["import-reference", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "example:" in out and "ofa-edge import-reference" in out and "--acc-predictor" in out
