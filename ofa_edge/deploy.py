"""``ofa-edge deploy``: one subnet from the supernet to a verified bundle for one device.

Steps, one line of output each: load (supernet and the device's latency predictor, benching
first when there is none), search (or ``--arch``), extract, recalibrate BN, convert to the spec's
format and time it on the device with the bench's protocol (``ofa_edge.candidates``: over the
budget, search again, at most ``--candidates`` subnets), check on the host, push, evaluate on the
device on the untouched test split, write the bundle (a temp dir, then a rename) with
``manifest.json`` and ``report.md``.

Host checks follow the format table (``converters.FORMATS``): fp32 outputs within 1e-4 of torch,
fp16 labels agreeing with torch fp32 on >= 99.5% of images, full-int8 with no float tensor.
Verification (DESIGN.md §7): device labels agree with the host's reference interpreter on the
same file on >= 99.5% of images; the int8 drop from fp32 is <= 1 point (warn), <= 2 (fail);
the file the device ran has the sha256 that was pushed; the measured latency (the spec's
statistic across passes) is within the latency budget (fail) and is compared with the prediction
(a warning past 10%). A deploy that fails verification writes ``<out>/<spec>.failed/`` and leaves
``<out>/<spec>/`` as it was.

An MCU-class spec (no transport) has no device to push to: steps 7-9 become the C array (and a
compile check), TFLite Micro's own interpreter on the host (accuracy, agreement with the TFLite
interpreter, and the arena it really allocates, checked with the spec's runtime overhead against
the SRAM budget; model plus overhead against flash), and the cost model's latency, whose check
against the budget is marked as a prediction.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ofa_edge.devices.spec import DeviceSpec
from ofa_edge.devices.statistic import describe
from ofa_edge.errors import OfaEdgeError
from ofa_edge.checks import EMULATED, check as _check, emulated_latency_check as _emulated_latency_check
from ofa_edge.checks import latency_budget_check as _latency_budget_check
from ofa_edge.fileio import sha256_file

MANIFEST_SCHEMA_VERSION = 1
#: JSON Schema of manifest.json (draft 2020-12)
MANIFEST_SCHEMA = Path(__file__).parent / "schemas" / "manifest.schema.json"


@dataclass
class DeployOptions:
    supernet: str = "default"
    runs: Path = Path("runs")
    out: Path = Path("bundles")
    latency_ms: float | None = None
    sram_kb: float | None = None
    flash_kb: float | None = None
    arch: str | None = None
    eval_images: int = 2000
    bn_images: int = 2000
    no_bench: bool = False
    agreement_min: float = 0.995
    drop_warn: float = 0.01
    drop_fail: float = 0.02
    latency_warn: float = 0.10
    cache: Path | None = None
    data: str | None = None      # the images to verify on: default the supernet's recorded dataset
    device: str = "auto"         # where BN recalibration runs (fp32 on every device)
    candidates: int = 3          # at most this many subnets converted and timed on the device
    break_lock: bool = False
    no_firmware: bool = False    # an MCU: check in TFLite Micro's host build instead of a Cortex-M firmware
    tflm_src: str | None = None  # an MCU: the TFLite Micro source tree (default $OFA_EDGE_TFLM_SRC)
    transport: object = None     # an open transport instead of the spec's (tests: a MockTransport)
    log: Callable[[str], None] = print
    after_push: Callable[[object, str], None] | None = None  # (transport, remote model path): tests


@dataclass
class DeployResult:
    bundle: Path | None  # None: a latency-table device, where deploy stops before any bundle
    passed: bool
    manifest: dict = field(default_factory=dict)


def _float_tensors(path: Path) -> list[str]:
    """Tensors of a full-int8 TFLite model that are still float (should be none)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] in (np.float32, np.float16)]


