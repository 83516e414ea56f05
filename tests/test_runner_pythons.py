"""The device runner on every Python that edge devices run (3.6 to 3.13), each with the last
runtimes that support it (tests/pythons.py): info, time and eval on a real, trained subnet of the
shipped supernet, as ONNX (opset 15, IR 8: what onnxruntime 1.10 on a Jetson Nano reads) and as
the full-int8 TFLite of the suite's block cache. Eval must agree with the host (Python 3.11, the
same runtime). Plus the static rules that keep the runner at Python 3.6 syntax and standard
library, and the README's "Device Pythons" table against tests/pythons.py."""
from __future__ import annotations

import ast
import math
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import pythons
from conftest import REPO, require, require_fmnist
from ofa_edge.devices.runner_host import parse_answer
from ofa_edge.errors import OfaEdgeError

MINORS = [p.minor for p in pythons.PYTHONS]
EVAL_IMAGES = 200      # Fashion-MNIST test images: 99.5% agreement allows one flipped label
RUNNER_PACKAGE = REPO / "ofa_edge" / "devices" / "runner"
DISTRIBUTION = {module: dist for dist, module in pythons.RUNTIME_MODULES.items()}
RUNTIMES = {"numpy", "ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime", "tflite_micro"}


# --------------------------------------------------------------------------- helpers

