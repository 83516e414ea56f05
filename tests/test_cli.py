"""The ``ofa-edge`` console script, run in a subprocess as a user runs it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import require

SUBCOMMANDS = ["specs", "data", "train", "eval", "import-reference", "import-latency-table", "predictor", "devices", "bench", "search", "deploy", "report"]
NESTED = [["specs", "list"], ["specs", "check"], ["data", "info"]]


def assert_clean_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_top_level_help(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", [[c] for c in SUBCOMMANDS] + NESTED, ids=" ".join)
def test_every_subcommand_has_help_with_an_example(run_cli, command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "example:" in result.stdout and "ofa-edge " + command[0] in result.stdout


@pytest.mark.parametrize("argv", [
    ["--no-such-flag"], ["frobnicate"], ["bench", "--bogus"], ["search", "--latency-ms", "fast"],
    ["search", "--latency-ms", "-3"], ["eval", "--split", "train"], ["specs", "check"],
    ["data", "info", "fashion-mnist", "--val-size", "zero"],
], ids=" ".join)
def test_bad_arguments_exit_2_without_traceback(run_cli, argv):
    result = run_cli(*argv)
    assert_clean_error(result, "error:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_command_prints_help_and_exits_2(run_cli):
    result = run_cli()
    assert result.returncode == 2 and "COMMAND" in result.stderr


def test_report_flags_that_exclude_each_other_exit_2(run_cli):
    assert_clean_error(run_cli("report", "--full", "--from-results"), "exclude each other")


def test_report_from_missing_results_names_what_to_run(run_cli, tmp_path):
    import os

    result = run_cli("report", "--from-results", "--out", str(tmp_path / "d"),
                     env={**os.environ, "OFA_EDGE_RESULTS": str(tmp_path / "none")})
    assert_clean_error(result, "bench_fronts.py")
    assert not (tmp_path / "d").exists()


def test_specs_list_shows_every_shipped_spec(run_cli, repo):
    result = run_cli("specs", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == sorted(p.stem for p in (repo / "device_specs").glob("*.yaml"))
    assert any("tflite-micro" in line and "sram≤320KiB" in line for line in lines)


def test_specs_check_accepts_the_shipped_specs(run_cli, repo):
    paths = sorted(str(p) for p in (repo / "device_specs").glob("*.yaml"))
    result = run_cli("specs", "check", *paths)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok") == len(paths) >= 7


def test_specs_check_names_file_key_and_reason(run_cli, tmp_path, repo):
    bad = tmp_path / "bad.yaml"
    bad.write_text(re.sub(r"latency_ms: [0-9.]+", "latency_ms: -1", (repo / "device_specs" / "local.yaml").read_text()))
    good = repo / "device_specs" / "local.yaml"
    result = run_cli("specs", "check", str(good), str(bad))
    assert_clean_error(result, f"{bad}: budgets.latency_ms: must be > 0, got -1")
    assert f"{good}: ok" in result.stdout

    as_json = run_cli("specs", "check", "--json", str(bad))
    assert as_json.returncode == 2
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["specs"][str(bad)][0].startswith("budgets.latency_ms")


def test_a_bad_spec_given_to_a_command_is_one_line(run_cli, tmp_path):
    result = run_cli("specs", "check", str(tmp_path))
    assert_clean_error(result, "is a directory, not a spec file")


def test_data_info_on_real_fashion_mnist(run_cli):
    require(Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
            "Fashion-MNIST", "apt-get install -y dataset-fashion-mnist")
    result = run_cli("data", "info", "fashion-mnist")
    assert result.returncode == 0, result.stderr
    assert "/usr/share/datasets/fashion-mnist" in result.stdout
    assert "Ankle boot" in result.stdout and "55,000" in result.stdout and "10,000" in result.stdout

    info = json.loads(run_cli("data", "info", "fashion-mnist", "--json").stdout)
    assert info["counts"] == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert list(info["image_shape"]) == [28, 28, 1] and len(info["classes"]) == 10
    assert {c["train"] + c["val"] for c in info["classes"]} == {6_000}


def test_data_info_missing_dataset_is_one_clear_line(run_cli, tmp_path):
    result = run_cli("data", "info", "fashion-mnist", "--data", str(tmp_path / "nowhere"))
    assert_clean_error(result, str(tmp_path / "nowhere"))
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["eval", "--images", "10"], ["predictor", "fit", "--samples", "2"],
                                     ["deploy", "--spec", "local"]], ids=lambda c: c[0])
def test_device_cuda_without_cuda_is_one_line(run_cli, command):
    """--device cuda on a machine without CUDA (none visible): one line naming the fix."""
    result = run_cli(*command, "--device", "cuda", "--supernet", "default", env={"CUDA_VISIBLE_DEVICES": ""})
    assert_clean_error(result, "CUDA is not available", "--device cpu")
    assert len(result.stderr.strip().splitlines()) == 1


def test_eval_on_the_cpu_in_fp32(run_cli):
    result = run_cli("eval", "--arch", "min", "--images", "200", "--split", "val", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["device"] == "cpu" and out["images"] == 200 and out["dataset"]["recorded"] is True
    assert 0.5 < out["archs"][0]["top1"] <= 1.0
