"""``info``: the device, its Python, numpy and runtimes."""

import importlib
import os
import platform
import sys
import zipfile

from . import PROTOCOL_VERSION, RUNNER_VERSION
from .common import TFLITE_RUNTIMES, RunnerError, dist_version, exc_line, module_version, read_text, sha256_of, spec_exists
from .pinning import apply_affinity, current_affinity, parse_cpus
from .state import cpufreq, device_state, temperatures
from .tflite import open_delegate, tflite_interpreter_class


def command_protocol(args):
    return {"protocol_version": PROTOCOL_VERSION, "runner_version": RUNNER_VERSION,
            "runner_sha256": own_archive_sha256()}


def own_archive_sha256():
    """sha256 of the zipapp this runner was started from (None when run from a source tree)."""
    path = sys.argv[0] if sys.argv else ""
    if path and os.path.isfile(path) and zipfile.is_zipfile(path):
        return sha256_of(path)
    return None


def _cpu_model():
    text = read_text("/proc/cpuinfo") or ""
    found = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = line.split(":", 1)
        key = key.strip().lower()
        value = value.strip()
        if value and key not in found:
            found[key] = value
    for key in ("model name", "hardware", "cpu model", "processor"):
        value = found.get(key)
        if value and not value.isdigit():
            return value
    return platform.processor() or found.get("cpu part") or None


def _memory():
    text = read_text("/proc/meminfo")
    if not text:
        return {"total_mb": None, "available_mb": None}
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].rstrip(":") in ("MemTotal", "MemAvailable", "MemFree"):
            try:
                values[parts[0].rstrip(":")] = int(parts[1])
            except ValueError:
                pass
    available = values.get("MemAvailable", values.get("MemFree"))
    return {"total_mb": round(values["MemTotal"] / 1024.0, 1) if "MemTotal" in values else None,
            "available_mb": round(available / 1024.0, 1) if available is not None else None}


def _probe_import(module_name, import_name):
    record = {"available": False, "version": None}
    try:
        module = importlib.import_module(import_name)
        record["available"] = True
        record["version"] = module_version(importlib.import_module(module_name), module_name)
        return record, module
    except Exception as exc:
        record["error"] = exc_line(exc)
        if not spec_exists(module_name):
            record["error"] = "not installed"
        return record, None


def command_info(args):
    runtimes = {}
    numpy_version, numpy_error = None, None
    try:
        import numpy
        numpy_version = numpy.__version__
    except Exception as exc:
        numpy_error = exc_line(exc)
    runtimes["ai_edge_litert"], _ = _probe_import("ai_edge_litert", "ai_edge_litert.interpreter")
    runtimes["tflite_runtime"], _ = _probe_import("tflite_runtime", "tflite_runtime.interpreter")
    # tensorflow is only looked up, never imported: importing it takes seconds and GBs.
    tf_present = spec_exists("tensorflow")
    runtimes["tensorflow"] = {"available": tf_present,
                              "version": dist_version("tensorflow") if tf_present else None,
                              "imported": False}
    ort_record, ort = _probe_import("onnxruntime", "onnxruntime")
    if ort is not None:
        try:
            ort_record["providers"] = list(ort.get_available_providers())
        except Exception as exc:
            ort_record["providers"] = []
            ort_record["error"] = exc_line(exc)
    else:
        ort_record["providers"] = []
    runtimes["onnxruntime"] = ort_record
    tflite_choice = None
    for name in TFLITE_RUNTIMES:
        if runtimes[name]["available"]:
            tflite_choice = name
            break
    delegates = {
        "xnnpack": {
            "available": tflite_choice is not None,
            "note": "XNNPACK is built into the LiteRT/TFLite CPU path and used by default "
                    "(no external delegate needed)",
        },
    }
    allowed = current_affinity()
    requested = try_out(args, tflite_choice, allowed)
    cores = {"logical": os.cpu_count(), "affinity": allowed}
    board = read_text("/proc/device-tree/model")
    return {
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "numpy": numpy_version,
        "numpy_error": numpy_error,
        "runtimes": runtimes,
        "tflite_interpreter": tflite_choice,
        "delegates": delegates,
        "cpu": {"model": _cpu_model(), "board": board.strip("\x00 \n") if board else None},
        "cores": cores,
        "cpufreq": cpufreq(),
        "temperatures": temperatures(),
        "memory": _memory(),
        "machine": platform.machine(),
        "system": platform.system(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "environment": {"termux": "com.termux" in os.environ.get("PREFIX", "") or "com.termux" in sys.executable,
                        "android": os.path.exists("/system/build.prop")},
        "requested": requested,
        "state": device_state(requested.get("affinity", {}).get("requested")),
    }


def try_out(args, tflite_choice, allowed):
    """Try the spec's pinning and delegate here and now: what the device really gives."""
    requested = {}
    if getattr(args, "affinity", None):
        cpus, problems = parse_cpus(args.affinity), []
        applied = apply_affinity(cpus, problems)
        if applied and current_affinity() != cpus:
            applied, problems = False, problems + ["the kernel kept CPUs %s" % current_affinity()]
        requested["affinity"] = {"requested": cpus, "applied": applied, "allowed": allowed,
                                 "error": problems[0] if problems else None}
    delegate = getattr(args, "delegate", None)
    if delegate:
        record = {"requested": delegate, "loaded": False, "runtime": tflite_choice}
        try:
            interpreter_class, name, _ = tflite_interpreter_class(getattr(args, "tflite_runtime", None))
            record["runtime"] = name
            record.update(open_delegate(delegate, interpreter_class, name)[1], loaded=True)
        except RunnerError as exc:
            record["error"] = str(exc)
        except Exception as exc:
            record["error"] = exc_line(exc)
        requested["delegate"] = record
    return requested

