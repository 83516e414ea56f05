"""Search speed and convergence on the shipped supernet and this machine's latency predictor.

Reports the wall time of the default search (population 100, 500 generations) on one core, the
archs scored per second, and the best predicted accuracy against the number of distinct archs
scored, for evolution and for random search with the same number of queries (3 seeds each),
under the local spec's latency budget tightened to a third of the way from the smallest to the
largest subnet so that it binds. Needs a bench of device_specs/local.yaml in --runs.

    python benchmarks/bench_search.py --runs runs
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: small matrices, one core

from common import write_results  # noqa: E402

from ofa_edge.devices.spec import load_spec  # noqa: E402
from ofa_edge.search.evolution import SearchSettings, evolve, random_search  # noqa: E402
from ofa_edge.search.run import setup_search  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = (100, 300, 1000, 3000, 10000, 20000)


def best_at(history: list[float], queries: list[int], n: int) -> float | None:
    """Best fitting accuracy once ``n`` distinct archs were scored."""
    seen = [h for h, q in zip(history, queries) if q <= n and not math.isnan(h)]
    return max(seen) if seen else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(REPO / "runs"))
    parser.add_argument("--spec", default=str(REPO / "device_specs" / "local.yaml"))
    parser.add_argument("--tiny", action="store_true", help="1 seed, 20 generations (the tests)")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    settings = dict(generations=20) if args.tiny else {}
    probe = setup_search(spec, "default", args.runs)
    lo, hi = (float(v) for v in probe.objective.latency([probe.coverage.smallest(), probe.coverage.largest()]))
    budget = round(lo + (hi - lo) / 3, 4)
    rows = []
    for seed in range(1 if args.tiny else 3):
        setup = setup_search(spec, "default", args.runs, {"latency_ms": budget})
        start = time.perf_counter()
        result = evolve(setup.coverage, setup.objective, SearchSettings(seed=seed, **settings))
        wall = time.perf_counter() - start
        queries = setup.objective.queries
        baseline = setup_search(spec, "default", args.runs, {"latency_ms": budget})
        _, random_history = random_search(baseline.coverage, baseline.objective, queries, seed=seed)
        rows.append({"seed": seed, "wall_s": round(wall, 3), "queries": queries,
                     "archs_per_s": round(queries / wall, 1),
                     "best_top1": result.history[-1], "arch": str(result.best),
                     "evolution_best_at": {n: best_at(result.history, result.queries, n) for n in CHECKPOINTS},
                     "random_best_at": {n: best_at(random_history, list(range(1, queries + 1)), n)
                                        for n in CHECKPOINTS}})
        print(f"seed {seed}: {wall:.2f} s, {queries:,} archs ({queries / wall:,.0f}/s), best {result.history[-1]:.4f} "
              f"vs random {random_history[-1]:.4f}")
    figures = {"latency_budget_ms": budget, "smallest_ms": lo, "largest_ms": hi, "runs": rows,
               "median_wall_s": sorted(r["wall_s"] for r in rows)[len(rows) // 2], "goal_wall_s": 2.0}
    settings = {"spec": spec.name, "supernet": "default", "runs": args.runs, "tiny": args.tiny}
    print(f"wrote {write_results('search', figures, settings)}")


if __name__ == "__main__":
    main()
