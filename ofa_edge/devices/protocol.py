"""How ofa-edge times models on a device: passes spread over time, with a drift monitor.

Bench and deploy both time with this protocol (deploy under the bench's device lock):

1. **Baseline.** A reference model (a fixed small subnet) is timed ``baseline_passes`` times
   in warm-up passes beside the first batch (the conditions it will be judged in: a model timed
   alone runs warmer caches than one in a batch); its baseline is the median of those p50
   figures, and from then on the median of those and of every accepted batch's reference, so
   that a baseline caught in a slow (or fast) moment does not make every later batch "drift".
2. **Batches.** Every runner call times the reference model together with the batch (runs
   interleaved by repeat, so a disturbance hits both). When the reference's p50 is more than
   ``drift_limit`` away from the baseline, the batch is measured again, at most
   ``drift_retries`` times, ``pass_gap_s`` apart; when the retries run out the attempt with the
   least drift is kept and flagged.
3. **Passes.** A model is timed in ``passes`` passes over the shuffled measurement set, at least
   ``pass_gap_s`` apart; its figure is the median over passes of the pass percentile
   (``ofa_edge.devices.statistic``). Each pass row keeps the reference's p50 of its runner call,
   so that the bench can take out the drift that stayed within the limit
   (``ofa_edge.devices.statistic.drift_corrected``).

Every runner call leaves a record in :attr:`TimingProtocol.series`: the drift series a bench
reports and stores.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

from ofa_edge.devices.spec import Measure
from ofa_edge.devices.statistic import across_passes

#: (files) -> one runner stats dict per file, in order (pushes, times and checks sha256)
TimeModels = Callable[[list[Path]], list[dict]]


class TimingProtocol:
    def __init__(self, time_models: TimeModels, reference: Path, measure: Measure,
                 log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.time_models, self.reference, self.m = time_models, reference, measure
        self.log, self.sleep, self.clock = log, sleep, clock
        self.start = clock()
        self.baseline: float | None = None
        self.accepted: list[float] = []  # the reference's p50 of the warm-up and of every accepted call
        self.series: list[dict] = []
        self.remeasured = 0      # runner calls repeated because the reference drifted
        self.flagged = 0         # batches kept with a drift over the limit
        self.batches = 0

    def _record(self, stage, attempt: int, reference_ms: float, drift: float | None, accepted: bool) -> dict:
        record = {"t_s": round(self.clock() - self.start, 3), "stage": stage, "attempt": attempt,
                  "reference_ms": round(reference_ms, 6),
                  "drift": None if drift is None else round(drift, 5), "accepted": accepted}
        self.series.append(record)
        return record

    def warm_up(self, beside: list[Path] | None = None) -> float:
        """Time the reference (beside ``beside``, the first batch) to set its baseline (p50 ms)."""
        for i in range(self.m.baseline_passes):
            figure = float(self.time_models([self.reference, *(beside or [])])[0]["p50_ms"])
            self.accepted.append(figure)
            self._record("baseline", i, figure, None, True)
        self.baseline = statistics.median(self.accepted)
        return self.baseline

    def time_batch(self, files: list[Path], stage="pass") -> list[dict]:
        """One pass of ``files`` with the reference beside them; each stats dict gets ``drift``
        (of the kept attempt), ``attempts`` and ``flagged``."""
        if self.baseline is None:
            self.warm_up(files)
        tries = []
        baseline = self.baseline
        for attempt in range(1 + self.m.drift_retries):
            results = self.time_models([self.reference, *files])
            reference = float(results[0]["p50_ms"])
            drift = reference / baseline - 1.0
            ok = abs(drift) <= self.m.drift_limit
            self._record(stage, attempt, reference, drift, ok)
            tries.append((abs(drift), drift, results[1:]))
            if ok:
                self.accepted.append(reference)
                self.baseline = statistics.median(self.accepted)
                break
            if attempt < self.m.drift_retries:
                self.remeasured += 1
                self.sleep(self.m.pass_gap_s)
        self.batches += 1
        size, drift, kept = min(tries, key=lambda t: t[0])
        flagged = size > self.m.drift_limit
        self.flagged += flagged
        reference_ms = baseline * (1.0 + drift)
        return [{**r, "drift": round(drift, 5), "attempts": len(tries), "flagged": flagged,
                 "reference_p50_ms": round(reference_ms, 6)} for r in kept]

    def measure(self, files: list[Path]) -> list[dict]:
        """All passes of a few ``files`` (deploy): each file's stats across passes, plus
        ``pass_rows`` (the per-pass figures)."""
        per_file: list[list[dict]] = [[] for _ in files]
        for p in range(self.m.passes):
            if p:
                self.sleep(self.m.pass_gap_s)  # passes are separated in time
            for rows, stats in zip(per_file, self.time_batch(files, stage=p)):
                rows.append(stats)
        return [{**rows[-1], **across_passes(rows), "pass_rows": rows} for rows in per_file]

    def summary(self) -> dict:
        """Baseline, counts and the drift series, for a report."""
        drifts = [abs(r["drift"]) for r in self.series if r["drift"] is not None]
        return {"reference_baseline_p50_ms": self.baseline, "batches": self.batches,
                "remeasured_calls": self.remeasured, "flagged_batches": self.flagged,
                "max_abs_drift": round(max(drifts), 5) if drifts else None,
                "drift_limit": self.m.drift_limit, "retries": self.m.drift_retries, "series": self.series}
