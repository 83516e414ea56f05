"""MCU deploys verified by their own Cortex-M firmware (``ofa_edge.firmware``): TFLite Micro +
CMSIS-NN built from the shared source tarball, run under qemu-system-arm, flash and RAM read
from the binary. One core per test: Cortex-M7 (stm32f746) and Cortex-M4 (nrf52840); the library
objects are cached for the whole run, so later tests only relink."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile

import pytest
import yaml

from conftest import REPO, require, require_fmnist
from ofa_edge.deploy import MANIFEST_SCHEMA, DeployOptions, deploy
from ofa_edge.devices.spec import load_spec, resolve_spec_path

TARBALL = REPO.parent / "shared" / "third_party" / "tflm-cmsis-src.tgz"
FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".init_array", ".data")


@pytest.fixture(scope="session")
def tflm_src(tmp_path_factory):
    """The shared TFLM + CMSIS-NN sources, unpacked once; the firmware object cache for the run."""
    require(all(shutil.which(t) for t in ("arm-none-eabi-gcc", "arm-none-eabi-g++", "qemu-system-arm")),
            "the Arm toolchain and QEMU", "./install.sh --test (apt-get install gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm)")
    require(TARBALL.is_file(), "the TFLM source tarball", f"put ../shared beside the checkout ({TARBALL})")
    root = tmp_path_factory.mktemp("tflm")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(root, filter="data")
    os.environ.setdefault("OFA_EDGE_FIRMWARE_CACHE", str(tmp_path_factory.mktemp("firmware-cache")))
    return root / "tflm-cmsis-src"


@pytest.fixture(scope="session")
def small_arch():
    from ofa_edge.space.checkpoint import load_supernet

    space = load_supernet("default").space
    return str(space.smallest(min(space.preset.resolutions)))


def _deploy(spec_name, tflm_src, small_arch, root, **options):
    require_fmnist()
    lines: list[str] = []
    result = deploy(load_spec(resolve_spec_path(spec_name)),
                    DeployOptions(out=root / "bundles", runs=root / "runs", eval_images=200, bn_images=200,
                                  arch=small_arch, tflm_src=str(tflm_src), log=lines.append, **options))
    return result, lines


@pytest.fixture(scope="session")
def m7_bundle(tflm_src, small_arch, tmp_path_factory):
    return _deploy("stm32f746", tflm_src, small_arch, tmp_path_factory.mktemp("m7"))


def _section_sizes(elf) -> dict:
    done = subprocess.run(["arm-none-eabi-size", "-A", "-d", str(elf)], capture_output=True, text=True, check=True)
    return {p[0]: int(p[1]) for p in (line.split() for line in done.stdout.splitlines())
            if len(p) == 3 and p[0].startswith(".") and p[1].isdigit()}


def _check_firmware_bundle(result, core: str, board: str):
    import jsonschema

    assert result.passed, [c for c in result.manifest["verification"]["checks"] if not c["passed"]]
    m = json.loads((result.bundle / "manifest.json").read_text())
    jsonschema.validate(m, json.loads(MANIFEST_SCHEMA.read_text()))
    fw = m["firmware"]
    assert (fw["core"], fw["board"], fw["release"]) == (core, board, True)
    assert fw["tflm"]["layout"] == "tflm-cmsis-src" and len(fw["tflm"]["fingerprint"]) == 64
    assert fw["toolchain"]["compiler"].startswith("arm-none-eabi-gcc ") and "QEMU" in fw["toolchain"]["emulator"]
    checks = {c["name"]: c for c in m["verification"]["checks"]}
    assert checks["firmware labels agree with the TFLite reference kernels"]["figure"] >= 0.995
    assert checks["firmware int8 logits within 1 step of the reference kernels"]["figure"] <= 1
    # flash and RAM are the deployment image's, as arm-none-eabi-size reads it, plus the measured stack
    sections = _section_sizes(result.bundle / "firmware.elf")
    flash = sum(sections.get(s, 0) for s in FLASH_SECTIONS)
    assert fw["flash"]["bytes"] == flash and sum(fw["flash"]["breakdown"].values()) == flash
    assert fw["flash"]["breakdown"]["model"] >= (result.bundle / "model.tflite").stat().st_size
    ram = sections[".data"] + sections[".bss"] + fw["test_image"]["stack_used"]
    assert fw["ram"]["bytes"] == ram and fw["ram"]["arena"] >= fw["test_image"]["arena_used"] > 0
    assert m["memory"]["basis"] == "firmware" and m["memory"]["flash_kb"] == pytest.approx(flash / 1024)
    assert m["memory"]["peak_sram_kb"] == pytest.approx(ram / 1024)
    flash_check = checks["firmware flash (text + rodata + data) within the flash budget (KiB)"]
    assert flash_check["figure"] == round(flash / 1024, 1) and flash_check["passed"]
    # instructions: the per-op counts add up to (nearly all of) the total; the estimate is labelled
    ins = fw["instructions"]
    assert ins["per_inference"] > 1e5 and 0.9 <= sum(ins["per_op"].values()) / ins["per_inference"] <= 1.0
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= set(ins["per_op"])
    assert m["latency_ms"]["estimated_from_instructions"] == pytest.approx(
        ins["per_inference"] / (m["device"]["clock_mhz"] * 1e3), rel=1e-3)
    assert "estimated from instruction counts" in (result.bundle / "report.md").read_text()
    assert {"firmware.elf", "firmware.bin", "firmware.map"} <= {f["name"] for f in m["files"]}
    return m


def test_m7_firmware_deploy_verifies_under_qemu_and_reads_the_binary(m7_bundle):
    result, lines = m7_bundle
    m = _check_firmware_bundle(result, "cortex-m7", "mps2-an500")
    assert any(line.startswith("8/10 QEMU mps2-an500") for line in lines)
    # the .bin is the flash image: it starts with the vector table (initial SP in RAM, reset in flash)
    head = (result.bundle / "firmware.bin").read_bytes()[:8]
    sp, reset = int.from_bytes(head[:4], "little"), int.from_bytes(head[4:], "little")
    assert 0x20000000 < sp <= 0x20000000 + 320 * 1024 and 0x08000000 <= reset < 0x08000000 + 1024 * 1024
    assert abs(m["accuracy"]["device"] - m["accuracy"]["host_int8"]) <= 0.005


def test_the_bundles_makefile_rebuilds_the_same_firmware_bytes(m7_bundle, tflm_src, tmp_path):
    """The bundle's firmware/ project, built by make from the same tree reached by another path,
    gives the deployment image byte for byte; the spec's real regions are its linker script's."""
    result, _ = m7_bundle
    project = result.bundle / "firmware"
    names = {f["name"] for f in result.manifest["files"]}
    assert {"firmware/Makefile", "firmware/linker.ld", "firmware/main_deploy.cc", "firmware/ofa_ops.h"} <= names
    assert "AddConv2D" in (project / "ofa_ops.h").read_text()
    assert "LENGTH = 0x100000" in (project / "linker.ld").read_text()  # 1024 KiB, not the lengthened region
    elsewhere = tmp_path / "tree-elsewhere"
    elsewhere.symlink_to(tflm_src)
    done = subprocess.run(["make", "-C", str(project), f"-j{os.cpu_count() or 1}", f"TFLM_SRC={elsewhere}",
                           f"BUILD={tmp_path / 'build'}"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "build" / "firmware.bin").read_bytes() == (result.bundle / "firmware.bin").read_bytes()
    assert not (project / "build").exists()  # BUILD= kept the bundle clean


def test_m4_firmware_deploy_on_the_10_dollar_board(tflm_src, small_arch, tmp_path):
    result, lines = _deploy("nrf52840", tflm_src, small_arch, tmp_path)
    m = _check_firmware_bundle(result, "cortex-m4", "mps2-an386")
    assert m["device"]["clock_mhz"] == 64 and m["memory"]["budgets"] == {"peak_sram_kb": 256, "flash_kb": 1024}


def test_flash_budget_1_kib_under_the_firmware_fails_with_the_figures(m7_bundle, small_arch, tflm_src, run_cli,
                                                                      tmp_path):
    flash_kb = m7_bundle[0].manifest["firmware"]["flash"]["bytes"] / 1024
    budget_kb = float(f"{flash_kb - 1:.3f}")
    done = run_cli("deploy", "--spec", "stm32f746", "--arch", small_arch, "--flash-kb", str(budget_kb),
                   "--eval-images", "50", "--tflm-src", str(tflm_src), "--out", str(tmp_path / "b"),
                   "--runs", str(tmp_path / "runs"), timeout=900)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "firmware flash (text + rodata + data) within the flash budget (KiB)" in done.stderr
    assert f"{flash_kb:.1f} against {budget_kb}" in done.stderr and "over by 1.0 KiB" in done.stderr
    assert (tmp_path / "b" / "stm32f746.failed" / "manifest.json").is_file()
    assert not (tmp_path / "b" / "stm32f746").exists() and "Traceback" not in done.stderr


def test_a_too_small_arena_fails_with_the_firmware_error_line(small_arch, tflm_src, run_cli, tmp_path):
    spec = yaml.safe_load((REPO / "device_specs" / "stm32f746.yaml").read_text())
    spec["firmware"]["arena_kb"] = 8
    path = tmp_path / "stm32f746.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = run_cli("deploy", "--spec", str(path), "--arch", small_arch, "--eval-images", "50", "--tflm-src",
                   str(tflm_src), "--out", str(tmp_path / "b"), "--runs", str(tmp_path / "runs"), timeout=900)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "the test firmware runs under QEMU (mps2-an500)" in done.stderr
    # TFLite Micro's own allocator line, then the firmware's
    assert "Failed to" in done.stderr and "ofa-firmware error: AllocateTensors failed (arena of 8192 bytes)" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_toolchain_is_one_line_exit_2(run_cli, tmp_path, tflm_src):
    done = run_cli("deploy", "--spec", "stm32f746", "--tflm-src", str(tflm_src), "--out", str(tmp_path / "b"),
                   env={"PATH": str(tmp_path)})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "arm-none-eabi-gcc" in done.stderr and "apt-get install gcc-arm-none-eabi" in done.stderr
    assert "--no-firmware" in done.stderr and not (tmp_path / "b").exists()


@pytest.mark.parametrize("where", ["unset", "not a tree"])
def test_missing_source_tree_is_one_line_exit_2(run_cli, tmp_path, where):
    args = [] if where == "unset" else ["--tflm-src", str(tmp_path)]
    done = run_cli("deploy", "--spec", "stm32f746", *args, "--out", str(tmp_path / "b"),
                   env={"OFA_EDGE_TFLM_SRC": ""})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    expected = "pass --tflm-src DIR or set OFA_EDGE_TFLM_SRC" if where == "unset" else "not a TFLite Micro source tree"
    assert expected in done.stderr and "--no-firmware" in done.stderr and not (tmp_path / "b").exists()


def test_an_mcu_spec_without_a_firmware_section_is_one_line_exit_2(run_cli, tmp_path):
    spec = yaml.safe_load((REPO / "device_specs" / "nrf52840.yaml").read_text())
    del spec["firmware"]
    path = tmp_path / "nrf52840.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = run_cli("deploy", "--spec", str(path), "--out", str(tmp_path / "b"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "has no firmware: section" in done.stderr and "--no-firmware" in done.stderr
