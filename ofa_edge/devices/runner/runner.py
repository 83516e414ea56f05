#!/usr/bin/env python3
"""ofa-edge device runner: time and evaluate .tflite / .onnx models ON the device.

This file is pushed to the device (Raspberry Pi, Jetson, phone under Termux, or the
host itself) and run there as ``python3 runner.py <command> [args]``, alone or inside a
zipapp. It imports only the standard library, numpy and the inference runtime, all
lazily, so that ``info`` still answers on a device where numpy or a runtime is missing.
It must run on Python 3.8+.

Every answer is ONE JSON line on stdout::

    {"protocol": 1, "ok": true, "command": "...", ...}
    {"protocol": 1, "ok": false, "command": "...", "error": "<one clear line>"}   (exit code 2)

Anything the runtimes print (to stdout or stderr, from Python or C++) is redirected to
stderr while a command runs, so stdout carries only the answer. Details of a failure
(a traceback) go to stderr.

Commands
--------
``protocol`` (or ``--version``)
    The protocol version and the runner's own version.
``info``
    Python, numpy, importable runtimes and their versions (tensorflow is only looked up,
    never imported), onnxruntime providers, TFLite delegates, CPU model, core count and
    affinity, cpufreq governor and frequencies, temperatures, memory, platform.
``time --model A [--model B ...] [--threads N] [--affinity 0,1] [--warmup W]
      [--repeats R] [--runs M] [--provider P ...] [--seed S] [--tflite-runtime NAME]``
    Loads every model, feeds each a fixed seeded random input of its own dtype/shape,
    warms each up W runs, then for each repeat r in range(R) runs EACH model M times,
    interleaved (repeat 1 of all models, then repeat 2 of all ...) so that thermal drift
    hits every model alike. Each run is timed with ``time.perf_counter_ns`` around
    set-input + invoke + get-output; the garbage collector is off while timing.
    Statistics, per model:

    - ``per_repeat_ms``: mean ms per run within each repeat (R entries);
    - ``p10_ms`` / ``p50_ms`` / ``p90_ms``: percentiles (linear interpolation) of ALL R*M runs;
      ``median_ms`` is ``p50_ms`` (the median of every run, not of per-repeat means);
    - ``iqr_ms``: interquartile range (q75 - q25, linear interpolation) of ``per_repeat_ms``;
    - ``cov``: sample stdev / mean of ``per_repeat_ms`` (0 when R == 1);
    - ``trimmed_mean_ms``: mean of ALL R*M individual runs after dropping the top and
      bottom 10 % (floor(0.1 * R*M) runs from each end);
    - ``min_ms`` / ``max_ms``: fastest / slowest individual run.

    CPU affinity (``--affinity``, e.g. ``0,1`` or ``2-3``) is applied with
    ``os.sched_setaffinity`` to every thread of the process BEFORE the runtimes create
    their thread pools; ``affinity_applied`` says whether it worked.
    ONNX providers are tried in the order given; a missing one is dropped with a warning
    and ``CPUExecutionProvider`` is always the last fallback.
``eval --model M --data D.npz [--batch B] [--threads N] [--provider P ...]``
    ``D.npz`` holds ``x`` (uint8 NHWC images at the model's resolution) and ``y``
    (integer labels). Images are scaled to [0, 1] float32; an int8/uint8 quantized input
    is fed ``clip(round(x / scale) + zero_point)`` with the model's own parameters; an
    NCHW model input (3 channels at index 1) gets the images transposed. A model with a
    fixed batch runs in batches of that size (1 for most TFLite models); a dynamic batch
    runs in batches of ``--batch``. Answers ``top1``, ``n``, ``correct``, ``predicted``, and
    with ``--logits N`` the (dequantized) outputs of the first N images. ``--kernels
    reference`` runs TFLite's reference kernels (no delegate), which TFLite Micro matches.
    ``--tflite-runtime tflite_micro`` runs a .tflite in TFLite Micro's own interpreter on
    this host and adds ``arena``: the bytes its allocator really used (total, head, tail).

Every answer names the ``sha256`` of each model file it ran.
"""

import argparse
import contextlib
import gc
import glob
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import traceback

PROTOCOL_VERSION = 1
RUNNER_VERSION = "1.1.0"

