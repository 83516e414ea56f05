"""NSGA-II over (accuracy, latency): ``pareto_front`` returns the non-dominated fitting archs.

Non-dominated sorting plus crowding distance (Deb et al., 2002), with constraint domination: an
arch that breaks a budget less dominates one that breaks it more. Children are half mutations
(p = 0.1) and half crossovers of the current population, on ``Arch`` (search/evolution.py breeds
on genomes). The returned front is the exact non-dominated set of every fitting arch scored.
Seeded: the same seed gives the same front.
"""
from __future__ import annotations

import random

import numpy as np

from ofa_edge.search.evolution import SearchResult, SearchSettings
from ofa_edge.search.objective import Objective
from ofa_edge.space.arch import Arch
from ofa_edge.space.searchspace import SearchSpace


def _children(space: SearchSpace, parents: list[Arch], n: int, s: SearchSettings, rng: random.Random) -> list[Arch]:
    n_mut = int(round(n * s.mutation_share))
    kids = [space.mutate(rng.choice(parents), s.mutation_prob, rng) for _ in range(n_mut)]
    kids += [space.crossover(rng.choice(parents), rng.choice(parents), rng) for _ in range(n - n_mut)]
    return kids


def _fronts(rows: list[dict]) -> list[list[int]]:
    """Non-dominated sorting with constraint domination (a smaller violation dominates; equal
    violations compare by accuracy up and latency down), peeled front by front in numpy."""
    top1 = np.array([r["top1"] for r in rows])
    lat = np.array([r["latency_ms"] for r in rows])
    vio = np.array([r["violation"] for r in rows])
    weakly = (top1[:, None] >= top1[None, :]) & (lat[:, None] <= lat[None, :])
    strictly = (top1[:, None] > top1[None, :]) | (lat[:, None] < lat[None, :])
    dom = (vio[:, None] < vio[None, :]) | ((vio[:, None] == vio[None, :]) & weakly & strictly)  # i dominates j
    remaining = np.ones(len(rows), dtype=bool)
    fronts = []
    while remaining.any():
        dominated = dom[remaining][:, remaining].any(axis=0)
        idx = np.nonzero(remaining)[0]
        front = idx[~dominated]
        fronts.append([int(i) for i in front])
        remaining[front] = False
    return fronts


def _front_2d(archs: list[Arch], objective: Objective) -> list[Arch]:
    """The exact non-dominated set of fitting archs by a sweep: fastest first, keep each arch
    more accurate than every faster one. O(n log n), for the archive of every arch seen."""
    rows = objective.evaluate(archs)
    order = sorted(range(len(archs)), key=lambda i: (rows[i]["latency_ms"], -rows[i]["top1"]))
    front, best = [], -np.inf
    for i in order:
        if rows[i]["top1"] > best:
            front.append(archs[i])
            best = rows[i]["top1"]
    return front


def _crowding(rows: list[dict], front: list[int]) -> dict[int, float]:
    dist = {i: 0.0 for i in front}
    for key in ("top1", "latency_ms"):
        ordered = sorted(front, key=lambda i: rows[i][key])
        lo, hi = rows[ordered[0]][key], rows[ordered[-1]][key]
        dist[ordered[0]] = dist[ordered[-1]] = float("inf")
        if hi > lo:
            for a, b, c in zip(ordered, ordered[1:], ordered[2:]):
                dist[b] += (rows[c][key] - rows[a][key]) / (hi - lo)
    return dist


def pareto_front(space: SearchSpace, objective: Objective, settings: SearchSettings | None = None) -> SearchResult:
    """The non-dominated fitting archs (accuracy up, latency down), sorted by latency."""
    s = settings or SearchSettings()
    rng = random.Random(s.seed)
    population = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(s.population - 2)]
    archive: dict[str, Arch] = {}
    result = SearchResult(best=population[0])
    for _ in range(s.generations):
        kids = _children(space, population, s.population, s, rng)
        pool = list({str(a): a for a in population + kids}.values())
        rows = objective.evaluate(pool)
        archive.update({str(a): a for a, r in zip(pool, rows) if r["violation"] == 0})
        chosen: list[int] = []
        for front in _fronts(rows):
            if len(chosen) + len(front) <= s.population:
                chosen += front
                continue
            crowd = _crowding(rows, front)
            chosen += sorted(front, key=lambda i: -crowd[i])[:s.population - len(chosen)]
            break
        population = [pool[i] for i in chosen]
        fitting = [r["top1"] for r in rows if r["violation"] == 0]
        result.history.append(max(fitting) if fitting else float("nan"))
        result.queries.append(objective.queries)
    result.front = _front_2d(list(archive.values()), objective)
    if result.front:
        result.best = max(result.front, key=lambda a: objective.evaluate([a])[0]["top1"])
    return result
