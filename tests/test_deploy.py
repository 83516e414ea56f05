"""ofa-edge deploy end to end with the shipped supernet, on this machine and over a real sshd:
search, extract, BN recalibration, int8 TFLite, host checks, push, device eval and timing, bundle."""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

import pytest

from conftest import CI_BENCH, bench_spec_yaml, require_fmnist
from ofa_edge.deploy import DeployOptions, deploy
from ofa_edge.devices.bench import BenchOptions, run_bench
from ofa_edge.devices.spec import load_spec

MANIFEST_KEYS = {"schema_version", "spec", "device", "supernet", "arch", "costs", "accuracy", "agreement",
                 "latency_ms", "files", "versions", "verification", "input", "created"}


# A user's own folders in the device's work dir, named like what older ofa-edge versions made and
# removed: bench and deploy must leave them alone.
USER_FOLDERS = ("deploy", "deploy-timing", "bench-ofa-mbv3-tiny")


def _user_folders(work: Path) -> dict[str, bytes]:
    return {f"{name}/mine.txt": (work / name / "mine.txt").read_bytes() for name in USER_FOLDERS
            if (work / name / "mine.txt").is_file()}


@pytest.fixture(scope="module")
def benched(tmp_path_factory, block_cache, sshd_server):
    """Local and ssh devices, each benched on part of the shipped supernet's space (28 px,
    kernels 3/7, expands 3/6), sharing the block cache. The ssh device's spec says
    ``python: ~/venv/bin/python3`` and ``work_dir: $HOME/deploy work`` (expanded on the device);
    both work dirs hold a user's own folders."""
    require_fmnist()
    root = tmp_path_factory.mktemp("deploy")
    venv_python = Path(sshd_server.home) / "venv" / "bin" / "python3"  # a venv-like wrapper under ~
    venv_python.parent.mkdir(parents=True, exist_ok=True)
    venv_python.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    venv_python.chmod(0o755)
    specs = {"local": load_spec(bench_spec_yaml(root / "dl.yaml", {"transport": "local"}, str(root / "work"),
                                                name="deploy-local")),
             "ssh": load_spec(bench_spec_yaml(root / "ds.yaml", sshd_server.connection(), "$HOME/deploy work",
                                              name="deploy-ssh", python="~/venv/bin/python3"))}
    works = {"local": root / "work", "ssh": Path(sshd_server.home) / "deploy work"}
    for work in works.values():
        for name in USER_FOLDERS:
            (work / name).mkdir(parents=True, exist_ok=True)
            (work / name / "mine.txt").write_text(f"the user's own {name}")
    for spec in specs.values():
        run_bench(spec, BenchOptions(**CI_BENCH, supernet="default", out=root / "runs", cache=block_cache,
                                     log=lambda _: None))
    return root, specs, works


def _options(root: Path, **kw) -> DeployOptions:
    kw = {"out": root / "bundles", "log": lambda _: None, **kw}
    return DeployOptions(runs=root / "runs", eval_images=400, bn_images=500, **kw)


