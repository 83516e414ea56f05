"""Format converters: torch -> ONNX, ONNX -> TFLite (fp32 / full-int8), TFLite -> C array.

``FORMATS`` is the one table that drives conversion and the host checks. Importing this
package is light: torch, onnx and onnx2tf are imported inside the converters.
"""
from __future__ import annotations

from dataclasses import dataclass

#: host checks, by name: what the converted file must satisfy against the torch subnet
HOST_CHECKS = {
    "outputs": "every output within max_abs_diff of torch (fp32)",
    "labels": "top-1 labels agree with torch fp32 on at least label_agreement of the images (fp16)",
    "int8": "no float tensor left, and the top-1 drop from fp32 held to the verification bar (full-int8)",
}


@dataclass(frozen=True)
class Format:
    name: str
    runtime: str        # the runtime that reads it: tflite | onnxruntime | tflite-micro
    precision: str      # int8 | fp32 | fp16
    suffix: str
    description: str
    host_check: str     # a key of HOST_CHECKS
    c_array: bool = False  # also written as model_data.cc / model_data.h (TFLite Micro)

    @property
    def tflite(self) -> bool:
        return self.suffix == ".tflite"


#: thresholds of the host checks (DESIGN.md §7)
MAX_ABS_DIFF = 1e-4
LABEL_AGREEMENT = 0.995

FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx-fp32", "onnxruntime", "fp32", ".onnx", "ONNX, float32", "outputs"),
    Format("onnx-fp16", "onnxruntime", "fp16", ".onnx",
           "ONNX, float16 weights, activations, input and output (for GPU providers: CUDA, TensorRT)", "labels"),
    Format("tflite-fp32", "tflite", "fp32", ".tflite", "TFLite, float32", "outputs"),
    Format("tflite-int8", "tflite", "int8", ".tflite",
           "TFLite full-int8 (int8 weights per-channel, int8 activations, int8 input/output)", "int8"),
    Format("tflite-micro-int8", "tflite-micro", "int8", ".tflite",
           "TFLite full-int8 with TFLite Micro's ops only (hard sigmoid as ReLU6), plus a 16-byte aligned "
           "C array (model_data.cc / .h)", "int8", c_array=True),
)}


def format_for(runtime: str, precision: str) -> Format:
    """The format a device with this runtime and precision runs."""
    for fmt in FORMATS.values():
        if fmt.runtime == runtime and fmt.precision == precision:
            return fmt
    from converters.errors import ConversionError

    raise ConversionError(f"no converter yet for runtime {runtime} at precision {precision} "
                          f"(available: {', '.join(FORMATS)})")
