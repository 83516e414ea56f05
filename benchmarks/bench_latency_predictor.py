"""Latency predictor accuracy on two devices, side by side: this machine (device_specs/local.yaml)
and a slowed emulated device (sshd in a network namespace with a 25% CPU quota, the [4/7] test
fixture). For each: share of held-out whole subnets within ±5% and ±10%, RMSE, RMSPE and Kendall
tau, for the block-table sum alone and with the end-to-end calibration. Goal: nn-Meter's anchor,
>= 99% within ±10%.

    python benchmarks/bench_latency_predictor.py          # full benches (100 + 2 subnets each)
    python benchmarks/bench_latency_predictor.py --quick  # bench --quick (38 + 2 subnets)
    python benchmarks/bench_latency_predictor.py --tiny --supernet PATH  # the tests: part of the space

Needs root for the slowed device (network namespace, cgroup); without it that device is skipped.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import TINY_BENCH, write_results
from slowed import slowed_device

REPO = Path(__file__).resolve().parents[1]


def run(spec_path: Path, out: Path, cache: Path, quick: bool, supernet: str = "default", tiny: bool = False) -> dict:
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec

    spec = load_spec(spec_path)
    options = BenchOptions(quick=quick or tiny, out=out, cache=cache, supernet=supernet, progress=False,
                           log=lambda _: None, **(TINY_BENCH if tiny else {}))
    result = run_bench(spec, options)
    p = json.loads((result.folder / "latency_predictor.json").read_text())
    blocks = json.loads((result.folder / "blocks.json").read_text())
    return {"spec": spec.name, "identity": blocks["identity"], "model": p["model"], "coef": p["coef"],
            "calibrated": p["validation"], "table_sum_only": p["report"]["validation_table_sum_only"],
            "calibration_subnets": p["report"]["calibration_subnets"], "loo_rmspe": p["report"]["loo_rmspe"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="part of the space, 10 subnets (the tests)")
    parser.add_argument("--supernet", default="default")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ofa-edge-latency-bench-"))
    cache = scratch / "cache"
    devices = [run(REPO / "device_specs" / "local.yaml", scratch / "runs", cache, args.quick, args.supernet, args.tiny)]
    try:
        with slowed_device(scratch / "slow") as spec:
            devices.append(run(spec, scratch / "runs", cache, args.quick, args.supernet, args.tiny))
    except BaseException as exc:  # pytest's skip is a BaseException: no root, no cgroups
        if isinstance(exc, KeyboardInterrupt):
            raise
        devices.append({"spec": "slowed-local", "skipped": f"{type(exc).__name__}: {exc}"})
    figures = {"devices": devices, "goal_within_10pct": 0.99,
               "anchor": "nn-Meter: 99.0% of models within ±10% on a Pixel 4 CPU"}
    name = "latency_predictor_tiny" if args.tiny else "latency_predictor_quick" if args.quick else "latency_predictor"
    path = write_results(name, figures, {"quick": args.quick, "tiny": args.tiny, "supernet": args.supernet})
    for d in devices:
        if "skipped" in d:
            print(f"{d['spec']}: skipped ({d['skipped']})")
            continue
        for name in ("table_sum_only", "calibrated"):
            v = d[name]
            print(f"{d['spec']:13s} {name:15s} n={v['n']}  ±5% {v['within_5pct']:.0%}  ±10% {v['within_10pct']:.0%}  "
                  f"RMSE {v['rmse_ms']:.4f} ms  RMSPE {v['rmspe']:.1%}  tau {v['kendall_tau']:.3f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
