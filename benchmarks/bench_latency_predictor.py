"""Latency predictor accuracy on two devices, side by side: this machine (device_specs/local.yaml)
and a slowed emulated device (sshd in a network namespace with a 25% CPU quota, the [4/7] test
fixture). For each: share of held-out whole subnets within ±5% and ±10%, RMSE, RMSPE and Kendall
tau, for the block-table sum alone and with the end-to-end calibration. Goal: nn-Meter's anchor,
>= 99% within ±10%.

    python benchmarks/bench_latency_predictor.py          # full benches (100 + 2 subnets each)
    python benchmarks/bench_latency_predictor.py --quick  # bench --quick (38 + 2 subnets)

Needs root for the slowed device (network namespace, cgroup); without it that device is skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

from common import write_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the emulated-device helpers live with the tests


def run(spec_path: Path, out: Path, cache: Path, quick: bool) -> dict:
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec

    spec = load_spec(spec_path)
    result = run_bench(spec, BenchOptions(quick=quick, out=out, cache=cache, progress=False, log=lambda _: None))
    p = json.loads((result.folder / "latency_predictor.json").read_text())
    blocks = json.loads((result.folder / "blocks.json").read_text())
    return {"spec": spec.name, "identity": blocks["identity"], "model": p["model"], "coef": p["coef"],
            "calibrated": p["validation"], "table_sum_only": p["report"]["validation_table_sum_only"],
            "calibration_subnets": p["report"]["calibration_subnets"], "loo_rmspe": p["report"]["loo_rmspe"]}


def slow_spec(server, folder: Path) -> Path:
    spec = {"schema_version": 1, "name": "slowed-local", "kind": "cpu",
            "description": "sshd in a netns with a 25% CPU quota (10 ms period), pinned to CPU 0",
            "hardware": {"cores": 1, "clock_mhz": 2445}, "connection": server.connection(),
            "runtime": {"name": "tflite", "version": "2.1.0", "delegate": "xnnpack", "threads": 1},
            "precision": "int8", "device": {"python": sys.executable, "work_dir": f"{server.home}/work"},
            "budgets": {"resolution": [28, 64]},
            "measure": {"warmup": 20, "repeats": 7, "runs_per_repeat": 30}}
    path = folder / "slowed-local.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ofa-edge-latency-bench-"))
    cache = scratch / "cache"
    devices = [run(REPO / "device_specs" / "local.yaml", scratch / "runs", cache, args.quick)]
    try:
        from slowdevice import start_slow_sshd

        with start_slow_sshd(scratch / "slow") as server:
            devices.append(run(slow_spec(server, scratch), scratch / "runs", cache, args.quick))
    except BaseException as exc:  # pytest's skip is a BaseException: no root, no cgroups
        if isinstance(exc, KeyboardInterrupt):
            raise
        devices.append({"spec": "slowed-local", "skipped": f"{type(exc).__name__}: {exc}"})
    figures = {"devices": devices, "goal_within_10pct": 0.99,
               "anchor": "nn-Meter: 99.0% of models within ±10% on a Pixel 4 CPU"}
    path = write_results("latency_predictor_quick" if args.quick else "latency_predictor", figures,
                         {"quick": args.quick})
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
