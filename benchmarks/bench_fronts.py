"""Accuracy vs measured latency on one device: OFA-searched subnets against uniformly scaled
subnets of the same supernet (one kernel, expand and depth in every block) and, when their runs
exist, archs trained alone from scratch (``recipes/scratch-*.yaml``).

Every candidate is extracted (BN recalibrated on 2,000 training images), converted to the spec's
format, evaluated on the device on the untouched test split, and timed there in ONE runner call,
interleaved, so that the latencies are side by side. The headline, against the uniform front:
the latency ratio at equal accuracy and the accuracy gain at equal latency (OFA, Cai et al.,
ICLR 2020, reports 1.5-2.6x and up to +4% on ImageNet).

    python benchmarks/bench_fronts.py [--spec device_specs/local.yaml] [--runs runs] [--quick]
    python benchmarks/bench_fronts.py --slowed --quick   # the slowed emulated device (root): benches it first
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import TINY_BENCH, write_results

UNIFORM = [(3, 3, 2), (3, 4, 2), (3, 6, 2), (5, 4, 3), (5, 6, 3), (7, 4, 3), (3, 6, 4), (7, 6, 4)]
SCRATCH = {"small": (3, 3, 2), "middle": (5, 4, 3), "large": (7, 6, 4)}


def _pick(rows: list[dict], n: int) -> list[dict]:
    """``n`` rows spread evenly over the front's predicted latency."""
    if len(rows) <= n:
        return rows
    return [rows[int(round(i))] for i in np.linspace(0, len(rows) - 1, n)]


def candidates(spec, supernet: str, runs: Path, n_ofa: int, resolutions: list[int], uniform=UNIFORM,
               generations: int = 60) -> list[dict]:
    from ofa_edge.search.evolution import SearchSettings
    from ofa_edge.search.run import run_search, setup_search

    setup = setup_search(spec, supernet, runs, {})
    settings = SearchSettings(population=60, generations=generations, seed=0)
    _, front = run_search(setup, settings, pareto=True)
    out = [{"set": "ofa", "arch": row["arch"], "supernet": supernet} for row in _pick(front, n_ofa)]
    cov = setup.coverage.preset
    for r in resolutions:
        for k, e, d in uniform:
            if k in cov.kernel_choices and e in cov.expand_choices and d in cov.depth_choices:
                out.append({"set": "uniform", "arch": str(setup.space.uniform(k, e, d, r)), "supernet": supernet})
    for name, (k, e, d) in SCRATCH.items():
        run = Path(runs) / f"scratch-{name}"
        if (run / "supernet.safetensors").is_file():
            out.append({"set": "scratch", "arch": str(setup.space.uniform(k, e, d, 28)), "supernet": str(run),
                        "name": name})
    return out


