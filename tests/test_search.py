"""Hardware-aware search: a synthetic problem with a known optimum, budgets, no-fit errors,
seeds, the Pareto front, the MCU cost model, and the CLI on a benched device."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from ofa_edge.devices.mcu import TFLM_FILE_OVERHEAD, McuModel
from ofa_edge.devices.spec import load_spec
from ofa_edge.search.evolution import SearchSettings, evolve, random_search
from ofa_edge.search.genome import Genomes
from ofa_edge.search.objective import NoFit, Objective
from ofa_edge.search.pareto import pareto_front
from ofa_edge.search.polish import apply_moves, kicked_polish, polish, single_moves
from ofa_edge.space.arch import Arch
from ofa_edge.space.searchspace import SearchSpace

SPACE = SearchSpace("ofa-mbv3-tiny")
TARGET = Arch.parse("r28|k5e4,k7e3,k3e6|k7e6,k3e3|k5e6,k5e4,k3e4,k7e4|k3e4,k5e3,k7e6|k7e3,k3e6")


def _fields(arch: Arch) -> list:
    """Resolution, depths, and (kernel, expand) of every block slot (None when skipped)."""
    slots = [stage[i] if i < len(stage) else (None, None) for stage in arch.stages for i in range(4)]
    return [arch.resolution, *arch.depths, *(x for kv in slots for x in kv)]


def synthetic_accuracy(archs: list[Arch]) -> np.ndarray:
    """1.0 at TARGET, minus 1/F for each field that differs from it."""
    target = _fields(TARGET)
    return np.array([1 - sum(a != b for a, b in zip(_fields(x), target)) / len(target) for x in archs])


def synthetic_latency(archs: list[Arch]) -> np.ndarray:
    return np.array([sum(k * e for k, e in a.blocks) * a.resolution / 28 for a in archs], float)


def _objective(**budgets) -> Objective:
    return Objective(SPACE, synthetic_accuracy, synthetic_latency, 10, budgets)


def test_evolution_finds_the_known_optimum_and_beats_random_search():
    budget = float(synthetic_latency([TARGET])[0])  # the optimum sits right on the budget
    objective = _objective(latency_ms=budget)
    result = evolve(SPACE, objective, SearchSettings(seed=0))
    best = objective.evaluate([result.best])[0]
    assert best["violation"] == 0 and best["latency_ms"] <= budget
    assert best["top1"] >= 0.99, (str(result.best), best)
    queries = objective.queries
    baseline = _objective(latency_ms=budget)
    random_best, history = random_search(SPACE, baseline, queries, seed=0)
    assert len(history) == queries
    assert best["top1"] > baseline.evaluate([random_best])[0]["top1"] + 0.05


def test_budgets_hold_and_the_same_seed_gives_the_same_result():
    settings = SearchSettings(population=40, generations=40, seed=3)
    small = _objective().evaluate([SPACE.smallest()], full=True)[0]
    big = _objective().evaluate([SPACE.largest()], full=True)[0]
    keys = ("latency_ms", "peak_sram_kb", "flash_kb", "macs_m")
    budgets = {k: small[k] + 0.3 * (big[k] - small[k]) for k in keys}  # binding: the largest breaks all
    a = evolve(SPACE, _objective(**budgets), settings)
    b = evolve(SPACE, _objective(**budgets), settings)
    assert str(a.best) == str(b.best) and np.array_equal(a.history, b.history, equal_nan=True)
    row = _objective(**budgets).evaluate([a.best], full=True)[0]
    assert row["violation"] == 0
    for key, limit in budgets.items():
        assert row[key] <= limit, (key, row[key], limit)
    # History only ever improves (the parents survive).
    seen = [h for h in a.history if not math.isnan(h)]
    assert seen == sorted(seen)


def test_no_fit_names_the_budget_and_the_overrun():
    objective = _objective(latency_ms=1.0)
    with pytest.raises(NoFit, match=r"latency_ms .* > 1 \(over by \d+%\)"):
        objective.check_fits(SPACE.smallest())


def test_pareto_front_is_non_dominated_and_within_budget():
    budget = 120.0
    objective = _objective(latency_ms=budget)
    result = pareto_front(SPACE, objective, SearchSettings(population=40, generations=60, seed=1))
    rows = objective.evaluate(result.front)
    assert len(rows) >= 5
    lat = [r["latency_ms"] for r in rows]
    acc = [r["top1"] for r in rows]
    assert lat == sorted(lat) and acc == sorted(acc)  # faster means less accurate along the front
    assert all(r["violation"] == 0 and r["latency_ms"] <= budget for r in rows)
    for r in rows:  # nothing seen dominates a front member
        assert not any(o["violation"] == 0 and o["top1"] > r["top1"] and o["latency_ms"] < r["latency_ms"]
                       for o in objective.cache.values())


def test_mcu_model_agrees_with_the_extracted_network(repo):
    import torch

    from ofa_edge.space.supernet import OFASupernet

    spec = load_spec(repo / "device_specs" / "stm32f746.yaml")
    mcu = McuModel(spec)
    net = OFASupernet("ofa-mbv3-tiny", 10).eval()
    for arch in (SPACE.smallest(), SPACE.largest(), SPACE.sample(seed=5)):
        costs = mcu.costs(SPACE.preset, arch, 10)
        sub = net.extract(arch)
        flash = channels = count = 0
        for m in sub.modules():  # int8 weights plus an int32 bias per output channel
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                flash += m.weight.numel() + 4 * m.weight.shape[0]
                channels, count = channels + m.weight.shape[0], count + 1
        # plus the .tflite file's per-channel quantization parameters and per-layer metadata
        a, b, c = TFLM_FILE_OVERHEAD
        file_bytes = flash + a * channels + b * count + c
        assert costs.flash_kb == pytest.approx(file_bytes / 1024 + spec.cost_model.runtime_flash_kb, abs=0.01)
        macs = _count_macs(sub, arch.resolution)
        assert costs.macs == macs
        rates = spec.cost_model.cycles_per_mac
        slowest, fastest = max(rates.model_dump().values()), min(rates.model_dump().values())
        hz = spec.hardware.clock_mhz * 1e6
        assert fastest * macs / hz * 1e3 <= costs.latency_ms <= slowest * macs / hz * 1e3
        assert costs.peak_sram_kb > spec.cost_model.runtime_sram_kb


def _count_macs(net, resolution: int) -> int:
    import torch

    total = 0

    def hook(module, _inp, out):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += out.numel() * module.weight[0].numel()
        elif isinstance(module, torch.nn.Linear):
            total += module.weight.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        net(torch.rand(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return total


def test_cli_search_on_the_mcu_spec_fits_sram_and_flash(repo, run_cli, tmp_path):
    out = tmp_path / "mcu.json"
    done = run_cli("search", "--spec", str(repo / "device_specs" / "stm32f746.yaml"), "--generations", "30",
                   "--population", "40", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(out.read_text())
    assert set(row) == {"arch", "predicted", "budgets", "margins"}
    assert set(row["predicted"]) == {"top1", "latency_ms", "macs", "peak_sram_kb", "flash_kb"}
    for key in ("latency_ms", "peak_sram_kb", "flash_kb"):
        assert row["predicted"][key] <= row["budgets"][key]
        assert row["margins"][key] == pytest.approx(row["budgets"][key] - row["predicted"][key], abs=1e-5)
    assert "cost model" in done.stdout and "ledger: search" in done.stdout
    done = run_cli("search", "--spec", str(repo / "device_specs" / "stm32f746.yaml"), "--sram-kb", "4")
    assert done.returncode == 2 and "peak_sram_kb" in done.stderr and "Traceback" not in done.stderr


def test_cli_search_on_the_benched_device(ci_local_bench, ci_supernet, run_cli, tmp_path):
    spec, result, _ = ci_local_bench
    runs = result.folder.parents[1]
    common = ["--spec", spec.source, "--supernet", str(ci_supernet), "--runs", str(runs), "--population", "40",
              "--generations", "40"]
    predictor = json.loads((result.folder / "latency_predictor.json").read_text())
    table = {b["id"]: b["p50_ms"] for b in json.loads((result.folder / "blocks.json").read_text())["blocks"]}
    assert predictor["table"] == table and predictor["statistic"] == "median"  # the spec's default
    fastest = min(s["p50_ms"] for s in json.loads((result.folder / "subnets.json").read_text())["subnets"])
    budget = round(fastest * 1.6, 4)
    done = run_cli("search", *common, "--latency-ms", str(budget), "--json", str(tmp_path / "one.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "one.json").read_text())
    assert row["predicted"]["latency_ms"] <= budget and row["margins"]["latency_ms"] >= 0
    arch = SearchSpace("ofa-mbv3-ci").parse(row["arch"])
    assert arch.resolution == 28 and {k for k, _ in arch.blocks} <= {3, 7} and {e for _, e in arch.blocks} <= {3, 6}
    done = run_cli("search", *common, "--pareto", "--json", str(tmp_path / "front.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    front = json.loads((tmp_path / "front.json").read_text())
    assert isinstance(front, list) and len(front) >= 2
    lat = [r["predicted"]["latency_ms"] for r in front]
    assert lat == sorted(lat)
    done = run_cli("search", "--spec", spec.source, "--supernet", str(ci_supernet), "--runs", str(tmp_path / "none"))
    assert done.returncode == 2 and "run ofa-edge bench" in done.stderr


# ---------------------------------------------------------------- genome and polish

def test_genomes_round_trip_and_breed_inside_the_space():
    genomes = Genomes(SPACE, np.random.default_rng(0))
    for arch in [SPACE.smallest(), SPACE.largest(), TARGET, *SPACE.sample_many(50, seed=1)]:
        (decoded,) = genomes.decode(genomes.encode(arch)[None])
        assert decoded == arch
    parents = genomes.sample(20)
    kids = np.vstack([genomes.mutate(parents, 0.1), genomes.crossover(parents, parents[::-1])])
    archs = genomes.decode(kids)
    assert all(a in SPACE for a in archs)
    # mutation resamples about p of the genes; crossover takes every gene from one of its parents
    changed = (genomes.mutate(parents, 0.1) != parents).mean()
    assert 0.03 < changed < 0.1
    crossed = genomes.crossover(parents, parents[::-1])
    assert ((crossed == parents) | (crossed == parents[::-1])).all()
    # genomes that differ only in a skipped slot are one arch, built once
    shallow = genomes.encode(SPACE.smallest())
    other = shallow.copy()
    other[-1] = (other[-1] + 1) % genomes.sizes[-1]   # the last stage's 4th expand: skipped at depth 2
    a, b = genomes.decode(np.vstack([shallow, other]))
    assert a == b and a is b


def test_single_moves_change_one_choice_and_pairs_apply_in_order():
    arch = Arch.parse("r24|k3e3,k3e3|k5e4,k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3")
    moves = single_moves(SPACE, arch)
    neighbours = [apply_moves(arch, [m]) for m in moves]
    assert len(set(neighbours)) == len(moves) and arch not in neighbours
    assert all(n in SPACE for n in neighbours)
    assert all(sum(x != y for x, y in zip(_fields(n), _fields(arch))) in (1, 2, 3) for n in neighbours)
    # a block dropped by the first move cannot be changed by the second
    assert apply_moves(arch, [("-", 1), ("k", 1, 2, 7)]) is None
    # a pair of moves that each fit can together leave the space: two "+" on one stage
    deep = next(s for s, stage in enumerate(arch.stages) if len(stage) + 2 > SPACE.preset.max_depth)
    twice = [("+", deep, (3, 3)), ("+", deep, (3, 3))]
    assert apply_moves(arch, twice, SPACE.preset.depth_choices) is None
    assert apply_moves(arch, [("k", 1, 2, 7), ("-", 1)]) == Arch.parse(
        "r24|k3e3,k3e3|k5e4,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3")


def test_polish_climbs_to_the_optimum_from_a_nearby_arch_and_keeps_the_budget():
    budget = float(synthetic_latency([TARGET])[0])
    objective = _objective(latency_ms=budget)
    start = Arch.parse("r28|k3e4,k7e3,k3e6|k7e6,k3e3|k5e6,k5e4,k3e4,k7e3|k3e4,k5e3,k7e4|k7e3,k3e6")
    assert objective.evaluate([start])[0]["violation"] == 0 and start != TARGET
    assert polish(SPACE, objective, start) == TARGET
    # an arch that breaks the budget is returned as it is: polish never walks out of a violation
    assert polish(SPACE, _objective(latency_ms=1.0), TARGET) == TARGET
    kicked = kicked_polish(SPACE, objective, start, 3, random.Random(0))
    assert kicked == TARGET


def test_evolution_rejects_children_that_break_the_budget_before_scoring_them():
    budget = float(synthetic_latency([TARGET])[0])
    scored: list[Arch] = []

    def accuracy(archs):
        scored.extend(archs)
        return synthetic_accuracy(archs)

    objective = Objective(SPACE, accuracy, synthetic_latency, 10, {"latency_ms": budget})
    evolve(SPACE, objective, SearchSettings(population=30, generations=20, seed=0, polish=False))
    over = [a for a in scored if synthetic_latency([a])[0] > budget]
    assert len(scored) > 100 and len(over) / len(scored) < 0.05
