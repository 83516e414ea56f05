"""The device runner (the ofa_edge/devices/runner package), run as the device runs it: one zipapp
in a subprocess where torch, tensorflow and ofa_edge cannot be imported, on real ONNX and TFLite
(fp32 and full-int8) models."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from ofa_edge.devices.runner import PROTOCOL_VERSION
from ofa_edge.devices.runner_host import RUNNER_PACKAGE, build_zipapp, parse_answer, runner_app, runner_sha256
from ofa_edge.errors import OfaEdgeError

RUNTIMES = {"numpy", "ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime", "tflite_micro"}

# Runs the runner like `python3 ofa_edge_runner.pyz ...`, but with torch, tensorflow and ofa_edge
# unimportable; afterwards reports on stderr which of them got loaded anyway.
BLOCKED = textwrap.dedent("""
    import json, runpy, sys
    args, path = json.loads(sys.argv[1]), sys.argv[2]
    for name in ("torch", "tensorflow", "ofa_edge", "keras"):
        sys.modules[name] = None
    sys.argv = [path] + args
    code = 0
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as done:
        code = done.code or 0
    heavy = sorted(m for m, v in sys.modules.items() if v is not None
                   and m.split(".")[0] in ("torch", "tensorflow", "ofa_edge", "keras"))
    sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
    sys.exit(code)
