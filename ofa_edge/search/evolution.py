"""Evolutionary search over the predictors (the OFA reference's settings), and random search.

Reference defaults (DESIGN.md §5): population 100, 500 generations, the best 25% are parents,
and each generation breeds a population of children, half mutations (p = 0.1) and half
crossovers, on the reference's genome (search/genome.py). As in the reference, children that
break a budget are rejected before the accuracy predictor sees them, but in batches and with a
ceiling: after ``REJECTION_ROUNDS`` batches the least-violating children fill in, so a
generation is a bounded amount of work and the search always ends. The smallest arch is in the
first population, so when anything fits, the result fits. Evolution's best and the best arch
seen at each resolution are then finished by a greedy local search with kicks (search/polish.py),
which evens out where evolution happens to end (the reference's best varies by 0.2-0.5 points
of predicted top-1 from seed to seed). Seeded: the same seed gives the same result. The Pareto
front (NSGA-II) is search/pareto.py.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from ofa_edge.search.genome import Genomes
from ofa_edge.search.objective import Objective
from ofa_edge.search.polish import kicked_polish
from ofa_edge.space.arch import Arch
from ofa_edge.space.searchspace import SearchSpace


POLISH_KICKS = 2       # each start is then kicked (a few random changes) and polished again this many times
POLISH_STARTS = 1      # per resolution, the best arch seen, polished besides evolution's best
REJECTION_ROUNDS = 8   # batches of children per generation before the least-violating fill in


@dataclass
class SearchSettings:
    population: int = 100
    generations: int = 500
    parent_share: float = 0.25
    mutation_share: float = 0.5
    mutation_prob: float = 0.1
    seed: int = 0
    polish: bool = True     # finish with search/polish.py's local search


@dataclass
class SearchResult:
    best: Arch
    history: list[float] = field(default_factory=list)   # best fitting top1 after each generation
    queries: list[int] = field(default_factory=list)     # distinct archs evaluated by then
    front: list[Arch] = field(default_factory=list)


def _rank_key(row: dict) -> tuple:
    return (0, -row["top1"]) if row["violation"] == 0 else (1, row["violation"])


def _breed(genomes: Genomes, parents: np.ndarray, n: int, s: SearchSettings) -> np.ndarray:
    """``n`` children: each a mutation of one parent (share ``mutation_share``) or a crossover of two."""
    rng = genomes.rng
    mutated = genomes.mutate(parents[rng.integers(len(parents), size=n)], s.mutation_prob)
    crossed = genomes.crossover(parents[rng.integers(len(parents), size=n)], parents[rng.integers(len(parents), size=n)])
    return np.where((rng.random(n) < s.mutation_share)[:, None], mutated, crossed)


@dataclass
class _Acceptance:
    """The share of made archs that fit, smoothed, so a batch is about as large as it needs to be."""
    rate: float = 0.5

    def batch(self, needed: int) -> int:
        return int(needed / max(self.rate, 0.05) * 1.15) + 4

    def update(self, made: int, fit: int) -> None:
        self.rate = 0.7 * self.rate + 0.3 * fit / made


def _fitting(objective: Objective, genomes: Genomes, make, n: int,
             acceptance: _Acceptance) -> tuple[np.ndarray, list[Arch]]:
    """``n`` genomes from ``make(count)`` whose archs fit the budgets, where they can be found:
    batches are made and the archs that break a budget dropped before the accuracy predictor sees
    them (the reference's rejection sampling, batched and bounded). After ``REJECTION_ROUNDS``
    batches the rest are the least-violating archs made, so a generation's work has a ceiling."""
    kept: list[tuple[np.ndarray, Arch]] = []
    spare: list[tuple[float, np.ndarray, Arch]] = []
    for _ in range(REJECTION_ROUNDS):
        batch = make(acceptance.batch(n - len(kept)))
        archs = genomes.decode(batch)
        before = len(kept)
        for row, arch, c in zip(batch, archs, objective.constraints(archs)):
            if c["violation"] == 0:
                kept.append((row, arch))
            else:
                spare.append((c["violation"], row, arch))
        acceptance.update(len(batch), len(kept) - before)
        if len(kept) >= n:
            break
    spare.sort(key=lambda t: t[0])
    chosen = kept[:n] + [(row, arch) for _, row, arch in spare[:max(0, n - len(kept))]]
    return np.array([row for row, _ in chosen]), [arch for _, arch in chosen]


def _best_per_resolution(objective: Objective, per: int) -> list[Arch]:
    """The ``per`` most accurate fitting archs of each resolution among every arch scored so far."""
    by_resolution: dict[int, list[tuple[float, Arch]]] = {}
    for arch, row in objective.cache.items():
        if "top1" in row and row["violation"] == 0:
            by_resolution.setdefault(arch.resolution, []).append((row["top1"], arch))
    return [arch for rows in by_resolution.values() for _, arch in sorted(rows, key=lambda t: -t[0])[:per]]


def evolve(space: SearchSpace, objective: Objective, settings: SearchSettings | None = None) -> SearchResult:
    """The most accurate arch of ``space`` (the coverage) within the objective's budgets."""
    s = settings or SearchSettings()
    genomes = Genomes(space, np.random.default_rng(s.seed))
    acceptance = _Acceptance()
    first, first_archs = _fitting(objective, genomes, genomes.sample, s.population - 1, acceptance)
    population = np.vstack([genomes.encode(space.smallest())[None], first])
    archs = [space.smallest()] + first_archs
    n_parents = max(2, int(s.population * s.parent_share))
    result = SearchResult(best=archs[0])
    for _ in range(s.generations):
        rows = objective.evaluate(archs)
        order = sorted(range(len(archs)), key=lambda i: _rank_key(rows[i]))[:n_parents]
        result.best = archs[order[0]]
        best_row = rows[order[0]]
        result.history.append(best_row["top1"] if best_row["violation"] == 0 else float("nan"))
        result.queries.append(objective.queries)
        parents = population[order]
        kids, kid_archs = _fitting(objective, genomes, lambda k: _breed(genomes, parents, k, s), s.population,
                                   acceptance)
        population = np.vstack([parents, kids])
        archs = [archs[i] for i in order] + kid_archs
    rows = objective.evaluate(archs)
    result.best = archs[min(range(len(archs)), key=lambda i: _rank_key(rows[i]))]
    if s.polish:
        rng = random.Random(s.seed)
        starts = dict.fromkeys([result.best] + _best_per_resolution(objective, POLISH_STARTS))
        finished = [kicked_polish(space, objective, a, POLISH_KICKS, rng) for a in starts]
        rows = objective.evaluate(finished)
        result.best = finished[min(range(len(finished)), key=lambda i: _rank_key(rows[i]))]
        result.history.append(objective.evaluate([result.best])[0]["top1"])
        result.queries.append(objective.queries)
    return result


def random_search(space: SearchSpace, objective: Objective, queries: int, seed: int = 0) -> tuple[Arch, list[float]]:
    """The baseline: the best fitting arch of ``queries`` uniform samples, and the running best."""
    rng = random.Random(seed)
    best, best_row, history = space.smallest(), None, []
    for _ in range(queries):
        arch = space.sample(rng)
        row = objective.evaluate([arch])[0]
        if best_row is None or _rank_key(row) < _rank_key(best_row):
            best, best_row = arch, row
        history.append(best_row["top1"] if best_row["violation"] == 0 else float("nan"))
    return best, history
