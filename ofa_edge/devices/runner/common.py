"""Shared by every runner module: the error type, one-line messages, versions, files."""

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
import time

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

class RunnerError(Exception):
    """A failure with a one-line message meant for the user on the host."""


def one_line(text) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 500 else text[:497] + "..."


def exc_line(exc: BaseException) -> str:
    message = one_line(exc)
    return "%s: %s" % (type(exc).__name__, message) if message else type(exc).__name__


def require_numpy():
    try:
        import numpy
    except Exception as exc:  # ImportError, or a broken build
        raise RunnerError("numpy is not importable on this device (%s): pip install numpy"
                          % exc_line(exc))
    return numpy


def dist_version(module_name: str):
    """The installed distribution's version of ``module_name``, or None."""
    for dist in _DISTRIBUTIONS.get(module_name, (module_name,)):
        version = _metadata_version(dist)
        if version:
            return version
    return None


def _metadata_version(dist: str):
    try:
        from importlib import metadata  # novm (3.8+; the except below reads dist-info on 3.6 and 3.7)
    except ImportError:  # Python 3.6 / 3.7: read the dist-info folders on sys.path
        return _dist_info_version(dist)
    try:
        return metadata.version(dist)
    except Exception:
        return None


def _dist_info_version(dist: str):
    import glob

    stem = dist.replace("-", "_").lower()
    for folder in sys.path:
        for meta in glob.glob(os.path.join(folder or ".", "*.dist-info", "METADATA")):
            name = os.path.basename(os.path.dirname(meta)).rsplit("-", 1)[0].lower().replace("-", "_")
            if name != stem:
                continue
            for line in (read_text(meta) or "").splitlines():
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
    return None


def clock_ns():
    """A monotonic clock in integer nanoseconds (time.perf_counter_ns is Python 3.7+)."""
    return _CLOCK_NS()


_CLOCK_NS = getattr(time, "perf_counter_ns", None) or (lambda: int(time.perf_counter() * 1e9))


def module_version(module, module_name: str):
    version = getattr(module, "__version__", None)
    return str(version) if version else dist_version(module_name)


def spec_exists(name: str) -> bool:
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


def read_text(path: str):
    try:
        with open(path, "r") as handle:
            return handle.read()
    except Exception:
        return None


def read_int(path: str):
    text = read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def check_model_path(path: str) -> str:
    if not os.path.exists(path):
        raise RunnerError("model file not found: %s" % path)
    if not os.path.isfile(path):
        raise RunnerError("model path is not a file: %s" % path)
    if not os.access(path, os.R_OK):
        raise RunnerError("model file is not readable: %s" % path)
    return path


@contextlib.contextmanager
def stdout_to_stderr():
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

