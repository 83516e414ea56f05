"""`ofa-edge devices check` on this machine and against a real OpenSSH server on loopback."""
from __future__ import annotations

import json
import sys

import yaml

from conftest import REPO
from ofa_edge.devices.check import check_device
from ofa_edge.devices.spec import load_spec


def _ssh_spec(tmp_path, server, **connection):
    data = yaml.safe_load((REPO / "device_specs" / "raspberry_pi4.yaml").read_text())
    data["name"] = "loopback"
    data["hardware"]["cores"] = 2
    data["runtime"]["threads"] = 1
    data["runtime"]["cpu_affinity"] = [0]
    data["connection"] = server.connection(connect_timeout_s=5, command_timeout_s=60, **connection)
    data["device"] = {"python": sys.executable, "work_dir": str(tmp_path / "work dir with 'single' and \"double\" quotes")}
    path = tmp_path / "loopback.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_local_device_is_ready(run_cli):
    result = run_cli("devices", "check", "--spec", "device_specs/local.yaml", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ready"] and report["info"]["runtimes"]["ai_edge_litert"]["available"]
    from pathlib import Path
    assert Path(report["info"]["python"]["executable"]).parent == Path(sys.executable).parent  # python: host


def test_ssh_device_is_ready_and_cleaned(sshd_server, tmp_path):
    spec = load_spec(_ssh_spec(tmp_path, sshd_server))
    report = check_device(spec)
    assert report.ready, report.problems
    assert report.info["cores"]["logical"] >= 1 and "onnxruntime" in report.info["runtimes"]
    work = tmp_path / "work dir with 'single' and \"double\" quotes"
    assert work.is_dir() and not list(work.iterdir()), "the pushed runner is removed afterwards"


def test_unknown_host_key_is_refused_with_one_line(sshd_server, tmp_path, run_cli):
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    spec = _ssh_spec(tmp_path, sshd_server, known_hosts=str(empty))
    result = run_cli("devices", "check", "--spec", str(spec))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "accept-new" in result.stderr and "SHA256:" in result.stderr


def test_mcu_has_no_transport_but_is_ready(run_cli):
    result = run_cli("devices", "check", "--spec", "stm32f746")
    assert result.returncode == 0 and "cost model" in result.stdout
