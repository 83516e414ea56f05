"""The device harness on this machine (device_specs/local.yaml): cost and noise of a bench.

Runs ``ofa-edge bench --quick`` (or the full bench with ``--full``) twice through the CLI, as a
user would: first with an empty converted-model cache (cold), then into a new output folder
with the cache kept (warm). Reports wall time and the share spent converting vs measuring for
each, and the harness noise: the median coefficient of variation over blocks (goal <= 3%).
The tables of the cold run stay in ``--out`` (default ``runs/``; its folder for this spec is
emptied first).

    python benchmarks/bench_harness.py            # quick bench (about 20 minutes here)
    python benchmarks/bench_harness.py --full     # the full bench
    # OFA's w1.0 at 128 and 224 px on this machine (any weights: latency does not depend on them)
    python benchmarks/bench_harness.py --spec device_specs/local_imagenet.yaml --supernet runs/ofa-w1.0 \
        --name harness_imagenet_quick
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_results
from ofa_edge.devices.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def bench(spec: str, out: Path, cache: Path, full: bool, supernet: str = "default", tiny: bool = False) -> dict:
    cmd = [str(Path(sys.executable).with_name("ofa-edge")), "bench", "--spec", spec, "--out", str(out),
           "--cache", str(cache), "--no-progress", "--supernet", supernet] + ([] if full else ["--quick"])
    if tiny:  # the tests: part of the space, few subnets
        cmd += ["--resolution", "28", "--kernels", "3,7", "--expands", "3,6", "--subnets", "10"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    folder = next(out.glob("*/*/blocks.json")).parent
    subnets = json.loads((folder / "subnets.json").read_text())
    blocks = json.loads((folder / "blocks.json").read_text())
    seconds = subnets["seconds_this_run"]
    covs = [b["cov"] for b in blocks["blocks"]]
    return {"wall_s": round(wall, 1), "convert_s": round(seconds["convert_s"], 1),
            "measure_s": round(seconds["measure_s"], 1),
            "convert_share": round(seconds["convert_s"] / wall, 3), "measure_share": round(seconds["measure_s"] / wall, 3),
            "blocks": len(blocks["blocks"]), "subnets": len(subnets["subnets"]),
            "median_block_cov": round(statistics.median(covs), 4), "p90_block_cov": round(sorted(covs)[int(0.9 * len(covs))], 4),
            "median_subnet_cov": round(statistics.median(s["cov"] for s in subnets["subnets"]), 4),
            "coverage": blocks["coverage"], "identity": blocks["identity"], "method": blocks["method"],
            "predictor_validation": json.loads((folder / "latency_predictor.json").read_text())["validation"],
            "folder": str(folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "device_specs" / "local.yaml"))
    parser.add_argument("--full", action="store_true", help="the full bench instead of --quick")
    parser.add_argument("--out", default=str(REPO / "runs"), help="where the cold run's tables stay")
    parser.add_argument("--supernet", default="default", help="(the tests use a tiny one)")
    parser.add_argument("--tiny", action="store_true", help="part of the space, 10 subnets (the tests)")
    parser.add_argument("--name", help="results file name (default harness_quick or harness_full)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ofa-edge-bench-harness-"))
    try:
        cache = scratch / "cache"
        cold_out = Path(args.out)
        # A resumed bench would measure nothing: the cold run starts from an empty device folder.
        shutil.rmtree(cold_out / load_spec(args.spec).name, ignore_errors=True)
        cold = bench(args.spec, cold_out, cache, args.full, args.supernet, args.tiny)
        warm = bench(args.spec, scratch / "warm", cache, args.full, args.supernet, args.tiny)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = {"cold_cache": cold, "warm_cache": warm,
               "warm_vs_cold_wall_ratio": round(warm["wall_s"] / cold["wall_s"], 3),
               "harness_noise_median_block_cov": warm["median_block_cov"], "noise_goal": 0.03}
    path = write_results(args.name or ("harness_full" if args.full else "harness_quick"), figures,
                         {"spec": args.spec, "full": args.full, "supernet": args.supernet, "tiny": args.tiny})
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=2))
    for name in ("cold_cache", "warm_cache"):
        f = figures[name]
        print(f"{name}: {f['wall_s']} s wall ({f['convert_share']:.0%} converting, {f['measure_share']:.0%} "
              f"measuring), {f['blocks']} blocks + {f['subnets']} subnets, median block CoV {f['median_block_cov']:.2%}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