def deploy(spec: DeviceSpec, options: DeployOptions) -> DeployResult:
    import torch

    from converters import format_for
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.evaluate import as_images, open_supernet_data, recalibrate
    from ofa_edge.train.device import resolve_device
    from ofa_edge.ledger import Ledger
    from ofa_edge.search.evolution import SearchSettings
    from ofa_edge.search.objective import report_row
    from ofa_edge.search.run import run_search, setup_search
    from ofa_edge.space.checkpoint import CheckpointError
    from ofa_edge.space.source import open_supernet

    log, o = options.log, options
    device = resolve_device(o.device)  # a bad --device fails before any work
    ledger = Ledger("deploy")
    torch.set_num_threads(int(os.environ.get("OFA_EDGE_THREADS", "1")))
    fmt = format_for(spec.runtime.name, spec.precision)

    # 1. load
    src = open_supernet(o.supernet)  # a run folder, a checkpoint or a reference OFA file
    if src.path is None:
        raise CheckpointError(f"{o.supernet}: an untrained preset has no weights to deploy; pass a run folder, a "
                              "checkpoint or a reference OFA checkpoint")
    if src.folder is None:  # a raw reference file: no accuracy predictor to search with; say so before benching
        src.side_file("accuracy_predictor.json", "accuracy predictor", "")
    net = src.net.eval()
    space = net.space
    mcu = spec.connection.transport == "none"
    firmware = None
    if not mcu:
        _check_ready(spec, o)  # before anything is converted: one line when the device is not ready
    elif spec.kind == "mcu" and not o.no_firmware:  # the toolchain, QEMU and sources, before any work
        from ofa_edge.firmware.verify import firmware_setup

        firmware = firmware_setup(spec, o.tflm_src)
    predictor_file = Path(o.runs) / spec.name / space.id / "latency_predictor.json"
    if not mcu and not predictor_file.is_file():
        command = f"ofa-edge bench --spec {spec.source or spec.name} --quick --out {o.runs}"
        if o.no_bench:
            raise OfaEdgeError(f"no latency predictor for {spec.name} in {predictor_file.parent}; run: {command}")
        log(f"1/10 load: no latency predictor for {spec.name} yet: running {command}")
        run_bench(spec, BenchOptions(quick=True, supernet=o.supernet, out=Path(o.runs), cache=o.cache,
                                     progress=sys.stderr.isatty(), log=lambda line: log("     " + line)))
    source = (f"the published latency table {spec.latency_table}" if spec.latency_table is not None
              else f"the cost model of {spec.name}" if mcu else f"latency predictor {predictor_file}")
    log(f"1/10 load: supernet {o.supernet} ({space.id}), {source}")
    if firmware is not None:
        log(f"     firmware: {spec.firmware.core} on QEMU {firmware.core.board}, {firmware.toolchain.record()['compiler']}, "
            f"TFLite Micro from {firmware.tree.root} ({firmware.tree.layout})")

    # 2. search
    setup = setup_search(spec, src, o.runs,
                         {"latency_ms": o.latency_ms, "peak_sram_kb": o.sram_kb, "flash_kb": o.flash_kb})
    if o.arch:
        arch = space.validate(space.parse(o.arch))
        setup.objective.evaluate([arch], full=True)  # refuses blocks bench never measured
        log(f"2/10 search: skipped (--arch {arch})")
    else:
        result, _ = run_search(setup, SearchSettings())
        arch = result.best
        log(f"2/10 search: {arch} ({setup.objective.queries:,} archs scored)")

    if spec.latency_table is not None:
        return _stop_at_a_table(spec, o, net, arch, ledger)

    # 3-5. extract, recalibrate BN, convert (and on a device: time, search again when over budget)
    data, calibration = open_supernet_data(src, o.data)
    calib = as_images(calibration.bn_images(o.bn_images))
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=_ensure(Path(o.out))))

    def make(candidate_arch, search_budget, folder: Path = staging / "candidates"):
        from ofa_edge.candidates import Candidate

        sub = net.extract(candidate_arch).eval()
        n_params = sum(p.numel() for p in sub.parameters())
        sub = recalibrate(sub, calib, candidate_arch.resolution, device=device).cpu().eval()
        path = _ensure(folder / str(len(list(folder.glob("*"))) if folder.is_dir() else "0")) / f"model{fmt.suffix}"
        t0 = time.perf_counter()
        conversion = _convert(spec, fmt, sub, candidate_arch.resolution, calibration.quant_x, path)
        log(f"     {candidate_arch}: {n_params:,} parameters, {fmt.name} {path.stat().st_size:,} bytes "
            f"({time.perf_counter() - t0:.1f} s)")
        return Candidate(candidate_arch, report_row(setup.objective, candidate_arch), search_budget, path,
                         conversion, sub)

    log(f"3/10 extract, recalibrate BN ({len(calib):,} images, {data.bn_source}, on {device}), convert to "
        f"{fmt.name}: each candidate")
    try:
        budget = setup.objective.budgets.get("latency_ms")
        if mcu:
            chosen = make(arch, budget)
            tried, how = [chosen], "the only candidate: an MCU has no shell to time on (the latency is a prediction)"
            log("4/10 time: no shell reaches an MCU; the cost model predicts its latency")
        else:
            chosen, tried, how = _measured_choice(spec, o, net, setup, arch, budget, make, calibration.quant_x,
                                                  staging, fmt, searched=not o.arch)
        log(f"5/10 choose: {how}; verifying on {data.note}")
        return _finish(spec, o, net, src.sha256, chosen, tried, how, data, staging, fmt, ledger, setup.objective.budgets,
                       firmware)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written
        raise


