"""The one latency statistic of ofa-edge, defined once (spec ``measure.statistic``).

Within a pass, a model's figure is a percentile of ALL its timed runs in that pass (``median`` is
the 50th percentile of every run, not the median of per-repeat means). Across passes, the figure
is the median of the pass figures. Each pass stores its p10, p50 and p90, so switching the
statistic needs no new measurement. Torch-free and numpy-free.

A bench table is drift-corrected (:func:`drift_corrected`): each pass figure is scaled by the
reference model's level over the whole bench divided by its p50 in the same runner call, so the
machine's slow and fast moments (within the drift limit; beyond it the batch is measured again)
cancel out, and every figure is the device at its typical speed during the bench. The raw
figures stay in the store and in ``raw_p50_ms``.
"""
from __future__ import annotations

import statistics as _stats

#: statistic name (as a spec writes it) -> the key of the figure in every stored row
STATISTICS = {"median": "p50_ms", "p90": "p90_ms", "p10": "p10_ms"}
DEFAULT_STATISTIC = "median"
PASS_KEYS = ("p10_ms", "p50_ms", "p90_ms")


def statistic_key(name: str) -> str:
    """``median`` -> ``p50_ms``; a bad name is an error naming the allowed ones."""
    try:
        return STATISTICS[name]
    except KeyError:
        raise ValueError(f"unknown latency statistic {name!r}; use one of {', '.join(STATISTICS)}") from None


def across_passes(passes: list[dict]) -> dict:
    """The figures of one model from its per-pass rows: for each of p10/p50/p90 the median over
    passes, plus ``passes`` (the count), ``pass_p50_ms`` (the series) and ``flagged_passes``."""
    if not passes:
        raise ValueError("no passes to combine")
    out = {key: round(_stats.median(float(p[key]) for p in passes), 6) for key in PASS_KEYS}
    out["passes"] = len(passes)
    out["pass_p50_ms"] = [round(float(p["p50_ms"]), 6) for p in passes]
    out["flagged_passes"] = sum(1 for p in passes if p.get("flagged"))
    if any("raw_p50_ms" in p for p in passes):
        out["raw_p50_ms"] = round(_stats.median(float(p.get("raw_p50_ms", p["p50_ms"])) for p in passes), 6)
    return out


def drift_corrected(row: dict, reference_level: float | None) -> dict:
    """One pass row with p10/p50/p90 scaled by ``reference_level / reference_p50_ms`` (its
    reference model's p50 in the same runner call); unchanged when either is missing."""
    ref = row.get("reference_p50_ms")
    if not ref or not reference_level:
        return row
    scale = reference_level / float(ref)
    return {**row, **{key: round(float(row[key]) * scale, 6) for key in PASS_KEYS}, "raw_p50_ms": row["p50_ms"],
            "drift_scale": round(scale, 6)}


def describe(name: str) -> str:
    """One line for reports: what the figure is."""
    q = {"median": "50th", "p90": "90th", "p10": "10th"}[name]
    return (f"{name}: the {q} percentile of all runs within a pass, then the median over passes")
