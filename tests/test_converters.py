"""Converters core: torch -> ONNX -> TFLite fp32 / full-int8, offline, with real interpreters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import randomize_supernet
from converters import FORMATS, format_for
from converters.errors import ConversionError
from converters.onnx_export import choose_opset, export_onnx
from converters.tflite_convert import onnx_to_tflite
from ofa_edge.space.supernet import OFASupernet


@pytest.fixture(scope="module")
def subnet_files(tmp_path_factory):
    torch.manual_seed(0)
    net = OFASupernet("ofa-mbv3-ci", 10, (0.29,) * 3, (0.35,) * 3)
    randomize_supernet(net, seed=2)
    net.eval()
    arch = net.space.sample(4, resolution=28)
    sub = net.extract(arch).eval()
    folder = tmp_path_factory.mktemp("conv")
    opset = export_onnx(sub, 28, folder / "sub.onnx")
    calib = np.random.default_rng(0).random((40, 28, 28, 3), dtype=np.float32)
    fp32 = onnx_to_tflite(folder / "sub.onnx", folder / "sub_fp32.tflite", "fp32", calib)
    int8 = onnx_to_tflite(folder / "sub.onnx", folder / "sub_int8.tflite", "int8", calib)
    return sub, folder, opset, calib, fp32, int8


def _run_tflite(path, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for img in x:
        v = img[None]
        if inp["dtype"] == np.int8:
            scale, zp = inp["quantization"]
            v = np.clip(np.round(v / scale) + zp, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], v)
        it.invoke()
        outs.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(outs), inp, out


def test_onnx_is_one_file_at_the_recorded_opset(subnet_files):
    import onnx
    import onnxruntime as ort

    sub, folder, opset, calib, *_ = subnet_files
    assert opset == 17 and not list(folder.glob("*.onnx.data"))
    model = onnx.load(str(folder / "sub.onnx"))
    assert model.opset_import[0].version == 17
    x = calib[:4].transpose(0, 3, 1, 2).copy()
    sess = ort.InferenceSession(str(folder / "sub.onnx"), providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(4)])
    with torch.no_grad():
        assert np.abs(y - sub(torch.from_numpy(x)).numpy()).max() < 1e-4


def test_tflite_fp32_matches_torch(subnet_files):
    sub, _, _, calib, fp32, _ = subnet_files
    y, inp, _ = _run_tflite(fp32, calib[:8])
    assert tuple(inp["shape"]) == (1, 28, 28, 3) and inp["dtype"] == np.float32  # NHWC input
    with torch.no_grad():
        expected = sub(torch.from_numpy(calib[:8].transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(y - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


def test_tflite_int8_is_full_integer_and_agrees(subnet_files):
    sub, _, _, calib, _, int8 = subnet_files
    y, inp, out = _run_tflite(int8, calib[:16])
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    with torch.no_grad():
        expected = sub(torch.from_numpy(calib[:16].transpose(0, 3, 1, 2).copy())).numpy()
    agree = (y.argmax(1) == expected.argmax(1)).mean()
    assert agree >= 0.75, agree  # random weights and random images: a loose sanity bound


def test_conversion_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    calib = np.zeros((2, 8, 8, 3), np.float32)
    with pytest.raises(ConversionError, match="onnx2tf failed on bad.onnx") as info:
        onnx_to_tflite(bad, tmp_path / "x.tflite", "fp32", calib)
    assert "\n" not in str(info.value)
    with pytest.raises(ConversionError, match="unknown TFLite precision"):
        onnx_to_tflite(bad, tmp_path / "x.tflite", "int4", calib)
    with pytest.raises(ConversionError, match="opset 14 or newer"):
        choose_opset(11)
    assert choose_opset(15) == 15 and choose_opset(None) == 17


def test_format_table_drives_the_choice():
    assert format_for("tflite", "int8") is FORMATS["tflite-int8"]
    assert format_for("onnxruntime", "fp32").suffix == ".onnx"
    assert format_for("tflite-micro", "int8").c_array
    with pytest.raises(ConversionError, match="no converter yet"):
        format_for("tflite-micro", "fp32")
    from converters import HOST_CHECKS

    assert all(f.host_check in HOST_CHECKS for f in FORMATS.values())


def test_fp16_onnx_runs_in_onnxruntime_and_matches_fp32(subnet_files, tmp_path):
    import onnx
    import onnxruntime as ort

    sub, folder, *_ = subnet_files
    from converters.convert import convert_module

    convert_module(sub, (1, 3, 28, 28), FORMATS["onnx-fp16"], tmp_path / "sub16.onnx")
    graph = onnx.load(tmp_path / "sub16.onnx")
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    s32 = ort.InferenceSession(str(folder / "sub.onnx"), providers=["CPUExecutionProvider"])
    s16 = ort.InferenceSession(str(tmp_path / "sub16.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((16, 1, 3, 28, 28), dtype=np.float32)
    a = np.concatenate([s32.run(None, {"input": v})[0] for v in x])
    b = np.concatenate([s16.run(None, {"input": v.astype(np.float16)})[0] for v in x]).astype(np.float32)
    scale = float(np.abs(a).max())
    assert np.abs(a - b).max() <= 2e-2 * max(scale, 1.0), (np.abs(a - b).max(), scale)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9
    assert format_for("onnxruntime", "fp16").name == "onnx-fp16"
