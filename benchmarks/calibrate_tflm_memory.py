"""Calibrate the MCU memory model against TFLite Micro: for a set of subnets, convert each to
``tflite-micro-int8`` and compare the real .tflite size and the arena TFLite Micro allocates with
the cost model's int8 weight bytes and activation peak. Fits the overheads the cost model leaves
out (per-channel quantization parameters in the file; persistent per-op and per-channel data in
the arena) by least squares and writes ``benchmarks/results/tflm_memory.json``.

    python benchmarks/calibrate_tflm_memory.py [--archs 12]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import write_results


def census(space, arch, num_classes: int) -> dict:
    from ofa_edge.devices.mcu import explicit_pad_bytes
    from ofa_edge.space.costs import arch_costs, layers

    ls = layers(space, arch, num_classes)
    c = arch_costs(space, arch, num_classes, runtime="tflite-micro")
    return {"flash_bytes": c.flash_bytes, "peak_sram_bytes": c.peak_sram_bytes,
            "head_estimate_bytes": max(c.peak_sram_bytes, explicit_pad_bytes(space.preset, arch, num_classes)),
            "channels": sum(layer.out_c for layer in ls), "layers": len(ls)}


def measure(net, arch, work: Path) -> dict:
    import torch

    from converters import FORMATS
    from converters.convert import convert_module
    from ofa_edge.devices.runner_host import run_local

    r = arch.resolution
    sub = net.extract(arch).eval()
    model = work / "model.tflite"
    calib = np.random.default_rng(0).random((16, 3, r, r), dtype=np.float32)
    with torch.no_grad():
        convert_module(sub, (1, 3, r, r), FORMATS["tflite-micro-int8"], model, calib)
    data = work / "x.npz"
    np.savez(data, x=np.zeros((1, r, r, 3), np.uint8), y=np.zeros(1, np.int64))
    micro = run_local("eval", "--model", str(model), "--data", str(data), "--tflite-runtime", "tflite_micro")
    a = micro["arena"]
    return {"file_bytes": model.stat().st_size, "arena_bytes": a["total_bytes"], "arena_head_bytes": a["head_bytes"],
            "arena_tail_bytes": a["tail_bytes"]}


def fit(rows: list[dict]) -> dict:
    """tail = a*channels + b*layers + c and file = weights + a*channels + b*layers + c, by least
    squares; the head model has no free parameter. Errors are relative, over all rows."""
    X = np.array([[r["channels"], r["layers"], 1.0] for r in rows])
    column = lambda key: np.array([r[key] for r in rows], float)  # noqa: E731
    tail, *_ = np.linalg.lstsq(X, column("arena_tail_bytes"), rcond=None)
    overhead, *_ = np.linalg.lstsq(X, column("file_bytes") - column("flash_bytes"), rcond=None)
    arena_pred = column("head_estimate_bytes") + X @ tail
    file_pred = column("flash_bytes") + X @ overhead
    rel = lambda pred, key: pred / column(key) - 1  # noqa: E731
    return {
        "tail": {"bytes_per_channel": tail[0], "bytes_per_layer": tail[1], "bytes": tail[2],
                 "max_abs_rel_error": float(np.abs(rel(X @ tail, "arena_tail_bytes")).max())},
        "file_overhead": {"bytes_per_channel": overhead[0], "bytes_per_layer": overhead[1], "bytes": overhead[2]},
        "head": {"exact": int(np.sum(column("head_estimate_bytes") == column("arena_head_bytes"))),
                 "over": int(np.sum(column("head_estimate_bytes") > column("arena_head_bytes"))),
                 "under": int(np.sum(column("head_estimate_bytes") < column("arena_head_bytes")))},
        "arena_rel_error": {"max_over": float(rel(arena_pred, "arena_bytes").max()),
                            "max_under": float(-rel(arena_pred, "arena_bytes").min())},
        "file_max_abs_rel_error": float(np.abs(rel(file_pred, "file_bytes")).max()),
        "uncalibrated": {"arena_max_under": float(-rel(column("peak_sram_bytes"), "arena_bytes").min()),
                         "file_max_under": float(-rel(column("flash_bytes"), "file_bytes").min())},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=12)
    ap.add_argument("--supernet", default="default")
    args = ap.parse_args(argv)
    import torch

    from ofa_edge.space.checkpoint import load_supernet

    torch.set_num_threads(1)
    net = load_supernet(args.supernet).eval()
    space, rng = net.space, random.Random(0)
    res = sorted(space.preset.resolutions)[:3]
    archs = [space.smallest(res[0]), space.largest(res[-1])]
    archs += [space.sample(rng, resolution=rng.choice(res)) for _ in range(max(0, args.archs - 2))]
    rows, t0 = [], time.time()
    for i, arch in enumerate(archs):
        with tempfile.TemporaryDirectory() as work:
            row = {"arch": str(arch), **census(space, arch, net.num_classes), **measure(net, arch, Path(work))}
        rows.append(row)
        print(f"[{i + 1}/{len(archs)}] file {row['file_bytes']:,} (weights {row['flash_bytes']:,}), arena "
              f"{row['arena_bytes']:,} (peak estimate {row['peak_sram_bytes']:,})", flush=True)
    fitted = fit(rows)
    path = write_results("tflm_memory", {"rows": rows, "fit": fitted, "wall_s": time.time() - t0},
                         {"archs": len(archs), "space": space.id, "supernet": args.supernet})
    print(fitted)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
