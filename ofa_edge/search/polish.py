"""A greedy local finish for evolution's best arch.

Evolution ends near a good arch, but where it ends varies from seed to seed (the reference's
spread is 0.2-0.5 points of predicted top-1 over seeds at one budget). The finish climbs from
there: every single change (one block's kernel or expand, one stage one block deeper, with each
block choice, or shallower, the resolution) is scored, and the best fitting improvement taken.
When no single change both fits and improves, pairs are tried: one of the changes that would
improve accuracy but break a budget, with one of the fitting changes; the pairs whose two single
gains add up to most are scored. It stops when neither improves, or after ``max_steps``. Each step is a few hundred
predictor queries, batched.
"""
from __future__ import annotations

import random

import numpy as np

from ofa_edge.search.objective import Objective
from ofa_edge.space.arch import Arch
from ofa_edge.space.searchspace import SearchSpace

# ("r", res) | ("k", stage, block, kernel) | ("e", stage, block, expand) | ("+", stage, (k, e)) | ("-", stage)
Move = tuple
KICK_TRIES = 16  # random kicks made per kick; the fitting one predicted most accurate is polished


def single_moves(space: SearchSpace, arch: Arch) -> list[Move]:
    """Every change of one choice of ``arch`` that stays inside ``space``."""
    p = space.preset
    moves: list[Move] = [("r", r) for r in p.resolutions if r != arch.resolution]
    for s, stage in enumerate(arch.stages):
        if len(stage) + 1 in p.depth_choices:
            moves += [("+", s, (k, e)) for k in p.kernel_choices for e in p.expand_choices]
        if len(stage) - 1 in p.depth_choices:
            moves.append(("-", s))
        for j, (k, e) in enumerate(stage):
            moves += [("k", s, j, v) for v in p.kernel_choices if v != k]
            moves += [("e", s, j, v) for v in p.expand_choices if v != e]
    return moves


def apply_moves(arch: Arch, moves: list[Move], depths: tuple[int, ...] | None = None) -> Arch | None:
    """``arch`` with ``moves`` applied in order, or None when one no longer applies (a block
    that a shallower stage dropped) or, given the space's ``depths``, when a stage ends at a
    depth outside them (two "+" on one stage at depth 3 of 2-4)."""
    resolution, stages = arch.resolution, [list(stage) for stage in arch.stages]
    for move in moves:
        kind = move[0]
        if kind == "r":
            resolution = move[1]
        elif kind == "+":
            stages[move[1]].append(move[2])
        elif kind == "-":
            stages[move[1]].pop()
        else:
            s, j, value = move[1:]
            if j >= len(stages[s]):
                return None
            k, e = stages[s][j]
            stages[s][j] = (value, e) if kind == "k" else (k, value)
    if depths is not None and any(len(stage) not in depths for stage in stages):
        return None
    return Arch(resolution, tuple(tuple(stage) for stage in stages))


def polish(space: SearchSpace, objective: Objective, arch: Arch, max_steps: int = 40, pairs: int = 384) -> Arch:
    """The best arch reachable from a fitting ``arch`` by greedy single and paired changes. Of the
    pairs (an improving change that breaks a budget, with a fitting one), the ``pairs`` whose
    summed single gains are largest are scored."""
    current = objective.evaluate([arch])[0]
    if current["violation"] > 0:
        return arch
    for _ in range(max_steps):
        moves = single_moves(space, arch)
        singles = [apply_moves(arch, [m]) for m in moves]
        rows = objective.evaluate(singles)
        gain = np.array([r["top1"] for r in rows]) - current["top1"]
        fits = np.array([r["violation"] == 0 for r in rows])
        if (fits & (gain > 0)).any():
            best = int(np.argmax(np.where(fits, gain, -np.inf)))
            arch, current = singles[best], rows[best]
            continue
        up, down = np.nonzero(gain > 0)[0], np.nonzero(fits)[0]
        estimate = gain[up][:, None] + gain[down][None, :]
        order = np.argsort(-estimate, axis=None)[:pairs]
        order = order[estimate.flat[order] > 0]
        candidates = [apply_moves(arch, [moves[up[i // len(down)]], moves[down[i % len(down)]]], space.preset.depth_choices)
                      for i in order]
        candidates = [a for a in candidates if a is not None]
        fitting = [a for a, c in zip(candidates, objective.constraints(candidates)) if c["violation"] == 0]
        scored = objective.evaluate(fitting)
        options = [i for i, r in enumerate(scored) if r["top1"] > current["top1"]]
        if not options:
            return arch
        best = max(options, key=lambda i: scored[i]["top1"])
        arch, current = fitting[best], scored[best]
    return arch


def kicked_polish(space: SearchSpace, objective: Objective, arch: Arch, kicks: int, rng: random.Random,
                  size: int = 3) -> Arch:
    """Iterated local search: ``kicks`` times, change ``size`` random choices of the best arch so
    far (of ``KICK_TRIES`` such kicks, the fitting one predicted most accurate), polish that, and
    keep it when it is better."""
    best = polish(space, objective, arch)
    best_top1 = objective.evaluate([best])[0]["top1"]
    for _ in range(kicks):
        tries = []
        for _ in range(KICK_TRIES):
            kicked = best
            for _ in range(size):
                moves = single_moves(space, kicked)
                kicked = apply_moves(kicked, [moves[rng.randrange(len(moves))]])
            tries.append(kicked)
        fitting = [a for a, c in zip(tries, objective.constraints(tries)) if c["violation"] == 0 and a != best]
        if not fitting:
            continue
        rows = objective.evaluate(fitting)
        start = fitting[max(range(len(fitting)), key=lambda i: rows[i]["top1"])]
        candidate = polish(space, objective, start)
        top1 = objective.evaluate([candidate])[0]["top1"]
        if top1 > best_top1:
            best, best_top1 = candidate, top1
    return best
