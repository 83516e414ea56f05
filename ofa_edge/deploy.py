"""``ofa-edge deploy``: one subnet from the supernet to a verified bundle for one device.

Steps, one line of output each: load (supernet and the device's latency predictor, benching
first when there is none), search (or ``--arch``), extract, recalibrate BN, convert to the spec's
format, check on the host, push, evaluate on the device on the untouched test split, time on the
device, write the bundle (a temp dir, then a rename) with ``manifest.json`` and ``report.md``.

Verification (DESIGN.md §7): device labels agree with the host's reference interpreter on the
same file on >= 99.5% of images; the int8 drop from fp32 is <= 1 point (warn), <= 2 (fail);
the file the device ran has the sha256 that was pushed; measured latency is compared with the
prediction (a warning past 10%). Built so far for devices with a transport (TFLite, ONNX
Runtime); MCU bundles (C array, TFLite Micro) are not built yet.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ofa_edge.devices.spec import DeviceSpec
from ofa_edge.errors import NotBuiltYet, OfaEdgeError
from ofa_edge.fileio import sha256_file

MANIFEST_SCHEMA_VERSION = 1


@dataclass
class DeployOptions:
    supernet: str = "default"
    runs: Path = Path("runs")
    out: Path = Path("bundles")
    latency_ms: float | None = None
    arch: str | None = None
    eval_images: int = 2000
    bn_images: int = 2000
    no_bench: bool = False
    agreement_min: float = 0.995
    drop_warn: float = 0.01
    drop_fail: float = 0.02
    latency_warn: float = 0.10
    cache: Path | None = None
    log: Callable[[str], None] = print
    after_push: Callable[[object, str], None] | None = None  # (transport, remote model path): tests


@dataclass
class DeployResult:
    bundle: Path
    passed: bool
    manifest: dict = field(default_factory=dict)


def _check(name: str, passed: bool, figure, threshold, level: str = "fail", note: str = "") -> dict:
    return {"name": name, "passed": bool(passed), "figure": figure, "threshold": threshold, "level": level,
            "note": note}


def _float_tensors(path: Path) -> list[str]:
    """Tensors of a full-int8 TFLite model that are still float (should be none)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] in (np.float32, np.float16)]


def deploy(spec: DeviceSpec, options: DeployOptions) -> DeployResult:
    if spec.connection.transport == "none":
        raise NotBuiltYet(f"deploy for MCU-class specs ({spec.name}: int8 C array, TFLite Micro arena check) is not "
                          "built yet (it lands with the rest of issue [6/7]); ofa-edge search works for it")
    import torch

    from converters import format_for
    from ofa_edge.data import load_dataset, make_splits
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.evaluate import calibration_indices, recalibrate
    from ofa_edge.ledger import Ledger
    from ofa_edge.search.evolution import SearchSettings
    from ofa_edge.search.objective import report_row
    from ofa_edge.search.run import run_search, setup_search
    from ofa_edge.space.checkpoint import checkpoint_file, load_supernet

    log, o = options.log, options
    ledger = Ledger("deploy")
    torch.set_num_threads(int(os.environ.get("OFA_EDGE_THREADS", "1")))
    fmt = format_for(spec.runtime.name, spec.precision)

    # 1. load
    net = load_supernet(o.supernet).eval()
    ckpt = checkpoint_file(o.supernet)
    space = net.space
    predictor_file = Path(o.runs) / spec.name / space.id / "latency_predictor.json"
    if not predictor_file.is_file():
        command = f"ofa-edge bench --spec {spec.source or spec.name} --quick --out {o.runs}"
        if o.no_bench:
            raise OfaEdgeError(f"no latency predictor for {spec.name} in {predictor_file.parent}; run: {command}")
        log(f"1/10 load: no latency predictor for {spec.name} yet: running {command}")
        run_bench(spec, BenchOptions(quick=True, supernet=o.supernet, out=Path(o.runs), cache=o.cache,
                                     progress=False, log=lambda line: log("     " + line)))
    log(f"1/10 load: supernet {o.supernet} ({space.id}), latency predictor {predictor_file}")

    # 2. search
    setup = setup_search(spec, o.supernet, o.runs, {"latency_ms": o.latency_ms})
    if o.arch:
        arch = space.validate(space.parse(o.arch))
        setup.objective.evaluate([arch], full=True)  # refuses blocks bench never measured
        log(f"2/10 search: skipped (--arch {arch})")
    else:
        result, _ = run_search(setup, SearchSettings())
        arch = result.best
        log(f"2/10 search: {arch} ({setup.objective.queries:,} archs scored)")
    row = report_row(setup.objective, arch)

    # 3-4. extract, recalibrate BN
    ds = load_dataset("fashion-mnist")
    splits = make_splits(ds, val_size=5000, seed=0)
    calib = splits.train_x[calibration_indices(len(splits.train_x), o.bn_images, 0)]
    sub = net.extract(arch).eval()
    log(f"3/10 extract: plain network, {sum(p.numel() for p in sub.parameters()):,} parameters")
    sub = recalibrate(sub, torch.from_numpy(np.ascontiguousarray(calib)), arch.resolution).eval()
    log(f"4/10 recalibrate BN: {len(calib):,} training images")

    # 5. convert (everything is written into a hidden staging folder, renamed at the end)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=_ensure(Path(o.out))))
    try:
        return _finish(spec, o, net, ckpt, arch, row, sub, splits, staging, fmt, ledger)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written
        raise