def _check_bundle(bundle: Path) -> dict:
    """The manifest validates against its schema, and every file matches its size and sha256."""
    import jsonschema

    from ofa_edge.deploy import MANIFEST_SCHEMA

    manifest = json.loads((bundle / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads(MANIFEST_SCHEMA.read_text()))
    assert MANIFEST_KEYS <= set(manifest)
    assert sorted(f["name"] for f in manifest["files"]) == sorted(
        p.name for p in bundle.iterdir() if p.name not in ("manifest.json", "report.md"))
    for f in manifest["files"]:
        data = (bundle / f["name"]).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    assert (bundle / "report.md").read_text().startswith("# ofa-edge bundle")
    return manifest


@pytest.mark.parametrize("device", ["local", "ssh"])
def test_deploy_end_to_end_passes_verification(benched, device):
    root, specs, works = benched
    lines: list[str] = []
    result = deploy(specs[device], _options(root, log=lines.append))
    assert result.passed, result.manifest["verification"]
    steps = [line.split(" ", 1)[0] for line in lines if line[:2].rstrip("/").isdigit()]
    assert steps == [f"{i}/10" for i in range(1, 11)]
    m = _check_bundle(result.bundle)
    assert result.bundle == root / "bundles" / specs[device].name
    assert m["format"] == "tflite-int8" and m["input"]["dtype"] == "int8" and m["input"]["resolution"] == 28
    acc = m["accuracy"]
    assert 0.5 < acc["host_fp32"] <= 1 and acc["host_fp32"] - acc["host_int8"] <= 0.02
    assert m["agreement"] >= 0.995 and acc["device"] == pytest.approx(acc["host_int8"], abs=0.005)
    assert m["latency_ms"]["measured"]["median"] > 0 and m["latency_ms"]["predicted"] > 0
    assert m["supernet"]["sha256"] and m["device"]["spec"] == specs[device].name
    arch = m["arch"]
    assert arch.startswith("r28|") and all(tok[1] in "37" and tok[3] in "36" for tok in arch[4:].replace("|", ",").split(","))
    names = {c["name"] for c in m["verification"]["checks"]}
    assert {"the device ran the file that was pushed", "device labels agree with the host reference",
            "no float tensors in the full-int8 model", "int8 top-1 drop from fp32"} <= names
    # Nothing that ofa-edge did not make was touched; its own run folders are gone.
    work = works[device]
    assert _user_folders(work) == {f"{n}/mine.txt": f"the user's own {n}".encode() for n in USER_FOLDERS}
    assert sorted(p.name for p in work.iterdir()) == sorted(USER_FOLDERS), list(work.iterdir())
    assert (m["device"]["delegate"], m["device"]["delegate_requested"]) == ("xnnpack", "xnnpack")
    if device == "ssh":  # ~ and $HOME were expanded on the device
        assert m["device"]["machine"] and "ready" in " ".join(lines)


def test_a_model_corrupted_on_the_device_fails_verification(benched):
    root, specs, _ = benched

    def damage(transport, remote_model):  # trailing bytes: the file still loads, its sha256 changes
        transport.run(f"printf 'damaged' >> {shlex.quote(remote_model)}", timeout=30).check("damage")

    result = deploy(specs["local"], _options(root, after_push=damage, out=root / "damaged"))
    assert not result.passed
    failed = [c["name"] for c in result.manifest["verification"]["checks"] if not c["passed"]]
    assert "the device ran the file that was pushed" in failed
    m = _check_bundle(result.bundle)
    assert m["verification"]["passed"] is False
    assert "FAILED" in (result.bundle / "report.md").read_text()


def test_cli_deploy_without_a_bench_and_no_bench_says_what_to_run(tmp_path, run_cli, repo):
    spec = bench_spec_yaml(tmp_path / "nb.yaml", {"transport": "local"}, str(tmp_path / "w"), name="never-benched")
    done = run_cli("deploy", "--spec", str(spec), "--no-bench", "--runs", str(tmp_path / "runs"),
                   "--out", str(tmp_path / "bundles"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "ofa-edge bench --spec" in done.stderr and "--quick" in done.stderr
    assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())


def test_the_schema_rejects_a_broken_manifest(tmp_path):
    import jsonschema

    from ofa_edge.deploy import MANIFEST_SCHEMA

    schema = json.loads(MANIFEST_SCHEMA.read_text())
    example = json.loads((Path(__file__).parents[1] / "benchmarks/example_bundle/local/manifest.json").read_text())
    jsonschema.validate(example, schema)
    for key, bad in (("accuracy", {**example["accuracy"], "device": 91.0}),  # a percentage, not a fraction
                     ("files", [{"name": "model.tflite", "bytes": 10}]),     # no sha256
                     ("schema_version", 2)):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**example, key: bad}, schema)


