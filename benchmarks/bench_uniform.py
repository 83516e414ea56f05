"""Searched subnets against uniformly scaled ones: the OFA paper's comparison, on two devices.

The uniform baseline is every subnet with one kernel, one expand and one depth everywhere
(3 x 3 x 3 choices), at every resolution of the device's coverage. Its front is the uniform
archs that no other uniform arch beats on both accuracy and latency. For each uniform front point,
ofa-edge's search (population 100, 500 generations) runs with the point's latency as the budget,
and on a grid of budgets besides, which gives the searched front. Reported per uniform front
point: the accuracy gain at equal latency (the search under its latency), and the latency ratio at
equal accuracy (its latency over the fastest searched arch at least as accurate). The paper's
claim: 1.5-2.6x faster at the same accuracy (OFA, Cai et al., ICLR 2020, against MobileNetV3).

Accuracy everywhere is predicted ImageNet top-1 from OFA's published predictor (acc_predictor.pth,
160-224 px). The devices:
- note10: OFA's published Samsung Note10 latency tables (w1.2, 160-224 px), no measurement here;
- local_imagenet: this machine's CPU (TFLite int8, one pinned core) through the latency predictor
  of a w1.2 bench (any weights: latency does not depend on them). Run the bench first:
      ofa-edge bench --spec device_specs/local_imagenet.yaml --supernet ofa-mbv3-w1.2 --quick

Each device's cost is recorded: the CPU-seconds of its bench (from the bench's own ledger; none for
the published tables) and of one search.

    python benchmarks/bench_uniform.py                 # both devices
    python benchmarks/bench_uniform.py --tiny          # Note10 at 160 px, a small search (the tests)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: small matrices, one core

from common import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "ofa-reference"
SPACE_ID = "ofa-mbv3-w1.2"
ACCURACY_AXIS = "predicted ImageNet top-1 (OFA's published predictor)"
GRID = 12  # searched budgets besides the uniform front's latencies, geometric over its range


def uniform_archs(space) -> list:
    p = space.preset
    return [space.uniform(k, e, d, r) for r in p.resolutions for k in p.kernel_choices
            for e in p.expand_choices for d in p.depth_choices]


def front(points: list[dict]) -> list[dict]:
    """The points no other point beats on both accuracy (up) and latency (down), fastest first."""
    out, best = [], -1.0
    for pt in sorted(points, key=lambda q: (q["latency_ms"], -q["top1"])):
        if pt["top1"] > best:
            out.append(pt)
            best = pt["top1"]
    return out


def compare(name: str, coverage, accuracy, latency, settings, budgets_extra: int) -> dict:
    """The uniform front, the searched archs under its latencies (and a grid), and the ratios."""
    from ofa_edge.search.evolution import evolve
    from ofa_edge.search.objective import Objective

    def row(arch, top1, lat) -> dict:
        return {"arch": str(arch), "top1": float(top1), "latency_ms": float(lat)}

    uniform = uniform_archs(coverage)
    points = [row(a, t, lat) for a, t, lat in zip(uniform, accuracy(uniform), latency(uniform))]
    ufront = front(points)
    lo, hi = ufront[0]["latency_ms"], ufront[-1]["latency_ms"]
    grid = [lo * (hi / lo) ** (i / (budgets_extra - 1)) for i in range(budgets_extra)] if budgets_extra > 1 else []
    budgets = sorted({p["latency_ms"] for p in ufront} | set(grid))  # exact: a rounded-down budget would exclude the arch itself
    searched, cpu = {}, []
    for budget in budgets:
        objective = Objective(coverage, accuracy, latency, 1000, {"latency_ms": budget})
        start = time.process_time()
        best = evolve(coverage, objective, settings).best
        cpu.append(time.process_time() - start)
        r = objective.evaluate([best])[0]
        searched[budget] = row(best, r["top1"], r["latency_ms"])
        print(f"  {name}: {budget:8.3f} ms -> {r['top1']:.2%} at {r['latency_ms']:.3f} ms", flush=True)
    sfront = front(list(searched.values()))
    pairs = []
    for u in ufront:
        same_latency = searched[u["latency_ms"]]
        as_accurate = [s for s in sfront if s["top1"] >= u["top1"]]
        fastest = min(as_accurate, key=lambda s: s["latency_ms"]) if as_accurate else None
        pairs.append({"uniform": u, "searched_at_latency": same_latency,
                      "accuracy_gain": same_latency["top1"] - u["top1"],
                      "searched_at_accuracy": fastest,
                      "latency_ratio": u["latency_ms"] / fastest["latency_ms"] if fastest else None})
    ratios = [p["latency_ratio"] for p in pairs if p["latency_ratio"]]
    gains = [p["accuracy_gain"] for p in pairs]
    return {"device": name, "uniform": points, "uniform_front": ufront, "searched": list(searched.values()),
            "searched_front": sfront, "pairs": pairs,
            "latency_ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
            "accuracy_gain": {"median": statistics.median(gains), "min": min(gains), "max": max(gains)},
            "search_cpu_s": {"median": statistics.median(cpu), "total": sum(cpu), "searches": len(cpu)},
            "resolutions": list(coverage.preset.resolutions)}


def note10(folder: Path, predictor):
    from ofa_edge.predictors.latency_table import TableLatency, read_reference_table
    from ofa_edge.space import SearchSpace

    space = SearchSpace(SPACE_ID)
    files = [folder / f"note10_{r}.yaml" for r in (160, 176, 192, 208, 224)]
    table = TableLatency("note10", space.preset, dict(read_reference_table(p) for p in files))
    resolutions = [r for r in table.resolutions if r in predictor.report["resolutions"]]
    coverage = SearchSpace(dataclasses.replace(space.preset, resolutions=tuple(resolutions)))
    return coverage, table.predict, {"cpu_s": 0.0, "source": "OFA's published Note10 tables (not measured here)"}


def local_cpu(runs: Path, predictor):
    from ofa_edge.predictors.latency import predictor_for
    from ofa_edge.space import SearchSpace

    folder = runs / "local_imagenet" / SPACE_ID
    if not (folder / "latency_predictor.json").is_file():
        sys.exit(f"bench_uniform: no w1.2 bench of local_imagenet in {folder}: run ofa-edge bench --spec "
                 "device_specs/local_imagenet.yaml --supernet ofa-mbv3-w1.2 --quick (or pass --runs, or --tiny)")
    lp = predictor_for(folder, "median")
    space = SearchSpace(SPACE_ID)
    resolutions = [r for r in lp.coverage["resolutions"] if r in predictor.report["resolutions"]]
    coverage = SearchSpace(dataclasses.replace(space.preset, resolutions=tuple(resolutions),
                                               kernel_choices=tuple(lp.coverage["kernels"]),
                                               expand_choices=tuple(lp.coverage["expands"])))
    ledger = json.loads((folder / "subnets.json").read_text()).get("ledger") or {}
    v = lp.validation
    return coverage, lp.predict, {"cpu_s": float(ledger.get("cpu_s", 0.0)), "wall_s": float(ledger.get("wall_s", 0.0)),
                                  "source": f"{folder}/subnets.json ledger (the quick bench)",
                                  "predictor": {"held_out": v.get("n"), "within_10pct": v.get("within_10pct"),
                                                "rmspe": v.get("rmspe")}}


def device_ledger(results: list[dict], n: int = 40) -> dict:
    """What specialising the one published supernet costs per device here: its bench (none for a
    published table) and one search, in CPU-seconds, and N = ``n`` devices each benched and
    searched like the costliest of them. Energy by the
    ledger's model (``OFA_EDGE_WATTS_PER_CORE``, default 5 W per busy core; no RAPL here). The
    supernet's training is OFA's, paid once by its authors: 1.2k GPU-hours (Cai et al., ICLR 2020)."""
    watts = float(os.environ.get("OFA_EDGE_WATTS_PER_CORE", "5"))
    per = {d["device"]: {"bench_cpu_s": d["bench_cost"]["cpu_s"], "search_cpu_s": d["search_cpu_s"]["median"]}
           for d in results}
    for row in per.values():
        row["cpu_s"] = row["bench_cpu_s"] + row["search_cpu_s"]
        row["energy_wh"] = row["cpu_s"] * watts / 3600
    each = max(row["cpu_s"] for row in per.values())  # every device benched, as this CPU was
    return {"per_device": per, "n": n, "n_devices_cpu_s": n * each, "n_devices_energy_wh": n * each * watts / 3600,
            "watts_per_core": watts, "supernet_training": "OFA's published w1.2 supernet: 1.2k GPU-hours "
            "(Cai et al., ICLR 2020, Table 1), paid once by its authors; no training here"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Note10 at 160 px only, population 20, 20 generations")
    parser.add_argument("--runs", default=str(REPO / "runs"), help="where the w1.2 bench of local_imagenet is")
    parser.add_argument("--reference-dir", default=str(SHARED), help="OFA's published files (default ../shared/ofa-reference)")
    args = parser.parse_args()
    folder = Path(args.reference_dir)
    if not (folder / "acc_predictor.pth").is_file():
        sys.exit(f"bench_uniform: missing {folder / 'acc_predictor.pth'}; pass --reference-dir with OFA's published files")
    import torch

    torch.set_num_threads(1)
    from ofa_edge.predictors.reference_import import import_reference_predictor
    from ofa_edge.search.evolution import SearchSettings
    from ofa_edge.space import SearchSpace

    space = SearchSpace(SPACE_ID)
    predictor = import_reference_predictor(folder / "acc_predictor.pth", space)
    accuracy = lambda archs: predictor.predict(space, archs)  # noqa: E731
    settings = SearchSettings(population=20, generations=20) if args.tiny else SearchSettings()
    devices = [("note10", note10(folder, predictor))]
    if not args.tiny:
        devices.append(("local_imagenet", local_cpu(Path(args.runs), predictor)))
    results = []
    for name, (coverage, latency, bench_cost) in devices:
        if args.tiny:
            coverage = SearchSpace(dataclasses.replace(coverage.preset, resolutions=coverage.preset.resolutions[:1]))
        row = compare(name, coverage, accuracy, latency, settings, 0 if args.tiny else GRID)
        row["bench_cost"] = bench_cost
        results.append(row)
        r, g = row["latency_ratio"], row["accuracy_gain"]
        print(f"{name}: uniform front {len(row['uniform_front'])} points; at equal accuracy the searched subnets are "
              f"{r['min']:.2f}-{r['max']:.2f}x faster (median {r['median']:.2f}x); at equal latency "
              f"{g['min']:+.2%} to {g['max']:+.2%} top-1 (median {g['median']:+.2%})", flush=True)
    figures = {"devices": results, "accuracy_axis": ACCURACY_AXIS, "paper_latency_ratio": [1.5, 2.6],
               "ledger": device_ledger(results)}
    name = "uniform_tiny" if args.tiny else "uniform"
    path = write_results(name, figures, {"space": SPACE_ID, "population": settings.population,
                                         "generations": settings.generations, "grid_budgets": 0 if args.tiny else GRID,
                                         "devices": [d for d, _ in devices]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
