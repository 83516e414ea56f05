"""OFA's published supernets on this machine, small enough for CI: a reference w1.0 supernet
(random weights) imported with a tutorial-layout accuracy predictor; the shipped
``device_specs/local_imagenet.yaml`` with lighter measuring; a bench at 128 px on the kernel-3,
expand-3 blocks with 4 subnets; and ``--arch`` deploys on 100 real images in ImageNet's val
layout, as int8 TFLite and as ONNX fp32, that pass verification."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO

LIGHT = {"warmup": 2, "repeats": 3, "runs_per_repeat": 5, "passes": 1, "pass_gap_s": 0.0,
         "baseline_passes": 1, "drift_retries": 0}
BENCH = dict(resolutions=[128], kernels=[3], expands=[3], subnets=4, batch=16, progress=False)
EVAL_IMAGES = 100
ONNX = {"name": "onnxruntime", "execution_providers": ["CPUExecutionProvider"], "threads": 1}


def spec_like_local_imagenet(path: Path, work: Path, name: str, runtime: dict | None = None,
                             precision: str | None = None) -> Path:
    """The shipped local_imagenet.yaml, measuring lightly, under its own name and work folder."""
    data = yaml.safe_load((REPO / "device_specs" / "local_imagenet.yaml").read_text())
    data.update(name=name, measure=LIGHT)
    data["device"]["work_dir"] = str(work)
    if runtime:
        data["runtime"] = {**runtime, **({"cpu_affinity": data["runtime"]["cpu_affinity"]}
                                         if "cpu_affinity" in data["runtime"] else {})}
    if precision:
        data["precision"] = precision
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("imagenet-runs")


def _bench(spec_path: Path, supernet: Path, runs: Path, cache: Path):
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec

    result = run_bench(load_spec(spec_path), BenchOptions(**BENCH, supernet=str(supernet), out=runs, cache=cache,
                                                          log=lambda _: None))
    largest = json.loads((result.folder / "subnets.json").read_text())["subnets"][0]
    assert largest["kind"] == "largest"
    return result, largest["arch"]


def _deploy(run_cli, spec: Path, supernet: Path, runs: Path, arch: str, data: Path, cache: Path) -> dict:
    done = run_cli("deploy", "--spec", str(spec), "--supernet", str(supernet), "--runs", str(runs),
                   "--out", str(runs / "bundles"), "--arch", arch, "--data", str(data), "--eval-images",
                   str(EVAL_IMAGES), "--candidates", "1", "--no-bench", "--device", "cpu",
                   env={"OFA_EDGE_CACHE": str(cache)}, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "marked slice of 11 val images" in done.stdout, done.stdout[-3000:]
    return json.loads((runs / "bundles" / yaml.safe_load(spec.read_text())["name"] / "manifest.json").read_text())


def test_shipped_local_imagenet_spec_covers_the_reference_resolutions():
    from ofa_edge.devices.spec import load_spec

    spec = load_spec(REPO / "device_specs" / "local_imagenet.yaml")
    assert spec.budgets.resolution == [128, 224] and spec.budgets.latency_ms > 0
    local = load_spec(REPO / "device_specs" / "local.yaml")  # the tiny space keeps its own
    assert local.budgets.resolution == [28, 64] and local.budgets.latency_ms == 0.4


@pytest.mark.parametrize("fmt", ["tflite-int8", "onnx-fp32"])
def test_reference_w10_benches_and_deploys_with_verification(fmt, imagenet_run, imagenet_val, block_cache, runs,
                                                             tmp_path, run_cli):
    import jsonschema

    from ofa_edge.deploy import MANIFEST_SCHEMA

    onnx = fmt == "onnx-fp32"
    name = "ci-imagenet-onnx" if onnx else "ci-imagenet"
    spec = spec_like_local_imagenet(tmp_path / f"{name}.yaml", tmp_path / "work", name,
                                    ONNX if onnx else None, "fp32" if onnx else None)
    result, largest = _bench(spec, imagenet_run, runs, block_cache)
    assert result.blocks > 0 and result.subnets == 6
    blocks = json.loads((result.folder / "blocks.json").read_text())
    assert blocks["space_id"] == "ofa-mbv3-w1.0" and blocks["format"] == fmt
    m = _deploy(run_cli, spec, imagenet_run, runs, largest, imagenet_val, block_cache)
    jsonschema.validate(m, json.loads(MANIFEST_SCHEMA.read_text()))
    assert m["format"] == fmt and m["verification"]["passed"], m["verification"]
    assert m["supernet"]["id"] == "ofa-mbv3-w1.0" and m["arch"] == largest and "r128" in m["arch"]
    assert m["accuracy"]["images"] == EVAL_IMAGES and m["dataset"]["kind"] == "imagenet"
    assert m["dataset"]["scored"] == str(imagenet_val) and "marked slice" in m["dataset"]["bn_calibration"]
    assert len(m["dataset"]["classes"]) == 1000
    names = {c["name"]: c for c in m["verification"]["checks"]}
    if onnx:
        assert names["onnx-fp32 outputs match torch (64 images)"]["passed"]
    else:  # int8 labels against fp32 labels, besides the top-1 drop
        agree = names["int8 top-1 labels agree with torch fp32"]
        assert 0 <= agree["figure"] <= 1 and agree["level"] == "warn"
        assert names["no float tensors in the full-int8 model"]["passed"]
    assert m["agreement"] == 1.0  # the local device runs the host's own interpreter