def measure(spec, rows: list[dict], images: int, log=print) -> list[dict]:
    import torch

    from converters import format_for
    from converters.convert import convert_module
    from ofa_edge.data.tensors import to_model_input
    from ofa_edge.devices.session import DeviceSession
    from ofa_edge.evaluate import open_supernet_data, recalibrate, top1
    from ofa_edge.space.checkpoint import load_supernet
    from ofa_edge.space.costs import arch_costs

    fmt = format_for(spec.runtime.name, spec.precision)
    # every row's supernet was trained on the same dataset: the first one's record says which
    splits, calibration = open_supernet_data(rows[0]["supernet"])
    calib = torch.from_numpy(np.ascontiguousarray(calibration.bn_images(2000)))
    nets: dict = {}
    with tempfile.TemporaryDirectory(prefix="ofa-edge-fronts-") as work, DeviceSession(spec, "fronts") as dev:
        data = {}
        for i, row in enumerate(rows):
            if row["supernet"] not in nets:
                nets[row["supernet"]] = load_supernet(row["supernet"]).eval()
            net = nets[row["supernet"]]
            arch = net.space.parse(row["arch"])
            r = arch.resolution
            if r not in data:
                x = (to_model_input(splits.test_x[:images], r).permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255)
                np.savez(Path(work) / f"test{r}.npz", x=x.astype(np.uint8), y=splits.test_y[:images])
                data[r] = (dev.put(Path(work) / f"test{r}.npz"), torch.from_numpy(x.astype(np.uint8)))
            sub = recalibrate(net.extract(arch).eval(), calib, r).eval()
            with torch.no_grad():
                fp32 = top1(sub, data[r][1], torch.from_numpy(splits.test_y[:images]), r)
            model = Path(work) / f"m{i}{fmt.suffix}"
            convert_module(sub, (1, 3, r, r), fmt, model, to_model_input(calibration.quant_x, r).contiguous().numpy(),
                           spec.runtime.max_opset)
            row["remote"] = dev.put(model)
            device = dev.run("eval", "--model", row["remote"], "--data", data[r][0], "--batch", "1", *dev.runtime_args())
            c = arch_costs(net.space, arch, net.num_classes)
            row.update(top1_fp32=fp32, top1_device=device["top1"], macs=c.macs, params=c.params)
            log(f"[{i + 1}/{len(rows)}] {row['set']:8s} {row['arch'][:40]}... fp32 {fp32:.2%}, "
                f"device {device['top1']:.2%}")
        timing = dev.run("time", *[a for row in rows for a in ("--model", row.pop("remote"))], *dev.timing_args())
    key = spec.measure.statistic_key
    for row, t in zip(rows, timing["models"]):
        row.update(latency_ms=t[key], statistic=spec.measure.statistic, p10_ms=t["p10_ms"], p50_ms=t["p50_ms"],
                   p90_ms=t["p90_ms"], iqr_ms=t["iqr_ms"])
    return rows


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats on both, by latency."""
    out, best = [], -1.0
    for lat, acc in sorted(points):
        if acc > best:
            out.append((lat, acc))
            best = acc
    return out


def _interp(xs, ys, x):
    return float(np.interp(x, xs, ys)) if xs[0] <= x <= xs[-1] else None


def headline(rows: list[dict], key: str = "top1_device") -> dict:
    """OFA vs the uniform front: latency ratio at equal accuracy, accuracy gain at equal latency."""
    ofa = front([(r["latency_ms"], r[key]) for r in rows if r["set"] == "ofa"])
    base = front([(r["latency_ms"], r[key]) for r in rows if r["set"] == "uniform"])
    ratios, gains = [], []
    b_lat, b_acc = [p[0] for p in base], [p[1] for p in base]
    for lat, acc in ofa:
        base_lat = _interp(b_acc, b_lat, acc)  # the baseline latency reaching this accuracy
        if base_lat is not None:
            ratios.append(base_lat / lat)
        base_acc = _interp(b_lat, b_acc, lat)
        if base_acc is not None:
            gains.append(acc - base_acc)
    return {"latency_ratio_at_equal_accuracy": {"max": max(ratios, default=None),
                                                "median": float(np.median(ratios)) if ratios else None,
                                                "n": len(ratios)},
            "accuracy_gain_at_equal_latency": {"max": max(gains, default=None),
                                               "median": float(np.median(gains)) if gains else None, "n": len(gains)},
            "ofa_front": ofa, "uniform_front": base, "accuracy": key}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(Path(__file__).resolve().parents[1] / "device_specs" / "local.yaml"))
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--supernet", default="default")
    ap.add_argument("--quick", action="store_true", help="6 OFA subnets, one resolution, 1,000 images")
    ap.add_argument("--tiny", action="store_true", help="2 OFA and 2 uniform subnets, 200 images (the tests)")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--name", default=None, help="results name (default fronts_<spec>)")
    ap.add_argument("--slowed", action="store_true",
                    help="on the slowed emulated device (netns + CPU quota; needs root), quick-benched first")
    args = ap.parse_args(argv)
    if args.slowed:
        from slowed import slowed_device

        with tempfile.TemporaryDirectory(prefix="ofa-edge-slowed-") as folder, slowed_device(Path(folder)) as spec:
            return run(args, spec, bench_first=True)
    return run(args, args.spec)


def run(args, spec_path, bench_first: bool = False) -> int:
    import torch

    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec, resolve_spec_path

    torch.set_num_threads(1)
    spec = load_spec(resolve_spec_path(str(spec_path)))
    t0 = time.time()
    if bench_first:  # a device that exists only for this run: measure it now
        run_bench(spec, BenchOptions(quick=True, supernet=args.supernet, out=Path(args.runs), progress=False,
                                     log=lambda line: print("  " + line, flush=True),
                                     **(TINY_BENCH if args.tiny else {})))
    images = args.images or (200 if args.tiny else 1000 if args.quick else 2000)
    resolutions = [28] if args.quick or args.tiny else [28, 32]
    if args.tiny:
        rows = candidates(spec, args.supernet, Path(args.runs), 2, resolutions, [(3, 3, 2), (7, 6, 4)], generations=5)
    else:
        rows = candidates(spec, args.supernet, Path(args.runs), 6 if args.quick else 10, resolutions)
    rows = measure(spec, rows, images)
    figures = {"spec": spec.name, "statistic": spec.measure.statistic, "rows": rows, "headline": headline(rows),
               "wall_s": time.time() - t0}
    path = write_results(args.name or f"fronts_{spec.name}", figures,
                         {"quick": args.quick, "tiny": args.tiny, "images": images, "resolutions": resolutions, "uniform": UNIFORM,
                          "supernet": args.supernet, "runs": args.runs, "slowed": args.slowed})
    h = figures["headline"]
    print(f"latency ratio at equal accuracy: {h['latency_ratio_at_equal_accuracy']}")
    print(f"accuracy gain at equal latency: {h['accuracy_gain_at_equal_latency']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
