"""Timing statistics of one model (percentiles over all runs, spread over repeats)."""

import statistics

def percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(runs_ms):
    """Statistics of one model from ``runs_ms``: a list (one per repeat) of lists of run times."""
    per_repeat = [sum(r) / len(r) for r in runs_ms]
    ordered = sorted(per_repeat)
    every = sorted(t for r in runs_ms for t in r)
    cut = int(len(every) * 0.1)
    kept = every[cut:len(every) - cut] or every
    mean = sum(per_repeat) / len(per_repeat)
    stdev = statistics.stdev(per_repeat) if len(per_repeat) > 1 else 0.0
    return {
        "per_repeat_ms": [round(v, 6) for v in per_repeat],
        "median_ms": round(percentile(every, 0.50), 6),
        "trimmed_mean_ms": round(sum(kept) / len(kept), 6),
        "iqr_ms": round(percentile(ordered, 0.75) - percentile(ordered, 0.25), 6),
        "cov": round(stdev / mean, 6) if mean > 0 else 0.0,
        "p10_ms": round(percentile(every, 0.10), 6),
        "p50_ms": round(percentile(every, 0.50), 6),
        "p90_ms": round(percentile(every, 0.90), 6),
        "min_ms": round(every[0], 6),
        "max_ms": round(every[-1], 6),
        "runs_total": len(every),
    }


