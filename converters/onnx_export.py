"""torch -> ONNX: one self-contained file, fp32, NCHW input named ``input``, batch 1.

The opset is the highest that both the exporter and the target runtime read; it is returned
so the caller can record it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from converters.errors import ConversionError

EXPORTER_MAX_OPSET = 17  # torch's TorchScript exporter, which writes small graphs with standard ops
MIN_OPSET = 14           # HardSwish needs opset 14


def ir_version_for(opset: int) -> int:
    """The ONNX IR version our files carry at ``opset`` (what torch's exporter writes, measured with
    torch 2.13: IR 7 at opset 14, IR 8 at 15-18); the device's onnxruntime must read it."""
    return 7 if opset <= 14 else 8


def choose_opset(runtime_max_opset: int | None) -> int:
    opset = min(EXPORTER_MAX_OPSET, runtime_max_opset or EXPORTER_MAX_OPSET)
    if opset < MIN_OPSET:
        raise ConversionError(f"the device's onnxruntime reads opset {runtime_max_opset}, but our models need "
                              f"opset {MIN_OPSET} or newer (HardSwish); update onnxruntime on the device")
    return opset


def export_onnx(model: torch.nn.Module, resolution: int | tuple[int, ...], path: str | os.PathLike,
                runtime_max_opset: int | None = None, half: bool = False) -> int:
    """Export ``model`` (eval mode) for (1, 3, R, R) inputs, or for the NCHW shape given as a
    tuple, to ``path``; return the opset used. ``half``: float16 weights, activations, input and
    output (a copy of the model is cast; the caller's stays float32)."""
    import onnx

    opset = choose_opset(runtime_max_opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    shape = tuple(resolution) if isinstance(resolution, (tuple, list)) else (1, 3, resolution, resolution)
    example = torch.rand(*shape)
    if half:
        import copy

        model, example = copy.deepcopy(model).half(), example.half()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".onnx")
    os.close(fd)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), tmp, input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamo=False, do_constant_folding=True)
        graph = onnx.load(tmp, load_external_data=True)
        graph.ir_version = min(graph.ir_version, ir_version_for(opset))  # what the device's onnxruntime reads
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp, save_as_external_data=False)  # one self-contained file
        os.replace(tmp, path)
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise ConversionError(f"torch -> ONNX export failed for {path.name}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}") from None
    finally:
        for leftover in (tmp, tmp + ".data"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return opset