def _stop_at_a_table(spec, o, net, arch, ledger) -> DeployResult:
    """A published latency table is no device: deploy ends after search and extraction."""
    n_params = sum(p.numel() for p in net.extract(arch).parameters())
    o.log(f"3/10 extract: {arch}, {n_params:,} parameters")
    o.log(f"     {spec.name} is a published latency table, not a device: deploy stops after search and extraction. "
          "Nothing was converted, pushed or verified, and no bundle was written. To ship this subnet, deploy it to "
          f"a device you can reach: ofa-edge deploy --spec DEVICE.yaml --supernet {o.supernet} --arch '{arch}'")
    o.log(ledger.finish(spec=spec.name, stopped="latency table").line())
    return DeployResult(bundle=None, passed=True, manifest={"spec": spec.name, "arch": str(arch),
                                                            "parameters": n_params, "stopped": "latency table"})


def _check_ready(spec, o) -> None:
    """The device's readiness (Python, numpy, runtime, format, delegate, pinning), in seconds."""
    from ofa_edge.devices.session import DeviceSession

    with DeviceSession(spec, "check", o.transport) as dev:
        info = dev.ready(lambda line: o.log("     " + line))
    rt = ", ".join(f"{k} {v.get('version')}" for k, v in (info.get("runtimes") or {}).items() if v.get("available"))
    o.log(f"     {spec.name} is ready (Python {info['python']['version']}, {rt}, {info.get('machine')})")


def _convert(spec, fmt, sub, resolution: int, quant_x: np.ndarray, path: Path) -> dict:
    from converters.convert import convert_module
    from ofa_edge.data.tensors import to_model_input

    quant_images = to_model_input(quant_x, resolution).contiguous().numpy()
    return convert_module(sub, (1, 3, resolution, resolution), fmt, path, quant_images, spec.runtime.max_opset)


def _measured_choice(spec, o, net, setup, arch, budget, make, quant_x, staging: Path, fmt, searched: bool):
    """Time search's choice on the device; over the budget, search again (``ofa_edge.candidates``)."""
    from ofa_edge.candidates import DeviceTimer, choose
    from ofa_edge.devices.bench import reference_arch
    from ofa_edge.search.evolution import SearchSettings
    from ofa_edge.search.objective import NoFit
    from ofa_edge.search.run import run_search

    reference = reference_arch(setup.coverage)
    ref_path = _ensure(staging / "reference") / f"reference{fmt.suffix}"
    _convert(spec, fmt, net.extract(reference).eval(), reference.resolution, quant_x, ref_path)

    def research(scaled: float):
        budgets = setup.objective.budgets
        original = budgets["latency_ms"]
        budgets["latency_ms"] = scaled
        try:
            return run_search(setup, SearchSettings())[0].best
        except NoFit:
            return None
        finally:
            budgets["latency_ms"] = original

    o.log(f"4/10 time on the device: {spec.measure.passes} passes of the spec's {spec.measure.statistic}, "
          f"reference model {reference} as the drift monitor, under the bench lock")
    with DeviceTimer(spec, ref_path, lambda line: o.log("     " + line), o.transport, o.break_lock) as timer:
        chosen, tried, how = choose(arch, None if spec.emulated else budget, spec.measure.statistic,
                                    max(1, o.candidates), research if searched else None, make, timer, o.log)
    if spec.emulated:  # no budget was given to choose: its first candidate is kept, whatever its time
        how = f"the first candidate, timed to check that timing runs; its latency is {EMULATED}"
    return chosen, tried, how


