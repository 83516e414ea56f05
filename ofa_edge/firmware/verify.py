"""Deploy's steps 7-9 for an MCU with a firmware build: build the test image, run it under
QEMU on the model's test images, build the deployment image, and check both against the
TFLite reference kernels and the spec's budgets, with figures read from the binary.

Checks: the test image runs (its own error lines when it does not); its labels agree with the
TFLite reference kernels on >= 99.5% of images and every int8 logit is within 1 step; the
deployment image's flash (text + rodata + data) and RAM (data + bss with the arena really used,
+ the measured stack high-water mark) are within the budgets; the latency estimated from the
instruction count at the spec's CPI is within the latency budget.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ofa_edge.checks import check
from ofa_edge.devices.spec import DeviceSpec
from ofa_edge.firmware.build import TEST_HEAP, TEST_STACK, FirmwareBuilder, Image, default_cache_dir
from ofa_edge.firmware.cores import CORES, Core, Region
from ofa_edge.firmware.project import write_project
from ofa_edge.firmware.qemu import FirmwareRun, run_test_image
from ofa_edge.firmware.size import Sizes, read_sizes
from ofa_edge.firmware.toolchain import (NO_FIRMWARE, FirmwareSetupError, SourceTree, Toolchain, find_source_tree,
                                         find_toolchain)

LOGIT_STEPS = 1          # every int8 logit within this many quantization steps of the reference
STATIC_SLACK = 128 * 1024  # of QEMU's RAM, left for .data/.bss besides the test image's arena
KIB = 1024


@dataclass
class FirmwareSetup:
    spec: DeviceSpec
    toolchain: Toolchain
    tree: SourceTree
    core: Core

    def builder(self, log) -> FirmwareBuilder:
        fw = self.spec.firmware
        return FirmwareBuilder(self.tree, self.toolchain, self.core, fw.float_abi, fw.fpu, default_cache_dir(), log)


def firmware_setup(spec: DeviceSpec, tflm_src: str | None) -> FirmwareSetup:
    """The toolchain, QEMU and source tree for ``spec``'s firmware, or one line on what is missing."""
    if spec.firmware is None:
        raise FirmwareSetupError(f"{spec.name} has no firmware: section (core, float_abi, flash and ram regions; see "
                                 f"device_specs/stm32f746.yaml), {NO_FIRMWARE}")
    return FirmwareSetup(spec, find_toolchain(), find_source_tree(tflm_src), CORES[spec.firmware.core])


@dataclass
class FirmwareResult:
    run: FirmwareRun
    test: Image
    builder: FirmwareBuilder
    deploy: Image | None = None
    sizes: Sizes | None = None

    @property
    def ram(self) -> int:
        return self.sizes.static_ram + self.run.stack_used


