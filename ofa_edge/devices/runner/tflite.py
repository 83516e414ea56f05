"""LiteRT / TFLite interpreters (ai-edge-litert, tflite-runtime, tensorflow.lite)."""

import importlib
import os

from .common import TFLITE_RUNTIMES, RunnerError, exc_line, module_version, require_numpy


def tflite_interpreter_class(preferred=None):
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
            problems.append("%s (%s)" % (name, exc_line(exc)))
            continue
        return Interpreter, name, module_version(module, name)
    raise RunnerError("no TFLite interpreter is importable: %s; pip install ai-edge-litert "
                      "(or tflite-runtime)" % "; ".join(problems))


# Delegates loaded from a shared library (``load_delegate``); xnnpack and none choose the op resolver.
DELEGATE_LIBRARIES = {
    "gpu": ("libtensorflowlite_gpu_delegate.so",),
    "nnapi": ("libtensorflowlite_nnapi_delegate.so", "libnnapi_delegate.so"),
    "hexagon": ("libtensorflowlite_hexagon_delegate.so", "libhexagon_delegate.so"),
}
DELEGATES = ("xnnpack", "none") + tuple(DELEGATE_LIBRARIES)


def _resolvers(interpreter_class, runtime):
    try:
        return importlib.import_module(interpreter_class.__module__).OpResolverType
    except Exception as exc:
        raise RunnerError("%s cannot choose its kernels (%s): use ai-edge-litert or tflite-runtime 2.10+"
                          % (runtime, exc_line(exc)))


def _load_delegate_function(interpreter_class):
    module = importlib.import_module(interpreter_class.__module__)
    function = getattr(module, "load_delegate", None)
    if function is None:  # tensorflow.lite keeps it under experimental
        import tensorflow
        function = tensorflow.lite.experimental.load_delegate
    return function


def open_delegate(delegate, interpreter_class, runtime):
    """Interpreter keyword options and a record for ``delegate``: xnnpack, none, gpu, nnapi, hexagon,
    or external:<path to .so>. A delegate that cannot be loaded is an error, never a silent CPU run."""
    if not delegate:
        return {}, {"requested": None, "used": "default", "how": "the interpreter's default (XNNPACK where built in)"}
    if delegate == "none":
        resolvers = _resolvers(interpreter_class, runtime)
        return ({"experimental_op_resolver_type": resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES},
                {"requested": "none", "used": "none", "how": "built-in kernels, default delegates off"})
    if delegate == "xnnpack":
        resolvers = _resolvers(interpreter_class, runtime)
        return ({"experimental_op_resolver_type": resolvers.AUTO},
                {"requested": "xnnpack", "used": "xnnpack", "how": "XNNPACK as the interpreter's default delegate"})
    if delegate.startswith("external:"):
        libraries = (os.path.expandvars(os.path.expanduser(delegate[len("external:"):])),)
    elif delegate in DELEGATE_LIBRARIES:
        libraries = DELEGATE_LIBRARIES[delegate]
    else:
        raise RunnerError("unknown delegate %r (choose from %s, or external:<path to .so>)"
                          % (delegate, ", ".join(DELEGATES)))
    load = _load_delegate_function(interpreter_class)
    errors = []
    for library in libraries:
        try:
            handle = load(library)
        except Exception as exc:
            errors.append("%s: %s" % (library, exc_line(exc)))
            continue
        return ({"experimental_delegates": [handle]},
                {"requested": delegate, "used": delegate, "how": "load_delegate(%r)" % library})
    raise RunnerError("the %s delegate cannot be loaded by %s (%s); install that delegate's library on the "
                      "device, or set runtime.delegate to xnnpack, none or external:<path to .so>"
                      % (delegate, runtime, "; ".join(errors)))


class TFLiteModel:
    kind = "tflite"

    def __init__(self, path, threads=None, runtime=None, kernels="default", delegate=None):
        interpreter_class, self.runtime, self.version = tflite_interpreter_class(runtime)
        self.path, self.kernels = path, kernels
        if kernels == "reference":  # TFLite's reference kernels, no delegate: what TFLite Micro matches
            if delegate not in (None, "none"):
                raise RunnerError("--kernels reference runs without a delegate, not with %s" % delegate)
            resolvers = _resolvers(interpreter_class, self.runtime)
            options = {"experimental_op_resolver_type": resolvers.BUILTIN_REF}
            self.delegate = {"requested": delegate, "used": "none", "how": "reference kernels"}
        else:
            options, self.delegate = open_delegate(delegate, interpreter_class, self.runtime)
        try:
            self.interpreter = interpreter_class(model_path=path, num_threads=threads, **options)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise RunnerError("%s %s could not load %s: %s"
                              % (self.runtime, self.version, path, exc_line(exc)))
        self._refresh()

    def _refresh(self):
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def input_specs(self):
        np = require_numpy()
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

