"""Shared helpers for benchmark scripts: machine/version info and results JSON."""
from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from ofa_edge.ledger import machine_info as ledger_machine_info

# where results go: benchmarks/results, or $OFA_EDGE_RESULTS (the tests' tiny runs use a temp dir)
RESULTS = Path(os.environ.get("OFA_EDGE_RESULTS") or Path(__file__).resolve().parent / "results")
# the tests' tiny benches: part of the space and few subnets (BenchOptions keywords)
TINY_BENCH = dict(resolutions=[28], kernels=[3, 7], expands=[3, 6], subnets=10, batch=8)


def machine_info() -> dict:
    """The machine (from ofa_edge.ledger), the date and the versions that matter."""
    versions = {}
    for dist in ("ofa-edge", "torch", "numpy", "onnxruntime", "tensorflow", "ai-edge-litert"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **ledger_machine_info(), "versions": versions}


def write_results(name: str, figures: dict, settings: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"benchmark": name, "machine": machine_info(), "settings": settings,
                               "figures": figures}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def interleaved(candidates: dict[str, Callable[[], None]], repeats: int, runs: int, warmup: int = 3) -> dict:
    """Time each candidate ``repeats`` times (``runs`` calls each), interleaved so that drift
    hits all of them alike. Returns per-candidate seconds per call: every repeat, and the median."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    per_repeat: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(runs):
                fn()
            per_repeat[name].append((time.perf_counter() - start) / runs)
    return {name: {"median_s": statistics.median(t), "repeats_s": t} for name, t in per_repeat.items()}
