"""Deploy's verification checks: one record per check, and the latency checks shared by every
kind of device."""
from __future__ import annotations

EMULATED = "not applicable (emulated device)"


def check(name: str, passed: bool, figure, threshold, level: str = "fail", note: str = "",
           basis: str = "measured") -> dict:
    """One verification check; ``basis`` says whether its figure was measured or is a prediction."""
    return {"name": name, "passed": None if passed is None else bool(passed), "figure": figure,
            "threshold": threshold, "level": level, "note": note, "basis": basis}


def emulated_latency_check(budget: float | None) -> dict:
    """An emulated device (``emulated: true``, QEMU) runs the device's instructions, not at its
    speed: its latency check neither passes nor fails (``passed`` null, level ``n/a``)."""
    return check("measured latency within the budget (ms)", None, EMULATED, budget, level="n/a",
                 note="QEMU emulates the device's instructions, not its timing (30-170x slower): the "
                      "outputs are checked, the latency is not")


def latency_budget_check(figure: float, budget: float | None, statistic: str | None, spec,
                          basis: str = "measured") -> list[dict]:
    """Latency against the budget: a failing check (a budget is a promise), none without a
    latency budget. ``basis`` ``prediction`` marks an MCU's cost-model figure."""
    if budget is None:
        return []
    if basis == "prediction":
        return [check("predicted latency (cost model) within the budget (ms)", figure <= budget, round(figure, 4),
                       budget, basis="prediction",
                       note="a prediction of the spec's cost model, not a measurement: no shell reaches an MCU")]
    return [check(f"measured latency ({statistic}) within the budget (ms)", figure <= budget,
                  round(figure, 4), budget,
                  note="" if figure <= budget else
                  f"{figure:.3f} ms ({statistic}) > {budget:g} ms; re-bench with ofa-edge bench --spec "
                  f"{spec.source or spec.name}, or raise the budget")]