def _finish(spec, o, net, ckpt, arch, row, sub, splits, staging, fmt, ledger) -> DeployResult:
    """Steps 5-10, writing into ``staging``."""
    import torch

    from converters.convert import convert_module, converter_version
    from ofa_edge.data.tensors import to_model_input
    from ofa_edge.devices.bench import device_identity
    from ofa_edge.devices.check import device_python
    from ofa_edge.devices.runner import RUNNER_PATH
    from ofa_edge.devices.runner_host import parse_answer, run_local
    from ofa_edge.devices.transports import make_transport, remote_path_join
    from ofa_edge.evaluate import top1

    log, r = o.log, arch.resolution
    model_path = staging / f"model{fmt.suffix}"
    quant_images = to_model_input(splits.train_x[:200], r).contiguous().numpy()
    t0 = time.perf_counter()
    conversion = convert_module(sub, (1, 3, r, r), fmt, model_path, quant_images, spec.runtime.max_opset)
    log(f"5/10 convert: {fmt.name} ({model_path.stat().st_size:,} bytes, {time.perf_counter() - t0:.1f} s)")

    # 6. host checks: torch fp32 top-1, the host reference interpreter's labels on the same file
    test_x, test_y = splits.test_x[:o.eval_images], splits.test_y[:o.eval_images]
    images = (to_model_input(test_x, r).permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    data = staging / "test_images.npz"
    np.savez(data, x=images, y=test_y)
    host_fp32 = top1(sub, torch.from_numpy(images), torch.from_numpy(test_y), r)
    host = run_local("eval", "--model", str(model_path), "--data", str(data), "--batch", "1")
    checks = []
    if fmt.precision == "int8":
        floats = _float_tensors(model_path)
        checks.append(_check("no float tensors in the full-int8 model", not floats, len(floats), 0,
                             note=", ".join(floats[:3])))
        drop = host_fp32 - host["top1"]
        checks.append(_check("int8 top-1 drop from fp32", drop <= o.drop_fail, round(drop, 4), o.drop_fail,
                             note="warning above %.3f" % o.drop_warn if drop > o.drop_warn else ""))
    log(f"6/10 host: torch fp32 top-1 {host_fp32:.2%}, {fmt.name} on the host reference {host['top1']:.2%}")

    # 7-9. push, evaluate and time on the device
    with make_transport(spec) as transport:
        work = remote_path_join(transport.expand_user(spec.device.work_dir), "deploy")
        transport.run(["mkdir", "-p", work], timeout=30).check("mkdir")
        remote_runner, remote_model = remote_path_join(work, "ofa_edge_runner.py"), remote_path_join(work, model_path.name)
        remote_data = remote_path_join(work, data.name)
        for local, remote in ((RUNNER_PATH, remote_runner), (model_path, remote_model), (data, remote_data)):
            transport.put(str(local), remote)
        if o.after_push:
            o.after_push(transport, remote_model)
        log(f"7/10 push: {model_path.name} and {len(images):,} test images to {transport.describe()}")
        run = lambda *args: parse_answer(transport.run([device_python(spec), remote_runner, *args],  # noqa: E731
                                                       timeout=spec.connection.command_timeout_s).stdout)
        info = run("info")
        threads = ["--threads", str(spec.runtime.threads)]
        on_device = run("eval", "--model", remote_model, "--data", remote_data, "--batch", "1", *threads)
        agreement = float(np.mean(np.array(on_device["predicted"]) == np.array(host["predicted"])))
        log(f"8/10 device eval: top-1 {on_device['top1']:.2%}, agreement with the host {agreement:.2%}")
        m = spec.measure
        timing_args = ["--warmup", str(m.warmup), "--repeats", str(m.repeats), "--runs", str(m.runs_per_repeat), *threads]
        if spec.runtime.cpu_affinity:
            timing_args += ["--affinity", ",".join(str(c) for c in spec.runtime.cpu_affinity)]
        timing = run("time", "--model", remote_model, *timing_args)["models"][0]
        transport.run(["rm", "-rf", work], timeout=60)
    from ofa_edge.predictors.latency import STATISTIC

    measured = timing[STATISTIC]
    predicted = row["predicted"]["latency_ms"]
    log(f"9/10 device time: {STATISTIC} {measured:.3f} ms (median {timing['median_ms']:.3f} ms), "
        f"predicted {predicted:.3f} ms")
    pushed = sha256_file(model_path)
    checks.insert(0, _check("the device ran the file that was pushed", on_device["sha256"] == pushed,
                            on_device["sha256"][:16], pushed[:16]))
    checks.append(_check("device labels agree with the host reference", agreement >= o.agreement_min,
                         round(agreement, 4), o.agreement_min))
    off = abs(measured - predicted) / predicted
    checks.append(_check("measured latency vs predicted", off <= o.latency_warn, round(off, 4), o.latency_warn,
                         level="warn"))
    passed = all(c["passed"] for c in checks if c["level"] == "fail")
    data.unlink()

    # 10. bundle
    inp = host.get("input") or {}
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION, "spec": spec.name,
        "device": device_identity(spec, info, fmt), "supernet": {"id": net.space.id, "path": str(o.supernet),
                                                                 "sha256": sha256_file(ckpt)},
        "arch": str(arch), "costs": net.costs(arch).to_json(), "format": fmt.name, "conversion": conversion,
        "accuracy": {"host_fp32": host_fp32, "host_int8" if fmt.precision == "int8" else "host_converted": host["top1"],
                     "device": on_device["top1"], "images": len(images), "split": "test"},
        "agreement": agreement,
        "latency_ms": {"predicted": predicted, "statistic": STATISTIC,
                       "measured": {"median": timing["median_ms"], "iqr": timing["iqr_ms"], STATISTIC: measured}},
        "input": {"resolution": r, "layout": host.get("layout"), "dtype": inp.get("dtype"),
                  "mean": list(net.input_mean), "std": list(net.input_std), "scale": inp.get("scale"),
                  "zero_point": inp.get("zero_point"),
                  "note": "RGB (gray repeated) scaled to [0, 1]; the normalisation is inside the model"},
        "files": [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(staging.iterdir())],
        "versions": {"ofa-edge": _version("ofa-edge"), "converter": converter_version(),
                     "runtime_on_device": timing.get("runtime"), "torch": torch.__version__},
        "verification": {"passed": passed, "checks": checks},
        "predicted": row, "ledger": ledger.stop().to_json(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (staging / "report.md").write_text(_report(manifest))
    bundle = Path(o.out) / spec.name
    old = None
    if bundle.exists():
        old = bundle.with_name(f".{spec.name}-old-{os.getpid()}")
        os.replace(bundle, old)
    os.replace(staging, bundle)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    log(f"10/10 bundle: {bundle} ({'verification passed' if passed else 'VERIFICATION FAILED'})")
    log(ledger.stop().line())
    return DeployResult(bundle, passed, manifest)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _report(m: dict) -> str:
    lines = [f"# ofa-edge bundle for {m['spec']}", "",
             f"Verification: **{'passed' if m['verification']['passed'] else 'FAILED'}**", "",
             f"- arch `{m['arch']}` from supernet {m['supernet']['id']} ({m['supernet']['sha256'][:12]})",
             f"- format {m['format']}, input {m['input']['resolution']} px {m['input']['layout']} {m['input']['dtype']}",
             f"- accuracy on {m['accuracy']['images']:,} test images: host fp32 {m['accuracy']['host_fp32']:.2%}, "
             f"device {m['accuracy']['device']:.2%}; agreement with the host reference {m['agreement']:.2%}",
             f"- latency: predicted {m['latency_ms']['predicted']:.3f} ms, measured {m['latency_ms']['statistic']} "
             f"{m['latency_ms']['measured'][m['latency_ms']['statistic']]:.3f} ms (median "
             f"{m['latency_ms']['measured']['median']:.3f}, IQR {m['latency_ms']['measured']['iqr']:.3f})",
             "", "| check | figure | threshold | result |", "|---|---|---|---|"]
    for c in m["verification"]["checks"]:
        result = "ok" if c["passed"] else ("warning" if c["level"] == "warn" else "FAILED")
        lines.append(f"| {c['name']} | {c['figure']} | {c['threshold']} | {result} |")
    lines += ["", "Files:", ""] + [f"- `{f['name']}` {f['bytes']:,} bytes, sha256 `{f['sha256']}`" for f in m["files"]]
    return "\n".join(lines) + "\n"