def build_and_run(setup: FirmwareSetup, model: Path, inputs: np.ndarray, out: Path, log) -> FirmwareResult:
    """Test image -> QEMU -> deployment image (with the arena the test image used) -> sizes."""
    fw, core = setup.spec.firmware, setup.core
    builder = setup.builder(lambda line: log("     " + line))
    fixed = int(fw.arena_kb * KIB) if fw.arena_kb else None
    test = builder.image(model, "test", out, fixed or core.ram.length - TEST_HEAP - TEST_STACK - STATIC_SLACK)
    run = run_test_image(setup.toolchain.qemu, core, test.elf, inputs)
    result = FirmwareResult(run, test, builder)
    if not run.ok:
        return result
    arena = fixed or -(-run.arena_used // 16) * 16
    stack = -(-run.stack_used * 5 // 4 // 8) * 8  # the high-water mark + 25%, as the image's stack reserve
    # the part's own regions, lengthened so that an image over budget still links and can be measured
    flash, ram = (Region(r.origin, 4 * r.kb * KIB) for r in (fw.flash, fw.ram))
    result.deploy = builder.image(model, "deploy", out, arena, release=fw.release, flash=flash, ram=ram,
                                  stack_bytes=stack)
    result.sizes = read_sizes(setup.toolchain.size, result.deploy.elf, result.deploy.map, builder.library_folders())
    return result


def on_micro_firmware(setup: FirmwareSetup, o, model_path: Path, staging: Path, test_images: np.ndarray,
                      test_labels: np.ndarray, host: dict, row: dict, budgets: dict, c_array: dict) -> dict:
    """Steps 7-9 with the firmware: the same return shape as ``deploy_mcu.on_micro_host``."""
    from ofa_edge.devices.runner.evaluate import prepare_batch

    spec, log, core = setup.spec, o.log, setup.core
    fw, cm = spec.firmware, spec.cost_model
    checks = [c_array]
    inputs = prepare_batch(test_images, host["input"], "NHWC").reshape(len(test_images), -1)
    scale, zero = host["output"]["scale"], host["output"]["zero_point"]
    reference = np.round(np.asarray(host["logits"]) / scale + zero).astype(np.int64)
    log(f"7/10 firmware: {fw.core} ({'release' if fw.release else 'with error strings'}), TFLite Micro + CMSIS-NN "
        f"from {setup.tree.root}")
    work = staging / ".firmware"
    result = build_and_run(setup, model_path, inputs, work, log)
    run = result.run
    checks.append(check(f"the test firmware runs under QEMU ({core.board})", run.ok, run.exit_code, 0,
                        note=" | ".join(run.errors[:6])))
    record = _record(setup, result, budgets)
    if not run.ok:
        for line in run.errors[:10]:
            log(f"     firmware: {line}")
        log(f"8/10 QEMU: the test firmware FAILED on {core.board} (exit {run.exit_code})")
        shutil.rmtree(work, ignore_errors=True)
        return _result(spec, setup, 0.0, 0.0, checks, record, None)

    labels = run.outputs.argmax(1)
    agreement = float(np.mean(labels == reference.argmax(1)))
    steps = int(np.abs(run.outputs.astype(np.int64) - reference).max())
    device_top1 = float(np.mean(labels == test_labels))
    checks.append(check("firmware labels agree with the TFLite reference kernels", agreement >= o.agreement_min,
                        round(agreement, 4), o.agreement_min))
    checks.append(check("firmware int8 logits within 1 step of the reference kernels", steps <= LOGIT_STEPS, steps,
                        LOGIT_STEPS))
    log(f"8/10 QEMU {core.board}: top-1 {device_top1:.2%} on {len(inputs):,} images, agreement with the TFLite "
        f"reference kernels {agreement:.2%}, largest logit difference {steps} step(s); arena {run.arena_used:,} B, "
        f"stack {run.stack_used:,} B ({run.seconds:.1f} s)")

    sizes, flash_budget, sram_budget = result.sizes, budgets.get("flash_kb"), budgets.get("peak_sram_kb")
    flash_kb, ram_kb = sizes.flash / KIB, result.ram / KIB
    parts = ", ".join(f"{k} {v / KIB:.1f}" for k, v in sizes.breakdown.items())
    checks.append(check("firmware flash (text + rodata + data) within the flash budget (KiB)",
                        flash_budget is None or flash_kb <= flash_budget, round(flash_kb, 1), flash_budget,
                        note=f"{sizes.flash:,} B: {parts}" + (f"; over by {flash_kb - flash_budget:.1f} KiB"
                                                              if flash_budget and flash_kb > flash_budget else "")))
    checks.append(check("firmware RAM (data + bss + stack high-water) within the SRAM budget (KiB)",
                        sram_budget is None or ram_kb <= sram_budget, round(ram_kb, 1), sram_budget,
                        note=f"data {sizes.sections.get('.data', 0):,} + bss {sizes.sections.get('.bss', 0):,} (arena "
                             f"{result.deploy.arena_bytes:,}) + stack {run.stack_used:,} B"
                             + (f"; over by {ram_kb - sram_budget:.1f} KiB" if sram_budget and ram_kb > sram_budget
                                else "")))
    estimate = record["instructions"]["estimated_ms"]
    if budgets.get("latency_ms") is not None:
        checks.append(check(f"latency estimated from instruction counts (CPI {cm.cpi:g}) within the budget (ms)",
                            estimate <= budgets["latency_ms"], round(estimate, 3), budgets["latency_ms"],
                            basis="estimate", note=f"{run.instructions_per_image / 1e6:.2f} M instructions at "
                                                   f"{spec.hardware.clock_mhz:g} MHz; {record['instructions']['basis']}"))
    log(f"9/10 binary: flash {flash_kb:.1f} KiB of {flash_budget} ({parts}); RAM {ram_kb:.1f} KiB of {sram_budget}; "
        f"{run.instructions_per_image / 1e6:.2f} M instructions per inference, about {estimate:.1f} ms at "
        f"{spec.hardware.clock_mhz:g} MHz (estimated from instruction counts, CPI {cm.cpi:g}; the cost model "
        f"predicted {row['predicted']['latency_ms']:.1f} ms)")
    for suffix in ("elf", "map"):
        shutil.copyfile(result.deploy.elf.with_suffix(f".{suffix}"), staging / f"firmware.{suffix}")
    subprocess.run([setup.toolchain.objcopy, "-O", "binary", str(result.deploy.elf), str(staging / "firmware.bin")],
                   check=True)
    write_project(result.builder, result.deploy, Region(fw.flash.origin, fw.flash.kb * KIB),
                  Region(fw.ram.origin, fw.ram.kb * KIB), model_path.name, staging / "firmware",
                  f"{spec.name}: {fw.core}, flash {fw.flash.kb} KiB at {fw.flash.origin:#x}, RAM {fw.ram.kb} KiB at "
                  f"{fw.ram.origin:#x}, arena {result.deploy.arena_bytes:,} B, "
                  f"{'release' if fw.release else 'with error strings'}")
    shutil.rmtree(work, ignore_errors=True)
    memory = {"arena_kb": run.arena_used / KIB, "arena_estimate_kb": row["predicted"]["peak_sram_kb"] - cm.runtime_sram_kb,
              "arena_head_kb": 0.0, "runtime_sram_kb": round(ram_kb - run.arena_used / KIB, 1), "peak_sram_kb": ram_kb,
              "flash_kb": flash_kb, "runtime_flash_kb": round(flash_kb - sizes.breakdown["model"] / KIB, 1),
              "basis": "firmware", "budgets": {"peak_sram_kb": sram_budget, "flash_kb": flash_budget}}
    out = _result(spec, setup, device_top1, agreement, checks, record, memory)
    out["latency_estimate"] = estimate
    return out


def _record(setup: FirmwareSetup, result: FirmwareResult, budgets: dict) -> dict:
    """The manifest's ``firmware`` section."""
    spec, run, core = setup.spec, result.run, setup.core
    fw, cm = spec.firmware, spec.cost_model
    estimate = run.instructions_per_image * cm.cpi / (spec.hardware.clock_mhz * 1e6) * 1e3
    record = {
        "core": fw.core, "board": core.board, "float_abi": fw.float_abi, "fpu": fw.fpu or core.default_fpu,
        "release": fw.release, "toolchain": setup.toolchain.record(),
        "tflm": {"source": str(setup.tree.root), "layout": setup.tree.layout, "git": setup.tree.git_commit(),
                 "fingerprint": setup.tree.fingerprint()},
        "test_image": {"ran": run.ok, "exit_code": run.exit_code, "errors": run.errors[:10],
                       "arena_size": result.test.arena_bytes, "arena_used": run.arena_used,
                       "stack_used": run.stack_used, "qemu_seconds": round(run.seconds, 2)},
        "instructions": {"per_inference": round(run.instructions_per_image),
                         "per_op": {op: round(n) for op, n in sorted(run.op_instructions.items(), key=lambda kv: -kv[1])},
                         "cpi": cm.cpi, "clock_mhz": spec.hardware.clock_mhz, "estimated_ms": round(estimate, 3),
                         "basis": (f"estimated from instruction counts (QEMU -icount), CPI {cm.cpi:g} "
                                   + (f"measured: {cm.cpi_source}" if cm.cpi_source else "assumed"))},
    }
    if result.sizes is not None:
        s = result.sizes
        record["flash"] = {"bytes": s.flash, "breakdown": s.breakdown,
                           "sections": {k: v for k, v in s.sections.items() if k in (
                               ".vectors", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".init_array", ".data")}}
        record["ram"] = {"bytes": result.ram, "data": s.sections.get(".data", 0), "bss": s.sections.get(".bss", 0),
                         "arena": result.deploy.arena_bytes, "stack_high_water": run.stack_used}
        record["deploy_image"] = {"arena_bytes": result.deploy.arena_bytes, "flash_origin": spec.firmware.flash.origin,
                                  "ram_origin": spec.firmware.ram.origin, "files": ["firmware.elf", "firmware.bin",
                                                                                    "firmware.map"],
                                  "project": "firmware/ (make TFLM_SRC=DIR rebuilds firmware.bin)"}
    return record


def _result(spec, setup: FirmwareSetup, device_top1: float, agreement: float, checks: list, record: dict,
            memory: dict | None) -> dict:
    hw = spec.hardware
    out = {
        "device": {"spec": spec.name, "kind": "mcu", "format": "tflite-micro-int8", "runtime": "tflite-micro",
                   "interpreter": f"TFLite Micro firmware on {record['core']} under QEMU ({record['board']})",
                   "runtime_version": record["tflm"]["git"] or f"source {record['tflm']['fingerprint'][:12]}",
                   "cpu": hw.cpu, "clock_mhz": hw.clock_mhz, "sram_kb": hw.sram_kb, "flash_kb": hw.flash_kb},
        "device_top1": device_top1, "agreement": agreement,
        "device_runtime": {"name": "tflite-micro firmware", "version": record["tflm"]["git"]
                           or f"source {record['tflm']['fingerprint'][:12]}"},
        "statistic": None, "latency_source": record["instructions"]["basis"], "measured": None,
        "checks_first": [], "checks": checks, "manifest": {"firmware": record},
    }
    if memory is not None:
        out["manifest"]["memory"] = memory
    return out
