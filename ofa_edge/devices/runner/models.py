"""Load a model file in the right runtime; seeded random inputs for timing."""

from .common import TFLITE_MICRO, RunnerError, check_model_path, require_numpy
from .micro import TFLiteMicroModel
from .onnxrt import OnnxModel
from .tflite import TFLiteModel


def load_model(path, args, warnings=None):
    """``path`` in its runtime, as the command line asks (``args``: threads, provider, delegate,
    tflite_runtime, kernels, trt_cache, trt_fp16; missing ones take their defaults)."""
    check_model_path(path)
    lower = path.lower()
    option = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    if option("tflite_runtime") == TFLITE_MICRO:
        if not lower.endswith(".tflite"):
            raise RunnerError("TFLite Micro runs .tflite files, not %s" % path)
        return TFLiteMicroModel(path)
    if lower.endswith(".tflite"):
        return TFLiteModel(path, threads=option("threads"), runtime=option("tflite_runtime"),
                           kernels=option("kernels", "default"), delegate=option("delegate"))
    if lower.endswith(".onnx"):
        return OnnxModel(path, threads=option("threads"), providers=option("provider"), warnings=warnings,
                         trt_cache=option("trt_cache"), trt_fp16=option("trt_fp16", False))
    raise RunnerError("unsupported model file %s: expected .tflite or .onnx" % path)


def runtime_record(model):
    record = {"name": model.runtime, "version": model.version}
    if getattr(model, "kernels", "default") != "default":
        record["kernels"] = model.kernels
    if model.kind == "onnx":
        record["providers"] = model.providers
    elif getattr(model, "delegate", None):
        record["delegate"] = model.delegate
    return record


def random_feeds(model, seed):
    """One fixed, seeded random array per model input, of the input's dtype and shape."""
    np = require_numpy()
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


