"""Is a device ready for what its spec asks? Compares the runner's ``info`` answer (taken with the
spec's runtime, delegate, providers and pinning tried out on the device) with the spec.

Every problem is one line that says what is missing and the exact command that installs it.
Used by ``ofa-edge devices check`` and, before anything is converted, by bench and deploy.
"""
from __future__ import annotations

from ofa_edge.devices.spec import DeviceSpec

MIN_PYTHON = (3, 6)
MIN_NUMPY = (1, 16)  # onnxruntime 1.10 (the Jetson Nano's) needs numpy 1.16 or newer
TFLITE_INTERPRETERS = ("ai_edge_litert", "tflite_runtime", "tensorflow")

# The newest ONNX opset and IR version each ONNX Runtime release reads (ONNX Runtime's
# compatibility table, https://onnxruntime.ai/docs/reference/compatibility.html); a release not
# listed reads what the nearest older one does.
ORT_READS: dict[tuple[int, int], tuple[int, int]] = {
    (1, 6): (13, 7), (1, 8): (14, 7), (1, 10): (15, 8), (1, 11): (15, 8), (1, 12): (17, 8),
    (1, 14): (18, 8), (1, 15): (19, 9), (1, 17): (20, 9), (1, 18): (21, 10), (1, 20): (21, 10),
    (1, 21): (22, 10), (1, 22): (23, 11),
}


def version_tuple(text) -> tuple[int, ...]:
    parts = []
    for piece in str(text or "0").split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


def ort_reads(version: str) -> tuple[int, int] | None:
    """(opset, IR version) that onnxruntime ``version`` reads, or None when older than the table."""
    key = version_tuple(version)[:2]
    known = [k for k in ORT_READS if k <= key]
    return ORT_READS[max(known)] if known else None


def model_needs(spec: DeviceSpec) -> tuple[int, int]:
    """(opset, IR version) of the ONNX files ofa-edge exports for ``spec``."""
    from converters.onnx_export import choose_opset, ir_version_for

    opset = choose_opset(spec.runtime.max_opset)
    return opset, ir_version_for(opset)


def is_termux(info: dict) -> bool:
    return bool((info.get("environment") or {}).get("termux"))


def install_line(info: dict, spec: DeviceSpec, what: str) -> str:
    """The command that installs ``what`` (numpy, tflite, onnxruntime) on this device."""
    if is_termux(info):
        return "pkg install " + {"numpy": "python-numpy", "tflite": "python-tflite-runtime",
                                 "onnxruntime": "python-onnxruntime"}[what]
    python = spec.device.python if spec.device.python != "host" else "python3"
    py = version_tuple((info.get("python") or {}).get("version"))
    if what == "numpy":
        package = "'numpy>=1.16,<1.20'" if py[:2] == (3, 6) else ("'numpy<2'" if py[:2] <= (3, 9) else "numpy")
    elif what == "tflite":
        package = "ai-edge-litert" if py[:2] >= (3, 9) else "tflite-runtime"
    else:
        package = {(3, 6): "onnxruntime==1.10.0", (3, 7): "onnxruntime==1.14.1"}.get(py[:2], "onnxruntime")
    return f"{python} -m pip install {package}"


