"""Device spec validation: every shipped spec passes, malformed ones fail with the intended message."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ofa_edge.devices.spec import DeviceSpec, check_specs, load_spec, shipped_specs
from ofa_edge.errors import SpecError

SHIPPED = ["jetson_nano", "local", "local_imagenet", "nrf52840", "pixel", "raspberry_pi4", "stm32f746"]


def base(name: str = "local") -> dict:
    path = Path(__file__).resolve().parents[1] / "device_specs" / f"{name}.yaml"
    return yaml.safe_load(path.read_text())


def edit(data: dict, key: str, value=None, delete: bool = False) -> dict:
    """Return a copy of ``data`` with the dotted ``key`` set to ``value`` (or deleted)."""
    out = copy.deepcopy(data)
    node = out
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if delete:
        del node[leaf]
    else:
        node[leaf] = value
    return out


def ssh_spec(**connection) -> dict:
    data = base("raspberry_pi4")
    data["connection"] = {"transport": "ssh", **connection}
    return data


def write(tmp_path: Path, content, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def test_shipped_specs_all_validate():
    paths = shipped_specs()
    assert sorted(p.stem for p in paths) == SHIPPED
    for path in paths:
        spec = load_spec(path)
        assert isinstance(spec, DeviceSpec) and spec.name == path.stem
        assert spec.source == str(path)


def test_shipped_specs_carry_the_required_settings():
    pi, jetson, pixel, mcu, local, local_imagenet, nrf = (load_spec(p) for p in sorted(shipped_specs(), key=lambda p: (
        ["raspberry_pi4", "jetson_nano", "pixel", "stm32f746", "local", "local_imagenet", "nrf52840"].index(p.stem))))
    assert (pi.connection.transport, pi.runtime.name, pi.precision, pi.runtime.delegate,
            pi.runtime.threads) == ("ssh", "tflite", "int8", "xnnpack", 4)
    assert jetson.runtime.name == "onnxruntime" and jetson.precision == "fp16"
    assert jetson.runtime.execution_providers[:2] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert pixel.connection.port == 8022 and pixel.precision == "int8"
    assert (mcu.kind, mcu.connection.transport, mcu.runtime.name) == ("mcu", "none", "tflite-micro")
    assert (mcu.hardware.sram_kb, mcu.hardware.flash_kb, mcu.hardware.clock_mhz) == (320, 1024, 216)
    assert mcu.cost_model is not None and mcu.cost_model.cycles_per_mac.depthwise > 0
    # both MCU specs build firmware: the core, and the part's own flash and RAM regions
    assert (mcu.firmware.core, mcu.firmware.flash.origin, mcu.firmware.ram.kb) == ("cortex-m7", 0x08000000, 320)
    assert (nrf.firmware.core, nrf.hardware.clock_mhz, nrf.hardware.sram_kb, nrf.firmware.flash.kb) == (
        "cortex-m4", 64, 256, 1024)
    assert (local.connection.transport, local.runtime.delegate, local.runtime.threads) == ("local", "xnnpack", 1)
    assert local_imagenet.runtime == local.runtime and local_imagenet.budgets.resolution == [128, 224]
    # every ssh spec refuses unknown host keys by default
    assert all(s.connection.host_key_policy == "reject" for s in (pi, jetson, pixel))


MALFORMED = {
    # name: (content, expected key path, expected reason)
    "unknown key": (edit(base(), "budgets.latncy_ms", 5), "budgets.latncy_ms", "unknown key (allowed here: latency_ms"),
    "wrong type": (edit(base(), "hardware.cores", "four"), "hardware.cores", "expected an integer, got string 'four'"),
    "bool is not an int": (edit(base(), "hardware.cores", True), "hardware.cores", "expected an integer"),
    "negative budget": (edit(base(), "budgets.latency_ms", -5), "budgets.latency_ms", "must be > 0, got -5"),
    "ssh without host": (ssh_spec(user="pi"), "connection.host", "required when connection.transport is ssh"),
    "bad port": (ssh_spec(host="pi.local", port=70000), "connection.port", "must be ≤ 65535, got 70000"),
    "missing identity file": (ssh_spec(host="pi.local", identity_file="~/.ssh/definitely-not-here"),
                              "connection.identity_file", "no such key file"),
    "unknown runtime": (edit(base(), "runtime.name", "tensorrt"), "runtime.name",
                        "'tensorrt' is not one of: tflite, onnxruntime, tflite-micro"),
    "int8 on a runtime without it": (edit(edit(base(), "runtime.name", "onnxruntime"), "runtime.delegate",
                                          delete=True),
                                     "precision", "int8 is not available with runtime onnxruntime"),
    "YAML syntax error": ("schema_version: 1\nname: [local\nkind: cpu\n", "", "YAML syntax error at line"),
    "empty file": ("", "", "the file is empty"),
    "comments only": ("# nothing here\n", "", "the file is empty"),
    "not a mapping": ("- local\n- pixel\n", "", "the top level must be a mapping of keys, got a list"),
    "duplicate key": ("schema_version: 1\nname: a\nname: b\n", "", "duplicate key 'name'"),
    "secret in spec": (edit(ssh_spec(host="pi.local"), "connection.password", "hunter2"),
                       "connection.password", "secrets never go in a spec"),
    "private key pasted": (edit(base(), "description", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc"),
                           "description", "looks like a private key"),
    "missing required key": (edit(base(), "precision", delete=True), "precision", "required key is missing"),
    "unsupported schema": (edit(base(), "schema_version", 2), "schema_version", "unsupported schema_version 2"),
    "mcu over ssh": (edit(base("stm32f746"), "connection", {"transport": "ssh", "host": "x"}),
                     "connection.transport", "an mcu has no shell"),
    "mcu without cost model": (edit(base("stm32f746"), "cost_model", delete=True), "cost_model",
                               "required for an mcu"),
    "cpu with no transport": (edit(base(), "connection.transport", "none"), "connection.transport",
                              "none is only for kind mcu"),
    "too many threads": (edit(base(), "runtime.threads", 64), "runtime.threads", "64 threads oversubscribe"),
    "affinity out of range": (edit(base(), "runtime.cpu_affinity", [0, 7]), "runtime.cpu_affinity[1]",
                              "core 7 does not exist"),
    "delegate on onnxruntime": (edit(edit(base("jetson_nano"), "runtime.delegate", "xnnpack"), "precision", "fp16"),
                                "runtime.delegate", "only for runtime tflite"),
    "unknown delegate": (edit(base(), "runtime.delegate", "coreml"), "runtime.delegate",
                         "'coreml' is not one of: none, xnnpack, gpu, nnapi, hexagon, external:<path to .so>"),
    "external delegate without a path": (edit(base(), "runtime.delegate", "external:libx.so"), "runtime.delegate",
                                         "external: takes the delegate library's absolute path on the device"),
    "delegate on tflite-micro": (edit(base("stm32f746"), "runtime.delegate", "xnnpack"), "runtime.delegate",
                                 "only for runtime tflite; tflite-micro uses no delegate"),
    "unknown execution provider": (edit(base("jetson_nano"), "runtime.execution_providers", ["CudaEP"]),
                                   "runtime.execution_providers[0]", "'CudaEP' is not one of"),
    "firmware on a cpu": (edit(base(), "firmware", base("stm32f746")["firmware"]), "firmware",
                          "only for kind mcu, not cpu"),
    "unknown core": (edit(base("stm32f746"), "firmware.core", "cortex-m3"), "firmware.core",
                     "'cortex-m3' is not one of: cortex-m4, cortex-m7, cortex-m55"),
    "firmware flash unlike the part": (edit(base("stm32f746"), "firmware.flash", {"origin": 0x08000000, "kb": 2048}),
                                       "firmware.flash.kb", "2048 differs from hardware.flash_kb 1024"),
    "budget above the hardware": (edit(base("stm32f746"), "budgets.peak_sram_kb", 512),
                                  "budgets.peak_sram_kb", "512 exceeds hardware.sram_kb 320"),
    "bad resolution range": (edit(base(), "budgets.resolution", [64, 32]), "budgets.resolution",
                             "expected [min, max] with 8 ≤ min ≤ max ≤ 1024, got [64, 32]"),
    "bad name": (edit(base(), "name", "My Device"), "name", "'My Device' must be lower-case letters"),
    "ssh key on local transport": (edit(base(), "connection.host", "x"), "connection.host",
                                   "only used with transport ssh"),
    "unknown latency statistic": (edit(base(), "measure.statistic", "mean"), "measure.statistic",
                                  "'mean' is not one of: median, p90, p10"),
    "zero passes": (edit(base(), "measure.passes", 0), "measure.passes", "must be ≥ 1, got 0"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_spec_gives_the_intended_message(tmp_path, case):
    content, key, reason = MALFORMED[case]
    path = write(tmp_path, content)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert err.source == str(path)
    expected = f"{key}: {reason}" if key else reason
    assert any(expected in problem for problem in err.problems), err.problems
    assert str(path) in str(err)


def test_directory_is_not_a_spec(tmp_path):
    with pytest.raises(SpecError, match="is a directory, not a spec file"):
        load_spec(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_all_problems_are_reported_at_once(tmp_path):
    data = edit(edit(base(), "hardware.cores", "x"), "budgets.latency_ms", -1)
    problems = check_specs([write(tmp_path, data)])
    (only,) = problems.values()
    assert any(p.startswith("hardware.cores:") for p in only)
    assert any(p.startswith("budgets.latency_ms:") for p in only)


def test_identity_file_relative_to_spec_and_existing_key_passes(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id_ed25519").write_text("not checked here")
    spec = load_spec(write(tmp_path, ssh_spec(host="pi.local", identity_file="keys/id_ed25519")))
    assert spec.connection.identity_file == "keys/id_ed25519"


def test_defaults_are_secure_and_explicit(tmp_path):
    spec = load_spec(write(tmp_path, ssh_spec(host="pi.local")))
    assert spec.connection.host_key_policy == "reject"
    assert spec.connection.port == 22
    assert spec.connection.connect_timeout_s > 0 and spec.connection.command_timeout_s > 0
    accept = load_spec(write(tmp_path, ssh_spec(host="pi.local", host_key_policy="accept-new"), "b.yaml"))
    assert accept.connection.host_key_policy == "accept-new"
    with pytest.raises(SpecError, match="connection.host_key_policy: 'auto-add' is not one of: reject, accept-new"):
        load_spec(write(tmp_path, ssh_spec(host="pi.local", host_key_policy="auto-add"), "c.yaml"))


def test_ssh_config_alias_replaces_host(tmp_path):
    spec = load_spec(write(tmp_path, ssh_spec(ssh_config="my-pi")))
    assert spec.connection.ssh_config == "my-pi" and spec.connection.host is None


def test_floats_accept_yaml_integers(tmp_path):
    spec = load_spec(write(tmp_path, edit(base(), "budgets.latency_ms", 4)))
    assert spec.budgets.latency_ms == 4.0
