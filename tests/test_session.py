"""DeviceSession over a MockTransport (fast unit tests; the real ones run over the loopback sshd in
test_deploy, test_devices_check and test_readiness): the run folder, ~ and $HOME, what is removed,
the runner's sha256 check and TensorRT's engine cache."""
from __future__ import annotations

import hashlib

import pytest
import yaml

from conftest import REPO
from ofa_edge.devices.runner_host import RUNNER_NAME
from ofa_edge.devices.session import DeviceSession, NotReady
from ofa_edge.devices.spec import load_spec
from ofa_edge.devices.transports import MockTransport
from ofa_edge.errors import OfaEdgeError


def jetson(tmp_path, **device):
    data = yaml.safe_load((REPO / "device_specs" / "jetson_nano.yaml").read_text())
    data["device"] = {"python": "$HOME/venv/bin/python3", "work_dir": "~/ofa work", **device}
    path = tmp_path / "jetson.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


class Device:
    """Answers mkdir/mktemp, the runner's protocol call (with the pushed file's sha256) and the
    TensorRT cache commands; ``foreign_cache``: a tensorrt-engines folder the user made."""

    def __init__(self, foreign_cache: bool = False, damaged: bool = False):
        self.transport = MockTransport(self, home="/home/nano")
        self.foreign_cache, self.damaged = foreign_cache, damaged

    def __call__(self, text: str, _input):
        import json

        if "mktemp -d" in text:
            return "/home/nano/ofa work/ofa-edge-bench.Q1w2E3\n"
        if "tensorrt-engines" in text:
            return 3 if self.foreign_cache else 0
        if RUNNER_NAME in text and " protocol" in text:
            import shlex

            remote = shlex.split(text)[1]
            sha = hashlib.sha256(self.transport.files[remote] + (b"x" if self.damaged else b"")).hexdigest()
            return json.dumps({"protocol": 1, "ok": True, "command": "protocol", "runner_sha256": sha}) + "\n"
        return 0


def test_run_folder_home_expansion_and_only_that_folder_removed(tmp_path):
    device = Device()
    with DeviceSession(jetson(tmp_path), "bench", device.transport) as dev:
        assert dev.root == "/home/nano/ofa work" and dev.python == "/home/nano/venv/bin/python3"
        assert dev.work == "/home/nano/ofa work/ofa-edge-bench.Q1w2E3"
        assert dev.runner == dev.work + "/" + RUNNER_NAME
        args = dev.timing_args()
    commands = device.transport.commands
    assert commands[0] == "mkdir -p '/home/nano/ofa work' && mktemp -d '/home/nano/ofa work/ofa-edge-bench.XXXXXX'"
    assert commands[1].startswith(f"/home/nano/venv/bin/python3 '{dev.work}/{RUNNER_NAME}' protocol")
    removals = [c for c in commands if c.startswith("rm ")]
    assert removals == [f"rm -rf -- '{dev.work}'"]
    # TensorRT: a persistent, marked engine cache under the work dir, FP16 as the spec says.
    i = args.index("--trt-cache")
    assert args[i + 1] == "/home/nano/ofa work/tensorrt-engines" and "--trt-fp16" in args
    assert any(".ofa-edge-tensorrt-cache" in c and "touch" in c for c in commands)


def test_a_foreign_tensorrt_folder_is_refused(tmp_path):
    device = Device(foreign_cache=True)
    with DeviceSession(jetson(tmp_path), "bench", device.transport) as dev:
        with pytest.raises(NotReady, match="ofa-edge did not make it"):
            dev.timing_args()


def test_a_damaged_runner_copy_is_refused(tmp_path):
    device = Device(damaged=True)
    with pytest.raises(OfaEdgeError, match="is not the one pushed"):
        DeviceSession(jetson(tmp_path), "bench", device.transport).__enter__()
    assert device.transport.commands[-1].startswith("rm -rf -- '/home/nano/ofa work/ofa-edge-bench.")


def test_a_run_folder_outside_the_work_dir_is_never_used(tmp_path):
    transport = MockTransport({"mkdir -p": "/etc\n"}, home="/home/nano")
    with pytest.raises(NotReady, match="cannot make a run folder"):
        DeviceSession(jetson(tmp_path), "bench", transport).__enter__()
    assert not [c for c in transport.commands if c.startswith("rm ")]
