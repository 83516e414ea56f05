"""ONNX Runtime sessions with execution providers."""

import os

from .common import RunnerError, exc_line, module_version

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


def provider_options(providers, trt_cache=None, trt_fp16=False):
    """Providers with their options: TensorRT keeps each model's engine in ``trt_cache`` (built once,
    not on every call) and builds FP16 engines when asked."""
    chosen = []
    for provider in providers:
        if provider == "TensorrtExecutionProvider" and (trt_cache or trt_fp16):
            options = {"trt_fp16_enable": bool(trt_fp16)}
            if trt_cache:
                options.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": trt_cache})
            chosen.append((provider, options))
        else:
            chosen.append(provider)
    return chosen


class OnnxModel:
    kind = "onnx"

    def __init__(self, path, threads=None, providers=None, warnings=None, trt_cache=None, trt_fp16=False):
        try:
            import onnxruntime as ort
        except Exception as exc:
            raise RunnerError("onnxruntime is not importable (%s): pip install onnxruntime"
                              % exc_line(exc))
        self.path = path
        self.runtime = "onnxruntime"
        self.version = module_version(ort, "onnxruntime")
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
            self.session = ort.InferenceSession(path, sess_options=options,
                                                providers=provider_options(chosen, trt_cache, trt_fp16))
        except Exception as exc:
            raise RunnerError("onnxruntime %s could not load %s: %s"
                              % (self.version, path, exc_line(exc)))
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