@pytest.mark.parametrize("precision,check", [("fp32", "outputs match torch"), ("fp16", "labels agree with torch fp32")])
def test_onnx_deploy_checks_the_format_against_torch(benched_onnx, precision, check):
    """fp32 ONNX: outputs within 1e-4 of torch; fp16 ONNX: top-1 labels agree on >= 99.5%."""
    root, spec = benched_onnx[precision]
    result = deploy(spec, _options(root, out=root / "bundles"))
    assert result.passed, result.manifest["verification"]
    m = _check_bundle(result.bundle)
    assert m["format"] == f"onnx-{precision}" and m["input"]["layout"] == "NCHW"
    (parity,) = [c for c in m["verification"]["checks"] if check in c["name"]]
    assert parity["passed"]
    if precision == "fp32":
        assert parity["threshold"] == 1e-4 and parity["figure"] <= 1e-4
    else:
        assert parity["threshold"] == 0.995 and parity["figure"] >= 0.995


@pytest.fixture(scope="module")
def benched_onnx(tmp_path_factory, block_cache):
    """Local ONNX Runtime devices (fp32 and fp16), benched like ``benched``."""
    import yaml

    require_fmnist()
    root = tmp_path_factory.mktemp("deploy-onnx")
    out = {}
    for precision in ("fp32", "fp16"):
        path = bench_spec_yaml(root / f"o{precision}.yaml", {"transport": "local"}, str(root / f"w{precision}"),
                               name=f"deploy-onnx-{precision}")
        data = yaml.safe_load(path.read_text())
        data["runtime"].pop("delegate")
        data["runtime"].update(name="onnxruntime", version="1.23.0", execution_providers=["CPUExecutionProvider"])
        data["precision"] = precision
        path.write_text(yaml.safe_dump(data))
        spec = load_spec(path)
        assert spec.runtime.name == "onnxruntime" and spec.precision == precision
        run_bench(spec, BenchOptions(**CI_BENCH, supernet="default", out=root / "runs", cache=block_cache,
                                     log=lambda _: None))
        out[precision] = (root, spec)
    return out


def test_cli_deploy_exits_1_and_lists_the_failed_checks(monkeypatch, capsys, tmp_path):
    """The CLI's side of a failed verification (the pipeline's own is tested above)."""
    import ofa_edge.deploy as deploy_module
    from ofa_edge.cli import main
    from ofa_edge.deploy import DeployResult

    failed = {"verification": {"passed": False, "checks": [
        {"name": "the device ran the file that was pushed", "passed": False, "level": "fail",
         "figure": "c3dc1b39", "threshold": "a1b2c3d4"},
        {"name": "measured latency vs predicted", "passed": False, "level": "warn", "figure": 0.2, "threshold": 0.1}]}}
    monkeypatch.setattr(deploy_module, "deploy", lambda spec, options: DeployResult(tmp_path, False, failed))
    assert main(["deploy", "--spec", "local"]) == 1
    err = capsys.readouterr().err
    assert "verification failed: the device ran the file that was pushed: c3dc1b39 against a1b2c3d4" in err
    assert "latency" not in err
    assert str(tmp_path / "report.md") in err
    # over the latency budget: the figures, and what to do
    failed["latency_ms"] = {"measured": {"value": 0.47}, "budget": 0.4,
                            "choice": "best candidate measured 0.470 ms (median) against a 0.4 ms budget after 2 "
                                      "re-searches"}
    assert main(["deploy", "--spec", "local"]) == 1
    err = capsys.readouterr().err
    assert "best candidate measured 0.470 ms (median) against a 0.4 ms budget after 2 re-searches; re-bench with " \
           "ofa-edge bench --spec" in err


def test_over_budget_fails_and_never_replaces_a_passed_bundle(benched):
    """A budget is a promise: the same subnet under a budget it cannot meet fails a check (not a
    warning), goes to <spec>.failed/, and the bundle that passed before is left byte for byte."""
    root, specs, _ = benched
    out = root / "promise"
    good = deploy(specs["local"], _options(root, out=out))
    assert good.passed and good.bundle == out / specs["local"].name
    before = {p.name: p.read_bytes() for p in good.bundle.iterdir()}
    measured = good.manifest["latency_ms"]["measured"][good.manifest["latency_ms"]["statistic"]]
    bad = deploy(specs["local"], _options(root, out=out, arch=good.manifest["arch"], latency_ms=measured / 10))
    assert not bad.passed and bad.bundle == out / f"{specs['local'].name}.failed"
    (check,) = [c for c in bad.manifest["verification"]["checks"] if "within the budget" in c["name"]]
    assert check["level"] == "fail" and not check["passed"] and check["threshold"] == measured / 10
    assert {p.name: p.read_bytes() for p in good.bundle.iterdir()} == before
    assert _check_bundle(bad.bundle)["verification"]["passed"] is False