PARITY_IMAGES = 64  # images whose outputs the fp32 check compares with torch
#: int8 top-1 labels agreeing with torch fp32 on a smaller share of the images than this: a warning
INT8_LABEL_WARN = 0.9


def _torch_outputs(sub, images: np.ndarray, resolution: int) -> np.ndarray:
    """Logits of the torch subnet on uint8 NHWC images (already at ``resolution``)."""
    import torch

    from ofa_edge.data.tensors import to_model_input

    with torch.no_grad():
        return np.concatenate([sub(to_model_input(images[i:i + 500], resolution)).numpy()
                               for i in range(0, len(images), 500)])


def _host_checks(fmt, o: DeployOptions, model_path: Path, torch_logits: np.ndarray, labels: np.ndarray,
                 host: dict) -> list[dict]:
    """The format's host check (``converters.HOST_CHECKS``) of the converted file against torch."""
    from converters import LABEL_AGREEMENT, MAX_ABS_DIFF

    torch_labels = torch_logits.argmax(1)
    if fmt.host_check == "outputs":
        n = min(PARITY_IMAGES, len(host["logits"]))
        diff = float(np.abs(np.asarray(host["logits"][:n]) - torch_logits[:n]).max())
        return [_check(f"{fmt.name} outputs match torch ({n} images)", diff <= MAX_ABS_DIFF, float(f"{diff:.3g}"),
                       MAX_ABS_DIFF)]
    if fmt.host_check == "labels":
        agree = float(np.mean(np.asarray(host["predicted"]) == torch_labels))
        return [_check(f"{fmt.name} top-1 labels agree with torch fp32", agree >= LABEL_AGREEMENT, round(agree, 4),
                       LABEL_AGREEMENT)]
    floats = _float_tensors(model_path)
    drop = float(np.mean(torch_labels == labels)) - host["top1"]
    agree = float(np.mean(np.asarray(host["predicted"]) == torch_labels))
    return [_check("no float tensors in the full-int8 model", not floats, len(floats), 0, note=", ".join(floats[:3])),
            _check("int8 top-1 drop from fp32", drop <= o.drop_fail, round(drop, 4), o.drop_fail,
                   note="warning: above %.3f" % o.drop_warn if drop > o.drop_warn else ""),
            # the drop nets out flips either way; the labels themselves say how much int8 changed
            _check("int8 top-1 labels agree with torch fp32", agree >= INT8_LABEL_WARN, round(agree, 4),
                   INT8_LABEL_WARN, level="warn")]