def run_runner(python: Path, *args: str, cwd: Path) -> dict:
    """``python <runner> args`` in a subprocess, from a folder where ofa_edge cannot be
    imported, as on a device; the parsed answer, or a failure with the runner's stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2")
    runner = pythons.runner_file()
    done = subprocess.run([str(python), str(runner), *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd, env=env)
    try:
        answer = parse_answer(done.stdout)
    except OfaEdgeError as exc:
        pytest.fail(f"{python} {runner.name} {' '.join(args)} (exit {done.returncode}): {exc}\n"
                    f"stderr: {done.stderr[-3000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return answer


@pytest.fixture(scope="session")
def device_pythons() -> dict:
    """Every device venv, built concurrently on first use (cached across sessions)."""
    return pythons.ensure_all()


def python_of(minor: str, device_pythons: dict) -> tuple[pythons.DevicePython, Path]:
    entry = pythons.BY_MINOR[minor]
    require(entry.interpreter().is_file(), f"Python {entry.version} ({entry.interpreter()})",
            f"pyenv install {entry.version}")
    result = device_pythons[minor]
    if isinstance(result, BaseException):
        pytest.fail(f"the Python {minor} venv could not be built: {result} "
                    f"(log: {entry.folder().parent / (entry.folder().name + '.log')})")
    return entry, result


def cases(entry: pythons.DevicePython) -> list[tuple[str, str | None]]:
    """(model, TFLite interpreter) pairs this Python runs: the ONNX model on onnxruntime,
    the int8 TFLite model on each TFLite interpreter it has."""
    return ([("onnx", None)] if entry.has_onnx else []) + [("int8", r) for r in entry.tflite_runtimes]


def case_args(models: dict, model: str, interpreter: str | None, kernels: str | None = None) -> list[str]:
    args = ["--model", str(models[model]), "--threads", "1"]
    args += ["--tflite-runtime", interpreter] if interpreter else []
    return args + (["--kernels", kernels] if kernels else [])


# --------------------------------------------------------------------------- real models

@pytest.fixture(scope="module")
def models(block_cache, tmp_path_factory) -> dict:
    """A real, trained subnet: the drift-monitor reference of a CI bench of the shipped supernet
    (tests/test_deploy.py benches the same), as full-int8 TFLite from the suite's block cache
    (the bench's own naming and conversion: converted here only when no bench did it yet), the
    same subnet exported to ONNX at opset 15 / IR 8, and 200 Fashion-MNIST test images at its
    resolution (uint8 NHWC .npz)."""
    require_fmnist()
    import onnx
    import torch

    from conftest import CI_BENCH, bench_spec_yaml
    from ofa_edge.data.datasets import load_fashion_mnist
    from ofa_edge.data.tensors import to_model_input
    from ofa_edge.devices.bench import Bench, BenchOptions
    from ofa_edge.devices.spec import load_spec

    root = tmp_path_factory.mktemp("device-pythons")
    spec = load_spec(bench_spec_yaml(root / "spec.yaml", {"transport": "local"}, str(root / "work"),
                                     name="device-pythons"))
    bench = Bench(spec, BenchOptions(**CI_BENCH, supernet="default", out=root / "runs", cache=block_cache,
                                     log=lambda _: None))
    bench._load()  # plans only: loads the supernet, opens no device
    assert (bench.fmt.runtime, bench.fmt.precision) == ("tflite", "int8"), bench.fmt
    arch = bench.reference
    int8 = bench._model_file("subnet", {"arch": str(arch)})
    net, r = bench.net, arch.resolution
    sub = net.extract(arch).eval()
    onnx_path = root / "subnet_opset15.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(sub, (torch.zeros(1, 3, r, r),), str(onnx_path), dynamo=False,
                          opset_version=15, input_names=["input"], output_names=["logits"])
    proto = onnx.load(str(onnx_path))
    if proto.ir_version > 8:  # onnxruntime 1.10 reads IR <= 8; opset 15 needs nothing newer
        proto.ir_version = 8
        onnx.save(proto, str(onnx_path))
    onnx.checker.check_model(proto)
    assert proto.ir_version <= 8 and max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) <= 15

    data = load_fashion_mnist()
    images = (to_model_input(data.test_x[:EVAL_IMAGES], r).permute(0, 2, 3, 1).numpy() * 255
              ).round().clip(0, 255).astype(np.uint8)
    npz = root / "fmnist_test.npz"
    np.savez(npz, x=images, y=data.test_y[:EVAL_IMAGES])
    with torch.no_grad():
        torch_logits = sub(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0).numpy()
    from ai_edge_litert.interpreter import Interpreter

    out_scale = float(Interpreter(model_path=str(int8)).get_output_details()[0]["quantization"][0])
    assert out_scale > 0
    return {"onnx": onnx_path, "int8": int8, "data": npz, "arch": str(arch), "torch_logits": torch_logits,
            "out_scale": out_scale, "cwd": root}


@pytest.fixture(scope="module")
def host_eval(models) -> dict:
    """The host's answers (Python 3.11): the ONNX model on onnxruntime, the int8 model on
    ai_edge_litert with its default kernels (XNNPACK) and with TFLite's reference kernels."""
    answers = {}
    for model, interpreter, kernels in [("onnx", None, None), ("int8", "ai_edge_litert", "default"),
                                        ("int8", "ai_edge_litert", "reference")]:
        answers[model, kernels] = run_runner(
            Path(sys.executable), "eval", *case_args(models, model, interpreter, kernels), "--data",
            str(models["data"]), "--logits", str(EVAL_IMAGES), cwd=models["cwd"])
    onnx, int8 = answers["onnx", None], answers["int8", "default"]
    # The references are right: ONNX matches torch, the int8 model is the same subnet (88% of fp32's
    # labels here: the bench calibrates on stand-in images when no training images are stored),
    # and the images get varied classes.
    assert np.abs(np.array(onnx["logits"]) - models["torch_logits"]).max() < 1e-4
    assert len(set(onnx["predicted"])) >= 5
    assert np.mean(np.array(int8["predicted"]) == np.array(onnx["predicted"])) >= 0.8
    return answers


# --------------------------------------------------------------------------- per Python

@pytest.mark.parametrize("minor", MINORS)
def test_info_reports_python_numpy_and_runtimes(minor, device_pythons, tmp_path):
    entry, python = python_of(minor, device_pythons)
    answer = run_runner(python, "info", cwd=tmp_path)
    assert answer["python"]["version"] == (platform.python_version() if entry.host else entry.version)
    assert answer["python"]["implementation"] == "CPython"
    assert answer["numpy"] == entry.packages["numpy"]
    for dist, module in pythons.RUNTIME_MODULES.items():
        runtime = answer["runtimes"][module]
        if dist in entry.packages:
            assert runtime["available"] is True and runtime["version"] == entry.packages[dist], (module, runtime)
        else:
            assert runtime["available"] is False, (module, runtime)
    if entry.has_onnx:
        assert "CPUExecutionProvider" in answer["runtimes"]["onnxruntime"]["providers"]
    assert answer["tflite_interpreter"] == (entry.tflite_runtimes[0] if entry.tflite_runtimes else None)
    if not entry.host:  # the host also has tensorflow; a device venv has only its runtimes
        assert answer["runtimes"]["tensorflow"]["available"] is False


@pytest.mark.parametrize("minor", MINORS)
def test_time_real_models(minor, device_pythons, models):
    entry, python = python_of(minor, device_pythons)
    for model, interpreter in cases(entry):
        answer = run_runner(python, "time", *case_args(models, model, interpreter), "--warmup", "2",
                            "--repeats", "3", "--runs", "4", cwd=models["cwd"])
        (stats,) = answer["models"]
        assert stats["model"] == str(models[model])
        assert stats["runs_total"] == 12 and len(stats["per_repeat_ms"]) == 3
        assert math.isfinite(stats["p50_ms"]) and stats["p50_ms"] > 0
        assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["max_ms"]
        name = interpreter or "onnxruntime"
        assert (stats["runtime"]["name"], stats["runtime"]["version"]) == (name, entry.packages[DISTRIBUTION[name]])
        if model == "int8":
            assert stats["inputs"][0]["dtype"] == "int8"


@pytest.mark.parametrize("minor", MINORS)
def test_eval_agrees_with_the_host(minor, device_pythons, models, host_eval):
    """fp32 ONNX: the host's labels, logits to 1e-4. int8 TFLite: with TFLite's reference kernels
    (the same code in every release) and, on LiteRT, with its default XNNPACK kernels, at least
    99.5% of the host's labels and logits within one int8 step. tflite-runtime's default kernels
    are not XNNPACK's for int8: on this 10-block net their rounding differs by up to 61 output
    steps and 8% of the labels (measured), so they are held to the host's top-1 (within 5 points)
    and 85% of its labels."""
    entry, python = python_of(minor, device_pythons)
    assert cases(entry), f"Python {minor} has no runtime"
    runs = [(m, i, None if m == "onnx" else k) for m, i in cases(entry) for k in ("default", "reference")
            if not (m == "onnx" and k == "reference")]
    for model, interpreter, kernels in runs:
        answer = run_runner(python, "eval", *case_args(models, model, interpreter, kernels), "--data",
                            str(models["data"]), "--logits", str(EVAL_IMAGES), cwd=models["cwd"])
        host = host_eval[model, kernels]
        name = interpreter or "onnxruntime"
        what = f"{name} {entry.packages[DISTRIBUTION[name]]}" + (f", {kernels} kernels" if kernels else "")
        assert answer["n"] == EVAL_IMAGES and answer["sha256"] == host["sha256"], what
        assert answer["runtime"] == {**answer["runtime"], "name": name,
                                     "version": entry.packages[DISTRIBUTION[name]]}, what
        ours, theirs = np.array(answer["logits"]), np.array(host["logits"])
        assert ours.shape == theirs.shape == (EVAL_IMAGES, 10), what
        agree = float(np.mean(np.array(answer["predicted"]) == np.array(host["predicted"])))
        if model == "onnx":
            assert answer["predicted"] == host["predicted"], what
            assert np.abs(ours - theirs).max() <= 1e-4, (what, np.abs(ours - theirs).max())
        elif kernels == "reference" or interpreter == "ai_edge_litert":
            steps = np.abs(ours - theirs).max() / models["out_scale"]
            assert agree >= 0.995, (what, agree)
            assert steps <= 1 + 1e-3, f"{what}: {steps:.2f} int8 steps from the host's LiteRT"
        else:
            assert abs(answer["top1"] - host["top1"]) <= 0.05, (what, answer["top1"], host["top1"])
            assert agree >= 0.85, (what, agree)


def test_host_python_is_the_locked_set():
    """Python 3.11's row is the host's own .venv: it must hold the pins the table names."""
    from importlib.metadata import version

    (host,) = [p for p in pythons.PYTHONS if p.host]
    assert sys.version_info[:2] == tuple(int(v) for v in host.minor.split("."))
    assert {name: version(name) for name in host.packages} == host.packages
    constraints = (REPO / "constraints.txt").read_text().lower().splitlines()
    for name, pinned in host.packages.items():
        assert f"{name}=={pinned}" in constraints, f"{name}=={pinned} is not in constraints.txt"


def test_venv_cache_keys_follow_the_pins(tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_EDGE_PYVENVS", str(tmp_path))
    entry = pythons.BY_MINOR["3.6"]
    assert entry.folder().parent == tmp_path and entry.folder().name.startswith("py3.6-")
    bumped = pythons.DevicePython(**{**entry.__dict__, "packages": {**entry.packages, "numpy": "1.19.4"}})
    assert bumped.folder() != entry.folder()
    # A folder without its marker is a half-built venv: never used.
    entry.folder().mkdir(parents=True)
    assert not pythons.is_complete(entry)
    assert all("==" in r for r in entry.requirements())


# --------------------------------------------------------------------------- README

def test_readme_device_pythons_table_matches_pythons_py():
    text = (REPO / "README.md").read_text()
    assert "\n## Device Pythons\n" in text, "README.md lacks its '## Device Pythons' section"
    section = text.split("\n## Device Pythons\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    assert pythons.README_HEADER in lines, "the table's header changed"
    start = lines.index(pythons.README_HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(" ".join(line.split()))
    expected = pythons.readme_rows()
    assert rows == expected, ("README's Device Pythons table differs from tests/pythons.py; "
                              "regenerate it with `python tests/pythons.py --readme`:\n" + "\n".join(expected))


# --------------------------------------------------------------------------- static rules

def runner_sources() -> list[Path]:
    files = sorted(RUNNER_PACKAGE.glob("*.py"))
    assert files, f"no runner sources in {RUNNER_PACKAGE}"
    return files


def vermin_command() -> list[str]:
    script = Path(sys.executable).with_name("vermin")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())"]


def vermin(*paths: Path) -> subprocess.CompletedProcess:
    import importlib.util

    require(importlib.util.find_spec("vermin") is not None, "vermin (a test extra)",
            "pip install -c constraints.txt -e '.[test]'")
    return subprocess.run([*vermin_command(), "--target=3.6-", "--no-tips", "--violations",
                           "--no-config-file", "--processes=1", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_vermin_catches_what_python36_lacks(tmp_path):
    """The check bites: a 3.7+ module and 3.8 syntax are violations."""
    newer = tmp_path / "newer.py"
    newer.write_text("import dataclasses\nx = 1\nprint(f'{x=}')\n")
    done = vermin(newer)
    assert done.returncode != 0 and "dataclasses" in done.stdout, done.stdout


def test_runner_is_python36_code_by_vermin():
    done = vermin(*runner_sources())
    assert done.returncode == 0, "the runner must run on Python 3.6:\n" + done.stdout + done.stderr


def test_runner_compiles_on_python36(tmp_path):
    entry = pythons.BY_MINOR["3.6"]
    require(entry.interpreter().is_file(), f"Python {entry.version}", f"pyenv install {entry.version}")
    code = ("import py_compile, sys\nfor f in sys.argv[1:]:\n"
            "    py_compile.compile(f, cfile=f + '.pyc', doraise=True)\n")
    copies = []
    for path in runner_sources():  # compiled from copies: no .pyc lands in the repo
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())
        copies.append(str(copy))
    done = subprocess.run([str(entry.interpreter()), "-c", code, *copies], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]


def test_runner_imports_only_stdlib_numpy_and_runtimes():
    allowed = set(sys.stdlib_module_names) | RUNTIMES
    for path in runner_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # within the runner package only
                    assert node.level == 1, f"{path.name}:{node.lineno} imports from outside the runner"
                    continue
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name}:{node.lineno} imports {name}"

