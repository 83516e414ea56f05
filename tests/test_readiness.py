"""A device that is not ready fails bench and deploy within seconds, with one line and exit 2,
before anything is converted. Real failures where this machine has them: pyenv's Python 2.7, the
3.6 venv (onnxruntime 1.10, no TFLite), a delegate library that does not exist, the Jetson spec's
TensorRT/CUDA providers against a CPU-only onnxruntime, and pinning to a core the kernel refuses."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, require
from ofa_edge.devices.readiness import assess, ort_reads
from ofa_edge.devices.spec import load_spec

PYTHON27 = Path.home() / ".pyenv/versions/2.7.18/bin/python"


def local_spec(tmp_path: Path, name: str = "notready", **changes) -> Path:
    """device_specs/local.yaml with ``changes`` (dotted keys) applied, written to ``tmp_path``."""
    data = yaml.safe_load((REPO / "device_specs" / "local.yaml").read_text())
    data["name"] = name
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    data["device"]["work_dir"] = str(tmp_path / "work")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def jetson_here(tmp_path: Path) -> Path:
    """The shipped Jetson spec, reached on this machine (CPU-only onnxruntime) instead of over ssh."""
    data = yaml.safe_load((REPO / "device_specs" / "jetson_nano.yaml").read_text())
    data.update(name="jetson_here", connection={"transport": "local"},
                device={"python": "host", "work_dir": str(tmp_path / "work")})
    data["hardware"]["cores"] = 2
    data["runtime"]["threads"] = 1
    path = tmp_path / "jetson_here.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fails_fast(run_cli, tmp_path: Path, spec: Path, expected: str) -> None:
    """bench and deploy both stop with one line naming ``expected``, exit 2, nothing converted."""
    cache, runs, bundles = tmp_path / "cache", tmp_path / "runs", tmp_path / "bundles"
    for command in (["bench", "--quick", "--supernet", "ofa-mbv3-tiny", "--out", str(runs), "--no-progress"],
                    ["deploy", "--runs", str(runs), "--out", str(bundles), "--no-bench"]):
        start = time.monotonic()
        done = run_cli(*command, "--spec", str(spec), env={"OFA_EDGE_CACHE": str(cache)}, timeout=240)
        seconds = time.monotonic() - start
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (command[0], done.stderr[-2000:])
        assert "Traceback" not in done.stderr and len([line for line in lines if "error" in line.lower()]) == 1, lines
        assert expected in done.stderr, (command[0], done.stderr)
        assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*")), "a model was converted"
        assert not bundles.exists() or not any(p.is_file() for p in bundles.rglob("*")), "something was written"
        assert seconds < 120, f"{command[0]} took {seconds:.0f} s to find out"
    work = tmp_path / "work"
    assert not work.exists() or not any(work.iterdir()), "the run folder is removed"


def test_too_old_python(run_cli, tmp_path):
    require(PYTHON27.exists(), "pyenv's Python 2.7", "the machine image's pyenv interpreters")
    fails_fast(run_cli, tmp_path, local_spec(tmp_path, device__python=str(PYTHON27)),
               "Python 2.7 is too old for the ofa-edge runner: it needs Python 3.6 or newer")


def test_missing_python(run_cli, tmp_path):
    fails_fast(run_cli, tmp_path, local_spec(tmp_path, device__python=str(tmp_path / "nowhere" / "python3")),
               "is not on the device")


def test_missing_runtime_in_the_python_36_venv(run_cli, tmp_path):
    from pythons import BY_MINOR, ensure

    python = ensure(BY_MINOR["3.6"])
    fails_fast(run_cli, tmp_path, local_spec(tmp_path, device__python=str(python)),
               f"no TFLite interpreter on the device: {python} -m pip install tflite-runtime")


def test_onnx_opset_above_the_devices_onnxruntime(run_cli, tmp_path):
    """onnxruntime 1.10 (the Jetson Nano's) reads opset 15 and IR 8: a spec without max_opset would
    export opset 17, so the check says to set max_opset: 15; with it, the 3.6 venv is ready."""
    from pythons import BY_MINOR, ensure

    python = ensure(BY_MINOR["3.6"])
    onnx = dict(name="onnxruntime", threads=1, cpu_affinity=[1])
    data = yaml.safe_load(local_spec(tmp_path).read_text())
    data.update(runtime=onnx, precision="fp32", device={"python": str(python), "work_dir": str(tmp_path / "work")})
    spec = tmp_path / "ort110.yaml"
    spec.write_text(yaml.safe_dump(data))
    fails_fast(run_cli, tmp_path, spec, "onnxruntime 1.10.0 on the device reads ONNX opset <= 15 and IR <= 8, but "
                                        "models for this spec are exported at opset 17, IR 8: set runtime.max_opset: 15")
    data["runtime"]["max_opset"] = 15
    spec.write_text(yaml.safe_dump(data))
    done = run_cli("devices", "check", "--spec", str(spec), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ready"] and report["info"]["python"]["version"] == "3.6.15"


def test_delegate_that_cannot_load(run_cli, tmp_path):
    fails_fast(run_cli, tmp_path, local_spec(tmp_path, runtime__delegate="external:/nonexistent.so"),
               "delegate 'external:/nonexistent.so' cannot be loaded on the device")


def test_jetson_providers_against_a_cpu_only_onnxruntime(run_cli, tmp_path):
    fails_fast(run_cli, tmp_path, jetson_here(tmp_path),
               "execution providers TensorrtExecutionProvider, CUDAExecutionProvider are not available")


def test_pinning_the_kernel_refuses(run_cli, tmp_path):
    spec = local_spec(tmp_path, hardware__cores=8, runtime__cpu_affinity=[6])  # this machine has 2 cores
    fails_fast(run_cli, tmp_path, spec, "CPU pinning to [6] was not applied on the device")
    done = run_cli("devices", "check", "--spec", str(spec))
    assert done.returncode == 2 and "the device allows CPUs [0, 1]" in done.stdout + done.stderr


def test_termux_gets_pkg_install_lines():
    spec = load_spec(REPO / "device_specs" / "pixel.yaml")
    info = {"python": {"version": "3.12.8"}, "numpy": None, "runtimes": {}, "environment": {"termux": True}}
    problems, _ = assess(spec, info)
    assert "numpy is missing on the device: pkg install python-numpy" in problems
    assert "no TFLite interpreter on the device: pkg install python-tflite-runtime" in problems


@pytest.mark.parametrize("version, reads", [("1.10.0", (15, 8)), ("1.11.1", (15, 8)), ("1.14.1", (18, 8)),
                                            ("1.19.2", (21, 10)), ("1.23.0", (23, 11)), ("1.5.3", None)])
def test_onnxruntime_reads_table(version, reads):
    assert ort_reads(version) == reads
