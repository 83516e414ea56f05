"""The TFLite Micro path's pieces: the C array, the micro-compatible graph, TFLite Micro's
interpreter in the runner (its arena), and the MCU memory model against that arena."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import require
from converters import FORMATS
from converters.c_array import ALIGNMENT, compile_check, write_c_array
from converters.errors import ConversionError
from ofa_edge.devices.runner_host import runner_app


def _compiler() -> str:
    require(shutil.which("gcc") is not None, "gcc", "apt-get install -y g++")
    return "gcc"


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory):
    """The CI space's smallest subnet as tflite-micro-int8 (random weights, random calibration)."""
    import torch

    from converters.convert import convert_module
    from ofa_edge.space.supernet import OFASupernet

    torch.manual_seed(0)
    net = OFASupernet("ofa-mbv3-ci", num_classes=10).eval()
    arch = net.space.smallest(28)
    folder = tmp_path_factory.mktemp("micro")
    calib = np.random.default_rng(0).random((16, 3, 28, 28), dtype=np.float32)
    record = convert_module(net.extract(arch).eval(), (1, 3, 28, 28), FORMATS["tflite-micro-int8"],
                            folder / "model.tflite", calib)
    return net, arch, folder, record


def test_c_array_holds_the_model_bytes_aligned_and_compiles(micro_model, tmp_path):
    _, _, folder, record = micro_model
    assert record["c_array"] == ["model_data.h", "model_data.cc"]
    data = (folder / "model.tflite").read_bytes()
    source = (folder / "model_data.cc").read_text()
    assert f"alignas({ALIGNMENT}) const unsigned char g_model_data[]" in source
    assert f"g_model_data_len = {len(data)};" in source
    body = source[source.index("{") + 1:source.index("};")]
    assert bytes(int(v, 16) for v in body.replace("\n", "").split(",")) == data
    # gcc -c, as a firmware build would
    done = subprocess.run([_compiler(), "-c", str(folder / "model_data.cc"), "-o", str(tmp_path / "m.o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    symbols = subprocess.run(["nm", "-C", str(tmp_path / "m.o")], capture_output=True, text=True).stdout
    assert "g_model_data" in symbols
    assert compile_check(folder / "model_data.cc", _compiler())


def test_a_broken_c_array_gives_one_clear_error(tmp_path):
    _compiler()
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x01\x02\x03")
    write_c_array(bad, tmp_path)
    (tmp_path / "model_data.cc").write_text((tmp_path / "model_data.cc").read_text().replace("};", "}"))
    with pytest.raises(ConversionError, match="does not compile") as info:
        compile_check(tmp_path / "model_data.cc", _compiler())
    assert "\n" not in str(info.value)


def test_micro_model_uses_only_ops_tflite_micro_runs(micro_model):
    """hard sigmoid becomes ADD(ReLU6) + MUL: no RELU_0_TO_1, which TFLite Micro lacks."""
    from ai_edge_litert.interpreter import Interpreter

    _, _, folder, _ = micro_model
    ops = {op["op_name"] for op in Interpreter(model_path=str(folder / "model.tflite"))._get_ops_details()}
    assert "RELU_0_TO_1" not in ops and {"CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH"} <= ops


def _runner_eval(model, data, *extra) -> dict:
    done = subprocess.run([sys.executable, str(runner_app()), "eval", "--model", str(model), "--data", str(data),
                           *extra], capture_output=True, text=True)
    return json.loads(done.stdout)


def test_runner_runs_tflite_micro_and_reports_its_arena(micro_model, tmp_path):
    """TFLite Micro matches TFLite's reference kernels (bit-exact up to rounding), and the arena
    it reports is what the MCU memory model predicts for the head, plus its fitted tail."""
    from ofa_edge.devices.mcu import tflm_memory

    net, arch, folder, _ = micro_model
    x = np.random.default_rng(2).integers(0, 256, (40, 28, 28, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(40, np.int64))
    micro = _runner_eval(folder / "model.tflite", tmp_path / "d.npz", "--tflite-runtime", "tflite_micro", "--logits", "40")
    ref = _runner_eval(folder / "model.tflite", tmp_path / "d.npz", "--kernels", "reference", "--logits", "40")
    assert micro["ok"] and ref["ok"], (micro.get("error"), ref.get("error"))
    assert micro["runtime"]["name"] == "tflite_micro" and ref["runtime"]["kernels"] == "reference"
    step = micro["input"]["scale"] or 1.0
    assert np.abs(np.array(micro["logits"]) - np.array(ref["logits"])).max() <= 0.2 + 2 * step
    arena = micro["arena"]
    assert arena["total_bytes"] == arena["head_bytes"] + arena["tail_bytes"] > 0
    model = tflm_memory(net.space.preset, arch, 10)
    assert model.head >= arena["head_bytes"]  # conservative: it counts CMSIS-NN scratch too
    assert abs(model.arena / arena["total_bytes"] - 1) < 0.35
    # fitted on the shipped space; on this much smaller one it stays close and errs high
    assert -0.02 < model.file / (folder / "model.tflite").stat().st_size - 1 < 0.10


def test_runner_under_tflite_micro_reports_a_missing_model_in_one_line(micro_model, tmp_path):
    """A missing model under tflite_micro: one clear line, no traceback on stdout."""
    _, _, folder, _ = micro_model
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 28, 28, 3), np.uint8), y=np.zeros(1, np.int64))
    answer = _runner_eval(tmp_path / "nope.tflite", tmp_path / "d.npz", "--tflite-runtime", "tflite_micro")
    assert not answer["ok"] and "nope.tflite" in answer["error"]
