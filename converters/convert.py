"""One call from a torch module to a model file in any format of ``FORMATS``.

``CONVERTER_VERSION`` names the toolchain (our pipeline, torch, onnx2tf): a converted file is
only reused from a cache when it was made by the same one.
"""
from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from converters import Format
from converters.onnx_export import export_onnx
from converters.tflite_convert import onnx2tf_version, onnx_to_tflite

PIPELINE_VERSION = 1


@lru_cache(maxsize=1)
def converter_version() -> str:
    """e.g. ``p1-torch2.13.0-onnx2tf1.29.24``; part of every cache key."""
    torch_version = torch.__version__.split("+")[0]
    try:
        tf_side = onnx2tf_version()
    except Exception:  # noqa: BLE001 - onnx2tf missing: ONNX-only installs still convert
        tf_side = "none"
    return f"p{PIPELINE_VERSION}-torch{torch_version}-onnx2tf{tf_side}"


def convert_module(module: torch.nn.Module, input_shape: tuple[int, ...], fmt: Format,
                   out_path: str | os.PathLike, calibration: np.ndarray | None = None,
                   max_opset: int | None = None) -> dict:
    """Write ``module`` for NCHW ``input_shape`` as ``fmt`` to ``out_path`` (atomically).

    ``calibration`` (NCHW float32, like the module's input) is required for TFLite: onnx2tf
    checks its output on it and int8 calibrates on it. Returns a record of what was made.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if fmt.runtime == "onnxruntime":
        opset = export_onnx(module, tuple(input_shape), out_path, max_opset, half=fmt.precision == "fp16")
        return {"format": fmt.name, "opset": opset, "converter": converter_version()}
    if calibration is None:
        raise ValueError(f"{fmt.name} needs calibration data")
    if fmt.runtime == "tflite-micro":
        from converters.micro import micro_compatible

        module = micro_compatible(module)
    with tempfile.TemporaryDirectory(prefix="ofa-edge-convert-", dir=out_path.parent) as work:
        onnx_path = Path(work) / "model.onnx"
        opset = export_onnx(module, tuple(input_shape), onnx_path)
        nhwc = np.ascontiguousarray(np.asarray(calibration, dtype=np.float32).transpose(0, 2, 3, 1))
        onnx_to_tflite(onnx_path, out_path, fmt.precision, nhwc)
    record = {"format": fmt.name, "opset": opset, "converter": converter_version()}
    if fmt.c_array:
        from converters.c_array import write_c_array

        record["c_array"] = [p.name for p in write_c_array(out_path, out_path.parent)]
    return record
