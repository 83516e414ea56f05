"""An emulated Raspberry Pi 4 (aarch64) behind a real sshd (DESIGN.md §10.2): Debian bookworm's
arm64 Python 3.11 and numpy with the LiteRT and tflite-runtime aarch64 wheels, run by
qemu-aarch64 (tests/aarch64.py). Its ``python3`` is a wrapper on the sessions' PATH; SFTP is
sshd's own. The spec is written here at run time (it needs this sshd's port and keys) and says
``emulated: true``: outputs count, timings do not.

One devices check, one small bench (the shipped supernet at 28 px, kernels 3 and expands 3: 13
blocks + 7 subnets; its blocks are in the suite's block cache), one int8 deploy. A runner call
costs seconds under QEMU, so the spec measures as little as it may.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from aarch64 import aarch64_sysroot, write_device_python  # noqa: F401  (aarch64_sysroot: a fixture)
from conftest import require_fmnist
from sshd import require_sshd, start_sshd

SPEC_NAME = "raspberry-pi4-emulated"
BENCH = dict(resolutions=[28], kernels=[3], expands=[3], subnets=5, batch=32, progress=False)
EVAL_IMAGES = 300
NOT_APPLICABLE = "not applicable (emulated device)"


def pi_spec_yaml(path: Path, connection: dict, work_dir: str) -> Path:
    """The emulated Pi 4's spec: LiteRT int8 + XNNPACK on 1 thread, the fewest passes a spec allows."""
    spec = {"schema_version": 1, "name": SPEC_NAME, "kind": "cpu",
            "description": "Raspberry Pi 4 Model B emulated by qemu-aarch64 (cortex-a72) behind a loopback sshd: "
                           "outputs only, never latency",
            "emulated": True,
            "hardware": {"cpu": "Cortex-A72", "cores": 4, "clock_mhz": 1500, "memory_mb": 4096},
            "connection": {**connection, "command_timeout_s": 300},
            "runtime": {"name": "tflite", "version": "2.1.0", "delegate": "xnnpack", "threads": 1,
                        **({"cpu_affinity": [1]} if (os.cpu_count() or 1) > 1 else {})},
            "precision": "int8",
            "device": {"python": "python3", "work_dir": work_dir},
            "budgets": {"resolution": [28, 28]},
            "measure": {"warmup": 2, "repeats": 3, "runs_per_repeat": 3, "passes": 1, "pass_gap_s": 0,
                        "baseline_passes": 1, "drift_retries": 0}}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def pi(tmp_path_factory, aarch64_sysroot):  # noqa: F811
    """(spec path, sshd server, root): the emulated Pi 4 over its own sshd."""
    require_sshd()
    root = tmp_path_factory.mktemp("emulated-pi")
    home = root / "sshd" / "home"
    write_device_python(home / "bin" / "python3", aarch64_sysroot)
    server = start_sshd(root / "sshd", env={"PATH": f"{home}/bin:/usr/local/bin:/usr/bin:/bin"})
    spec = pi_spec_yaml(root / "raspberry_pi4_emulated.yaml", server.connection(), f"{server.home}/ofa-edge")
    yield spec, server, root
    server.stop()


