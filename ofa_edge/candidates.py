"""Deploy's latency promise: time each chosen subnet on the device before it ships.

Every candidate is timed with the bench's protocol (``ofa_edge.devices.protocol``: passes, the
reference model as a drift monitor) under the bench's device lock, in the spec's statistic.
Search's choice is the first candidate. When a candidate measures over the latency budget,
search runs again with the budget scaled by that candidate's predicted/measured ratio, at most
``MAX_RESEARCHES`` times and never converting more than ``--candidates`` subnets in all. The
chosen subnet is the one with the highest predicted accuracy among those measured within the
budget; when none is, the fastest measured one goes on to verification, where its latency check
fails, and the deploy exits 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ofa_edge.space.arch import Arch

MAX_RESEARCHES = 2
SHRINK = 0.95  # when a re-search returns a subnet already tried, its budget shrinks by this


@dataclass
class Candidate:
    arch: Arch
    row: dict                      # search's report row (predicted accuracy, latency, costs)
    search_budget_ms: float | None  # the latency budget search was given for it
    model: Path                    # the converted file
    conversion: dict
    sub: object                    # the recalibrated torch subnet (the host checks use it)
    timing: dict | None = None     # its figures across passes on the device

    @property
    def predicted_ms(self) -> float:
        return self.row["predicted"]["latency_ms"]

    def measured(self, key: str) -> float | None:
        return None if self.timing is None else float(self.timing[key])

    def to_json(self, key: str, budget: float | None) -> dict:
        t = self.timing or {}
        measured = self.measured(key)
        return {"arch": str(self.arch), "predicted_top1": self.row["predicted"]["top1"],
                "predicted_ms": self.predicted_ms, "search_budget_ms": self.search_budget_ms,
                "measured_ms": measured, **{k: t.get(k) for k in ("p10_ms", "p50_ms", "p90_ms", "passes",
                                                                   "pass_p50_ms", "flagged_passes")},
                "within_budget": None if budget is None or measured is None else measured <= budget}


class DeviceTimer:
    """A device session holding the bench lock, timing models with the bench's protocol."""

    def __init__(self, spec, reference: Path, log: Callable[[str], None], transport=None, break_lock: bool = False):
        self.spec, self.reference, self.log, self.given, self.break_lock = spec, reference, log, transport, break_lock

    def __enter__(self) -> "DeviceTimer":
        from ofa_edge.devices.bench import DeviceLock
        from ofa_edge.devices.protocol import TimingProtocol
        from ofa_edge.devices.session import DeviceSession

        self.session = DeviceSession(self.spec, "deploy-timing", self.given).__enter__()
        try:
            self.lock = DeviceLock(self.session.transport, self.session.root, self.break_lock, self.log)
            self.lock.acquire()
        except BaseException:
            self.session.__exit__(None, None, None)
            raise
        self.protocol = TimingProtocol(self._time, self.reference, self.spec.measure, self.log)
        return self

    def _time(self, files: list[Path]) -> list[dict]:
        from ofa_edge.devices.bench import push_and_time

        return push_and_time(self.session.transport, self.session.run, self.session.work, files,
                             self.session.timing_args())

    def time(self, model: Path) -> dict:
        """``model``'s figures across the spec's passes (p10/p50/p90 and the pass series)."""
        return self.protocol.measure([model])[0]

    def __exit__(self, *exc) -> None:
        try:
            self.lock.release()
        finally:
            self.session.__exit__(*exc)


def choose(first: Arch, budget: float | None, statistic: str, limit: int, research: Callable[[float], Arch | None] | None,
           make: Callable[[Arch, float | None], Candidate], timer: DeviceTimer,
           log: Callable[[str], None]) -> tuple[Candidate, list[Candidate], str]:
    """Time candidates until one is within ``budget`` (see the module docstring); returns the
    chosen one, every candidate tried, and one line saying how it went.

    ``research(budget_ms)`` searches again under a scaled budget (None: nothing fits);
    ``make(arch, search_budget)`` extracts, recalibrates and converts one candidate.
    """
    from ofa_edge.devices.statistic import statistic_key

    key = statistic_key(statistic)
    tried: list[Candidate] = []
    arch, search_budget = first, budget
    researches = 0
    while True:
        candidate = make(arch, search_budget)
        candidate.timing = timer.time(candidate.model)
        tried.append(candidate)
        measured = candidate.measured(key)
        fits = budget is None or measured <= budget
        log(f"     candidate {len(tried)}: {arch}: predicted {candidate.predicted_ms:.3f} ms, measured {measured:.3f} ms "
            f"({statistic} of {candidate.timing['passes']} passes)"
            + ("" if budget is None else f" against {budget:g} ms: {'within' if fits else 'OVER'}"))
        if fits or research is None or researches >= MAX_RESEARCHES or len(tried) >= limit:
            break
        scaled = search_budget * candidate.predicted_ms / measured
        seen = {str(c.arch) for c in tried}
        arch = None
        for _ in range(8):  # a subnet already tried is never converted twice
            found = research(scaled)
            if found is None or str(found) not in seen:
                arch = found
                break
            scaled *= SHRINK
        researches += 1
        if arch is None:
            log(f"     re-search {researches}: nothing fits a search budget of {scaled:.3f} ms")
            break
        search_budget = scaled
        log(f"     re-search {researches}: search budget {scaled:.3f} ms (scaled by predicted/measured "
            f"{candidate.predicted_ms:.3f}/{measured:.3f})")
    within = [c for c in tried if budget is None or c.measured(key) <= budget]
    if within:
        chosen = max(within, key=lambda c: c.row["predicted"]["top1"])
        line = (f"{len(within)} of {len(tried)} candidates within the budget; chose {chosen.arch} "
                f"(measured {chosen.measured(key):.3f} ms, predicted top-1 {chosen.row['predicted']['top1']:.2%})")
    else:
        chosen = min(tried, key=lambda c: c.measured(key))
        line = (f"best candidate measured {chosen.measured(key):.3f} ms ({statistic}) against a {budget:g} ms "
                f"budget after {researches} re-search{'es' if researches != 1 else ''}")
    return chosen, tried, line
