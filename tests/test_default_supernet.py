"""The shipped supernet: it loads, and it scores what its eval report says."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import require_fmnist
from ofa_edge import load_supernet
from ofa_edge.space.checkpoint import DEFAULT_DIR


@pytest.fixture(scope="module")
def report():
    return json.loads((DEFAULT_DIR / "eval_report.json").read_text())


def test_default_supernet_loads_and_is_small():
    net = load_supernet("default")
    assert net.space.id == "ofa-mbv3-tiny" and net.num_classes == 10
    assert (DEFAULT_DIR / "supernet.safetensors").stat().st_size <= 8 * 1024 * 1024


def test_eval_report_meets_or_states_the_targets(report):
    test = report["test"]
    assert 0 < test["largest"]["top1"] <= 1 and 0 < test["smallest"]["top1"] <= 1
    assert report["recipe"]["name"] == "fmnist-shipped" and report["ledger"]["wall_s"] > 0
    assert set(report["targets"]) == {"largest", "smallest", "median_random20"}


def test_the_shipped_recipe_is_the_one_in_recipes_and_fits_the_budget(report):
    """The committed recipe file is the one the checkpoint was trained with, and the recorded
    training plus accuracy-predictor wall time fit the 90-minute budget of [3/7]."""
    from ofa_edge.train.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "fmnist-shipped.yaml")
    assert json.loads(recipe.model_dump_json()) == report["recipe"]
    assert report["ledger"]["wall_s"] + report["accuracy_predictor"]["ledger"]["wall_s"] <= 90 * 60


def test_largest_and_smallest_score_as_reported_on_2000_test_images(report, run_cli):
    require_fmnist()
    result = run_cli("eval", "--supernet", "default", "--arch", report["test"]["largest"]["arch"],
                     "--arch", report["test"]["smallest"]["arch"], "--split", "test", "--images", "2000", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["archs"]
    assert json.loads(result.stdout)["images"] == 2000
    for row, key in zip(rows, ("largest", "smallest")):
        assert abs(row["top1"] - report["test"][key]["top1"]) <= 0.015, (key, row)