def test_devices_check_reports_an_aarch64_device(pi, run_cli):
    spec, server, _ = pi
    t0 = time.monotonic()
    done = run_cli("devices", "check", "--spec", str(spec), "--json", timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    info = report["info"]
    assert report["ready"] and not report["problems"], report
    assert info["machine"] == "aarch64"
    assert info["python"]["version"].startswith("3.11.")
    litert = info["runtimes"]["ai_edge_litert"]
    assert litert["available"] and litert["version"] == "2.1.0"
    assert info["runtimes"]["tflite_runtime"]["version"] == "2.14.0"
    assert info["numpy"].startswith("1.")  # Debian's numpy: tflite-runtime 2.14 needs numpy < 2
    print(f"devices check of the emulated Pi 4: {time.monotonic() - t0:.1f} s")


@pytest.fixture(scope="module")
def pi_bench(pi, block_cache):
    """A small bench of the shipped supernet on the emulated Pi (13 blocks + 7 subnets, 1 pass)."""
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec

    require_fmnist()
    spec_path, _, root = pi
    log: list[str] = []
    t0 = time.monotonic()
    result = run_bench(load_spec(spec_path), BenchOptions(**BENCH, supernet="default", out=root / "runs",
                                                          cache=block_cache, log=log.append))
    print(f"bench on the emulated Pi 4: {time.monotonic() - t0:.1f} s ({result.converted_now} converted, "
          f"{result.from_cache} from the cache; {result.seconds})")
    return result, log


def test_a_small_bench_runs_on_the_emulated_pi(pi_bench, pi):
    from ofa_edge.report.run import latency_validation

    result, log = pi_bench
    _, server, root = pi
    assert result.blocks == 13 and result.subnets == 7 and result.measured_now == 20, log
    blocks = json.loads((result.folder / "blocks.json").read_text())
    subnets = json.loads((result.folder / "subnets.json").read_text())
    ident = blocks["identity"]
    assert ident["machine"] == "aarch64" and ident["emulated"] is True
    assert ident["interpreter"] == "ai_edge_litert" and ident["runtime_version"] == "2.1.0"
    for row in blocks["blocks"] + subnets["subnets"]:
        assert row["passes"] == 1 and 0 < row["p10_ms"] <= row["p50_ms"] <= row["p90_ms"], row
    assert (result.folder / "latency_predictor.json").is_file()
    assert any(s["role"] == "validation" for s in subnets["subnets"])
    # the dashboard's predicted-vs-measured panel leaves the emulated device out
    assert latency_validation(root / "runs", blocks["space_id"])["devices"] == []
    assert list((server.home / "ofa-edge").iterdir()) == []  # the bench cleaned up on the device


def test_int8_deploy_on_the_emulated_pi_agrees_with_the_x86_host(pi, pi_bench, block_cache, run_cli):
    import jsonschema

    from ofa_edge.deploy import MANIFEST_SCHEMA

    spec, _, root = pi
    result, _ = pi_bench
    largest = json.loads((result.folder / "subnets.json").read_text())["subnets"][0]
    assert largest["kind"] == "largest"
    t0 = time.monotonic()
    # A budget no emulated (nor real) time meets: on an emulated device it is no failure.
    done = run_cli("deploy", "--spec", str(spec), "--runs", str(root / "runs"), "--out", str(root / "bundles"),
                   "--arch", largest["arch"], "--latency-ms", "0.01", "--eval-images", str(EVAL_IMAGES),
                   "--candidates", "1", "--no-bench", env={"OFA_EDGE_CACHE": str(block_cache)}, timeout=600)
    wall = time.monotonic() - t0
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bundle = root / "bundles" / SPEC_NAME
    m = json.loads((bundle / "manifest.json").read_text())
    jsonschema.validate(m, json.loads(MANIFEST_SCHEMA.read_text()))
    assert m["format"] == "tflite-int8" and m["verification"]["passed"]
    assert m["device"]["machine"] == "aarch64" and m["device"]["emulated"] is True
    assert m["accuracy"]["images"] == EVAL_IMAGES
    assert m["agreement"] >= 0.995, m["agreement"]
    assert m["accuracy"]["device"] == pytest.approx(m["accuracy"]["host_int8"], abs=0.005)
    latency = [c for c in m["verification"]["checks"] if "latency" in c["name"]]
    assert [(c["figure"], c["passed"], c["level"]) for c in latency] == [(NOT_APPLICABLE, None, "n/a")], latency
    assert m["latency_ms"]["budget"] == 0.01 and m["latency_ms"]["measured"]["value"] > 0.01  # timed, not judged
    assert NOT_APPLICABLE in m["latency_ms"]["source"]
    assert all(c["within_budget"] is None for c in m["latency_ms"]["candidates"])
    assert NOT_APPLICABLE in (bundle / "report.md").read_text()
    print(f"deploy on the emulated Pi 4: {wall:.1f} s; aarch64 int8 labels agree with the x86 host on "
          f"{m['agreement']:.2%} of {EVAL_IMAGES} test images (device top-1 {m['accuracy']['device']:.2%}, "
          f"host int8 {m['accuracy']['host_int8']:.2%})")


def test_reference_w10_int8_deploy_on_the_emulated_pi_agrees_with_the_x86_host(pi, imagenet_run, imagenet_val,
                                                                               block_cache, run_cli):
    """OFA's w1.0 (an imported reference supernet, random weights) on the aarch64 device: a small bench
    at 128 px (kernel-3, expand-3 blocks, 4 subnets), then an int8 --arch deploy verified on 100 real
    images in ImageNet's val layout. On the local device host and device share one interpreter; here
    they do not, so the agreement can fail."""
    import yaml

    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec

    spec_path, _, root = pi
    data = yaml.safe_load(spec_path.read_text())
    data.update(name="raspberry-pi4-emulated-imagenet", budgets={"resolution": [128, 224]})
    spec = root / "raspberry_pi4_emulated_imagenet.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    runs = root / "imagenet-runs"
    result = run_bench(load_spec(spec), BenchOptions(resolutions=[128], kernels=[3], expands=[3], subnets=4,
                                                     batch=32, progress=False, supernet=str(imagenet_run),
                                                     out=runs, cache=block_cache, log=lambda _: None))
    largest = json.loads((result.folder / "subnets.json").read_text())["subnets"][0]["arch"]
    t0 = time.monotonic()
    done = run_cli("deploy", "--spec", str(spec), "--supernet", str(imagenet_run), "--runs", str(runs),
                   "--out", str(runs / "bundles"), "--arch", largest, "--data", str(imagenet_val),
                   "--eval-images", "100", "--candidates", "1", "--no-bench", "--device", "cpu",
                   env={"OFA_EDGE_CACHE": str(block_cache)}, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    m = json.loads((runs / "bundles" / data["name"] / "manifest.json").read_text())
    assert m["verification"]["passed"] and m["format"] == "tflite-int8"
    assert m["device"]["machine"] == "aarch64" and m["supernet"]["id"] == "ofa-mbv3-w1.0"
    assert m["accuracy"]["images"] == 100 and m["dataset"]["kind"] == "imagenet"
    assert m["agreement"] >= 0.995, m["agreement"]
    int8_vs_fp32 = next(c for c in m["verification"]["checks"] if c["name"] == "int8 top-1 labels agree with torch fp32")
    print(f"w1.0 deploy on the emulated Pi 4: {time.monotonic() - t0:.1f} s; aarch64 int8 labels agree with the x86 "
          f"host on {m['agreement']:.2%} of 100 images; int8 vs torch fp32 labels {int8_vs_fp32['figure']:.2%}")
