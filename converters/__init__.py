"""Format converters: torch -> ONNX, ONNX -> TFLite (fp32 / full-int8).

``FORMATS`` is the one table that drives conversion and checks. Importing this package is
light: torch, onnx and onnx2tf are imported inside the converters.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str
    runtime: str        # the runtime that reads it: tflite | onnxruntime | tflite-micro
    precision: str      # int8 | fp32 | fp16
    suffix: str
    description: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx-fp32", "onnxruntime", "fp32", ".onnx", "ONNX, float32"),
    Format("onnx-fp16", "onnxruntime", "fp16", ".onnx",
           "ONNX, float16 weights, activations, input and output (for GPU providers: CUDA, TensorRT)"),
    Format("tflite-fp32", "tflite", "fp32", ".tflite", "TFLite, float32"),
    Format("tflite-int8", "tflite", "int8", ".tflite",
           "TFLite full-int8 (int8 weights per-channel, int8 activations, int8 input/output)"),
)}


def format_for(runtime: str, precision: str) -> Format:
    """The format a device with this runtime and precision runs."""
    for fmt in FORMATS.values():
        if fmt.runtime == runtime and fmt.precision == precision:
            return fmt
    from converters.errors import ConversionError

    raise ConversionError(f"no converter yet for runtime {runtime} at precision {precision} "
                          f"(available: {', '.join(FORMATS)})")