TFLITE_RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
# TFLite Micro's own interpreter (PyPI tflite-micro) runs a microcontroller's model on a host;
# it is never chosen automatically, only with --tflite-runtime tflite_micro.
TFLITE_MICRO = "tflite_micro"

# Distribution names under which each runtime may be installed (for importlib.metadata).
_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime", "tflite-runtime-nightly"),
    "tflite_micro": ("tflite-micro",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tensorflow-macos",
                   "tensorflow-intel", "tf-nightly"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                    "onnxruntime-directml", "onnxruntime-qnn", "onnxruntime-silicon"),
}

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class RunnerError(Exception):
    """A failure with a one-line message meant for the user on the host."""


class _HelpRequested(Exception):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting (stdout carries JSON only)."""

    def error(self, message):
        raise RunnerError("%s: %s" % (self.prog, message))

    def print_help(self, file=None):
        raise _HelpRequested(self.format_help())

    def print_usage(self, file=None):
        raise _HelpRequested(self.format_usage())

    def exit(self, status=0, message=None):
        if status:
            raise RunnerError(message.strip() if message else "%s: exit %d" % (self.prog, status))
        raise _HelpRequested(message or "")


# ----------------------------------------------------------------------------- helpers

def _one_line(text) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 500 else text[:497] + "..."


def _exc_line(exc: BaseException) -> str:
    message = _one_line(exc)
    return "%s: %s" % (type(exc).__name__, message) if message else type(exc).__name__


def _numpy():
    try:
        import numpy
    except Exception as exc:  # ImportError, or a broken build
        raise RunnerError("numpy is not importable on this device (%s): pip install numpy"
                          % _exc_line(exc))
    return numpy


def _dist_version(module_name: str):
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    for dist in _DISTRIBUTIONS.get(module_name, (module_name,)):
        try:
            return metadata.version(dist)
        except Exception:
            continue
    return None


def _module_version(module, module_name: str):
    version = getattr(module, "__version__", None)
    return str(version) if version else _dist_version(module_name)


def _spec_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:
        return False


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(path: str):
    try:
        with open(path, "r") as handle:
            return handle.read()
    except Exception:
        return None


def _read_int(path: str):
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _check_model_path(path: str) -> str:
    if not os.path.exists(path):
        raise RunnerError("model file not found: %s" % path)
    if not os.path.isfile(path):
        raise RunnerError("model path is not a file: %s" % path)
    if not os.access(path, os.R_OK):
        raise RunnerError("model file is not readable: %s" % path)
    return path


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send everything written to stdout (Python or C level) to stderr meanwhile."""
    saved_fd = None
    try:
        sys.stdout.flush()
        saved_fd = os.dup(1)
        os.dup2(2, 1)
    except Exception:
        saved_fd = None
    saved_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved_stdout
        try:
            sys.stderr.flush()
        except Exception:
            pass
        if saved_fd is not None:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


# ----------------------------------------------------------------------------- statistics

def _percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(runs_ms):
    """Statistics of one model from ``runs_ms``: a list (one per repeat) of lists of run times."""
    per_repeat = [sum(r) / len(r) for r in runs_ms]
    ordered = sorted(per_repeat)
    every = sorted(t for r in runs_ms for t in r)
    cut = int(len(every) * 0.1)
    kept = every[cut:len(every) - cut] or every
    mean = sum(per_repeat) / len(per_repeat)
    stdev = statistics.stdev(per_repeat) if len(per_repeat) > 1 else 0.0
    return {
        "per_repeat_ms": [round(v, 6) for v in per_repeat],
        "median_ms": round(_percentile(every, 0.50), 6),
        "trimmed_mean_ms": round(sum(kept) / len(kept), 6),
        "iqr_ms": round(_percentile(ordered, 0.75) - _percentile(ordered, 0.25), 6),
        "cov": round(stdev / mean, 6) if mean > 0 else 0.0,
        "p10_ms": round(_percentile(every, 0.10), 6),
        "p50_ms": round(_percentile(every, 0.50), 6),
        "p90_ms": round(_percentile(every, 0.90), 6),
        "min_ms": round(every[0], 6),
        "max_ms": round(every[-1], 6),
        "runs_total": len(every),
    }


# ----------------------------------------------------------------------------- affinity

