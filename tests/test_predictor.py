"""The accuracy predictor: encoding, Kendall tau, fitting, files, and the shipped predictor."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ofa_edge.predictors.accuracy import AccuracyPredictor, encode, fit, is_holdout, kendall_tau, score
from ofa_edge.predictors.collect import choose_archs
from ofa_edge.space import SearchSpace
from ofa_edge.space.checkpoint import DEFAULT_DIR


def test_encoding_is_the_reference_one_hot():
    space = SearchSpace("ofa-mbv3-tiny")
    arch = space.parse("r28|k3e4,k7e6|k5e3,k5e3,k5e3|k3e3,k3e3|k7e6,k7e6,k7e6,k7e6|k3e3,k5e4")
    x = encode(space, [arch])[0]
    p = space.preset
    assert x.shape == (len(p.stages) * p.max_depth * 6 + len(p.resolutions),)
    slots = x[:-len(p.resolutions)].reshape(len(p.stages), p.max_depth, 6)
    assert slots[0, 0].tolist() == [1, 0, 0, 0, 1, 0]      # k3 e4
    assert slots[0, 1].tolist() == [0, 0, 1, 0, 0, 1]      # k7 e6
    assert slots[0, 2].sum() == 0 and slots[0, 3].sum() == 0  # skipped blocks are zeros
    assert slots.sum() == 2 * sum(arch.depths)
    res = x[-len(p.resolutions):]
    assert res.sum() == 1 and res[p.resolutions.index(28)] == 1


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)


def test_fit_learns_a_synthetic_accuracy_and_round_trips(tmp_path):
    space = SearchSpace("ofa-mbv3-ci")
    archs = space.sample_many(400, seed=3)
    # a made-up "accuracy": more depth, bigger kernels and expands, higher resolution help
    truth = np.array([0.80 + 0.004 * sum(a.depths) + 0.001 * sum(k + e for k, e in a.blocks)
                      + 0.002 * (a.resolution - 28) for a in archs])
    pred = fit(space, archs[:300], truth[:300], epochs=300)
    metrics = score(pred, space, archs[300:], truth[300:])
    assert metrics["kendall_tau"] > 0.8 and metrics["rmse"] < 0.01
    pred.report = {"holdout": metrics}
    path = pred.save(tmp_path / "acc")
    assert path.suffix == ".json" and path.with_suffix(".npz").is_file()
    assert "pickle" not in path.read_text()
    loaded = AccuracyPredictor.load(path)
    batch = loaded.predict(space, archs[300:])
    single = np.array([loaded.predict(space, [a])[0] for a in archs[300:310]])
    assert np.allclose(batch[:10], single, atol=1e-6)
    assert np.allclose(batch, pred.predict(space, archs[300:]), atol=1e-6)


def test_predictor_refuses_another_space_and_bad_files(tmp_path):
    space = SearchSpace("ofa-mbv3-ci")
    archs = space.sample_many(20, seed=1)
    pred = fit(space, archs, np.linspace(0.8, 0.9, 20), epochs=5)
    with pytest.raises(Exception, match="space ofa-mbv3-ci, not ofa-mbv3-tiny"):
        pred.predict(SearchSpace("ofa-mbv3-tiny"), SearchSpace("ofa-mbv3-tiny").sample_many(2))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(Exception, match="not a usable accuracy predictor"):
        AccuracyPredictor.load(bad)


def test_holdout_choice_is_fixed_by_hash_and_disjoint():
    space = SearchSpace("ofa-mbv3-tiny")
    train, held = choose_archs(space, 60, 12, [24, 28, 32], seed=0)
    assert len(train) == 60 and len(held) == 12 and not set(train) & set(held)
    assert all(is_holdout(a) for a in held) and not any(is_holdout(a) for a in train)
    assert {a.resolution for a in train + held} <= {24, 28, 32}
    assert choose_archs(space, 60, 12, [24, 28, 32], seed=0) == (train, held)


def test_shipped_predictor_ranks_held_out_subnets():
    """Kendall tau recomputed here from the committed held-out subnets and their measured val top-1."""
    path = DEFAULT_DIR / "accuracy_predictor.json"
    assert path.is_file(), "the default supernet ships its accuracy predictor"
    pred = AccuracyPredictor.load(path)
    space = SearchSpace(pred.space_id)
    rows = [json.loads(line) for line in (DEFAULT_DIR / "accuracy_holdout.jsonl").read_text().splitlines()]
    assert len(rows) >= 200
    archs = [space.parse(r["arch"]) for r in rows]
    measured = np.array([r["val_top1"] for r in rows])
    tau = kendall_tau(pred.predict(space, archs), measured)
    assert tau > 0.5
    assert tau == pytest.approx(pred.report["holdout"]["kendall_tau"], abs=1e-6)
    assert pred.report["train"]["n"] >= 1000


def test_predictor_workers_spread_over_the_visible_gpus(monkeypatch):
    """One device per scoring process: the GPUs in turn on CUDA, the CPU otherwise."""
    import torch

    from ofa_edge.predictors.collect import worker_devices

    assert worker_devices("cpu", 3) == ["cpu"] * 3
    assert worker_devices("auto", 2) == (["cpu"] * 2 if not torch.cuda.is_available() else worker_devices("cuda", 2))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert worker_devices("cuda", 5) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]
