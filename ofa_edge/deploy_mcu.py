"""Deploy's steps 7-9 for an MCU-class spec checked in TFLite Micro's host build
(``--no-firmware``): the C array, TFLite Micro's interpreter on the host and the cost model."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ofa_edge.checks import check, latency_budget_check


def c_array_check(staging: Path, log) -> dict:
    """The bundle's C array (model_data.cc) compiles with the host's C++ compiler."""
    from converters.c_array import compile_check, find_compiler
    from converters.errors import ConversionError

    compiler = find_compiler()
    if compiler:
        try:
            compile_check(staging / "model_data.cc", compiler)
            result = check("the C array compiles", True, compiler, "-c")
        except ConversionError as exc:
            result = check("the C array compiles", False, compiler, "-c", note=str(exc))
    else:
        result = check("the C array compiles", False, "no C++ compiler", "-c", level="warn",
                       note="not checked: apt-get install g++")
    log(f"     C array: model_data.cc / model_data.h, 16-byte aligned ({result['figure']}: "
        f"{'compiles' if result['passed'] else result['note'] or 'FAILED'})")
    return result


def on_micro_host(spec, o, model_path: Path, staging: Path, data: Path, host: dict, row: dict, budgets: dict) -> dict:
    """Steps 7-9 for an MCU-class spec without a firmware build (``--no-firmware``): the C
    array, TFLite Micro's host build, the cost model."""
    from ofa_edge.devices.runner_host import run_local

    log, cm = o.log, spec.cost_model
    log("7/10 no firmware (--no-firmware): checking in TFLite Micro's x86 host build, with the spec's runtime "
        "overheads for flash and SRAM")
    checks = [c_array_check(staging, log)]
    micro = run_local("eval", "--model", str(model_path), "--data", str(data), "--batch", "1",
                      "--tflite-runtime", "tflite_micro")
    agreement = float(np.mean(np.asarray(micro["predicted"]) == np.asarray(host["predicted"])))
    arena_kb = micro["arena"]["total_bytes"] / 1024
    sram_kb = arena_kb + cm.runtime_sram_kb
    flash_kb = model_path.stat().st_size / 1024 + cm.runtime_flash_kb
    estimate_kb = row["predicted"]["peak_sram_kb"] - cm.runtime_sram_kb
    checks.append(check("TFLite Micro labels agree with the TFLite reference kernels", agreement >= o.agreement_min,
                        round(agreement, 4), o.agreement_min))
    sram_budget, flash_budget = budgets.get("peak_sram_kb"), budgets.get("flash_kb")
    checks.append(check("arena + runtime overhead within the SRAM budget (KiB)",
                        sram_budget is None or sram_kb <= sram_budget, round(sram_kb, 1), sram_budget,
                        note=f"arena {arena_kb:.1f} + runtime {cm.runtime_sram_kb:g}; the cost model estimated "
                             f"the arena at {estimate_kb:.1f}"))
    checks.append(check("model + runtime within the flash budget (KiB)",
                        flash_budget is None or flash_kb <= flash_budget, round(flash_kb, 1), flash_budget,
                        note=f"model {model_path.stat().st_size / 1024:.1f} + runtime {cm.runtime_flash_kb:g}"))
    log(f"8/10 TFLite Micro on the host: top-1 {micro['top1']:.2%}, agreement with the TFLite reference kernels "
        f"{agreement:.2%}, arena {arena_kb:.1f} KiB (cost model {estimate_kb:.1f} KiB)")
    checks += latency_budget_check(row["predicted"]["latency_ms"], budgets.get("latency_ms"), None, spec,
                                   basis="prediction")
    log(f"9/10 time: no shell reaches an MCU; the cost model predicts {row['predicted']['latency_ms']:.2f} ms "
        f"at {spec.hardware.clock_mhz:g} MHz (a prediction, not a measurement)")
    return {
        "device": {"spec": spec.name, "kind": "mcu", "format": "tflite-micro-int8", "runtime": "tflite-micro",
                   "interpreter": "tflite_micro on the host (--no-firmware)", "runtime_version": micro["runtime"]["version"],
                   "cpu": spec.hardware.cpu, "clock_mhz": spec.hardware.clock_mhz,
                   "sram_kb": spec.hardware.sram_kb, "flash_kb": spec.hardware.flash_kb},
        "device_top1": micro["top1"], "device_runtime": micro["runtime"], "agreement": agreement,
        "statistic": None, "latency_source": f"cost model of {spec.name} (not measured)", "measured": None,
        "checks_first": [], "checks": checks,
        "manifest": {"memory": {"arena_kb": arena_kb, "arena_estimate_kb": estimate_kb,
                                "arena_head_kb": (micro["arena"].get("head_bytes") or 0) / 1024,
                                "runtime_sram_kb": cm.runtime_sram_kb, "peak_sram_kb": sram_kb,
                                "flash_kb": flash_kb, "runtime_flash_kb": cm.runtime_flash_kb,
                                "budgets": {"peak_sram_kb": sram_budget, "flash_kb": flash_budget}}},
    }