def _parse_cpus(text: str):
    cpus = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                low, high = part.split("-", 1)
                cpus.update(range(int(low), int(high) + 1))
            else:
                cpus.add(int(part))
    except ValueError:
        raise RunnerError("--affinity must be a CPU list like 0,1 or 2-3, got %r" % text)
    if not cpus or min(cpus) < 0:
        raise RunnerError("--affinity must list at least one CPU >= 0, got %r" % text)
    return sorted(cpus)


def _current_affinity():
    if hasattr(os, "sched_getaffinity"):
        try:
            return sorted(os.sched_getaffinity(0))
        except Exception:
            return None
    return None


def apply_affinity(cpus, warnings):
    """Pin every thread of this process (and threads created later) to ``cpus``."""
    if cpus is None:
        return False
    if not hasattr(os, "sched_setaffinity"):
        warnings.append("--affinity ignored: os.sched_setaffinity is not available on %s"
                        % platform.system())
        return False
    try:
        os.sched_setaffinity(0, cpus)
    except Exception as exc:
        warnings.append("--affinity %s not applied: %s" % (",".join(map(str, cpus)), _exc_line(exc)))
        return False
    # sched_setaffinity(0) pins the calling thread only: pin the threads that already exist.
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ():
        try:
            os.sched_setaffinity(int(tid), cpus)
        except Exception:
            pass
    return True


# ----------------------------------------------------------------------------- models

def _tflite_interpreter_class(preferred=None):
    """(class, runtime name, version) of the first importable TFLite interpreter."""
    names = (preferred,) if preferred else TFLITE_RUNTIMES
    problems = []
    for name in names:
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert.interpreter import Interpreter
                import ai_edge_litert as module
            elif name == "tflite_runtime":
                from tflite_runtime.interpreter import Interpreter
                import tflite_runtime as module
            elif name == "tensorflow":
                import tensorflow as module  # last resort only: slow and heavy
                Interpreter = module.lite.Interpreter
            else:
                raise RunnerError("unknown TFLite runtime %r (choose from %s)"
                                  % (name, ", ".join(TFLITE_RUNTIMES)))
        except RunnerError:
            raise
        except Exception as exc:
            problems.append("%s (%s)" % (name, _exc_line(exc)))
            continue
        return Interpreter, name, _module_version(module, name)
    raise RunnerError("no TFLite interpreter is importable: %s; pip install ai-edge-litert "
                      "(or tflite-runtime)" % "; ".join(problems))


class TFLiteModel:
    kind = "tflite"

    def __init__(self, path, threads=None, runtime=None, kernels="default"):
        interpreter_class, self.runtime, self.version = _tflite_interpreter_class(runtime)
        self.path, self.kernels = path, kernels
        options = {}
        if kernels == "reference":  # TFLite's reference kernels, no delegate: what TFLite Micro matches
            try:
                resolvers = importlib.import_module(interpreter_class.__module__).OpResolverType
            except Exception as exc:
                raise RunnerError("%s has no reference kernels to choose (%s)" % (self.runtime, _exc_line(exc)))
            options["experimental_op_resolver_type"] = resolvers.BUILTIN_REF
        try:
            self.interpreter = interpreter_class(model_path=path, num_threads=threads, **options)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise RunnerError("%s %s could not load %s: %s"
                              % (self.runtime, self.version, path, _exc_line(exc)))
        self._refresh()

    def _refresh(self):
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def input_specs(self):
        np = _numpy()
        specs = []
        for detail in self.inputs:
            signature = detail.get("shape_signature")
            if signature is None or len(signature) == 0:
                signature = detail["shape"]
            scale, zero_point = detail.get("quantization", (0.0, 0))
            specs.append({
                "name": detail["name"],
                "shape": [int(v) for v in detail["shape"]],
                "signature": [int(v) if int(v) >= 0 else None for v in signature],
                "dtype": np.dtype(detail["dtype"]).name,
                "scale": float(scale),
                "zero_point": int(zero_point),
            })
        return specs

    def output_quantization(self):
        scale, zero_point = self.outputs[0].get("quantization", (0.0, 0))
        return float(scale), int(zero_point)

    def set_batch(self, batch):
        detail = self.inputs[0]
        shape = [int(v) for v in detail["shape"]]
        if shape[0] == batch:
            return
        self.interpreter.resize_tensor_input(detail["index"], [batch] + shape[1:])
        self.interpreter.allocate_tensors()
        self._refresh()

    def run(self, feeds):
        interpreter = self.interpreter
        for detail, value in zip(self.inputs, feeds):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        return interpreter.get_tensor(self.outputs[0]["index"])


