"""OFA's published Note10 latency tables as a latency model: parity with the reference's own
``predict_network_latency_given_spec`` (PyPI ``ofa``) on random archs at every table resolution,
and a layer missing from the table refused in one line, never counted as 0 ms."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from conftest import REPO, require
from ofa_edge.predictors.latency_table import TableError, TableLatency, layer_keys, read_reference_table
from ofa_edge.space import SearchSpace
from reference_ofa import reference_imports

SHARED = REPO.parent / "shared" / "ofa-reference"
SPACE = SearchSpace("ofa-mbv3-w1.2")
ARCHS_PER_RESOLUTION = 200


@pytest.fixture(scope="module")
def note10() -> dict[int, dict]:
    files = sorted(SHARED.glob("note10_*.yaml"))
    require(len(files) == 5, "OFA's published Note10 tables", f"put ../shared/ofa-reference beside the checkout ({SHARED})")
    return dict(read_reference_table(f) for f in files)


def _reference_estimator(path: Path):
    with reference_imports():
        from ofa.tutorial.latency_table import LatencyEstimator
    est = LatencyEstimator.__new__(LatencyEstimator)  # its __init__ calls yaml.load, which PyYAML 6 refuses
    est.lut = yaml.safe_load(path.read_text())
    return est


def test_table_latency_equals_the_reference_on_random_archs(note10):
    ours = TableLatency("note10", SPACE.preset, note10)
    assert ours.resolutions == [160, 176, 192, 208, 224]
    rng = random.Random(0)
    for r in ours.resolutions:
        reference = _reference_estimator(SHARED / f"note10_{r}.yaml")
        archs = [SPACE.largest(r), SPACE.smallest(r)] + [SPACE.sample(rng, resolution=r)
                                                         for _ in range(ARCHS_PER_RESOLUTION)]
        for arch in archs:
            spec = arch.to_reference(SPACE.preset.max_depth)
            expected = reference.predict_network_latency_given_spec({**spec, "r": [r]})
            assert ours.latency_ms(arch) == pytest.approx(expected, abs=1e-6, rel=0), str(arch)
    smallest, largest = ours.predict([SPACE.smallest(160), SPACE.largest(224)])
    assert 0 < smallest < largest


def test_a_layer_missing_from_the_table_is_refused_in_one_line(note10):
    arch = SPACE.largest(224)
    missing = next(k for k in layer_keys(SPACE.preset, arch) if k.startswith("expanded_conv") and "kernel:7" in k)
    tables = {r: dict(t) for r, t in note10.items()}
    del tables[224][missing]
    model = TableLatency("note10", SPACE.preset, tables)
    with pytest.raises(TableError) as caught:
        model.latency_ms(arch)
    message = str(caught.value)
    assert missing in message and "never counted as 0 ms" in message and "\n" not in message
    assert model.latency_ms(SPACE.smallest(224)) > 0  # archs that avoid the layer still work
    with pytest.raises(TableError, match="no resolution 128"):
        model.latency_ms(SPACE.smallest(128))


@pytest.fixture(scope="module")
def note10_spec(note10, tmp_path_factory, run_cli) -> Path:
    """``ofa-edge import-latency-table`` on the published tables, as a user runs it."""
    out = tmp_path_factory.mktemp("note10") / "device_specs" / "note10.yaml"
    done = run_cli("import-latency-table", *map(str, sorted(SHARED.glob("note10_*.yaml"))), "--name", "note10",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(" layers") == 5 and "missing" not in done.stdout  # the tables cover w1.2 entirely
    return out


@pytest.fixture(scope="module")
def w12_run(tmp_path_factory) -> Path:
    """A reference w1.2 supernet (random weights) imported with OFA's published accuracy predictor."""
    import torch

    from ofa_edge.space.reference import import_reference
    from reference_ofa import randomised

    folder = tmp_path_factory.mktemp("w12")
    checkpoint = folder / "ofa_mbv3_d234_e346_k357_w1.2"
    torch.save(randomised(1.2, 5).state_dict(), checkpoint, _use_new_zipfile_serialization=False)
    return import_reference(checkpoint, folder / "runs" / "ofa-w1.2", acc_predictor=SHARED / "acc_predictor.pth")


def test_import_writes_a_spec_with_no_transport_and_its_table(note10_spec, note10, run_cli):
    import json

    from ofa_edge.devices.spec import load_spec

    spec = load_spec(note10_spec)
    assert spec.connection.transport == "none" and spec.hardware is None and spec.budgets.resolution == [160, 224]
    doc = json.loads(spec.latency_table_path().read_text())
    assert doc["space_id"] == "ofa-mbv3-w1.2" and [s["resolution"] for s in doc["sources"]] == [160, 176, 192, 208, 224]
    assert {int(r): {k: v["mean"] for k, v in t.items()} for r, t in doc["tables"].items()} == {
        r: {k: v["mean"] for k, v in t.items()} for r, t in note10.items()}
    again = run_cli("import-latency-table", str(SHARED / "note10_160.yaml"), "--name", "note10", "--out", str(note10_spec))
    assert again.returncode == 2 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    bench = run_cli("bench", "--spec", str(note10_spec), "--quick")
    assert bench.returncode == 2 and "published latency table" in bench.stderr and "nothing to time" in bench.stderr


@pytest.mark.parametrize("content, needle", [
    ("not: [valid", "is not valid YAML"),
    ("a: 1\n", "expected the stem layer of exactly one resolution"),
    ("Conv-input:160x160x3-output:80x80x24:\n  std: 0.1\n", "has no numeric mean"),
])
def test_a_bad_table_file_is_one_line_and_writes_nothing(tmp_path, run_cli, content, needle):
    bad = tmp_path / "160_lookup_table.yaml"
    bad.write_text(content)
    done = run_cli("import-latency-table", str(bad), "--name", "phone", "--out", str(tmp_path / "phone.yaml"))
    assert done.returncode == 2 and needle in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]


def test_search_reads_the_table_and_deploy_stops_after_extraction(note10_spec, note10, w12_run, tmp_path, run_cli):
    from ofa_edge.devices.spec import load_spec
    from ofa_edge.search.evolution import SearchSettings
    from ofa_edge.search.run import run_search, setup_search

    setup = setup_search(load_spec(note10_spec), str(w12_run), tmp_path / "runs", {"latency_ms": 25})
    assert "published latency table" in setup.latency_source
    result, rows = run_search(setup, SearchSettings())
    table = TableLatency("note10", SPACE.preset, note10)
    best = result.best
    assert rows[0]["predicted"]["latency_ms"] == pytest.approx(table.latency_ms(best))
    assert table.latency_ms(best) <= 25
    assert best.resolution in table.resolutions
    done = run_cli("deploy", "--spec", str(note10_spec), "--supernet", str(w12_run), "--latency-ms", "25",
                   "--out", str(tmp_path / "bundles"), "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "deploy stops after search and extraction" in done.stdout and "Nothing was converted" in done.stdout
    assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())
