"""Transports: local processes, a real OpenSSH server on loopback, and the scripted mock."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import yaml

from ofa_edge.devices.spec import load_spec
from ofa_edge.devices.transports import (
    CommandTimeout,
    ConnectError,
    FakeClock,
    HostKeyError,
    LinkDropped,
    LocalTransport,
    MockTransport,
    NoTransport,
    Result,
    TransportError,
    make_transport,
    remote_path_join,
    to_shell,
)
from ofa_edge.errors import OfaEdgeError
from sshd import SshdServer, require_sshd, start_sshd

WEIRD = "dir with 'quotes' and \"dq\" $HOME `x`"


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.fixture
def own_sshd(tmp_path):
    """A private server that a test may stop, restart or re-key."""
    require_sshd()
    server = start_sshd(tmp_path / "sshd")
    yield server
    server.stop()


# ---------------------------------------------------------------- base helpers


def test_list_commands_are_quoted_word_by_word():
    assert to_shell(["echo", "a b", "it's"]) == "echo 'a b' 'it'\"'\"'s'"
    assert to_shell("echo $HOME | wc -c") == "echo $HOME | wc -c"
    assert remote_path_join("~/.cache", "ofa edge", "m.tflite") == "~/.cache/ofa edge/m.tflite"
    with pytest.raises(ValueError):
        to_shell([])


def test_result_check_names_the_failure():
    assert Result(0, "ok", "", 0.1, "true").check().stdout == "ok"
    with pytest.raises(TransportError, match=r"python3 -c boom failed with exit code 2: SyntaxError"):
        Result(2, "", "Traceback...\nSyntaxError: bad\n", 0.1, "python3 -c boom").check()


# ---------------------------------------------------------------- local


def test_local_run_returns_output_and_exit_code():
    with LocalTransport() as t:
        r = t.run(["printf", "%s|", "a b", "c'd"])
        assert (r.returncode, r.stdout, r.stderr) == (0, "a b|c'd|", "")
        r = t.run("echo oops >&2; exit 3")
        assert (r.returncode, r.stderr) == (3, "oops\n")
        assert t.run("cat", input=b"fed in").stdout == "fed in"
        assert t.run(["sh", "-c", "echo $$"]).stdout.strip() != str(os.getpid())
        assert r.seconds >= 0 and t.describe().startswith("local")


def test_local_timeout_kills_the_command_and_its_children():
    with LocalTransport(command_timeout=30) as t:
        start = time.monotonic()
        with pytest.raises(CommandTimeout, match=r"timed out after 0.3 s") as info:
            t.run("sleep 30 & sleep 30; wait", timeout=0.3)
        assert time.monotonic() - start < 5
        _one_line(info.value)
        assert t.run("echo still here").stdout == "still here\n"


def test_local_put_get_roundtrip_with_spaces_and_quotes(tmp_path):
    src = tmp_path / "src file's.bin"
    src.write_bytes(bytes(range(256)) * 4)
    src.chmod(0o750)
    remote = tmp_path / "device" / WEIRD / "f.bin"
    with LocalTransport() as t:
        t.put(src, remote)
        back = tmp_path / "back" / "f 'q'.bin"
        t.get(remote, back)
    assert back.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(remote.stat().st_mode) == 0o750
    with pytest.raises(TransportError, match="no such file"):
        LocalTransport().put(tmp_path / "missing", tmp_path / "x")


# ---------------------------------------------------------------- ssh against a real sshd


def test_ssh_run_echo_and_exit_codes(sshd_server: SshdServer):
    with sshd_server.transport() as t:
        r = t.run(["echo", "hello", "a b"])
        assert (r.returncode, r.stdout, r.stderr) == (0, "hello a b\n", "")
        r = t.run("echo err >&2; exit 7")
        assert (r.returncode, r.stdout, r.stderr) == (7, "", "err\n")
        assert t.run("wc -c", input=b"x" * 100_000).stdout.strip() == "100000"
        assert t.home() == str(sshd_server.home)
        assert t.expand_user("~/a b") == f"{sshd_server.home}/a b"
        assert t.describe() == f"ssh {sshd_server.user}@127.0.0.1:{sshd_server.port}"


def test_ssh_round_trip_time(sshd_server: SshdServer, capsys):
    with sshd_server.transport() as t:
        t.run("true")  # connect
        times = []
        for _ in range(20):
            start = time.perf_counter()
            t.run("true")
            times.append(time.perf_counter() - start)
    times.sort()
    with capsys.disabled():
        print(f"\nssh round trip of `true` over loopback: median {times[10] * 1e3:.1f} ms, "
              f"min {times[0] * 1e3:.1f} ms (20 runs)")


def test_ssh_put_get_roundtrip_with_spaces_and_quotes(sshd_server: SshdServer, tmp_path):
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(300_000))
    src.chmod(0o640)
    remote = f"~/tmp/{WEIRD}/f.bin"
    with sshd_server.transport() as t:
        t.put(src, remote)
        landed = sshd_server.home / "tmp" / WEIRD / "f.bin"
        assert landed.read_bytes() == src.read_bytes()
        assert stat.S_IMODE(landed.stat().st_mode) == 0o640
        assert not [p for p in landed.parent.iterdir() if ".part-" in p.name]
        # the shell sees the same path when every word is quoted
        assert t.run(["wc", "-c", t.expand_user(remote)]).stdout.split()[0] == "300000"
        back = tmp_path / "back" / WEIRD / "g.bin"
        t.get(remote, back)
        assert back.read_bytes() == src.read_bytes()
        with pytest.raises(TransportError, match=r"cannot download .*no-such-file") as info:
            t.get("~/no-such-file", tmp_path / "x")
        _one_line(info.value)
        assert not (tmp_path / "x").exists()
        t.put(src, "~/top-level.bin")  # no parent folder to make
        assert (sshd_server.home / "top-level.bin").exists()


def test_ssh_command_timeout_kills_it_and_the_transport_still_works(sshd_server: SshdServer):
    marker = f"sleep 3{os.getpid() % 10}.5"
    with sshd_server.transport(command_timeout=0.5) as t:
        t.run("true")
        start = time.monotonic()
        with pytest.raises(CommandTimeout, match=r"timed out after 0.5 s") as info:
            t.run(f"{marker}; echo done")
        assert time.monotonic() - start < 3
        _one_line(info.value)
        assert t.run("echo alive", timeout=5).stdout == "alive\n"
        # the remote command was killed (OpenSSH killpg()s on the 'signal' request)
        time.sleep(0.2)
        assert marker not in t.run(["ps", "-eo", "args"], timeout=5).stdout


def test_ssh_unknown_host_key_is_refused_with_its_fingerprint(sshd_server: SshdServer, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as info:
        sshd_server.transport(known_hosts=empty).run("true")
    msg = _one_line(info.value)
    assert sshd_server.host_key_fingerprint in msg
    assert f"127.0.0.1:{sshd_server.port}" in msg and "ssh-ed25519" in msg
    assert f"ssh-keyscan -p {sshd_server.port} 127.0.0.1" in msg and "accept-new" in msg
    assert empty.read_text() == ""  # reject never writes
    # a missing known_hosts file is the same: unknown
    with pytest.raises(HostKeyError, match="unknown host key"):
        sshd_server.transport(known_hosts=tmp_path / "nope" / "known_hosts").run("true")


def test_ssh_accept_new_records_the_key_then_connects(sshd_server: SshdServer, tmp_path):
    kh = tmp_path / "fresh" / "known_hosts"
    with sshd_server.transport(known_hosts=kh, host_key_policy="accept-new") as t:
        assert t.run("echo first").stdout == "first\n"
        assert t.recorded_host_key.endswith(sshd_server.host_key_fingerprint)
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    assert kh.read_text() == sshd_server.host_key_line + "\n"
    # the recorded key now passes under the strict policy
    with sshd_server.transport(known_hosts=kh) as t:
        assert t.run("echo again").stdout == "again\n"


def test_ssh_changed_host_key_is_refused_even_under_accept_new(own_sshd: SshdServer, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(own_sshd.host_key_line + "\n")
    old_fp = own_sshd.host_key_fingerprint
    new_fp = own_sshd.rotate_host_key()
    assert new_fp != old_fp
    for policy in ("reject", "accept-new"):
        with pytest.raises(HostKeyError) as info:
            own_sshd.transport(known_hosts=kh, host_key_policy=policy).run("true")
        msg = _one_line(info.value)
        assert f"host key for 127.0.0.1:{own_sshd.port} changed" in msg
        assert "man-in-the-middle" in msg and "ssh-keygen -R" in msg
        assert new_fp in msg and old_fp in msg
    assert kh.read_text() == f"[127.0.0.1]:{own_sshd.port} " + " ".join(
        kh.read_text().split()[1:3]) + "\n"  # accept-new did not add or replace a line


def test_ssh_wrong_port_is_a_connect_error_naming_host_and_port(tmp_path):
    from sshd import free_port
    from ofa_edge.devices.transports.ssh import SshTransport

    port = free_port()
    with pytest.raises(ConnectError, match=rf"127\.0\.0\.1:{port}: connection refused") as info:
        SshTransport("127.0.0.1", port, "root", known_hosts=tmp_path / "kh").run("true")
    _one_line(info.value)
    with pytest.raises(ConnectError, match=r"unknown host 'no-such-host\.invalid'"):
        SshTransport("no-such-host.invalid", 22, "root", connect_timeout=5).run("true")


def test_ssh_server_going_down_then_coming_back(own_sshd: SshdServer):
    t = own_sshd.transport(reconnect_delays=(0.1, 0.2, 0.3))
    assert t.run("echo up").stdout == "up\n"
    own_sshd.stop()
    start = time.monotonic()
    with pytest.raises((LinkDropped, ConnectError)) as info:
        t.run("echo down")
    msg = _one_line(info.value)
    assert f"127.0.0.1:{own_sshd.port}" in msg and "lost the connection" in msg
    assert time.monotonic() - start < 5
    own_sshd.start()
    assert t.run("echo back").stdout == "back\n"  # reconnected
    t.close()
    with pytest.raises(TransportError, match="was closed"):
        t.run("true")


def test_ssh_link_dropping_during_a_command_raises_link_dropped(own_sshd: SshdServer):
    with own_sshd.transport() as t:
        t.run("true")
        with pytest.raises(LinkDropped, match="may or may not have finished") as info:
            # the command kills this connection's sshd processes (not the listener), i.e. its
            # own link, then its own process group
            t.run(f"sleep 0.2; p=$PPID; while [ $p -gt 1 ] && [ $p != {own_sshd.pid} ]; do "
                  "q=$(cut -d' ' -f4 /proc/$p/stat); kill -9 $p; p=$q; done; kill -9 -- -$$")
        _one_line(info.value)
        assert t.run("echo reconnected").stdout == "reconnected\n"


def test_ssh_config_alias(sshd_server: SshdServer, tmp_path):
    from ofa_edge.devices.transports.ssh import SshTransport

    cfg = sshd_server.write_ssh_config(tmp_path / "ssh config", "my-board")
    t = SshTransport(ssh_config="my-board", ssh_config_path=cfg,
                     known_hosts=sshd_server.known_hosts, connect_timeout=5)
    assert (t.host, t.port, t.user) == ("127.0.0.1", sshd_server.port, sshd_server.user)
    assert t.identity_files == [str(sshd_server.client_key)]
    with t:
        assert t.run("echo via alias").stdout == "via alias\n"
        assert "alias my-board" in t.describe()
    # explicit values win over the config's
    t = SshTransport(ssh_config="my-board", ssh_config_path=cfg, port=1, user="someone")
    assert (t.host, t.port, t.user) == ("127.0.0.1", 1, "someone")


# ---------------------------------------------------------------- mock


def test_mock_scripted_responses_and_call_recording(tmp_path):
    clock = FakeClock()
    t = MockTransport({"nproc": "4\n", "python3 -c": (0, "3.11\n", ""), "python3": (1, "", "no\n"),
                       "uname": {"returncode": 0, "stdout": "aarch64\n"}},
                      latency=[0.002, 0.004], clock=clock)
    assert t.run("nproc").stdout == "4\n"
    assert t.run(["python3", "-c", "print(1)"]).stdout == "3.11\n"  # longest prefix wins
    r = t.run("python3 x.py", timeout=5, input=b"in")
    assert (r.returncode, r.stderr, r.seconds) == (1, "no\n", 0.002)  # latencies cycle
    assert t.run("uname -m").stdout == "aarch64\n"
    assert t.run("reboot").returncode == 127
    assert clock.now() == pytest.approx(0.002 * 3 + 0.004 * 2)
    assert t.commands == ["nproc", "python3 -c 'print(1)'", "python3 x.py", "uname -m", "reboot"]
    assert t.calls[2].input == b"in" and t.calls[2].timeout == 5

    src = tmp_path / "m.bin"
    src.write_bytes(b"model")
    t.put(src, "~/models/m.bin")
    assert t.files == {"/home/mock/models/m.bin": b"model"}
    t.get("/home/mock/models/m.bin", tmp_path / "out" / "m.bin")
    assert (tmp_path / "out" / "m.bin").read_bytes() == b"model"
    assert [c.op for c in t.calls[-2:]] == ["put", "get"]
    with pytest.raises(TransportError, match="no such file"):
        t.get("~/nothing", tmp_path / "n")


def test_mock_faults_and_latency_timeouts():
    t = MockTransport(lambda cmd, stdin: cmd.upper(), faults={2: "drop", 4: "timeout"},
                      latency=lambda cmd: 10.0 if "slow" in cmd else 0.001)
    assert t.run("a").stdout == "A"
    with pytest.raises(LinkDropped):
        t.run("b")
    assert t.run("c").stdout == "C"
    with pytest.raises(CommandTimeout):
        t.run("d")
    with pytest.raises(CommandTimeout, match="after 2 s"):
        t.run("slow thing", timeout=2)
    assert t.clock.now() == pytest.approx(0.001 * 2 + 2)
    assert len(t.calls) == 5
    t2 = MockTransport({"x": OSError("boom")})
    with pytest.raises(OSError):
        t2.run("x")


# ---------------------------------------------------------------- from specs


def _spec(tmp_path: Path, name: str, connection: dict, kind: str = "cpu") -> Path:
    data = {
        "schema_version": 1, "name": name, "kind": kind,
        "hardware": {"cores": 2, "clock_mhz": 1000, **({"sram_kb": 320, "flash_kb": 1024} if kind == "mcu" else {})},
        "connection": connection,
        "runtime": {"name": "tflite-micro" if kind == "mcu" else "tflite"},
        "precision": "int8",
    }
    if kind == "mcu":
        data["cost_model"] = {"cycles_per_mac": {"conv": 1, "depthwise": 1, "pointwise": 1, "linear": 1},
                              "runtime_sram_kb": 10, "runtime_flash_kb": 10, "source": "test"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_make_transport_from_specs(tmp_path, sshd_server: SshdServer):
    from ofa_edge.devices.transports.ssh import SshTransport

    local = make_transport(load_spec(_spec(tmp_path, "here", {"transport": "local", "command_timeout_s": 7})))
    assert isinstance(local, LocalTransport) and local.command_timeout == 7

    # relative key and known_hosts paths are relative to the spec's folder
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").write_bytes(sshd_server.client_key.read_bytes())
    (tmp_path / "keys" / "kh").write_text(sshd_server.known_hosts.read_text())
    conn = sshd_server.connection(identity_file="keys/id", known_hosts="keys/kh", command_timeout_s=9)
    with make_transport(load_spec(_spec(tmp_path, "board", conn))) as t:
        assert isinstance(t, SshTransport)
        assert (t.port, t.command_timeout, t.known_hosts) == (sshd_server.port, 9, tmp_path / "keys" / "kh")
        assert t.run("echo spec").stdout == "spec\n"

    # the spec's default port 22 does not override the ssh config's Port
    cfg = sshd_server.write_ssh_config(tmp_path / "config", "aliased")
    spec = load_spec(_spec(tmp_path, "aliased", {"transport": "ssh", "ssh_config": "aliased",
                                                  "known_hosts": str(sshd_server.known_hosts)}))
    with make_transport(spec, ssh_config_path=cfg) as t:
        assert t.port == sshd_server.port
        assert t.run("echo alias spec").stdout == "alias spec\n"

    mcu = load_spec(_spec(tmp_path, "mcu", {"transport": "none"}, kind="mcu"))
    with pytest.raises(NoTransport, match="mcu with connection.transport none") as info:
        make_transport(mcu)
    assert isinstance(info.value, OfaEdgeError)
    _one_line(info.value)
