"""ofa-edge deploy for an MCU-class spec (STM32F746) with the shipped supernet and --no-firmware:
search on the cost model, int8 TFLite with TFLite Micro's ops, the C array, TFLite Micro's
interpreter on the host (accuracy and the arena it allocates), the budgets, the bundle. The
firmware path is tests/test_firmware.py."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import require, require_fmnist
from ofa_edge.deploy import DeployOptions, deploy
from ofa_edge.devices.spec import load_spec, resolve_spec_path


@pytest.fixture(scope="module")
def mcu_bundle(tmp_path_factory):
    require_fmnist()
    root = tmp_path_factory.mktemp("deploy-mcu")
    spec = load_spec(resolve_spec_path("stm32f746"))
    lines: list[str] = []
    result = deploy(spec, DeployOptions(out=root / "bundles", runs=root / "runs", eval_images=500, bn_images=500,
                                        no_firmware=True, log=lines.append))
    return result, lines, spec


def test_mcu_deploy_passes_and_writes_a_c_array(mcu_bundle, tmp_path):
    from test_deploy import _check_bundle

    result, lines, spec = mcu_bundle
    assert result.passed, result.manifest["verification"]
    assert [line.split(" ", 1)[0] for line in lines if line[:2].rstrip("/").isdigit()] == [f"{i}/10" for i in range(1, 11)]
    m = _check_bundle(result.bundle)
    assert m["format"] == "tflite-micro-int8" and m["device"]["kind"] == "mcu"
    assert {f["name"] for f in m["files"]} == {"model.tflite", "model_data.cc", "model_data.h"}
    require(shutil.which("gcc") is not None, "gcc", "apt-get install -y g++")
    done = subprocess.run(["gcc", "-c", str(result.bundle / "model_data.cc"), "-o", str(tmp_path / "model.o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert m["latency_ms"]["measured"] is None and "cost model" in m["latency_ms"]["source"]
    assert "--no-firmware" in m["device"]["interpreter"] and "firmware" not in m
    assert any(line.startswith("7/10 no firmware (--no-firmware)") for line in lines)


def test_mcu_arena_fits_and_accuracy_matches_the_tflite_interpreter(mcu_bundle):
    result, _, spec = mcu_bundle
    m = result.manifest
    mem = m["memory"]
    assert mem["arena_kb"] + spec.cost_model.runtime_sram_kb == pytest.approx(mem["peak_sram_kb"])
    assert mem["peak_sram_kb"] <= spec.budgets.peak_sram_kb and mem["flash_kb"] <= spec.budgets.flash_kb
    # the memory model is calibrated to the 32-bit Cortex-M arena (benchmarks/results/firmware_calibration.json);
    # the x86-64 host build's arena is larger (64-bit pointers in every persistent struct): 5-10% here
    assert 0.90 <= mem["arena_estimate_kb"] / mem["arena_kb"] <= 0.95
    acc = m["accuracy"]
    assert m["agreement"] >= 0.995 and abs(acc["device"] - acc["host_int8"]) <= 0.005
    assert acc["host_fp32"] - acc["host_int8"] <= 0.02 and acc["device"] > 0.8
    checks = {c["name"]: c for c in m["verification"]["checks"]}
    assert checks["the C array compiles"]["passed"]
    assert checks["arena + runtime overhead within the SRAM budget (KiB)"]["threshold"] == spec.budgets.peak_sram_kb
    report = (result.bundle / "report.md").read_text()
    assert "TFLite Micro arena" in report and "cost model estimated" in report


def test_mcu_deploy_with_a_budget_nothing_fits_exits_2_and_names_it(run_cli, tmp_path):
    require_fmnist()
    done = run_cli("deploy", "--spec", "stm32f746", "--sram-kb", "40", "--no-firmware", "--out", str(tmp_path / "b"))
    assert done.returncode == 2, done.stderr
    assert "peak_sram_kb" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
    manifest = tmp_path / "b" / "stm32f746" / "manifest.json"
    assert not manifest.exists()
