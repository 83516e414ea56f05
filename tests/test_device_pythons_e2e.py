"""The oldest and the newest device Python, end to end over the real loopback sshd: a bench and a
deploy with Python 3.6 (numpy 1.19.5, onnxruntime 1.10.0: the Jetson Nano's JetPack 4.6) and with
Python 3.13 (ai-edge-litert: Termux, Pi OS trixie). The venvs come from tests/pythons.py."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import CI_BENCH, bench_spec_yaml, require_fmnist
from ofa_edge.deploy import DeployOptions, deploy
from ofa_edge.devices.bench import BenchOptions, run_bench
from ofa_edge.devices.spec import load_spec

# Each device: its venv, its runtime and format. 3.6's onnxruntime 1.10 reads opset 15 and IR 8.
DEVICES = {
    "3.6": ({"name": "onnxruntime", "version": "1.10.0", "max_opset": 15,
             "execution_providers": ["CPUExecutionProvider"], "threads": 1}, "fp32", "onnx-fp32"),
    "3.13": ({"name": "tflite", "delegate": "xnnpack", "threads": 1}, "int8", "tflite-int8"),
}
LIGHT = {"warmup": 2, "repeats": 3, "runs_per_repeat": 10, "passes": 1, "pass_gap_s": 0.0}


@pytest.mark.parametrize("minor", sorted(DEVICES))
def test_bench_and_deploy_over_ssh(minor, sshd_server, block_cache, tmp_path):
    from pythons import BY_MINOR, ensure

    require_fmnist()
    python = ensure(BY_MINOR[minor])
    runtime, precision, fmt = DEVICES[minor]
    path = bench_spec_yaml(tmp_path / "spec.yaml", sshd_server.connection(), f"~/py{minor}",
                           name=f"py{minor.replace('.', '')}", python=str(python))
    data = yaml.safe_load(path.read_text())
    data.update(runtime=runtime, precision=precision, measure=LIGHT)
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    lines: list[str] = []
    run_bench(spec, BenchOptions(**CI_BENCH, supernet="default", out=tmp_path / "runs",
                                 cache=block_cache, log=lines.append))
    blocks = json.loads(next((tmp_path / "runs" / spec.name).glob("*/blocks.json")).read_text())
    assert blocks["identity"]["format"] == fmt and blocks["identity"]["runtime_version"] == (
        runtime.get("version") or BY_MINOR[minor].runtimes["ai-edge-litert"])
    result = deploy(spec, DeployOptions(runs=tmp_path / "runs", out=tmp_path / "bundles", eval_images=200,
                                        bn_images=300, log=lines.append))
    m = result.manifest
    assert result.passed, m["verification"]
    assert m["format"] == fmt and m["agreement"] >= 0.995
    assert any(f"{spec.name} is ready (Python {minor}." in line for line in lines), lines
    assert not any(p.name.startswith("ofa-edge-") for p in (sshd_server.home / f"py{minor}").iterdir())