# --------------------------------------------------------------------------- budgets, on a mock device

def _mock_deploy(benched, figures: list[float], **kw):
    """Deploy to a MockTransport device named like the local one (so its predictor is used) whose
    n-th candidate measures ``figures[n]`` ms (median), against a 1 ms budget."""
    from fake_device import FakeDevice, RankedTimes

    from ofa_edge.devices.transports import MockTransport

    root, specs, _ = benched
    spec = load_spec(bench_spec_yaml(root / "mock.yaml", {"transport": "local"}, "/dev/fake",
                                     name=specs["local"].name))
    device = FakeDevice(ms=RankedTimes(figures))
    device.transport = MockTransport(device)
    lines: list[str] = []
    result = deploy(spec, _options(root, transport=device.transport, latency_ms=1.0, log=lines.append, **kw))
    return result, lines


def test_mock_over_budget_candidate_makes_deploy_search_again_and_ship_the_next(benched):
    root, _, _ = benched
    out = root / "mock-budget"
    result, lines = _mock_deploy(benched, [2.0, 0.5], out=out)
    assert result.passed and result.bundle == out / "deploy-local"
    lat = _check_bundle(result.bundle)["latency_ms"]
    first, second = lat["candidates"]
    assert first["measured_ms"] == pytest.approx(2.0) and first["within_budget"] is False
    assert second["measured_ms"] == pytest.approx(0.5) and second["within_budget"] is True
    # the re-search's budget is the budget scaled by the first candidate's predicted/measured
    assert second["search_budget_ms"] <= 1.0 * first["predicted_ms"] / 2.0 * (1 + 1e-9)
    assert second["predicted_ms"] <= second["search_budget_ms"]
    assert result.manifest["arch"] == second["arch"] != first["arch"]
    assert lat["statistic"] == "median" and lat["measured"]["value"] == pytest.approx(0.5)
    assert lat["measured"]["passes"] == 3 and lat["budget"] == 1.0
    (check,) = [c for c in result.manifest["verification"]["checks"] if "within the budget" in c["name"]]
    assert check["passed"] and check["basis"] == "measured" and check["figure"] == pytest.approx(0.5)
    assert any("re-search 1" in line for line in lines), lines


def test_mock_no_candidate_within_budget_fails_with_figures_and_keeps_the_passed_bundle(benched):
    root, _, _ = benched
    out = root / "mock-none"
    good, _ = _mock_deploy(benched, [0.5], out=out)
    assert good.passed
    before = {p.name: p.read_bytes() for p in good.bundle.iterdir()}
    bad, lines = _mock_deploy(benched, [2.0, 1.6, 1.2], out=out)
    assert not bad.passed and bad.bundle == out / "deploy-local.failed"
    lat = _check_bundle(bad.bundle)["latency_ms"]
    assert [c["measured_ms"] for c in lat["candidates"]] == pytest.approx([2.0, 1.6, 1.2])  # --candidates 3
    assert len({c["arch"] for c in lat["candidates"]}) == 3
    assert bad.manifest["arch"] == lat["candidates"][-1]["arch"]  # the fastest goes to verification
    assert lat["choice"].startswith("best candidate measured 1.200 ms (median) against a 1 ms budget after 2 "
                                    "re-searches")
    (check,) = [c for c in bad.manifest["verification"]["checks"] if "within the budget" in c["name"]]
    assert check["level"] == "fail" and not check["passed"] and check["figure"] == pytest.approx(1.2)
    assert {p.name: p.read_bytes() for p in good.bundle.iterdir()} == before
    one, _ = _mock_deploy(benched, [2.0], out=out, candidates=1)
    assert not one.passed and len(one.manifest["latency_ms"]["candidates"]) == 1
