"""The timing protocol and the latency statistic, without a device: a scripted ``time_models``."""
from __future__ import annotations

from pathlib import Path

import pytest

from ofa_edge.devices.spec import Measure
from ofa_edge.devices.statistic import STATISTICS, across_passes, statistic_key
from ofa_edge.devices.protocol import TimingProtocol


def test_statistic_is_a_percentile_within_a_pass_then_the_median_over_passes():
    passes = [{"p10_ms": 1.0, "p50_ms": 2.0, "p90_ms": 9.0}, {"p10_ms": 1.2, "p50_ms": 2.4, "p90_ms": 3.0},
              {"p10_ms": 0.9, "p50_ms": 2.2, "p90_ms": 4.0, "flagged": True}]
    out = across_passes(passes)
    assert (out["p10_ms"], out["p50_ms"], out["p90_ms"]) == (1.0, 2.2, 4.0)  # medians, not means
    assert out["passes"] == 3 and out["pass_p50_ms"] == [2.0, 2.4, 2.2] and out["flagged_passes"] == 1
    assert {n: statistic_key(n) for n in STATISTICS} == {"median": "p50_ms", "p90": "p90_ms", "p10": "p10_ms"}
    with pytest.raises(ValueError, match="median, p90, p10"):
        statistic_key("mean")


def test_the_runner_median_is_the_p50_of_all_runs_not_of_repeat_means():
    from ofa_edge.devices.runner.stats import summarize

    runs = [[1.0, 1.0, 1.0, 1.0, 9.0], [2.0, 2.0, 2.0, 2.0, 2.0]]  # repeat means 2.6 and 2.0
    s = summarize(runs)
    assert s["median_ms"] == s["p50_ms"] == 2.0 and s["p10_ms"] == 1.0 and s["p90_ms"] == pytest.approx(2.7)
    assert s["per_repeat_ms"] == [2.6, 2.0]


class Scripted:
    """Each call: the reference at 1 ms times ``factor``, every other file at its base figure times
    ``factor``; factors by call number (1-based)."""

    def __init__(self, factors: dict[int, float]):
        self.factors, self.calls, self.slept = factors, 0, []

    def __call__(self, files: list[Path]) -> list[dict]:
        self.calls += 1
        f = self.factors.get(self.calls, 1.0)
        return [{"p10_ms": 0.9 * f * float(p.stem), "p50_ms": f * float(p.stem), "p90_ms": 1.3 * f * float(p.stem)}
                for p in files]


def _protocol(factors: dict[int, float], **measure) -> tuple[TimingProtocol, Scripted]:
    timer = Scripted(factors)
    m = Measure(**{"passes": 3, "pass_gap_s": 0.5, "drift_retries": 2, "baseline_passes": 3, **measure})
    return TimingProtocol(timer, Path("1.0"), m, log=lambda _: None, sleep=timer.slept.append,
                          clock=lambda: float(timer.calls)), timer


def test_a_drifting_batch_is_measured_again_and_the_undisturbed_figure_kept():
    protocol, timer = _protocol({4: 1.3})  # calls 1-3: the baseline; call 4 drifts by 30%
    (stats,) = protocol.measure([Path("2.0")])
    assert protocol.baseline == 1.0 and timer.calls == 3 + 1 + 3  # baseline, the drifted call, 3 passes
    assert stats["p50_ms"] == 2.0 and stats["passes"] == 3 and stats["flagged_passes"] == 0
    assert [r["attempts"] for r in stats["pass_rows"]] == [2, 1, 1]
    assert protocol.remeasured == 1 and protocol.flagged == 0
    assert timer.slept == [0.5, 0.5, 0.5]  # before the retry, and between the passes
    summary = protocol.summary()
    assert [r["stage"] for r in summary["series"]] == ["baseline"] * 3 + [0, 0, 1, 2]
    assert summary["max_abs_drift"] == pytest.approx(0.3)


def test_drift_that_stays_is_kept_flagged_after_bounded_retries():
    protocol, timer = _protocol({4: 1.5, 5: 1.2, 6: 1.4})
    (stats,) = protocol.measure([Path("2.0")])
    first = stats["pass_rows"][0]
    assert first["attempts"] == 3 and first["flagged"] and first["p50_ms"] == pytest.approx(2.4)  # least drift
    assert stats["flagged_passes"] == 1 and protocol.flagged == 1 and protocol.remeasured == 2
    assert stats["p50_ms"] == 2.0  # the median over passes outvotes the one flagged pass
