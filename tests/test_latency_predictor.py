"""The calibrated latency predictor that bench fits, judged on whole subnets measured on this
machine that it never saw (held out by arch hash before measuring)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ofa_edge.predictors.latency import FILE_NAME, LatencyPredictor, LatencyPredictorError, error_report
from ofa_edge.space.searchspace import SearchSpace


def test_quick_bench_predictor_holds_on_held_out_subnets(ci_local_bench):
    _, result, log = ci_local_bench
    stored = json.loads((result.folder / FILE_NAME).read_text())
    v = stored["validation"]
    assert set(v) == {"n", "within_5pct", "within_10pct", "rmse_ms", "rmspe", "kendall_tau"}
    assert v["n"] == 30
    # The accuracy goal (>= 99% within ±10%) is a timing target: it lives in benchmarks/
    # (bench_latency_predictor.py), not here. On a shared VM a quick bench has measured anywhere
    # from 77% to 100%. What the test holds is behaviour: the figures are those of the held-out
    # points, and the predictor ranks subnets far better than chance and is roughly right.
    points = stored["report"]["validation_points"]
    again = error_report(np.array([p["predicted_ms"] for p in points]), np.array([p["measured_ms"] for p in points]))
    assert again == pytest.approx(v)
    assert v["kendall_tau"] > 0.5 and v["within_10pct"] >= 0.5 and v["rmspe"] < 0.25, points
    assert any(line.startswith("latency predictor") and "within ±10%" in line for line in log), log
    # Validation subnets were never fitted on: they are exactly the hash-chosen ones.
    subnets = json.loads((result.folder / "subnets.json").read_text())["subnets"]
    held = {s["arch"] for s in subnets if s["role"] == "validation"}
    assert {p["arch"] for p in stored["report"]["validation_points"]} == held
    assert stored["report"]["calibration_subnets"] == len(subnets) - 30 == 32
    assert stored["statistic"] == "median"


def test_predict_is_vectorized_and_refuses_unmeasured_blocks(ci_local_bench):
    _, result, _ = ci_local_bench
    p = LatencyPredictor.load(result.folder)
    space = SearchSpace("ofa-mbv3-ci")
    subnets = json.loads((result.folder / "subnets.json").read_text())["subnets"]
    archs = [space.parse(s["arch"]) for s in subnets]
    batch = p.predict(archs)
    one_by_one = np.concatenate([p.predict([a]) for a in archs])
    assert batch.shape == (len(archs),) and np.allclose(batch, one_by_one)
    assert (batch > 0).all()
    sums = p.block_sum(archs)
    assert np.allclose(sums, [s["blocks_sum_ms"] for s in subnets], rtol=1e-4)
    outside = space.parse("r28|k5e3,k5e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3")  # kernel 5: never measured
    with pytest.raises(LatencyPredictorError, match="never measured"):
        p.predict([outside])
    with pytest.raises(LatencyPredictorError, match="never measured"):
        p.predict([space.parse("r32|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3")])  # 32 px: not benched


def test_a_corrupt_predictor_file_is_one_clear_error(tmp_path):
    (tmp_path / FILE_NAME).write_text("{not json")
    with pytest.raises(LatencyPredictorError, match="not a usable latency predictor"):
        LatencyPredictor.load(tmp_path)
    with pytest.raises(LatencyPredictorError, match="run ofa-edge bench"):
        LatencyPredictor.load(tmp_path / "elsewhere")


def test_error_report_figures():
    r = error_report(np.array([1.0, 2.15, 2.9, 4.5]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert r["n"] == 4 and r["within_5pct"] == 0.5 and r["within_10pct"] == 0.75
    assert r["rmse_ms"] == pytest.approx(np.sqrt((0 + 0.0225 + 0.01 + 0.25) / 4))
    assert r["kendall_tau"] == pytest.approx(1.0)
