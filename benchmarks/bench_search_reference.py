"""ofa-edge's search against the reference's own evolution, on the same objective.

The objective is OFA's published accuracy predictor (acc_predictor.pth) and Samsung Note10
latency tables (note10_{160..224}.yaml), from ../shared/ofa-reference, in the OFA-MobileNetV3
w1.2 space at 160-224 px. For each latency budget and seed, run once, side by side:
- the reference's ``ofa.tutorial.EvolutionFinder``, with its own table sum and its own predictor
  (population 100, 500 generations);
- ofa-edge's ``evolve`` with the imported predictor and the table as a latency model (same
  population and generations).
Both bests are scored again with ofa-edge's predictor (equal to the reference's within 1e-6) and
the table. Reported per budget: the median best predicted top-1, its latency, and each one's wall
time. The goal: ofa-edge at least the reference's top-1 at every budget, in at most 1/5 of its time.

    python benchmarks/bench_search_reference.py            # 5 budgets x 3 seeds
    python benchmarks/bench_search_reference.py --tiny     # one budget, a small population (the tests)
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: small matrices, one core

import numpy as np  # noqa: E402

from common import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "ofa-reference"
BUDGETS = (15, 20, 25, 30, 40)
SPACE_ID = "ofa-mbv3-w1.2"


def reference_modules():
    """The reference's EvolutionFinder, AccuracyPredictor and LatencyEstimator (torchvision and gdown
    stubbed around the import only: they cannot load here and are not used)."""
    import sys as _sys
    from unittest import mock

    stubs = {n: mock.MagicMock() for n in ("torchvision", "torchvision.transforms", "torchvision.datasets",
                                           "torchvision.transforms.functional", "torchvision.models",
                                           "torchvision.utils", "gdown") if n not in _sys.modules}
    from PIL import Image

    Image.init()  # Pillow's plugins before the patch, which drops what is imported inside it
    with mock.patch.dict(_sys.modules, stubs):
        from ofa.tutorial.accuracy_predictor import AccuracyPredictor
        from ofa.tutorial.evolution_finder import EvolutionFinder
        from ofa.tutorial.latency_table import LatencyEstimator, LatencyTable
    return EvolutionFinder, AccuracyPredictor, LatencyEstimator, LatencyTable


def reference_objective(files: dict[int, Path], predictor_file: Path):
    """The reference's latency table (built from the local files with a safe loader: its own
    constructor downloads and uses yaml.load) and its accuracy predictor with the published weights."""
    import torch
    import yaml

    EvolutionFinder, AccuracyPredictor, LatencyEstimator, LatencyTable = reference_modules()
    table = LatencyTable.__new__(LatencyTable)
    table.latency_tables = {}
    for r, path in files.items():
        est = LatencyEstimator.__new__(LatencyEstimator)
        est.lut = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        table.latency_tables[r] = est
    acc = AccuracyPredictor(pretrained=False, device="cpu")
    acc.model.load_state_dict(torch.load(predictor_file, map_location="cpu", weights_only=True))
    acc.model.eval()
    return EvolutionFinder, table, acc


def ours_objective(files: dict[int, Path], predictor_file: Path, budget: float):
    import dataclasses

    from ofa_edge.predictors.latency_table import TableLatency, read_reference_table
    from ofa_edge.predictors.reference_import import import_reference_predictor
    from ofa_edge.search.objective import Objective
    from ofa_edge.space import SearchSpace

    space = SearchSpace(SPACE_ID)
    table = TableLatency("note10", space.preset, dict(read_reference_table(p) for p in files.values()))
    predictor = import_reference_predictor(predictor_file, space)
    coverage = SearchSpace(dataclasses.replace(space.preset, resolutions=tuple(table.resolutions)))
    objective = Objective(space, lambda archs: predictor.predict(space, archs), table.predict, 1000,
                          {"latency_ms": budget})
    return space, coverage, objective, predictor, table


def run_budget(budget: float, seeds: list[int], population: int, generations: int, files, predictor_file) -> dict:
    from ofa_edge.search.evolution import SearchSettings, evolve
    from ofa_edge.space.arch import Arch

    EvolutionFinder, ref_table, ref_acc = reference_objective(files, predictor_file)
    rows = []
    for seed in seeds:
        space, coverage, objective, predictor, table = ours_objective(files, predictor_file, budget)
        start = time.perf_counter()
        ours = evolve(coverage, objective, SearchSettings(population=population, generations=generations, seed=seed))
        ours_wall = time.perf_counter() - start

        random.seed(seed)
        np.random.seed(seed)
        finder = EvolutionFinder("note10", budget, ref_table, ref_acc, population_size=population,
                                 max_time_budget=generations)
        start = time.perf_counter()
        _, best_info = finder.run_evolution_search()
        ref_wall = time.perf_counter() - start
        spec = best_info[1]
        ref_arch = Arch.from_reference(spec["ks"], spec["e"], spec["d"], spec["r"][0])
        ours_top1, ref_top1 = predictor.predict(space, [ours.best, ref_arch])
        rows.append({"seed": seed,
                     "ofa_edge": {"top1": float(ours_top1), "latency_ms": table.latency_ms(ours.best),
                                  "wall_s": round(ours_wall, 3), "arch": str(ours.best)},
                     "reference": {"top1": float(ref_top1), "own_top1": float(best_info[0]),
                                   "latency_ms": table.latency_ms(ref_arch), "own_latency_ms": float(best_info[2]),
                                   "wall_s": round(ref_wall, 3), "arch": str(ref_arch)}})
    med = {who: {key: statistics.median(r[who][key] for r in rows) for key in ("top1", "latency_ms", "wall_s")}
           for who in ("ofa_edge", "reference")}
    return {"budget_ms": budget, "runs": rows, "median": med,
            "top1_gain": med["ofa_edge"]["top1"] - med["reference"]["top1"],
            "wall_ratio": med["ofa_edge"]["wall_s"] / med["reference"]["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="25 ms only, population 20, 20 generations, 1 seed")
    parser.add_argument("--reference-dir", default=str(SHARED), help="OFA's published files (default ../shared/ofa-reference)")
    args = parser.parse_args()
    folder = Path(args.reference_dir)
    files = {r: folder / f"note10_{r}.yaml" for r in (160, 176, 192, 208, 224)}
    predictor_file = folder / "acc_predictor.pth"
    missing = [str(p) for p in (*files.values(), predictor_file) if not p.is_file()]
    if missing:
        sys.exit(f"bench_search_reference: missing {missing[0]}; pass --reference-dir with OFA's published files")
    import torch

    torch.set_num_threads(1)
    budgets, seeds, population, generations = ((25,), [0], 20, 20) if args.tiny else (BUDGETS, [0, 1, 2], 100, 500)
    results = []
    for budget in budgets:
        row = run_budget(budget, seeds, population, generations, files, predictor_file)
        m = row["median"]
        print(f"{budget:>4} ms: ofa-edge {m['ofa_edge']['top1']:.2%} at {m['ofa_edge']['latency_ms']:.2f} ms in "
              f"{m['ofa_edge']['wall_s']:.1f} s; reference {m['reference']['top1']:.2%} at "
              f"{m['reference']['latency_ms']:.2f} ms in {m['reference']['wall_s']:.1f} s "
              f"(wall ratio {row['wall_ratio']:.2f})", flush=True)
        results.append(row)
    figures = {"budgets": results,
               "ofa_edge_at_least_reference_everywhere": all(r["top1_gain"] >= 0 for r in results),
               "max_wall_ratio": max(r["wall_ratio"] for r in results), "wall_ratio_goal": 0.2,
               "accuracy_axis": "predicted ImageNet top-1 (OFA's published predictor)"}
    name = "search_reference_tiny" if args.tiny else "search_reference"
    path = write_results(name, figures, {"population": population, "generations": generations, "seeds": seeds,
                                         "budgets_ms": list(budgets), "space": SPACE_ID, "device": "note10 tables"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
