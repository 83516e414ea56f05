"""Calibrate the MCU cost model against real Cortex-M firmware: for a set of subnets and two
cores (Cortex-M7 for stm32f746, Cortex-M4 for nrf52840), build each subnet's test and deployment
images (``ofa_edge.firmware``), run the test image under QEMU and record the arena really used,
the stack high-water mark, the deployment image's flash and static RAM, and the instructions per
inference. Then compare them with the cost model search uses, before and after refitting:

* the arena's persistent tail (per output channel, per layer, fixed), now on a 32-bit target
  (the x86-64 host build's tail is larger: 64-bit pointers);
* the runtime overheads: flash besides the model, RAM besides the arena (data, bss, stack);
* instructions = a*conv MACs + b*pointwise MACs + c*depthwise MACs + d*linear MACs + e*activation
  elements (non-negative least squares), the cycles-per-MAC model at CPI 1.

Writes ``benchmarks/results/firmware_calibration.json``. Needs the Arm toolchain, QEMU and a
TFLite Micro source tree (--tflm-src or $OFA_EDGE_TFLM_SRC).

    python benchmarks/calibrate_firmware.py [--archs 12] [--tflm-src DIR]
"""
from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import write_results

SPECS = {"cortex-m7": "stm32f746", "cortex-m4": "nrf52840"}
FEATURES = ("conv", "pointwise", "depthwise", "linear", "elements")


def features(space, arch, num_classes: int) -> dict:
    from ofa_edge.devices.mcu import RATE_OF
    from ofa_edge.space.costs import layers

    f = dict.fromkeys(FEATURES, 0.0)
    for layer in layers(space, arch, num_classes):
        f[RATE_OF[layer.op]] += layer.macs
        f["elements"] += layer.out_c * layer.out_hw ** 2
    return f


def convert(net, arch, path: Path) -> None:
    import torch

    from converters import FORMATS
    from converters.convert import convert_module

    r = arch.resolution
    calib = np.random.default_rng(0).random((16, 3, r, r), dtype=np.float32)
    with torch.no_grad():
        convert_module(net.extract(arch).eval(), (1, 3, r, r), FORMATS["tflite-micro-int8"], path, calib)


def measure(setup, model: Path, work: Path) -> dict:
    from ofa_edge.firmware.verify import build_and_run

    size = int(np.prod(_input_shape(model)))
    inputs = np.random.default_rng(1).integers(-128, 128, (2, size), dtype=np.int8)
    result = build_and_run(setup, model, inputs, work, log=lambda line: None)
    run = result.run
    if not run.ok:
        raise RuntimeError(f"{model}: {run.errors}")
    s = result.sizes
    return {"arena_bytes": run.arena_used, "stack_bytes": run.stack_used, "flash_bytes": s.flash,
            "model_flash_bytes": s.breakdown["model"], "static_ram_bytes": s.static_ram,
            "ram_bytes": result.ram, "instructions": run.instructions_per_image, "per_op": run.op_instructions}


def _input_shape(model: Path) -> list[int]:
    from ofa_edge.devices.runner.tflite import TFLiteModel

    return TFLiteModel(str(model)).input_specs()[0]["shape"][1:]


def nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares by trying every support (5 features: 31 subsets)."""
    best, best_err = np.zeros(X.shape[1]), float(np.sum(y ** 2))
    for k in range(1, X.shape[1] + 1):
        for cols in itertools.combinations(range(X.shape[1]), k):
            w, *_ = np.linalg.lstsq(X[:, cols], y, rcond=None)
            if (w >= 0).all():
                err = float(np.sum((X[:, cols] @ w - y) ** 2))
                if err < best_err:
                    best, best_err = np.zeros(X.shape[1]), err
                    best[list(cols)] = w
    return best


def fit(rows: list[dict], spec) -> dict:
    from ofa_edge.devices.mcu import TFLM_TAIL

    col = lambda key: np.array([r[key] for r in rows], float)  # noqa: E731
    rel = lambda pred, actual: pred / actual - 1  # noqa: E731
    X = np.array([[r["channels"], r["layers"], 1.0] for r in rows])
    tail, *_ = np.linalg.lstsq(X, col("arena_bytes") - col("head_estimate_bytes"), rcond=None)
    arena_before = col("head_estimate_bytes") + X @ np.array(TFLM_TAIL)
    arena_after = col("head_estimate_bytes") + X @ tail
    margin = float(max(0.0, (col("arena_bytes") - arena_after).max()))  # the fit's worst under-estimate
    runtime_flash = col("flash_bytes") - col("file_bytes")
    runtime_ram = col("ram_bytes") - col("arena_bytes")
    # the spec's overheads, taken so that model + overhead >= the firmware on every subnet here:
    # they absorb the arena and file models' under-estimates
    file_after = col("file_model")
    sram_overhead = float((col("ram_bytes") - (col("head_estimate_bytes") + X @ tail)).max())
    flash_overhead = float((col("flash_bytes") - file_after).max())
    cm = spec.cost_model
    sram_before = col("arena_before_model") + cm.runtime_sram_kb * 1024
    flash_before = col("file_model") + cm.runtime_flash_kb * 1024
    F = np.array([[r[f] for f in FEATURES] for r in rows])
    rates = nnls(F, col("instructions"))
    return {
        "arena": {"tail_per_channel": tail[0], "tail_per_layer": tail[1], "tail_fixed": tail[2], "margin_bytes": margin,
                  "error_before": {"max_over": float(rel(arena_before, col("arena_bytes")).max()),
                                   "max_under": float(-rel(arena_before, col("arena_bytes")).min())},
                  "error_after": {"max_over": float(rel(arena_after + margin, col("arena_bytes")).max()),
                                  "max_under": float(-rel(arena_after + margin, col("arena_bytes")).min())}},
        "runtime_flash_bytes": {"min": float(runtime_flash.min()), "max": float(runtime_flash.max())},
        "spec_after": {"runtime_sram_kb": float(np.ceil(sram_overhead / 102.4) / 10),
                       "runtime_flash_kb": float(np.ceil(flash_overhead / 102.4) / 10)},
        "runtime_ram_bytes": {"min": float(runtime_ram.min()), "max": float(runtime_ram.max())},
        "spec_before": {"sram_error": {"max_over": float(rel(sram_before, col("ram_bytes")).max()),
                                       "max_under": float(-rel(sram_before, col("ram_bytes")).min())},
                        "flash_error": {"max_over": float(rel(flash_before, col("flash_bytes")).max()),
                                        "max_under": float(-rel(flash_before, col("flash_bytes")).min())}},
        "instructions": {"per_feature": dict(zip(FEATURES, rates.tolist())),
                         "error_after": {"max_abs": float(np.abs(rel(F @ rates, col("instructions"))).max())},
                         "cost_model_before": {"median_ratio": float(np.median(col("cost_model_cycles")
                                                                                / col("instructions")))}},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=12)
    ap.add_argument("--supernet", default="default")
    ap.add_argument("--tflm-src", default=None)
    ap.add_argument("--refit", action="store_true", help="fit the rows of the last results again (no firmware runs)")
    args = ap.parse_args(argv)
    if args.refit:
        return refit()
    import torch

    from calibrate_tflm_memory import census
    from ofa_edge.devices.mcu import McuModel, tflm_memory
    from ofa_edge.devices.spec import load_spec, resolve_spec_path
    from ofa_edge.firmware.verify import firmware_setup
    from ofa_edge.space.checkpoint import load_supernet

    torch.set_num_threads(1)
    net = load_supernet(args.supernet).eval()
    space, rng = net.space, random.Random(0)
    res = sorted(space.preset.resolutions)
    archs = [space.smallest(res[0]), space.largest(res[-1])]
    archs += [space.sample(rng, resolution=rng.choice(res)) for _ in range(max(0, args.archs - 2))]
    specs = {core: load_spec(resolve_spec_path(name)) for core, name in SPECS.items()}
    setups = {core: firmware_setup(spec, args.tflm_src) for core, spec in specs.items()}
    rows = {core: [] for core in SPECS}
    t0 = time.time()
    for i, arch in enumerate(archs):
        with tempfile.TemporaryDirectory() as work:
            model = Path(work) / "model.tflite"
            convert(net, arch, model)
            base = {"arch": str(arch), **census(space, arch, net.num_classes),
                    **features(space, arch, net.num_classes), "file_bytes": model.stat().st_size}
            memory = tflm_memory(space.preset, arch, net.num_classes)
            for core, setup in setups.items():
                cm_costs = McuModel(specs[core]).costs(space.preset, arch, net.num_classes)
                row = {**base, "arena_before_model": memory.arena, "file_model": memory.file,
                       "cost_model_cycles": cm_costs.latency_ms * specs[core].hardware.clock_mhz * 1e3,
                       **measure(setup, model, Path(work) / core)}
                rows[core].append(row)
                print(f"[{i + 1}/{len(archs)}] {core}: file {row['file_bytes']:,}, flash {row['flash_bytes']:,}, arena "
                      f"{row['arena_bytes']:,} (model {memory.arena:,}), RAM {row['ram_bytes']:,}, "
                      f"{row['instructions'] / 1e6:.2f} M instructions", flush=True)
    fitted = {core: fit(rows[core], specs[core]) for core in SPECS}
    path = write_results("firmware_calibration", {"rows": rows, "fit": fitted, "wall_s": time.time() - t0},
                         {"archs": len(archs), "space": space.id, "supernet": args.supernet, "specs": SPECS})
    for core, f in fitted.items():
        print(core, f)
    print(f"wrote {path}")
    return 0


def refit() -> int:
    import json

    from common import RESULTS
    from ofa_edge.devices.spec import load_spec, resolve_spec_path

    path = RESULTS / "firmware_calibration.json"
    data = json.loads(path.read_text())
    rows = data["figures"]["rows"]
    data["figures"]["fit"] = {core: fit(rows[core], load_spec(resolve_spec_path(SPECS[core]))) for core in rows}
    path.write_text(json.dumps(data, indent=2) + "\n")
    for core, f in data["figures"]["fit"].items():
        print(core, json.dumps(f, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