def assess(spec: DeviceSpec, info: dict) -> tuple[list[str], list[str]]:
    """(problems, warnings): what stops a bench on this device, and what only weakens it."""
    problems: list[str] = []
    warnings: list[str] = []
    py = (info.get("python") or {}).get("version", "0")
    if version_tuple(py)[:2] < MIN_PYTHON:
        problems.append(f"Python {py} on the device; the runner needs Python 3.6 or newer")
    numpy = info.get("numpy")
    if not numpy:
        problems.append(f"numpy is missing on the device: {install_line(info, spec, 'numpy')}")
    elif version_tuple(numpy)[:2] < MIN_NUMPY:
        problems.append(f"numpy {numpy} on the device is older than 1.16: {install_line(info, spec, 'numpy')}")
    runtimes = info.get("runtimes") or {}
    r = spec.runtime
    if r.name == "tflite":
        _tflite(spec, info, runtimes, problems, warnings)
    elif r.name == "onnxruntime":
        _onnxruntime(spec, info, runtimes.get("onnxruntime") or {}, problems, warnings)
    _pinning(spec, info, problems)
    cores = (info.get("cores") or {}).get("logical")
    if cores and r.threads > cores:
        problems.append(f"runtime.threads {r.threads} > the device's {cores} cores")
    if cores and cores != spec.hardware.cores:
        warnings.append(f"spec says {spec.hardware.cores} cores, the device reports {cores}")
    governor = ((info.get("state") or {}).get("governor") or (info.get("cpufreq") or {}).get("governor"))
    if governor and governor != "performance":
        warnings.append(f"CPU governor is {governor!r}; 'performance' gives steadier timings")
    if ((info.get("state") or {}).get("throttled") or {}).get("now"):
        warnings.append(f"the device reports throttling now ({info['state']['throttled'].get('flags')}): "
                        "cool it or power it better before timing")
    return problems, warnings


def _tflite(spec, info, runtimes, problems, warnings) -> None:
    have = [name for name in TFLITE_INTERPRETERS if (runtimes.get(name) or {}).get("available")]
    if not have:
        problems.append(f"no TFLite interpreter on the device: {install_line(info, spec, 'tflite')}")
        return
    version = runtimes[have[0]].get("version")
    if spec.runtime.version and version and version != spec.runtime.version:
        warnings.append(f"spec says runtime {spec.runtime.version}, device has {have[0]} {version}: timings are "
                        "only valid for the version measured")
    delegate = (info.get("requested") or {}).get("delegate")
    if spec.runtime.delegate and delegate is not None and not delegate.get("loaded"):
        problems.append(f"delegate {spec.runtime.delegate!r} cannot be loaded on the device: "
                        f"{delegate.get('error') or 'unknown error'}")


def _onnxruntime(spec, info, ort, problems, warnings) -> None:
    if not ort.get("available"):
        problems.append(f"onnxruntime is missing on the device: {install_line(info, spec, 'onnxruntime')}")
        return
    version = ort.get("version") or "0"
    reads = ort_reads(version)
    opset, ir = model_needs(spec)
    if reads is None:
        problems.append(f"onnxruntime {version} on the device is older than 1.6: {install_line(info, spec, 'onnxruntime')}")
    elif opset > reads[0] or ir > reads[1]:
        fix = (f"set runtime.max_opset: {reads[0]} in the spec" if reads[0] >= 14
               else install_line(info, spec, "onnxruntime"))
        problems.append(f"onnxruntime {version} on the device reads ONNX opset <= {reads[0]} and IR <= {reads[1]}, "
                        f"but models for this spec are exported at opset {opset}, IR {ir}: {fix}")
    available = ort.get("providers") or []
    missing = [ep for ep in (spec.runtime.execution_providers or []) if ep not in available]
    if missing:
        problems.append(f"execution providers {', '.join(missing)} are not available in the device's onnxruntime "
                        f"{version} (it has {', '.join(available) or 'none'}); onnxruntime would silently fall back "
                        "to the CPU: install the build with them (e.g. onnxruntime-gpu) or drop them from the spec")
    if spec.runtime.version and version != spec.runtime.version:
        warnings.append(f"spec says onnxruntime {spec.runtime.version}, device has {version}: timings are only valid "
                        "for the version measured")


def _pinning(spec, info, problems) -> None:
    if not spec.runtime.cpu_affinity:
        return
    pin = (info.get("requested") or {}).get("affinity") or {}
    if pin and not pin.get("applied"):
        allowed = pin.get("allowed")
        problems.append(f"CPU pinning to {spec.runtime.cpu_affinity} was not applied on the device "
                        f"({pin.get('error') or 'refused'}); the device allows CPUs {allowed}: set runtime.cpu_affinity "
                        "to some of them, or drop it")