class OnnxModel:
    kind = "onnx"

    def __init__(self, path, threads=None, providers=None, warnings=None):
        try:
            import onnxruntime as ort
        except Exception as exc:
            raise RunnerError("onnxruntime is not importable (%s): pip install onnxruntime"
                              % _exc_line(exc))
        self.path = path
        self.runtime = "onnxruntime"
        self.version = _module_version(ort, "onnxruntime")
        available = list(ort.get_available_providers())
        requested = list(providers or ["CPUExecutionProvider"])
        chosen = []
        for provider in requested:
            if provider in available:
                if provider not in chosen:
                    chosen.append(provider)
            elif warnings is not None:
                warnings.append("%s: provider %s is not available (available: %s); falling back"
                                " to CPUExecutionProvider" % (os.path.basename(path), provider,
                                                              ", ".join(available)))
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=chosen)
        except Exception as exc:
            raise RunnerError("onnxruntime %s could not load %s: %s"
                              % (self.version, path, _exc_line(exc)))
        self.providers = list(self.session.get_providers())
        for provider in chosen:
            if provider not in self.providers and warnings is not None:
                warnings.append("%s: provider %s failed to initialise; onnxruntime runs on %s"
                                % (os.path.basename(path), provider, ", ".join(self.providers)))
        self.inputs = self.session.get_inputs()
        self.output_names = [self.session.get_outputs()[0].name]

    def input_specs(self):
        specs = []
        for node in self.inputs:
            dtype = _ORT_DTYPES.get(node.type)
            if dtype is None:
                raise RunnerError("%s: unsupported ONNX input type %s for input %s"
                                  % (self.path, node.type, node.name))
            signature = [v if isinstance(v, int) and v >= 0 else None for v in node.shape]
            specs.append({
                "name": node.name,
                "shape": [v if v is not None else 1 for v in signature],
                "signature": signature,
                "dtype": dtype,
                "scale": 0.0,
                "zero_point": 0,
            })
        return specs

    def output_quantization(self):
        return 0.0, 0

    def set_batch(self, batch):
        pass  # dynamic batch dims need nothing

    def run(self, feeds):
        return self.session.run(self.output_names,
                                dict(zip((node.name for node in self.inputs), feeds)))[0]


class TFLiteMicroModel:
    """A .tflite run by TFLite Micro's interpreter (batch 1, one input, one output)."""

    kind = "tflite"

    def __init__(self, path):
        try:
            from tflite_micro.python.tflite_micro import runtime as tflm
        except Exception as exc:
            raise RunnerError("TFLite Micro is not importable (%s): pip install tflite-micro" % _exc_line(exc))
        self.path, self.runtime = path, TFLITE_MICRO
        self.version = _dist_version(TFLITE_MICRO)
        try:
            self.interpreter = tflm.Interpreter.from_file(path)
        except Exception as exc:
            raise RunnerError("TFLite Micro could not load %s: %s (an op it has no kernel for is named "
                              "on stderr)" % (path, _exc_line(exc)))
        self.input = self.interpreter.get_input_details(0)
        self.output = self.interpreter.get_output_details(0)

    @staticmethod
    def _quantization(detail):
        q = detail.get("quantization_parameters") or {}
        scales, zeros = list(q.get("scales", [])), list(q.get("zero_points", []))
        return (float(scales[0]), int(zeros[0])) if scales else (0.0, 0)

    def input_specs(self):
        np = _numpy()
        shape = [int(v) for v in self.input["shape"]]
        scale, zero_point = self._quantization(self.input)
        return [{"name": "input", "shape": shape, "signature": shape, "dtype": np.dtype(self.input["dtype"]).name,
                 "scale": scale, "zero_point": zero_point}]

    def output_quantization(self):
        return self._quantization(self.output)

    def set_batch(self, batch):
        if batch != 1:
            raise RunnerError("TFLite Micro runs batch 1 only, not %d" % batch)

    def run(self, feeds):
        self.interpreter.set_input(feeds[0], 0)
        self.interpreter.invoke()
        return self.interpreter.get_output(0)

    def arena(self):
        """The allocator's record, parsed from what print_allocations writes (C++, to fd 2)."""
        import re
        import tempfile

        with tempfile.TemporaryFile(mode="w+") as capture:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(capture.fileno(), 2)
            try:
                self.interpreter.print_allocations()
                import ctypes

                ctypes.CDLL(None).fflush(None)  # C stdio may buffer what C++ printed
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            text = capture.read()
        found = dict((m.group(1), int(m.group(2)))
                     for m in re.finditer(r"Arena allocation (total|head|tail) (\d+) bytes", text))
        if "total" not in found:
            raise RunnerError("TFLite Micro printed no arena allocation total for %s" % self.path)
        return {"total_bytes": found["total"], "head_bytes": found.get("head"), "tail_bytes": found.get("tail")}