""")


def run_blocked(*args: str, runner: Path | None = None, cwd: Path | None = None,
                expect_ok: bool = True) -> tuple[dict, subprocess.CompletedProcess]:
    done = subprocess.run([sys.executable, "-c", BLOCKED, json.dumps(list(args)), str(runner or runner_app())],
                          capture_output=True, text=True, timeout=120, cwd=cwd)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be one JSON line: {done.stdout!r}\n{done.stderr[-2000:]}"
    answer = json.loads(lines[0])
    assert answer["protocol"] == PROTOCOL_VERSION
    heavy = [line for line in done.stderr.splitlines() if line.startswith("HEAVY=")]
    assert heavy and json.loads(heavy[-1][len("HEAVY="):]) == [], heavy
    if expect_ok:
        assert done.returncode == 0 and answer["ok"] is True, (answer, done.stderr[-2000:])
    else:
        assert done.returncode == 2 and answer["ok"] is False, (answer, done.stderr[-2000:])
        assert answer["error"] and "\n" not in answer["error"]
        assert "Traceback" not in done.stdout
    return answer, done


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


TF_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(1)
    rng = np.random.RandomState(1)
    inputs = tf.keras.Input((8, 8, 3))
    h = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(h))
    # Weights from numpy, not Keras' initialisers, so that every machine builds the same model;
    # the conv sees the channel means (positive and negative weights), so predictions vary.
    model.set_weights([(rng.normal(size=w.shape) if w.ndim > 1 else np.zeros(w.shape))
                       .astype(np.float32) for w in model.get_weights()])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    open(sys.argv[1], "wb").write(converter.convert())
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    def representative():
        for _ in range(16):
            yield [rng.random_sample((1, 8, 8, 3)).astype(np.float32)]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    open(sys.argv[2], "wb").write(converter.convert())
""")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runner_models")
    onnx_path, fp32, int8 = root / "tiny.onnx", root / "tiny_fp32.tflite", root / "tiny_int8.tflite"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1"}
    # TensorFlow converts in a subprocess (never imported here); torch exports meanwhile.
    tf_job = subprocess.Popen([sys.executable, "-c", TF_SCRIPT, str(fp32), str(int8)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 10)).eval()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(onnx_path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["logits"])
    _, err = tf_job.communicate(timeout=300)
    assert tf_job.returncode == 0, err[-3000:]
    return {"onnx": onnx_path, "fp32": fp32, "int8": int8}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Images whose channel means vary widely, so that the tiny models predict varied classes."""
    rng = np.random.RandomState(0)
    base = rng.randint(0, 256, size=(16, 1, 1, 3))
    noise = rng.randint(-40, 41, size=(16, 8, 8, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def litert_predict(path: Path, x: np.ndarray, quantize: bool) -> list[int]:
    """Predictions made here in-process with ai_edge_litert, one image at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    predicted = []
    for image in x:
        value = image[None].astype(np.float32) / 255.0
        if quantize:
            scale, zero_point = inp["quantization"]
            assert inp["dtype"] == np.int8 and scale > 0
            value = np.clip(np.round(value / scale) + zero_point, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        predicted.append(int(interpreter.get_tensor(out["index"]).reshape(-1).argmax()))
    return predicted


def onnx_predict(path: Path, x: np.ndarray) -> list[int]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    nchw = (x.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)
    return [int(session.run(None, {"x": image[None]})[0].argmax()) for image in nchw]


# --------------------------------------------------------------------------- source rules

def test_package_imports_only_stdlib_numpy_and_runtimes_lazily():
    allowed = set(sys.stdlib_module_names) | RUNTIMES
    modules = sorted(RUNNER_PACKAGE.glob("*.py"))
    assert len(modules) >= 8
    for module in modules:
        source = module.read_text()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # within the package
                    continue
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{module.name} imports {name}"
        # Only the standard library at module level: numpy and runtimes are imported lazily.
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert all(n.split(".")[0] in sys.stdlib_module_names for n in names), (module.name, names)
        assert "from __future__ import annotations" not in source, f"{module.name}: not on Python 3.6"


def test_zipapp_is_deterministic_and_answers_its_own_sha256():
    assert runner_app().read_bytes() == runner_app().read_bytes()
    assert hashlib.sha256(runner_app().read_bytes()).hexdigest() == runner_sha256()
    answer, _ = run_blocked("protocol")
    assert answer["runner_sha256"] == runner_sha256()


def test_python2_gets_a_one_line_answer_not_a_syntax_error():
    python2 = Path.home() / ".pyenv/versions/2.7.18/bin/python"
    from conftest import require
    require(python2.exists(), "pyenv's Python 2.7", "the machine image's pyenv interpreters")
    done = subprocess.run([str(python2), str(runner_app()), "info"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and "Python 2.7 is too old" in answer["error"] and "3.6" in answer["error"]


def test_package_init_stays_light():
    code = ("import sys\nfor n in ('torch', 'tensorflow', 'onnxruntime'): sys.modules[n] = None\n"
            "import ofa_edge.devices.runner as r, ofa_edge.devices.runner_host\n"
            "print(r.PROTOCOL_VERSION, ofa_edge.devices.runner_host.runner_app().is_file())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(PROTOCOL_VERSION), "True"]


# --------------------------------------------------------------------------- commands

def test_protocol_and_version():
    answer, _ = run_blocked("--version")
    assert answer["protocol_version"] == PROTOCOL_VERSION
    answer, _ = run_blocked("protocol")
    assert answer["command"] == "protocol"


def test_info_runs_blocked_and_alone(tmp_path):
    answer, _ = run_blocked("info")
    for key in ("python", "numpy", "cores", "memory", "runtimes", "cpu", "machine", "platform"):
        assert key in answer, key
    assert answer["numpy"] == np.__version__
    assert answer["cores"]["logical"] == os.cpu_count()
    assert answer["memory"]["total_mb"] > 0
    ort = answer["runtimes"]["onnxruntime"]
    assert ort["available"] and "CPUExecutionProvider" in ort["providers"]
    assert answer["runtimes"]["ai_edge_litert"]["available"]
    assert answer["runtimes"]["tensorflow"]["imported"] is False
    assert answer["tflite_interpreter"] == "ai_edge_litert"
    assert "xnnpack" in answer["delegates"]
    # A lone copy of the zipapp, run from its own directory.
    alone = tmp_path / "ofa_edge_runner.pyz"
    shutil.copyfile(runner_app(), alone)
    answer, _ = run_blocked("info", runner=alone, cwd=tmp_path)
    assert answer["command"] == "info"


def test_time_all_models_interleaved(models):
    paths = [models["onnx"], models["fp32"], models["int8"]]
    args = ["time", "--threads", "1", "--affinity", "0", "--warmup", "2", "--repeats", "3",
            "--runs", "5"]
    for path in paths:
        args += ["--model", str(path)]
    answer, _ = run_blocked(*args)
    assert answer["warnings"] == []
    assert answer["affinity_applied"] is True and answer["affinity"] == [0]
    assert [m["model"] for m in answer["models"]] == [str(p) for p in paths]
    for stats, path in zip(answer["models"], paths):
        assert stats["sha256"] == sha256(path)
        assert len(stats["per_repeat_ms"]) == 3
        assert stats["runs_total"] == 15
        assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
        assert stats["min_ms"] <= stats["trimmed_mean_ms"] <= stats["max_ms"]
        assert stats["min_ms"] <= stats["p10_ms"] <= stats["p50_ms"] <= stats["max_ms"]
        assert stats["cov"] >= 0 and stats["iqr_ms"] >= 0
        assert stats["threads"] == 1 and stats["affinity_applied"] is True
        assert stats["runtime"]["name"] == ("onnxruntime" if path.suffix == ".onnx"
                                            else "ai_edge_litert")
        assert stats["runtime"]["version"]
    assert answer["models"][2]["inputs"][0]["dtype"] == "int8"


def test_time_missing_provider_falls_back_to_cpu(models):
    answer, _ = run_blocked("time", "--model", str(models["onnx"]), "--provider",
                            "CUDAExecutionProvider", "--warmup", "1", "--repeats", "2", "--runs", "2")
    (stats,) = answer["models"]
    assert stats["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert any("CUDAExecutionProvider" in w and "CPUExecutionProvider" in w
               for w in answer["warnings"]), answer["warnings"]


def test_eval_fp32_models_top1(models, images, tmp_path):
    cases = [("onnx", onnx_predict(models["onnx"], images), "NCHW"),
             ("fp32", litert_predict(models["fp32"], images, quantize=False), "NHWC")]
    for name, expected, layout in cases:
        assert len(set(expected)) > 1, f"{name}: the images should give varied predictions"
        right, wrong = tmp_path / f"{name}_right.npz", tmp_path / f"{name}_wrong.npz"
        np.savez(right, x=images, y=np.array(expected))
        np.savez(wrong, x=images, y=(np.array(expected) + 1) % 10)
        answer, _ = run_blocked("eval", "--model", str(models[name]), "--data", str(right))
        assert answer["predicted"] == expected
        assert answer["top1"] == 1.0 and answer["n"] == len(images)
        assert answer["layout"] == layout and answer["sha256"] == sha256(models[name])
        shuffled = np.array(expected)[np.random.RandomState(3).permutation(len(expected))]
        np.savez(wrong, x=images, y=shuffled if (shuffled != expected).any()
                 else (np.array(expected) + 1) % 10)
        answer, _ = run_blocked("eval", "--model", str(models[name]), "--data", str(wrong),
                                "--batch", "5")
        assert answer["predicted"] == expected  # batches of 5 (TFLite resized), or warned
        assert answer["top1"] < 1.0
        if name == "onnx":  # fixed batch of 1: --batch is ignored, with a warning
            assert answer["batch"] == 1 and answer["warnings"]
        else:
            assert answer["batch"] == 5


def test_eval_int8_quantizes_input_like_the_model(models, images, tmp_path):
    expected = litert_predict(models["int8"], images, quantize=True)
    data = tmp_path / "int8.npz"
    np.savez(data, x=images, y=np.array(expected))
    answer, _ = run_blocked("eval", "--model", str(models["int8"]), "--data", str(data))
    assert answer["input"]["dtype"] == "int8" and answer["input"]["scale"] > 0
    assert answer["predicted"] == expected
    assert answer["top1"] == 1.0


def test_delegates_are_really_used(models, images, tmp_path):
    """The same int8 model with XNNPACK and with TFLite's built-in kernels rounds differently: the
    logits differ, so the delegate really ran; the answer names the delegate that ran."""
    data = tmp_path / "int8.npz"
    np.savez(data, x=images, y=np.zeros(len(images), dtype=np.int64))
    runs = {}
    for delegate in ("xnnpack", "none"):
        answer, _ = run_blocked("eval", "--model", str(models["int8"]), "--data", str(data), "--logits", "64",
                                "--delegate", delegate)
        assert answer["runtime"]["delegate"]["used"] == delegate
        runs[delegate] = np.array(answer["logits"])
    assert runs["xnnpack"].shape == runs["none"].shape
    assert not np.array_equal(runs["xnnpack"], runs["none"]), "XNNPACK and the built-in kernels gave identical logits"
    step = float(np.min(np.diff(np.unique(runs["none"]))))  # one int8 step, dequantized
    assert np.max(np.abs(runs["xnnpack"] - runs["none"])) <= 1.5 * step


def test_a_delegate_that_cannot_load_fails_in_one_line(models, tmp_path):
    answer, _ = run_blocked("time", "--model", str(models["int8"]), "--delegate", "external:/nonexistent.so",
                            "--warmup", "0", "--repeats", "1", "--runs", "1", expect_ok=False)
    assert "external:/nonexistent.so delegate cannot be loaded" in answer["error"]
    answer, _ = run_blocked("info", "--delegate", "gpu", "--affinity", "0")
    assert answer["requested"]["delegate"]["loaded"] is False
    assert "libtensorflowlite_gpu_delegate.so" in answer["requested"]["delegate"]["error"]
    assert answer["requested"]["affinity"] == {"requested": [0], "applied": True,
                                               "allowed": answer["cores"]["affinity"], "error": None}


def test_tensorrt_gets_a_persistent_engine_cache_and_fp16():
    from ofa_edge.devices.runner import onnxrt
    chosen = onnxrt.provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider"], "/w/trt", True)
    assert chosen == [("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                                     "trt_engine_cache_path": "/w/trt"}), "CUDAExecutionProvider"]
    assert onnxrt.provider_options(["CPUExecutionProvider"], "/w/trt", False) == ["CPUExecutionProvider"]


def test_zipapp(tmp_path):
    app = build_zipapp(tmp_path / "app.pyz")
    done = subprocess.run([sys.executable, str(app), "info"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = parse_answer(done.stdout)
    assert answer["command"] == "info" and "cores" in answer


def test_parse_answer():
    good = {"protocol": PROTOCOL_VERSION, "ok": True, "command": "info", "cores": {}}
    assert parse_answer("noise from a runtime\n" + json.dumps(good) + "\n") == good
    with pytest.raises(OfaEdgeError, match="protocol 99, host expects .*re-push the runner"):
        parse_answer(json.dumps({**good, "protocol": 99}))
    with pytest.raises(OfaEdgeError, match="model file not found: /x.onnx"):
        parse_answer(json.dumps({"protocol": PROTOCOL_VERSION, "ok": False, "command": "time",
                                 "error": "model file not found: /x.onnx"}))
    with pytest.raises(OfaEdgeError, match="no JSON answer.*Segmentation"):
        parse_answer("Segmentation fault\n")
    with pytest.raises(OfaEdgeError, match="empty"):
        parse_answer("")


def test_bad_inputs_fail_cleanly(models, tmp_path):
    answer, _ = run_blocked("time", "--model", str(tmp_path / "missing.tflite"), expect_ok=False)
    assert "not found" in answer["error"] and "missing.tflite" in answer["error"]
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"this is not a flatbuffer" * 8)
    answer, _ = run_blocked("time", "--model", str(corrupt), expect_ok=False)
    assert "corrupt.tflite" in answer["error"]
    corrupt_onnx = tmp_path / "corrupt.onnx"
    corrupt_onnx.write_bytes(b"\x00garbage" * 8)
    answer, _ = run_blocked("time", "--model", str(corrupt_onnx), expect_ok=False)
    assert "corrupt.onnx" in answer["error"] and "onnxruntime" in answer["error"]
    answer, _ = run_blocked("eval", "--model", str(corrupt_onnx), "--data",
                            str(tmp_path / "none.npz"), expect_ok=False)
    assert "none.npz" in answer["error"]  # the data is checked before the model is loaded
    answer, _ = run_blocked("time", "--model", str(models["onnx"]), "--repeats", "0",
                            expect_ok=False)
    assert "--repeats" in answer["error"]
    answer, _ = run_blocked("frobnicate", expect_ok=False)
    assert "invalid choice" in answer["error"]