def _finish(spec, o, net, supernet_sha256, chosen, tried, how, data, staging, fmt, ledger, budgets,
            firmware=None) -> DeployResult:
    """Steps 6-10 for the chosen candidate, writing into ``staging`` (``firmware``: an MCU's
    firmware setup, ``ofa_edge.firmware.verify``)."""
    import torch

    from converters.convert import converter_version
    from ofa_edge.data.tensors import to_model_input
    from ofa_edge.devices.runner_host import run_local

    log, arch, row, sub, r = o.log, chosen.arch, chosen.row, chosen.sub, chosen.arch.resolution
    model_path = staging / chosen.model.name
    for f in chosen.model.parent.iterdir():  # the model (and an MCU's C array) into the bundle
        os.replace(f, staging / f.name)
    for folder in ("candidates", "reference"):
        shutil.rmtree(staging / folder, ignore_errors=True)
    conversion = chosen.conversion

    # 6. host checks: the converted file on the host's reference interpreter against torch fp32
    test_x, test_y = data.test_x[:o.eval_images], data.test_y[:o.eval_images]
    images = (to_model_input(test_x, r).permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    test_file = Path(tempfile.mkdtemp(prefix="ofa-edge-deploy-")) / "test_images.npz"
    np.savez(test_file, x=images, y=test_y)
    torch_logits = _torch_outputs(sub, images, r)
    host_fp32 = float(np.mean(torch_logits.argmax(1) == test_y))
    # TFLite Micro implements TFLite's reference kernels: an MCU's host reference runs those
    kernels = ["--kernels", "reference"] if fmt.runtime == "tflite-micro" else []
    # a firmware's int8 outputs are compared with the reference kernels' on every image
    host = run_local("eval", "--model", str(model_path), "--data", str(test_file), "--batch", "1",
                     "--logits", str(len(images) if firmware else PARITY_IMAGES), *kernels)
    checks = _host_checks(fmt, o, model_path, torch_logits, test_y, host)
    log(f"6/10 host: torch fp32 top-1 {host_fp32:.2%}, {fmt.name} on the host reference {host['top1']:.2%}; "
        + "; ".join(f"{c['name']}: {c['figure']} ({'ok' if c['passed'] else 'FAILED'})" for c in checks))

    try:
        if firmware is not None:
            from ofa_edge.deploy_mcu import c_array_check
            from ofa_edge.firmware.verify import on_micro_firmware

            found = on_micro_firmware(firmware, o, model_path, staging, images, test_y, host, row, budgets,
                                      c_array_check(staging, log))
        elif spec.connection.transport == "none":
            from ofa_edge.deploy_mcu import on_micro_host

            found = on_micro_host(spec, o, model_path, staging, test_file, host, row, budgets)
        else:
            found = _on_device(spec, o, fmt, model_path, test_file, host, chosen, budgets)
    finally:
        shutil.rmtree(test_file.parent, ignore_errors=True)
    checks = found.pop("checks_first") + checks + found.pop("checks")
    passed = all(c["passed"] for c in checks if c["level"] == "fail")

    # 10. bundle
    from ofa_edge.data.record import input_contract

    inp, rec = host.get("input") or {}, data.record
    converted_key = "host_int8" if fmt.precision == "int8" else f"host_{fmt.precision}"
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION, "spec": spec.name, "device": found["device"],
        "supernet": {"id": net.space.id, "path": str(o.supernet), "sha256": supernet_sha256},
        "arch": str(arch), "costs": net.costs(arch).to_json(), "format": fmt.name, "conversion": conversion,
        "accuracy": {"host_fp32": host_fp32, converted_key: host["top1"], "device": found["device_top1"],
                     "device_runtime": found["device_runtime"], "images": len(images), "split": "test"},
        "dataset": {"kind": rec.kind, "ref": rec.ref, "fingerprint": rec.fingerprint or data.fingerprint,
                    "classes": list(rec.classes), "scored": data.source, "scored_fingerprint": data.fingerprint,
                    "recorded": data.matches, "note": data.note, "bn_calibration": data.bn_source},
        "agreement": found["agreement"],
        "latency_ms": {"predicted": row["predicted"]["latency_ms"], "statistic": found["statistic"],
                       "source": found["latency_source"], "measured": found["measured"],
                       "budget": budgets.get("latency_ms"), "choice": how,
                       **({"estimated_from_instructions": found["latency_estimate"]}
                          if found.get("latency_estimate") is not None else {}),
                       "candidates": [c.to_json(spec.measure.statistic_key,
                                                None if spec.emulated else budgets.get("latency_ms"))
                                      for c in tried] if found["measured"] else []},
        "input": {"resolution": r, "layout": host.get("layout"), "dtype": inp.get("dtype"), "scale": inp.get("scale"),
                  "zero_point": inp.get("zero_point"),
                  **input_contract(rec.channels, net.input_mean, net.input_std)},
        "files": [{"name": p.relative_to(staging).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                  for p in sorted(staging.rglob("*")) if p.is_file()],
        "versions": {"ofa-edge": _version("ofa-edge"), "converter": converter_version(),
                     "runtime_on_device": found["device_runtime"], "torch": torch.__version__},
        "verification": {"passed": passed, "checks": checks},
        "predicted": row, **found.get("manifest", {}),
        "ledger": ledger.stop().to_json(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(staging / "manifest.json", manifest)
    (staging / "report.md").write_text(_report(manifest))
    os.chmod(staging, 0o755)  # mkdtemp/mkstemp make private files; a bundle is for sharing
    for f in staging.rglob("*"):
        os.chmod(f, 0o755 if f.is_dir() else 0o644)
    # a failed deploy never replaces a bundle: it goes to <spec>.failed/, <spec>/ stays as it was
    bundle = Path(o.out) / (spec.name if passed else f"{spec.name}.failed")
    old = None
    if bundle.exists():
        old = bundle.with_name(f".{spec.name}-old-{os.getpid()}")
        os.replace(bundle, old)
    os.replace(staging, bundle)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    log(f"10/10 bundle: {bundle} ({'verification passed' if passed else 'VERIFICATION FAILED'})")
    log(ledger.finish(spec=spec.name, bundle=str(bundle), passed=passed).line())
    return DeployResult(bundle, passed, manifest)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _on_device(spec, o, fmt, model_path: Path, data: Path, host: dict, chosen, budgets: dict) -> dict:
    """Steps 7-9 on a device with a transport: push, evaluate; the timing was taken with the
    bench's protocol when the candidate was chosen."""
    from ofa_edge.devices.bench import device_identity
    from ofa_edge.devices.session import DeviceSession

    log, m = o.log, spec.measure
    with DeviceSession(spec, "deploy", o.transport) as dev:
        remote_model, remote_data = dev.put(model_path), dev.put(data)
        if o.after_push:
            o.after_push(dev.transport, remote_model)
        log(f"7/10 push: {model_path.name} and the test images to {dev.transport.describe()}")
        info = dev.info()  # with the spec's delegate and pinning tried: the identity records what ran
        on_device = dev.run("eval", "--model", remote_model, "--data", remote_data, "--batch", "1", *dev.runtime_args())
        agreement = float(np.mean(np.array(on_device["predicted"]) == np.array(host["predicted"])))
        log(f"8/10 device eval: top-1 {on_device['top1']:.2%}, agreement with the host {agreement:.2%}")
    timing = chosen.timing
    measured, predicted = float(timing[m.statistic_key]), chosen.predicted_ms
    log(f"9/10 device time: {m.statistic} {measured:.3f} ms over {timing['passes']} passes (p10 {timing['p10_ms']:.3f}, "
        f"p90 {timing['p90_ms']:.3f}), predicted {predicted:.3f} ms"
        + (f"; {EMULATED}: the timing ran, its figure is no latency" if spec.emulated else ""))
    pushed, off = sha256_file(model_path), abs(measured - predicted) / predicted
    return {
        "device": device_identity(spec, info, fmt), "device_top1": on_device["top1"],
        "device_runtime": timing.get("runtime"), "agreement": agreement, "statistic": m.statistic,
        "latency_source": (f"timed on an emulated device (QEMU), {EMULATED} as a latency" if spec.emulated
                           else f"measured on the device: {describe(m.statistic)}"),
        "measured": {"value": measured, "median": timing["p50_ms"], "p10": timing["p10_ms"], "p90": timing["p90_ms"],
                     "iqr": timing.get("iqr_ms", 0.0), "passes": timing["passes"],
                     "pass_p50_ms": timing["pass_p50_ms"], "flagged_passes": timing["flagged_passes"],
                     "drift": [row.get("drift") for row in timing.get("pass_rows", [])],
                     "sha256": timing.get("sha256")},
        "checks_first": [_check("the device ran the file that was pushed", on_device["sha256"] == pushed,
                                on_device["sha256"][:16], pushed[:16]),
                         _check("the device timed the file that was pushed", timing.get("sha256") == pushed,
                                (timing.get("sha256") or "")[:16], pushed[:16])],
        "checks": [_check("device labels agree with the host reference", agreement >= o.agreement_min,
                          round(agreement, 4), o.agreement_min),
                   *([_emulated_latency_check(budgets.get("latency_ms"))] if spec.emulated else [
                       *_latency_budget_check(measured, budgets.get("latency_ms"), m.statistic, spec),
                       _check("measured latency vs predicted", off <= o.latency_warn, round(off, 4), o.latency_warn,
                              level="warn")])],
    }



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
    acc, lat = m["accuracy"], m["latency_ms"]
    if lat["measured"]:
        t = lat["measured"]
        latency = (f"predicted {lat['predicted']:.3f} ms, measured {lat['statistic']} {t['value']:.3f} ms over "
                   f"{t['passes']} passes (p10 {t['p10']:.3f}, p90 {t['p90']:.3f}) against a budget of "
                   f"{lat['budget']} ms; {lat['choice']}"
                   + (f"; {lat['source']}" if m["device"].get("emulated") else ""))
    elif lat.get("estimated_from_instructions") is not None:
        latency = (f"about {lat['estimated_from_instructions']:.1f} ms {lat['source']}, against a budget of "
                   f"{lat['budget']} ms; the cost model predicted {lat['predicted']:.1f} ms")
    else:
        latency = f"{lat['predicted']:.2f} ms from the {lat['source']} (a prediction)"
    lines = [f"# ofa-edge bundle for {m['spec']}", "",
             f"Verification: **{'passed' if m['verification']['passed'] else 'FAILED'}**", "",
             f"- arch `{m['arch']}` from supernet {m['supernet']['id']} ({m['supernet']['sha256'][:12]})",
             f"- format {m['format']}, input {m['input']['resolution']} px {m['input']['layout']} {m['input']['dtype']}",
             f"- accuracy on {acc['images']:,} test images: host fp32 {acc['host_fp32']:.2%}, "
             f"device {acc['device']:.2%} ({(acc.get('device_runtime') or {}).get('name')}); "
             f"agreement with the host reference {m['agreement']:.2%}",
             f"- latency: {latency}",
             f"- dataset: {m['dataset']['note']}; {len(m['dataset']['classes'])} classes "
             f"({', '.join(m['dataset']['classes'][:5])}{', ...' if len(m['dataset']['classes']) > 5 else ''})",
             f"- input: {m['input']['channels']} channels {m['input']['color']} in "
             f"[{m['input']['range'][0]:g}, {m['input']['range'][1]:g}], {m['input']['resize']} resize; the "
             f"normalisation is inside the model (do not apply mean/std)"]
    if "memory" in m:
        mem = m["memory"]
        lines.append(f"- memory: TFLite Micro arena {mem['arena_kb']:.1f} KiB (the cost model estimated "
                     f"{mem['arena_estimate_kb']:.1f} KiB) + runtime {mem['runtime_sram_kb']:g} KiB = "
                     f"{mem['peak_sram_kb']:.1f} KiB SRAM of {mem['budgets']['peak_sram_kb']}; flash "
                     f"{mem['flash_kb']:.1f} KiB of {mem['budgets']['flash_kb']}")
    if "firmware" in m:
        fw = m["firmware"]
        line = f"- firmware: {fw['core']} ({fw['board']} under QEMU), {fw['toolchain']['compiler']}"
        if "flash" in fw:
            ins = fw["instructions"]
            parts = ", ".join(f"{k} {v / 1024:.1f}" for k, v in fw["flash"]["breakdown"].items())
            line += (f"; flash {fw['flash']['bytes'] / 1024:.1f} KiB ({parts}); RAM {fw['ram']['bytes'] / 1024:.1f} KiB "
                     f"(arena {fw['ram']['arena']:,} B, stack high-water {fw['ram']['stack_high_water']:,} B); "
                     f"{ins['per_inference'] / 1e6:.2f} M instructions per inference, about {ins['estimated_ms']:.1f} ms "
                     f"at {ins['clock_mhz']:g} MHz ({ins['basis']})")
        else:
            line += f"; the test image FAILED: {' | '.join(fw['test_image']['errors'][:3])}"
        lines.append(line)
    if lat.get("candidates"):
        lines += ["", "| candidate | predicted top-1 | predicted ms | measured ms | within budget |",
                  "|---|---|---|---|---|"]
        lines += [f"| `{c['arch']}` | {c['predicted_top1']:.2%} | {c['predicted_ms']:.3f} | {c['measured_ms']:.3f} | "
                  f"{'n/a' if c['within_budget'] is None else 'yes' if c['within_budget'] else 'no'} |"
                  for c in lat["candidates"]]
    lines += ["", "| check | figure | threshold | result | basis | note |", "|---|---|---|---|---|---|"]
    for c in m["verification"]["checks"]:
        result = ("not applicable" if c["passed"] is None else "ok" if c["passed"]
                  else "warning" if c["level"] == "warn" else "FAILED")
        lines.append(f"| {c['name']} | {c['figure']} | {c['threshold']} | {result} | {c.get('basis', 'measured')} | "
                     f"{c['note']} |")
    lines += ["", "Files:", ""] + [f"- `{f['name']}` {f['bytes']:,} bytes, sha256 `{f['sha256']}`" for f in m["files"]]
    return "\n".join(lines) + "\n"
