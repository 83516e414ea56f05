"""What search optimises: predicted accuracy under budgets on latency, SRAM, flash and MACs.

An ``Objective`` scores a batch of archs (memoised per arch) with the accuracy predictor and
the device's latency source: the measured, calibrated predictor of a benched device, or an
MCU's cost model. SRAM, flash and MACs come from the cost model of ``ofa_edge.space.costs``
and are computed only when a budget needs them (and for the final report). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.arch import Arch
from ofa_edge.space.costs import arch_costs
from ofa_edge.space.searchspace import SearchSpace

BUDGET_KEYS = ("latency_ms", "peak_sram_kb", "flash_kb", "macs_m")


class NoFit(OfaEdgeError):
    """Not even the smallest subnet fits the budgets."""


@dataclass
class Objective:
    space: SearchSpace                       # the full space (the accuracy predictor's encoding)
    accuracy: Callable[[list[Arch]], np.ndarray]
    latency: Callable[[list[Arch]], np.ndarray]
    num_classes: int
    budgets: dict[str, float]                # any of BUDGET_KEYS
    sram_runtime: str = "tflite-micro"
    memory: Callable[[Arch], tuple[float, float, float]] | None = None  # (peak_sram_kb, flash_kb, macs_m)
    cache: dict[Arch, dict] = field(default_factory=dict)
    queries: int = 0

    def _memory(self, arch: Arch) -> tuple[float, float, float]:
        if self.memory:
            return self.memory(arch)
        c = arch_costs(self.space.preset, arch, self.num_classes, runtime=self.sram_runtime)
        return c.peak_sram_bytes / 1024, c.flash_bytes / 1024, c.macs / 1e6

    def constraints(self, archs: list[Arch], full: bool = False) -> list[dict]:
        """Per arch: latency_ms, (peak_sram_kb, flash_kb, macs_m when budgeted or ``full``) and
        ``violation``: the sum of relative budget overruns (0 when it fits). No accuracy query, so
        search can reject a child that breaks a budget before the predictor sees it."""
        todo = [a for a in dict.fromkeys(archs) if a not in self.cache]
        if todo:
            for arch, lat in zip(todo, self.latency(todo)):
                self.cache[arch] = {"latency_ms": float(lat)}
        need_memory = full or any(k in self.budgets for k in ("peak_sram_kb", "flash_kb", "macs_m"))
        budgets = list(self.budgets.items())
        out = []
        for arch in archs:
            row = self.cache[arch]
            if need_memory and "flash_kb" not in row:
                row["peak_sram_kb"], row["flash_kb"], row["macs_m"] = self._memory(arch)
            violation = 0.0
            for key, limit in budgets:
                over = row[key] / limit - 1.0
                if over > 0:
                    violation += over
            row["violation"] = violation
            out.append(row)
        return out

    def evaluate(self, archs: list[Arch], full: bool = False) -> list[dict]:
        """``constraints`` plus ``top1``, the predicted accuracy; ``queries`` counts the distinct
        archs the accuracy predictor has scored."""
        rows = self.constraints(archs, full)
        todo = [a for a in dict.fromkeys(archs) if "top1" not in self.cache[a]]
        if todo:
            self.queries += len(todo)
            for arch, top1 in zip(todo, self.accuracy(todo)):
                self.cache[arch]["top1"] = float(top1)
        return rows

    def margins(self, row: dict) -> dict:
        return {k: round(limit - row[k], 6) for k, limit in self.budgets.items()}

    def check_fits(self, smallest: Arch) -> None:
        """Raise NoFit naming each budget the smallest subnet breaks, and by how much."""
        row = self.evaluate([smallest], full=True)[0]
        broken = [f"{k} {row[k]:.4g} > {limit:.4g} (over by {row[k] / limit - 1:.0%})"
                  for k, limit in self.budgets.items() if row[k] > limit]
        if broken:
            raise NoFit(f"no subnet fits the budgets: even the smallest ({smallest}) breaks " + "; ".join(broken)
                        + ". Loosen the budget or choose a smaller space")


def report_row(objective: Objective, arch: Arch) -> dict:
    """The JSON record of one result: ``{arch, predicted, budgets, margins}``."""
    row = objective.evaluate([arch], full=True)[0]
    predicted = {"top1": row["top1"], "latency_ms": row["latency_ms"], "macs": int(round(row["macs_m"] * 1e6)),
                 "peak_sram_kb": row["peak_sram_kb"], "flash_kb": row["flash_kb"]}
    return {"arch": str(arch), "predicted": predicted, "budgets": dict(objective.budgets),
            "margins": objective.margins(row)}