def load_model(path, threads=None, providers=None, warnings=None, tflite_runtime=None, kernels="default"):
    _check_model_path(path)
    lower = path.lower()
    if tflite_runtime == TFLITE_MICRO:
        if not lower.endswith(".tflite"):
            raise RunnerError("TFLite Micro runs .tflite files, not %s" % path)
        return TFLiteMicroModel(path)
    if lower.endswith(".tflite"):
        return TFLiteModel(path, threads=threads, runtime=tflite_runtime, kernels=kernels)
    if lower.endswith(".onnx"):
        return OnnxModel(path, threads=threads, providers=providers, warnings=warnings)
    raise RunnerError("unsupported model file %s: expected .tflite or .onnx" % path)


def _runtime_record(model):
    record = {"name": model.runtime, "version": model.version}
    if getattr(model, "kernels", "default") != "default":
        record["kernels"] = model.kernels
    if model.kind == "onnx":
        record["providers"] = model.providers
    return record


def random_feeds(model, seed):
    """One fixed, seeded random array per model input, of the input's dtype and shape."""
    np = _numpy()
    rng = np.random.RandomState(seed)
    feeds = []
    for spec in model.input_specs():
        shape = tuple(spec["shape"])
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            value = rng.random_sample(shape).astype(dtype)
        elif dtype.kind == "b":
            value = rng.randint(0, 2, size=shape).astype(dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            low, high = (int(info.min), int(info.max)) if dtype.itemsize == 1 else (0, 9)
            value = rng.randint(low, high + 1, size=shape).astype(dtype)
        else:
            raise RunnerError("%s: cannot make a random input of dtype %s" % (model.path, dtype))
        feeds.append(value)
    return feeds


# ----------------------------------------------------------------------------- commands

def command_protocol(args):
    return {"protocol_version": PROTOCOL_VERSION, "runner_version": RUNNER_VERSION}


def _cpu_model():
    text = _read("/proc/cpuinfo") or ""
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


def _cpufreq():
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    if not os.path.isdir(base):
        return None
    governor = _read(base + "scaling_governor")
    result = {"governor": governor.strip() if governor else None}
    for key, name in (("cur_mhz", "scaling_cur_freq"), ("max_mhz", "scaling_max_freq"),
                      ("hw_max_mhz", "cpuinfo_max_freq"), ("min_mhz", "scaling_min_freq")):
        khz = _read_int(base + name)
        result[key] = round(khz / 1000.0, 1) if khz is not None else None
    return result


def _temperatures():
    zones = []
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        milli = _read_int(os.path.join(zone, "temp"))
        if milli is None:
            continue
        kind = _read(os.path.join(zone, "type"))
        zones.append({"zone": os.path.basename(zone), "type": kind.strip() if kind else None,
                      "celsius": round(milli / 1000.0, 1)})
    return zones


def _memory():
    text = _read("/proc/meminfo")
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
        record["version"] = _module_version(importlib.import_module(module_name), module_name)
        return record, module
    except Exception as exc:
        record["error"] = _exc_line(exc)
        if not _spec_exists(module_name):
            record["error"] = "not installed"
        return record, None


def command_info(args):
    runtimes = {}
    numpy_version, numpy_error = None, None
    try:
        import numpy
        numpy_version = numpy.__version__
    except Exception as exc:
        numpy_error = _exc_line(exc)
    runtimes["ai_edge_litert"], _ = _probe_import("ai_edge_litert", "ai_edge_litert.interpreter")
    runtimes["tflite_runtime"], _ = _probe_import("tflite_runtime", "tflite_runtime.interpreter")
    # tensorflow is only looked up, never imported: importing it takes seconds and GBs.
    tf_present = _spec_exists("tensorflow")
    runtimes["tensorflow"] = {"available": tf_present,
                              "version": _dist_version("tensorflow") if tf_present else None,
                              "imported": False}
    ort_record, ort = _probe_import("onnxruntime", "onnxruntime")
    if ort is not None:
        try:
            ort_record["providers"] = list(ort.get_available_providers())
        except Exception as exc:
            ort_record["providers"] = []
            ort_record["error"] = _exc_line(exc)
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
    cores = {"logical": os.cpu_count(), "affinity": _current_affinity()}
    board = _read("/proc/device-tree/model")
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
        "cpufreq": _cpufreq(),
        "temperatures": _temperatures(),
        "memory": _memory(),
        "machine": platform.machine(),
        "system": platform.system(),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def command_time(args):
    _numpy()  # fail early and clearly when numpy is missing
    warnings = []
    for name, value, minimum in (("--warmup", args.warmup, 0), ("--repeats", args.repeats, 1),
                                 ("--runs", args.runs, 1), ("--threads", args.threads, 1)):
        if value < minimum:
            raise RunnerError("%s must be >= %d, got %d" % (name, minimum, value))
    for path in args.model:
        _check_model_path(path)
    cpus = _parse_cpus(args.affinity) if args.affinity else None
    # Pin BEFORE the runtimes spawn their thread pools: new threads inherit the mask.
    applied = apply_affinity(cpus, warnings)
    models, feeds, records = [], [], []
    for path in args.model:
        start = time.perf_counter_ns()
        model = load_model(path, threads=args.threads, providers=args.provider,
                           warnings=warnings, tflite_runtime=args.tflite_runtime)
        load_ms = (time.perf_counter_ns() - start) / 1e6
        models.append(model)
        feeds.append(random_feeds(model, args.seed))
        records.append({"model": path, "sha256": sha256_of(path),
                        "runtime": _runtime_record(model),
                        "inputs": [{"name": s["name"], "shape": s["shape"], "dtype": s["dtype"]}
                                   for s in model.input_specs()],
                        "threads": args.threads, "affinity_applied": applied,
                        "load_ms": round(load_ms, 3)})
    if applied:
        apply_affinity(cpus, [])  # catch threads spawned while loading, too
    for model, feed in zip(models, feeds):
        try:
            for _ in range(args.warmup):
                model.run(feed)
            if args.warmup == 0:
                model.run(feed)  # one run anyway: a model that cannot run fails here, clearly
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError("%s failed to run %s: %s" % (model.runtime, model.path, _exc_line(exc)))
    runs_ms = [[] for _ in models]
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start_all = time.perf_counter()
    try:
        for _ in range(args.repeats):
            for index, model in enumerate(models):
                run, feed = model.run, feeds[index]
                times = []
                for _ in range(args.runs):
                    t0 = clock()
                    run(feed)
                    times.append(clock() - t0)
                runs_ms[index].append([t / 1e6 for t in times])
    finally:
        if gc_was_enabled:
            gc.enable()
    for record, model_runs in zip(records, runs_ms):
        record.update(summarize(model_runs))
    return {
        "models": records,
        "threads": args.threads,
        "affinity_requested": cpus,
        "affinity_applied": applied,
        "affinity": _current_affinity(),
        "method": {"warmup": args.warmup, "repeats": args.repeats, "runs": args.runs,
                   "seed": args.seed, "order": "interleaved by repeat",
                   "clock": "time.perf_counter_ns around set-input + invoke + get-output",
                   "percentiles": "p10/p50/p90 (median) over all runs",
                   "iqr_cov": "over per-repeat means",
                   "trimmed_mean": "over all runs, 10% dropped from each end"},
        "seconds": round(time.perf_counter() - start_all, 3),
        "warnings": warnings,
    }


def _load_data(path):
    np = _numpy()
    if not os.path.isfile(path):
        raise RunnerError("data file not found: %s" % path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("x", "y") if key not in data.files]
            if missing:
                raise RunnerError("data file %s lacks array(s) %s (has: %s)"
                                  % (path, ", ".join(missing), ", ".join(data.files)))
            x, y = data["x"], data["y"]
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError("cannot read data file %s: %s" % (path, _exc_line(exc)))
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise RunnerError("data file %s: x must be uint8 NHWC images with 3 channels, got %s %s"
                          % (path, x.dtype, list(x.shape)))
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind not in "iu":
        raise RunnerError("data file %s: y must hold integer labels, got %s" % (path, y.dtype))
    if len(y) != len(x):
        raise RunnerError("data file %s: %d images but %d labels" % (path, len(x), len(y)))
    if len(x) == 0:
        raise RunnerError("data file %s holds no images" % path)
    return x, y.astype(np.int64)


def prepare_batch(images, spec, layout):
    """uint8 NHWC images -> the model input: [0,1] float32, quantized if the input is."""
    np = _numpy()
    x = images.astype(np.float32) / np.float32(255.0)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    dtype = np.dtype(spec["dtype"])
    if dtype.kind in "iu":
        scale, zero_point = spec["scale"], spec["zero_point"]
        if scale > 0:
            info = np.iinfo(dtype)
            q = np.round(x / np.float32(scale)) + zero_point
            return np.clip(q, info.min, info.max).astype(dtype)
        if dtype == np.uint8:
            x = images if layout == "NHWC" else images.transpose(0, 3, 1, 2)
            return np.ascontiguousarray(x)  # an unquantized uint8 input takes raw pixels
        raise RunnerError("model input %s is %s without quantization parameters: cannot feed "
                          "images" % (spec["name"], dtype))
    return x.astype(dtype)


def command_eval(args):
    np = _numpy()
    warnings = []
    model_path = _check_model_path(args.model)
    if args.batch < 1:
        raise RunnerError("--batch must be >= 1, got %d" % args.batch)
    x, y = _load_data(args.data)
    model = load_model(model_path, threads=args.threads, providers=args.provider,
                       warnings=warnings, tflite_runtime=args.tflite_runtime, kernels=args.kernels)
    specs = model.input_specs()
    if len(specs) != 1:
        raise RunnerError("%s has %d inputs: eval needs a model with one image input"
                          % (model_path, len(specs)))
    spec = specs[0]
    shape = spec["signature"]
    if len(shape) != 4:
        raise RunnerError("%s input %s has shape %s: eval needs a 4-d image input"
                          % (model_path, spec["name"], shape))
    if shape[1] == 3 and shape[3] != 3:
        layout, height, width = "NCHW", shape[2], shape[3]
    elif shape[3] == 3:
        layout, height, width = "NHWC", shape[1], shape[2]
    else:
        raise RunnerError("%s input shape %s has no 3-channel axis at index 1 or 3"
                          % (model_path, shape))
    if (height is not None and height != x.shape[1]) or (width is not None and width != x.shape[2]):
        raise RunnerError("data %s holds %dx%d images but %s expects %sx%s"
                          % (args.data, x.shape[1], x.shape[2], model_path, height, width))
    if shape[0] is None:
        batch = args.batch
    else:
        batch = shape[0]
        if args.batch not in (1, batch):
            warnings.append("--batch %d ignored: %s has a fixed batch of %d"
                            % (args.batch, os.path.basename(model_path), batch))
    try:
        model.set_batch(batch)
    except Exception as exc:
        raise RunnerError("cannot set batch %d on %s: %s" % (batch, model_path, _exc_line(exc)))
    out_scale, out_zero = model.output_quantization()
    predicted, logits = [], []
    start = time.perf_counter()
    for first in range(0, len(x), batch):
        images = x[first:first + batch]
        count = len(images)
        if count < batch:  # pad the last batch of a fixed-batch model
            pad = np.zeros((batch - count,) + images.shape[1:], dtype=images.dtype)
            images = np.concatenate([images, pad])
        feed = prepare_batch(images, spec, layout)
        try:
            output = np.asarray(model.run([feed]))
        except Exception as exc:
            raise RunnerError("%s failed to run %s: %s" % (model.runtime, model_path, _exc_line(exc)))
        output = output.reshape(output.shape[0], -1)[:count]
        if out_scale > 0:
            output = (output.astype(np.float32) - out_zero) * np.float32(out_scale)
        predicted.extend(int(v) for v in output.argmax(axis=1))
        if len(logits) < args.logits:
            logits.extend(output[:args.logits - len(logits)].astype(np.float64).tolist())
    seconds = time.perf_counter() - start
    correct = int(sum(1 for p, t in zip(predicted, y.tolist()) if p == t))
    answer = {
        "model": model_path,
        "sha256": sha256_of(model_path),
        "data": args.data,
        "runtime": _runtime_record(model),
        "threads": args.threads,
        "layout": layout,
        "batch": batch,
        "input": {"name": spec["name"], "dtype": spec["dtype"],
                  "scale": spec["scale"], "zero_point": spec["zero_point"]},
        "n": len(predicted),
        "correct": correct,
        "top1": correct / float(len(predicted)),
        "predicted": predicted,
        "seconds": round(seconds, 4),
        "warnings": warnings,
    }
    if args.logits:
        answer["logits"] = logits
    if hasattr(model, "arena"):
        answer["arena"] = model.arena()
    return answer


# ----------------------------------------------------------------------------- CLI

def build_parser():
    parser = _Parser(prog="runner.py", description="ofa-edge device runner (protocol %d)"
                     % PROTOCOL_VERSION)
    parser.add_argument("--version", action="store_true", help="print the protocol version")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("protocol", help="print the protocol version")
    sub.add_parser("info", help="describe this device and its runtimes")

    def common(p):
        p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
        p.add_argument("--provider", action="append", default=None,
                       help="onnxruntime execution provider, in preference order (repeatable)")
        p.add_argument("--tflite-runtime", choices=TFLITE_RUNTIMES + (TFLITE_MICRO,), default=None,
                       help="force one TFLite interpreter (default: first importable)")

    timing = sub.add_parser("time", help="time one or more models, interleaved")
    timing.add_argument("--model", action="append", required=True, help="model file (repeatable)")
    timing.add_argument("--affinity", default=None, help="CPU list, e.g. 0,1 or 2-3")
    timing.add_argument("--warmup", type=int, default=10)
    timing.add_argument("--repeats", type=int, default=5)
    timing.add_argument("--runs", type=int, default=20)
    timing.add_argument("--seed", type=int, default=0)
    common(timing)

    evaluate = sub.add_parser("eval", help="top-1 accuracy of a model on an .npz of images")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--batch", type=int, default=1)
    evaluate.add_argument("--logits", type=int, default=0, help="also answer the outputs of the first N images")
    evaluate.add_argument("--kernels", choices=("default", "reference"), default="default",
                          help="TFLite kernels: default (optimized, XNNPACK) or reference (what TFLite Micro matches)")
    common(evaluate)
    return parser


COMMANDS = {"protocol": command_protocol, "info": command_info, "time": command_time,
            "eval": command_eval}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    answer = {"protocol": PROTOCOL_VERSION, "ok": False, "command": None}
    code = 2
    with _stdout_to_stderr():
        try:
            args = build_parser().parse_args(argv)
            command = "protocol" if args.version else args.command
            if command is None:
                raise RunnerError("no command given: choose one of %s" % ", ".join(COMMANDS))
            answer["command"] = command
            result = COMMANDS[command](args)
            answer["ok"] = True
            answer.update(result)
            code = 0
        except _HelpRequested as shown:
            answer.update({"ok": True, "command": "help", "help": shown.text})
            code = 0
        except RunnerError as exc:
            answer["error"] = _one_line(exc)
        except KeyboardInterrupt:
            answer["error"] = "interrupted"
            code = 130
        except BaseException as exc:  # never a traceback on stdout
            traceback.print_exc(file=sys.stderr)
            answer["error"] = "runner crashed: %s" % _exc_line(exc)
    try:
        line = json.dumps(answer, default=_json_default, allow_nan=False)
    except ValueError:
        line = json.dumps(_finite(answer), default=_json_default)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return code


def _json_default(value):
    """numpy scalars and arrays -> plain Python; anything else -> its str."""
    for method in ("tolist", "item"):
        if hasattr(value, method):
            try:
                return getattr(value, method)()
            except Exception:
                pass
    return str(value)


def _finite(value):
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return dict((k, _finite(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
