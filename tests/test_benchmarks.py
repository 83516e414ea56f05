"""Each benchmark script runs at a tiny scale and writes valid results JSON (into a temporary
results folder, never over the committed ones)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CI_BENCH, bench_spec_yaml, require_fmnist

REPO = Path(__file__).resolve().parents[1]


def _script(name: str, results: Path, *args: str, timeout: float = 900) -> dict:
    env = {**os.environ, "OFA_EDGE_RESULTS": str(results), "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-1500:])
    return done


def _results(results: Path, name: str) -> dict:
    data = json.loads((results / f"{name}.json").read_text())
    assert {"benchmark", "machine", "settings", "figures"} <= set(data)
    assert data["benchmark"] == name and data["machine"]["date"] and data["machine"]["cores"]
    return data["figures"]


@pytest.fixture(scope="module")
def local_bench(tmp_path_factory, block_cache):
    """A small bench of the shipped supernet on this machine (as test_deploy's)."""
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec

    require_fmnist()
    root = tmp_path_factory.mktemp("bench-scripts")
    spec = bench_spec_yaml(root / "bl.yaml", {"transport": "local"}, str(root / "work"), name="bench-scripts")
    run_bench(load_spec(spec), BenchOptions(**CI_BENCH, supernet="default", out=root / "runs", cache=block_cache,
                                            log=lambda _: None))
    return root, spec


def test_bench_search_tiny(local_bench, tmp_path):
    root, spec = local_bench
    _script("bench_search.py", tmp_path, "--tiny", "--spec", str(spec), "--runs", str(root / "runs"))
    f = _results(tmp_path, "search")
    (run,) = f["runs"]
    assert run["queries"] > 0 and 0 < run["best_top1"] <= 1
    assert run["evolution_best_at"] and run["random_best_at"]


def test_bench_fronts_tiny(local_bench, tmp_path):
    root, spec = local_bench
    _script("bench_fronts.py", tmp_path, "--tiny", "--spec", str(spec), "--runs", str(root / "runs"))
    f = _results(tmp_path, "fronts_bench-scripts")
    sets = {r["set"] for r in f["rows"]}
    assert sets == {"ofa", "uniform"}
    for r in f["rows"]:
        assert r["latency_ms"] > 0 and 0.5 < r["top1_device"] <= 1 and r["macs"] > 0
    assert set(f["headline"]) >= {"latency_ratio_at_equal_accuracy", "accuracy_gain_at_equal_latency"}


def test_bench_fronts_tiny_on_the_slowed_device(tmp_path):
    """--slowed starts the netns + cgroup device, benches it, then measures the fronts there."""
    from slowdevice import require_slow_device

    require_fmnist()
    require_slow_device()
    runs = tmp_path / "runs"
    _script("bench_fronts.py", tmp_path, "--slowed", "--tiny", "--runs", str(runs), timeout=1500)
    f = _results(tmp_path, "fronts_slowed-local")
    assert f["spec"] == "slowed-local" and {r["set"] for r in f["rows"]} == {"ofa", "uniform"}
    assert all(r["latency_ms"] > 0 and 0.5 < r["top1_device"] <= 1 for r in f["rows"])
    assert list(runs.glob("slowed-local/*/latency_predictor.json")), "the slowed device was benched first"


def test_calibrate_tflm_memory_tiny(tmp_path):
    _script("calibrate_tflm_memory.py", tmp_path, "--archs", "4")
    f = _results(tmp_path, "tflm_memory")
    assert len(f["rows"]) == 4
    fit = f["fit"]
    assert fit["file_max_abs_rel_error"] < 0.05 and fit["arena_rel_error"]["max_under"] < 0.05


def test_bench_training_tiny(ci_run, tmp_path):
    """The training comparison on a seconds-long CI run standing in for a from-scratch run."""
    run, _ = ci_run
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("scratch-small", "scratch-large-34", "fmnist-sandwich-17"):
        shutil.copytree(run, runs / name)
    _script("bench_training.py", tmp_path, "--runs", str(runs), "--supernet", str(run), "--only", "scratch",
            "--images", "200")
    f = _results(tmp_path, "training")
    (row,) = f["scratch"]
    assert row["name"] == "small" and 0 <= row["scratch_top1"] <= 1 and 0 <= row["ofa_top1"] <= 1
    assert row["scratch_ledger"]["cpu_s"] > 0
    epochs = sum(p["epochs"] for p in json.loads((run / "recipe.json").read_text())["phases"])
    assert row["epochs"] == epochs  # read from the run, not assumed
    # the same supernet stands in for both, so the same arch scores the same from each
    assert row["ofa17_top1"] == row["ofa_top1"]
    (long_row,) = f["scratch_long"]
    assert long_row["name"] == "large" and "k7e6" in long_row["arch"] and 0 <= long_row["scratch_top1"] <= 1


def test_bench_training_tiny_sandwich_part(ci_run, tmp_path):
    """The progressive shrinking vs sandwich part, on CI runs standing in for both."""
    run, _ = ci_run
    runs = tmp_path / "runs"
    for name in ("fmnist-ps", "fmnist-sandwich", "fmnist-sandwich-17"):
        shutil.copytree(run, runs / name)
    _script("bench_training.py", tmp_path, "--runs", str(runs), "--supernet", str(run), "--only", "sandwich",
            "--images", "200")
    sw = _results(tmp_path, "training")["sandwich"]
    for key in ("progressive_shrinking", "sandwich", "sandwich17"):
        assert len(sw[key]["archs"]) == 22 and all(0 <= a["top1"] <= 1 for a in sw[key]["archs"])
        assert sw[f"{key}_ledger"]["cpu_s"] > 0
    assert "shipped" not in sw  # a run folder has no eval report


def test_bench_harness_tiny(ci_supernet, tmp_path, block_cache):
    spec = bench_spec_yaml(tmp_path / "bh.yaml", {"transport": "local"}, str(tmp_path / "work"), name="bench-harness")
    _script("bench_harness.py", tmp_path, "--spec", str(spec), "--supernet", str(ci_supernet), "--out",
            str(tmp_path / "runs"), "--tiny")
    f = _results(tmp_path, "harness_quick")
    assert f["cold_cache"]["blocks"] > 0 and f["warm_cache"]["wall_s"] > 0
    assert 0 <= f["harness_noise_median_block_cov"] < 1


def test_bench_latency_predictor_tiny(ci_supernet, tmp_path):
    """Old method against new, quiet and under the script's own competing load, at a tiny scale."""
    _script("bench_latency_predictor.py", tmp_path, "--tiny", "--supernet", str(ci_supernet), "--load-max-s", "120",
            timeout=1200)
    benches = _results(tmp_path, "latency_predictor_tiny")["benches"]
    # per condition: the old method, then the new one's first 3 passes and all 5 of the same measurements
    assert [(b["method"], b["condition"], b["passes"]) for b in benches] == [
        ("old", "quiet", 1), ("new", "quiet", 3), ("new", "quiet", 5), ("old", "load", 1), ("new", "load", 3),
        ("new", "load", 5)]
    for b in benches:
        assert b["statistic"] == ("p10" if b["method"] == "old" else "median")
        v = b["validation"]
        assert v["n"] == 10 and 0 <= v["within_10pct"] <= 1 and v["rmse_ms"] >= 0 and -1 <= v["kendall_tau"] <= 1
        stored = b["models"] * (1 if b["method"] == "old" else 5)  # the 3-pass row reads the 5-pass store
        assert b["drift"]["passes_stored"] == stored and b["drift"]["series"]


def test_bench_supernet_tiny(tmp_path):
    _script("bench_supernet.py", tmp_path, "--tiny", "--batch", "4", "--resolution", "28")
    f = _results(tmp_path, "supernet")
    assert f["inference_ratio_supernet_over_subnet"] > 0 and f["training_ratio_4_subnets_over_static_largest"] > 0
    assert f["cost_model_calls_per_s"] > 0 and f["arch_costs"]["macs"] > 0


def test_bench_decode_tiny(tmp_path):
    require_fmnist()
    _script("bench_decode.py", tmp_path, "--tiny")
    f = _results(tmp_path, "decode")
    assert f["images"] == 500 and f["cold_s"] > 0 and f["warm_s"] > 0


def test_bench_quick_recipe_tiny(tmp_path):
    """The user's commands on a folder: train recipes/quick.yaml (1 epoch here) with --data, eval."""
    require_fmnist()
    _script("bench_quick_recipe.py", tmp_path, "--tiny")
    f = _results(tmp_path, "quick_recipe")
    assert f["test_images"] == 100 and f["train_wall_s"] > 0 and 0 <= f["test_top1"]["largest"] <= 1
    assert f["ledger"]["command"] == "train"


def test_bench_search_reference_tiny(tmp_path):
    """The reference's EvolutionFinder and ofa-edge's search on OFA's published predictor and Note10
    tables, one budget, a small population: valid JSON, both within the budget, both scored alike."""
    from conftest import require

    shared = REPO.parent / "shared" / "ofa-reference"
    require((shared / "acc_predictor.pth").is_file(), "OFA's published files", f"put ../shared beside the checkout ({shared})")
    _script("bench_search_reference.py", tmp_path, "--tiny")
    f = _results(tmp_path, "search_reference_tiny")
    (row,) = f["budgets"]
    assert row["budget_ms"] == 25 and f["accuracy_axis"] == "predicted ImageNet top-1 (OFA's published predictor)"
    (run,) = row["runs"]
    for who in ("ofa_edge", "reference"):
        assert 0 < run[who]["latency_ms"] <= 25 and 0.6 < run[who]["top1"] < 0.9 and run[who]["wall_s"] > 0
    # the reference's own scores equal ofa-edge's scoring of its arch: one objective for both
    assert run["reference"]["own_top1"] == pytest.approx(run["reference"]["top1"], abs=1e-5)
    assert run["reference"]["own_latency_ms"] == pytest.approx(run["reference"]["latency_ms"], abs=1e-6)


def test_bench_uniform_tiny(tmp_path):
    """Searched vs uniform on the Note10 tables at 160 px: the uniform front is the non-dominated
    set of the 27 uniform archs, each searched arch keeps its budget, and the ratios follow from
    the rows."""
    from conftest import require

    shared = REPO.parent / "shared" / "ofa-reference"
    require((shared / "acc_predictor.pth").is_file(), "OFA's published files", f"put ../shared beside the checkout ({shared})")
    _script("bench_uniform.py", tmp_path, "--tiny")
    f = _results(tmp_path, "uniform_tiny")
    assert f["accuracy_axis"] == "predicted ImageNet top-1 (OFA's published predictor)"
    (dev,) = f["devices"]
    assert dev["device"] == "note10" and dev["resolutions"] == [160] and len(dev["uniform"]) == 27
    assert all(p["arch"].startswith("r160|") for p in dev["uniform"])
    ufront = dev["uniform_front"]
    assert 2 <= len(ufront) <= 27
    for u in dev["uniform"]:  # nothing uniform beats a front point on both axes
        assert not any(u["top1"] > q["top1"] and u["latency_ms"] < q["latency_ms"] for q in ufront)
    for pair in dev["pairs"]:
        u, s = pair["uniform"], pair["searched_at_latency"]
        assert s["latency_ms"] <= u["latency_ms"] + 1e-9
        assert pair["accuracy_gain"] == pytest.approx(s["top1"] - u["top1"])
        fast = pair["searched_at_accuracy"]
        assert fast["top1"] >= u["top1"] and pair["latency_ratio"] == pytest.approx(u["latency_ms"] / fast["latency_ms"])
    assert dev["latency_ratio"]["max"] >= 1.0 and dev["search_cpu_s"]["searches"] == len(dev["searched"])
