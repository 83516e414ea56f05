"""ofa-edge bench against real devices: a real sshd on loopback and this machine (local).

They all share the session bench of conftest.ci_bench and its block cache, so the suite
converts each block once.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import sqlite3
from pathlib import Path

import pytest

from conftest import AWKWARD_DIR, CI_BENCH, COLD_CACHE, bench_spec_yaml
from fake_device import FakeDevice
from ofa_edge.devices.bench import BenchError, BenchOptions, arch_hash, plan_subnets, run_bench
from ofa_edge.devices.blocks import arch_blocks
from ofa_edge.devices.spec import load_spec
from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.searchspace import SearchSpace
from sshd import start_sshd


def _tables(folder: Path) -> tuple[dict, dict]:
    return (json.loads((folder / "blocks.json").read_text()), json.loads((folder / "subnets.json").read_text()))


def _rows(folder: Path) -> int:
    with sqlite3.connect(folder / "measurements.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]


def _spearman(a: list[float], b: list[float]) -> float:
    rank = lambda v: {i: r for r, i in enumerate(sorted(range(len(v)), key=v.__getitem__))}  # noqa: E731
    ra, rb = rank(a), rank(b)
    n = len(a)
    return 1 - 6 * sum((ra[i] - rb[i]) ** 2 for i in range(n)) / (n * (n * n - 1))


def test_bench_over_ssh_writes_block_table_and_whole_subnets(ci_bench, sshd_server):
    spec, options, result, _ = ci_bench
    blocks, subnets = _tables(result.folder)
    assert result.folder.parts[-2:] == ("ci-ssh", "ofa-mbv3-ci")
    assert blocks["coverage"] == {"resolutions": [28], "kernels": [3, 7], "expands": [3, 6],
                                  "depths": [2, 3, 4], "blocks": result.blocks}
    assert 3 < result.blocks <= 40 and result.subnets == 12
    assert result.measured_now == result.blocks + result.subnets
    assert result.converted_now + result.from_cache == result.measured_now
    if COLD_CACHE:
        assert result.converted_now == result.measured_now
    ident = blocks["identity"]
    assert ident["runtime"] == "tflite" and ident["interpreter"] == "ai_edge_litert"
    assert ident["runtime_version"] and ident["threads"] == 1 and ident["spec"] == "ci-ssh"
    roles = {b["role"] for b in blocks["blocks"]}
    assert roles == {"stem", "first", "mbconv", "head"}
    for b in blocks["blocks"]:
        assert 0 < b["p10_ms"] <= b["p50_ms"] <= b["p90_ms"] and b["median_ms"] == b["p50_ms"]
        assert b["passes"] == 3 and len(b["pass_p50_ms"]) == 3 and len(b["per_repeat_ms"]) == 3
        assert b["p50_ms"] == pytest.approx(sorted(b["pass_p50_ms"])[1])  # the median over passes
        assert b["cov"] >= 0 and len(b["sha256"]) == 64
    kinds = [s["kind"] for s in subnets["subnets"]]
    assert kinds[:2] == ["largest", "smallest"] and kinds.count("random") == 10
    assert {s["role"] for s in subnets["subnets"]} == {"calibration", "validation"}
    measured = [s["p10_ms"] for s in subnets["subnets"]]
    summed = [s["blocks_sum_ms"] for s in subnets["subnets"]]
    assert measured[0] > measured[1] and summed[0] > summed[1]  # largest slower than smallest
    assert _spearman(summed, measured) > 0.5, (summed, measured)
    # Every block the measured subnets run is in the table.
    space = SearchSpace("ofa-mbv3-ci")
    ids = {b["id"] for b in blocks["blocks"]}
    (classes,) = {b["out_c"] for b in blocks["blocks"] if b["role"] == "head"}
    for s in subnets["subnets"]:
        assert {k.id for k in arch_blocks(space.preset, space.parse(s["arch"]), classes)} <= ids
    # The remote work dir (with spaces and quotes in its name) is cleaned, the lock released.
    work = sshd_server.home / AWKWARD_DIR
    assert work.is_dir() and list(work.iterdir()) == []


def test_second_run_resumes_and_measures_nothing(ci_bench):
    spec, options, result, _ = ci_bench
    before_rows, (before_blocks, _) = _rows(result.folder), _tables(result.folder)
    log: list[str] = []
    again = run_bench(spec, dataclasses.replace(options, log=log.append))
    assert again.measured_now == 0 and again.converted_now == 0
    assert _rows(result.folder) == before_rows == 3 * (result.blocks + result.subnets)
    after_blocks, _ = _tables(result.folder)
    assert [b["median_ms"] for b in after_blocks["blocks"]] == [b["median_ms"] for b in before_blocks["blocks"]]
    assert any("0 passes to go" in line for line in log), log


def test_cli_quick_bench_on_the_local_device_reuses_the_block_cache(ci_bench, tmp_path, block_cache, run_cli,
                                                                    ci_supernet):
    _, _, first, _ = ci_bench
    spec = bench_spec_yaml(tmp_path / "local.yaml", {"transport": "local"}, str(tmp_path / "work"), name="ci-local")
    done = run_cli("bench", "--spec", str(spec), "--quick", "--supernet", str(ci_supernet), "--resolution", "28",
                   "--kernels", "3,7", "--expands", "3,6", "--subnets", "10", "--out", str(tmp_path / "runs"),
                   "--cache", str(block_cache))
    assert done.returncode == 0, done.stderr[-2000:]
    total = first.blocks + first.subnets
    assert f"measured {total} models now (0 converted, {total} from the cache)" in done.stdout
    assert "ledger: bench:" in done.stdout
    folder = tmp_path / "runs" / "ci-local" / "ofa-mbv3-ci"
    blocks, subnets = _tables(folder)
    assert blocks["identity"]["spec"] == "ci-local" and blocks["identity_id"] != first.identity
    assert blocks["method"]["quick"] is True and blocks["method"]["repeats"] == 3
    assert blocks["method"]["runs_per_repeat"] == 40 and blocks["method"]["passes"] == 3
    assert len(blocks["blocks"]) == first.blocks and len(subnets["subnets"]) == first.subnets


def test_killing_sshd_mid_bench_is_a_clear_error_and_the_rerun_completes(ci_bench, tmp_path):
    _, options, first, _ = ci_bench
    server = start_sshd(tmp_path / "sshd")
    try:
        spec = load_spec(bench_spec_yaml(tmp_path / "dying.yaml", server.connection(connect_timeout_s=3),
                                         f"{server.home}/work", name="ci-dying"))

        def kill_after_two_batches(stored: int) -> None:
            if stored >= 8:
                server.stop()

        dying = dataclasses.replace(options, out=tmp_path / "runs", batch=4, after_batch=kill_after_two_batches,
                                    log=lambda _: None)
        with pytest.raises(BenchError) as caught:
            run_bench(spec, dying, reconnect_delays=(0.1,))
        message = str(caught.value)
        assert "lost the device" in message and "run the same command again" in message and "\n" not in message
        folder = tmp_path / "runs" / "ci-dying" / "ofa-mbv3-ci"
        stored = _rows(folder)
        assert stored == 8
        assert not (folder / "blocks.json").exists()  # nothing half-written
        server.start()
        log: list[str] = []
        result = run_bench(spec, dataclasses.replace(dying, after_batch=None, log=log.append))
        assert result.passes_now == 3 * (first.blocks + first.subnets) - stored
        assert _rows(folder) == 3 * (first.blocks + first.subnets)
        assert any("stale bench lock" in line for line in log), log  # the dead run's lock
        blocks, subnets = _tables(folder)
        assert len(blocks["blocks"]) == first.blocks and len(subnets["subnets"]) == first.subnets
    finally:
        server.stop()


def test_a_lock_held_by_another_bench_is_refused_then_broken_on_request(ci_bench, tmp_path):
    _, options, _, _ = ci_bench
    work = tmp_path / "work"
    spec = load_spec(bench_spec_yaml(tmp_path / "locked.yaml", {"transport": "local"}, str(work), name="ci-locked"))
    (work / "bench.lock").mkdir(parents=True)
    (work / "bench.lock" / "owner").write_text(json.dumps({"host": "other-" + socket.gethostname(), "pid": 1}))
    quiet = dataclasses.replace(options, out=tmp_path / "runs", subnets=0, log=lambda _: None)
    with pytest.raises(BenchError, match="another bench is measuring this device"):
        run_bench(spec, quiet)
    result = run_bench(spec, dataclasses.replace(quiet, break_lock=True))
    assert result.measured_now == result.blocks + 2 and not (work / "bench.lock").exists()


def test_cli_bench_refuses_an_unknown_host_key(sshd_server, tmp_path, run_cli, ci_supernet):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    spec = bench_spec_yaml(tmp_path / "unknown.yaml", sshd_server.connection(known_hosts=str(empty)),
                           "~/work", name="ci-unknown")
    done = run_cli("bench", "--spec", str(spec), "--supernet", str(ci_supernet), "--resolution", "28",
                   "--subnets", "0", "--out", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "host key" in done.stderr.lower() and sshd_server.host_key_fingerprint in done.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.tflite"))


def test_mcu_and_bad_coverage_are_clear_errors(repo, tmp_path, ci_supernet):
    with pytest.raises(BenchError, match="cost_model"):
        run_bench(load_spec(repo / "device_specs" / "stm32f746.yaml"), BenchOptions(progress=False))
    spec = load_spec(bench_spec_yaml(tmp_path / "s.yaml", {"transport": "local"}, str(tmp_path / "w")))
    with pytest.raises(BenchError, match="kernel choices"):
        run_bench(spec, BenchOptions(**{**CI_BENCH, "kernels": [9]}, supernet=str(ci_supernet), out=tmp_path,
                                     log=lambda _: None))
    with pytest.raises(BenchError, match="not in space"):
        run_bench(spec, BenchOptions(**{**CI_BENCH, "resolutions": [30]}, supernet=str(ci_supernet), out=tmp_path,
                                     log=lambda _: None))


def test_validation_subnets_are_chosen_by_hash_before_measuring():
    space = SearchSpace("ofa-mbv3-tiny")
    rows = plan_subnets(space, 100, seed=0)
    assert len(rows) == 102 and len({r["arch"] for r in rows}) == 102
    validation = [r for r in rows if r["role"] == "validation"]
    assert len(validation) == 30 and all(r["kind"] == "random" for r in validation)
    assert plan_subnets(space, 100, seed=0) == rows  # seeded
    # By hash: every validation arch hashes below every random calibration arch.
    calibration = [r for r in rows if r["role"] == "calibration" and r["kind"] == "random"]
    assert max(arch_hash(space.parse(r["arch"])) for r in validation) < \
        min(arch_hash(space.parse(r["arch"])) for r in calibration)


# --------------------------------------------------------------------------- mock transport

def _mock_bench(ci_bench, tmp_path, device: FakeDevice, **mock_kwargs):
    from ofa_edge.devices.transports import MockTransport

    _, options, _, _ = ci_bench
    spec = load_spec(bench_spec_yaml(tmp_path / "mock.yaml", {"transport": "local"}, "/dev/fake", name="ci-mock"))
    transport = MockTransport(device, **mock_kwargs)
    device.transport = transport
    quiet = dataclasses.replace(options, out=tmp_path / "runs", subnets=0, batch=4, log=lambda _: None)
    return spec, quiet, transport


def test_mock_protocol_mismatch_is_one_clear_error(ci_bench, tmp_path):
    spec, options, transport = _mock_bench(ci_bench, tmp_path, FakeDevice(protocol=99))
    with pytest.raises(OfaEdgeError, match="protocol 99"):
        run_bench(spec, options, transport=transport)


def test_mock_wrong_sha256_is_refused(ci_bench, tmp_path):
    spec, options, transport = _mock_bench(ci_bench, tmp_path, FakeDevice(corrupt=True))
    with pytest.raises(BenchError, match="corrupt or stale"):
        run_bench(spec, options, transport=transport)


def test_mock_timeout_and_dropped_link_keep_what_was_measured(ci_bench, tmp_path):
    # Every `time` call takes 5 fake seconds; the sixth (3 baseline calls of the reference model,
    # then two batches) is over its timeout.
    slow = iter([5.0] * 5 + [10_000.0])
    latency = lambda text: next(slow) if " time " in text else 0.0  # noqa: E731
    spec, options, transport = _mock_bench(ci_bench, tmp_path, FakeDevice(), latency=latency)
    with pytest.raises(BenchError, match="timed out") as caught:
        run_bench(spec, options, transport=transport)
    assert "run the same command again" in str(caught.value)
    folder = tmp_path / "runs" / "ci-mock" / "ofa-mbv3-ci"
    assert _rows(folder) == 8
    # Resume over a link that drops on its 40th call (in the fourth batch), then once more to the end.
    spec, options, transport = _mock_bench(ci_bench, tmp_path, FakeDevice(), faults={40: "drop"})
    with pytest.raises(BenchError, match="lost the device"):
        run_bench(spec, options, transport=transport)
    partial = _rows(folder)
    assert partial > 8
    spec, options, transport = _mock_bench(ci_bench, tmp_path, FakeDevice())
    result = run_bench(spec, options, transport=transport)
    assert result.passes_now == 3 * (result.blocks + 2) - partial
    blocks, _ = _tables(folder)
    assert blocks["identity"]["cpu"] == "fake" and len(blocks["blocks"]) == result.blocks


def test_mock_throttling_during_a_call_is_warned_and_recorded(ci_bench, tmp_path):
    reason = "cpu1 clock 1800 -> 600 MHz"
    spec, options, transport = _mock_bench(ci_bench, tmp_path, FakeDevice(throttled={5: reason}))
    log: list[str] = []
    run_bench(spec, dataclasses.replace(options, log=log.append), transport=transport)
    assert [line for line in log if "throttled" in line] == [
        f"warning: the device throttled during a timing call ({reason}); recorded with those measurements"]
    folder = tmp_path / "runs" / "ci-mock" / "ofa-mbv3-ci"
    _, subnets = _tables(folder)
    assert subnets["throttled_calls"] == [reason]
    with sqlite3.connect(folder / "measurements.sqlite") as db:
        stored = [json.loads(s).get("throttled") for (s,) in db.execute("SELECT stats FROM measurements")]
    assert stored.count(reason) >= 1 and stored.count(None) > stored.count(reason)


def test_runner_sees_a_clock_drop_or_a_firmware_flag_as_throttling():
    from ofa_edge.devices.runner.state import throttling_between

    before = {"cores": [{"cpu": 1, "cur_mhz": 1800.0}], "throttled": None}
    assert throttling_between(before, {"cores": [{"cpu": 1, "cur_mhz": 1750.0}]}) is None
    assert throttling_between(before, {"cores": [{"cpu": 1, "cur_mhz": 600.0}]}) == "cpu1 clock 1800 -> 600 MHz"
    flags = {"cores": [], "throttled": {"flags": "0x50005", "now": ["under-voltage", "throttled"], "since_boot": []}}
    assert throttling_between(before, flags) == "firmware: under-voltage, throttled"


def _stored_passes(folder: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(folder / "measurements.sqlite") as db:
        rows = db.execute("SELECT key, pass, p10_ms, p50_ms, p90_ms, attempts, flagged, drift FROM measurements "
                          "ORDER BY key, pass").fetchall()
    out: dict[str, list[tuple]] = {}
    for key, *rest in rows:
        out.setdefault(key, []).append(tuple(rest))
    return out


def test_mock_a_batch_whose_timings_jump_is_measured_again(ci_bench, tmp_path):
    """Timings jump by 30% for one runner call (the 5th: the second batch of the first pass).
    The reference model beside the batch jumps too, so the batch is measured again, and every
    stored figure is the undisturbed one."""
    device = FakeDevice(factors={5: 1.3})
    spec, options, transport = _mock_bench(ci_bench, tmp_path, device)
    result = run_bench(spec, options, transport=transport)
    folder = tmp_path / "runs" / "ci-mock" / "ofa-mbv3-ci"
    passes = _stored_passes(folder)
    again = [(key, row) for key, rows in passes.items() for row in rows if row[4] == 2]  # (pass, p10, p50, p90,
    assert len(again) == 4 and all(row[0] == 0 and row[5] == 0 for _, row in again)  # attempts, flagged, drift)
    blocks, subnets = _tables(folder)
    for row in blocks["blocks"] + subnets["subnets"]:
        assert row["p50_ms"] == pytest.approx(FakeDevice.base_ms(row["sha256"]), abs=1e-6)
        assert row["pass_p50_ms"] == [pytest.approx(row["p50_ms"], abs=1e-6)] * 3
    assert subnets["drift"]["passes_remeasured"] == 4 and subnets["drift"]["passes_flagged"] == 0
    assert subnets["drift"]["calls_over_limit"] == 1 and subnets["drift"]["max_abs_drift"] == pytest.approx(0.3)
    assert result.drift["passes_remeasured"] == 4
    # A jump that does not go away is kept after the retries, flagged and counted.
    stuck = FakeDevice(factors={n: 1.3 for n in range(5, 8)})
    (tmp_path / "stuck").mkdir()
    spec, options, transport = _mock_bench(ci_bench, tmp_path / "stuck", stuck)
    run_bench(spec, options, transport=transport)
    _, subnets = _tables(tmp_path / "stuck" / "runs" / "ci-mock" / "ofa-mbv3-ci")
    assert subnets["drift"]["passes_flagged"] == 4 and subnets["drift"]["calls_over_limit"] == 3


@pytest.mark.parametrize("statistic,key", [("p90", "p90_ms"), ("median", "p50_ms")])
def test_mock_skewed_timings_store_the_spec_statistic(ci_bench, tmp_path, statistic, key):
    """Per-run times skewed so that p10, p50 and p90 differ; every pass a little different. The
    figure in blocks.json, subnets.json and the predictor is the spec's percentile of a pass, then
    the median over passes."""
    import statistics as st

    import yaml

    from ofa_edge.predictors.latency import LatencyPredictor

    factors = {n: 1 + 0.002 * n for n in range(4, 200)}  # every call a little slower, within the drift limit
    spec, options, transport = _mock_bench(ci_bench, tmp_path, FakeDevice(factors=factors))
    data = yaml.safe_load(Path(spec.source).read_text())
    data["measure"]["statistic"] = statistic
    Path(spec.source).write_text(yaml.safe_dump(data))
    spec = load_spec(spec.source)
    run_bench(spec, dataclasses.replace(options, subnets=6), transport=transport)
    folder = tmp_path / "runs" / "ci-mock" / "ofa-mbv3-ci"
    passes = _stored_passes(folder)
    column = {"p10_ms": 1, "p50_ms": 2, "p90_ms": 3}[key]
    blocks, subnets = _tables(folder)
    predictor = LatencyPredictor.load(folder)
    assert predictor.statistic == statistic and blocks["method"]["statistic"] == statistic
    with sqlite3.connect(folder / "measurements.sqlite") as db:
        reference = {(key_, p): json.loads(stats)["reference_p50_ms"]
                     for key_, p, stats in db.execute("SELECT key, pass, stats FROM measurements")}
    level = st.median(reference.values())  # the reference model's level over the whole bench
    for row in blocks["blocks"] + subnets["subnets"]:
        name = row["id"] if "id" in row else row["arch"]
        rows = passes[name]
        assert len(rows) == 3 and len({r[column] for r in rows}) > 1  # the raw passes differ
        # drift-corrected by the reference in the same runner call, then the median over passes
        corrected = [r[column] * level / reference[name, r[0]] for r in rows]
        assert row[key] == pytest.approx(st.median(corrected), abs=2e-6)
        assert row["raw_p50_ms"] == pytest.approx(st.median(r[2] for r in rows), abs=1e-6)
        assert row["p10_ms"] < row["p50_ms"] < row["p90_ms"]
        # every call was a little slower, and the reference was too: the correction takes it out
        assert max(corrected) - min(corrected) < 1e-5 < max(r[column] for r in rows) - min(r[column] for r in rows)
    for b in blocks["blocks"]:
        assert predictor.table[b["id"]] == pytest.approx(b[key])
    for s in subnets["subnets"]:
        assert s["blocks_sum_ms"] == pytest.approx(s["blocks_sum"][key])
    # Another statistic needs no new bench: search refits from the stored figures.
    from ofa_edge.predictors.latency import predictor_for

    other = "p10" if statistic != "p10" else "median"
    refit = predictor_for(folder, other)
    assert refit.statistic == other and LatencyPredictor.load(folder).statistic == other
    assert refit.table[blocks["blocks"][0]["id"]] == pytest.approx(blocks["blocks"][0]["p10_ms"])


def test_jetson_like_fp16_onnx_bench_without_cuda_is_refused_then_runs_on_the_cpu(ci_bench, tmp_path, ci_supernet):
    """The Jetson spec's runtime (onnxruntime fp16, CUDA then CPU providers) on this machine: the
    readiness check refuses it before converting anything (onnxruntime would silently fall back to
    the CPU); with the CPU provider alone, fp16 ONNX benches."""
    import yaml

    _, options, first, _ = ci_bench
    path = bench_spec_yaml(tmp_path / "jetson-like.yaml", {"transport": "local"}, str(tmp_path / "work"),
                           name="ci-jetson-like")
    data = yaml.safe_load(path.read_text())
    data["runtime"] = {"name": "onnxruntime", "version": "1.23.0", "max_opset": 15, "threads": 1,
                       "execution_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    data["precision"] = "fp16"
    path.write_text(yaml.safe_dump(data))
    quiet = dataclasses.replace(options, out=tmp_path / "runs", subnets=0, cache=tmp_path / "cache",
                                log=lambda _: None)
    with pytest.raises(OfaEdgeError, match="execution providers CUDAExecutionProvider are not available"):
        run_bench(load_spec(path), quiet)
    assert not (tmp_path / "cache").exists() or not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
    data["runtime"]["execution_providers"] = ["CPUExecutionProvider"]
    path.write_text(yaml.safe_dump(data))
    result = run_bench(load_spec(path), dataclasses.replace(quiet, cache=options.cache))
    blocks, _ = _tables(result.folder)
    assert blocks["format"] == "onnx-fp16" and blocks["identity"]["runtime"] == "onnxruntime"
    assert blocks["identity"]["execution_providers"] == ["CPUExecutionProvider"]
    assert result.measured_now == first.blocks + 2
    if COLD_CACHE:
        assert result.converted_now == result.measured_now  # a new format: nothing cached for it yet
    for b in blocks["blocks"]:
        assert b["runtime"]["name"] == "onnxruntime" and b["runtime"]["providers"] == ["CPUExecutionProvider"]


def test_cached_onnx_files_are_keyed_by_the_opset_the_device_reads():
    """A device whose onnxruntime reads opset 15 must not be handed a cached opset-17 file (the
    suite's Python 3.6 device once was); TFLite files do not depend on it."""
    from types import SimpleNamespace

    from converters import FORMATS
    from ofa_edge.devices.bench import Bench

    def key(fmt: str, max_opset):
        return Bench._converter_key(SimpleNamespace(fmt=FORMATS[fmt],
                                                    spec=SimpleNamespace(runtime=SimpleNamespace(max_opset=max_opset))))

    assert key("onnx-fp32", 15) != key("onnx-fp32", None) == key("onnx-fp32", 99)
    assert key("onnx-fp16", 15).endswith("-opset15")
    assert key("tflite-int8", 15) == key("tflite-int8", None)
