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
