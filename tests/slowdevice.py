"""A slower emulated device for integration tests (DESIGN.md §10): a real OpenSSH sshd with
its own address, in its own network namespace, inside a cgroup with a CPU quota, pinned to
one CPU.

    from slowdevice import start_slow_sshd

    with start_slow_sshd(tmp_path, quota_us=2500, period_us=10000) as device:
        t = device.transport()          # an SshTransport to [10.213.x.2]:PORT
        device.cgroup.quota()           # (2500, 10000), read back from the cgroup files

What it sets up (as root), and tears down again even when the test fails:

* a network namespace ``ofa-slow-<tag>`` with ``lo`` up, joined to the host by a veth pair
  on a free /30 in 10.213.0.0/16 (host side ``.1``, device side ``.2``);
* a cgroup ``ofa-edge-slow-<tag>`` holding the cpu controller, with a CFS quota: cgroup v1
  (``cpu.cfs_quota_us``, ``cpu.cfs_period_us``) or v2 (``cpu.max``), whichever holds ``cpu``;
* sshd, started as ``sh -c 'echo $$ > CGROUP/cgroup.procs; exec ip netns exec NS taskset
  -c CPUS sshd ...'``: it is in the cgroup before it even exists as sshd, so every session
  (its children) inherits the cgroup, the namespace and the CPU mask, with no race.

A machine that forbids this (not root, no netns, read-only cgroup fs) skips the test with
the reason, and fails it under CI=true (``conftest.require``).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import posixpath
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from conftest import require
from sshd import SSHD, SshdServer, free_port, keygen

#: Where this test's /30 networks come from (host side .1, device side .2 of each).
NETWORK_POOL = ipaddress.IPv4Network("10.213.0.0/16")
_FORBIDDEN_ERRNOS = (errno.EPERM, errno.EACCES, errno.EROFS)
_FORBIDDEN_TEXT = ("operation not permitted", "permission denied", "read-only file system")


class Forbidden(RuntimeError):
    """The machine does not let us create a namespace or a cgroup (a reason to skip)."""


def _forbidden(error: BaseException | str) -> bool:
    if isinstance(error, OSError) and error.errno in _FORBIDDEN_ERRNOS:
        return True
    return any(text in str(error).lower() for text in _FORBIDDEN_TEXT)


def _ip(*args: str) -> str:
    """Run ``ip ARGS``; raise Forbidden or RuntimeError with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if done.returncode != 0:
        message = f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}"
        raise (Forbidden if _forbidden(message) else RuntimeError)(message)
    return done.stdout


# ---------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class CpuHierarchy:
    """The mounted cgroup hierarchy that holds the cpu controller."""

    version: int  # 1 or 2
    mount: Path  # where it is mounted, e.g. /sys/fs/cgroup/cpu (v1) or /sys/fs/cgroup (v2)
    root: str  # the mount's root inside the hierarchy, as /proc/<pid>/cgroup names paths


def _unescape(field: str) -> str:
    """mountinfo escapes spaces and the like as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def find_cpu_hierarchy(mountinfo: str | None = None) -> CpuHierarchy | None:
    """The v1 hierarchy with ``cpu`` in its options, else a cgroup2 mount whose
    cgroup.controllers lists ``cpu`` (in a hybrid setup, cpu is bound to v1 and the
    unified hierarchy lacks it), else None."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    v2: CpuHierarchy | None = None
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, mount, (fstype, _source, superopts) = fields[3], Path(_unescape(fields[4])), tail[:3]
        if fstype == "cgroup" and "cpu" in superopts.split(","):
            return CpuHierarchy(1, mount, _unescape(root))
        if fstype == "cgroup2" and v2 is None:
            try:
                controllers = (mount / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if "cpu" in controllers:
                v2 = CpuHierarchy(2, mount, _unescape(root))
    return v2


@dataclass
class CpuCgroup:
    """One cgroup with a CFS CPU quota, directly below the hierarchy's mount point."""

    hierarchy: CpuHierarchy
    name: str

    @property
    def version(self) -> int:
        return self.hierarchy.version

    @property
    def path(self) -> Path:
        return self.hierarchy.mount / self.name

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    @property
    def proc_path(self) -> str:
        """This group as ``/proc/<pid>/cgroup`` names it."""
        return posixpath.join(self.hierarchy.root, self.name)

    def create(self, quota_us: int, period_us: int) -> None:
        """Make the group and give it ``quota_us`` of CPU time every ``period_us``."""
        if self.version == 2:
            control = self.hierarchy.mount / "cgroup.subtree_control"
            if "cpu" not in control.read_text().split():
                try:
                    control.write_text("+cpu")
                except OSError as exc:
                    # EBUSY: the parent holds processes itself (cgroup v2's no-internal-process
                    # rule), as in a container whose cgroup namespace root is not the real root
                    raise (Forbidden if _forbidden(exc) or exc.errno == errno.EBUSY
                           else RuntimeError)(f"cannot enable +cpu in {control}: {exc}") from exc
        try:
            self.path.mkdir()
        except OSError as exc:
            raise (Forbidden if _forbidden(exc) else RuntimeError)(
                f"cannot create cgroup {self.path}: {exc}") from exc
        if self.version == 1:
            # the period first: the default quota (-1, unlimited) fits any period
            (self.path / "cpu.cfs_period_us").write_text(str(period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota_us))
        else:
            (self.path / "cpu.max").write_text(f"{quota_us} {period_us}")

    def quota(self) -> tuple[int | None, int]:
        """(quota_us, period_us) as the kernel has them now; quota None means unlimited."""
        if self.version == 1:
            quota = int((self.path / "cpu.cfs_quota_us").read_text())
            period = int((self.path / "cpu.cfs_period_us").read_text())
            return (None if quota < 0 else quota), period
        quota_text, period_text = (self.path / "cpu.max").read_text().split()
        return (None if quota_text == "max" else int(quota_text)), int(period_text)

    def throttled(self) -> int:
        """How many periods the group has been throttled in (``nr_throttled`` of cpu.stat)."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "nr_throttled":
                return int(value)
        raise RuntimeError(f"no nr_throttled in {self.path / 'cpu.stat'}")

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except FileNotFoundError:
            return []

    def holds(self, proc_cgroup: str) -> bool:
        """Whether a ``/proc/<pid>/cgroup`` text puts that process in this group."""
        for line in proc_cgroup.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _id, controllers, path = parts
            if self.version == 1 and "cpu" in controllers.split(","):
                return path == self.proc_path
            if self.version == 2 and _id == "0" and controllers == "":
                return path == self.proc_path
        return False

    def remove(self, timeout: float = 5.0) -> None:
        """Kill whatever is left in the group, then remove it (a no-op when it is gone)."""
        deadline = time.monotonic() + timeout
        while self.path.exists():
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY while the killed processes are still exiting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


# ---------------------------------------------------------------------------- network


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address on or a route to."""
    used = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        words = line.split()
        if "inet" in words:
            used.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        if words and words[0] in ("local", "broadcast", "unicast", "anycast", "multicast",
                                  "blackhole", "unreachable", "prohibit", "throw", "nat"):
            words = words[1:]
        if words and words[0] != "default":
            try:
                used.append(ipaddress.IPv4Network(words[0], strict=False))
            except ValueError:
                pass
    return used


def pick_network(attempts: int = 100) -> ipaddress.IPv4Network:
    """A random /30 from NETWORK_POOL that overlaps nothing the host already uses."""
    used = _networks_in_use()
    subnets = 1 << (30 - NETWORK_POOL.prefixlen)
    for _ in range(attempts):
        start = int(NETWORK_POOL.network_address) + 4 * random.randrange(subnets)
        candidate = ipaddress.IPv4Network((start, 30))
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError(f"no free /30 in {NETWORK_POOL} after {attempts} tries")


@dataclass
class VethNamespace:
    """A network namespace joined to the host by a veth pair on a /30."""

    name: str
    host_if: str
    device_if: str
    network: ipaddress.IPv4Network

    @classmethod
    def fresh(cls, tag: str) -> "VethNamespace":
        # interface names are at most 15 characters
        return cls(f"ofa-slow-{tag}", f"ofs{tag}h", f"ofs{tag}d", pick_network())

    @property
    def host_ip(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def device_ip(self) -> str:
        return str(self.network.network_address + 2)

    @property
    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    @property
    def inode(self) -> int:
        """The namespace's inode (``readlink /proc/<pid>/ns/net`` says ``net:[INODE]``)."""
        return os.stat(f"/run/netns/{self.name}").st_ino

    def create(self) -> None:
        prefix = f"/{self.network.prefixlen}"
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.device_if)
        _ip("link", "set", self.device_if, "netns", self.name)
        _ip("addr", "add", self.host_ip + prefix, "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.name, "addr", "add", self.device_ip + prefix, "dev", self.device_if)
        _ip("-n", self.name, "link", "set", self.device_if, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Delete the veth pair (both ends go together) and the namespace; ignores what is gone."""
        for args in (("link", "del", self.host_if), ("netns", "del", self.name)):
            subprocess.run(["ip", *args], capture_output=True, timeout=15)


# ---------------------------------------------------------------------------- sshd


@dataclass
class SlowSshdServer(SshdServer):
    """An SshdServer listening on the namespace's address, in the CPU-quota cgroup."""

    netns: VethNamespace | None = None
    cgroup: CpuCgroup | None = None
    cpus: str = "0"  # taskset's CPU list

    def command(self) -> list[str]:
        """sh joins the cgroup, then execs (same pid) ip netns exec, which execs taskset,
        which execs sshd: the process is in the cgroup before sshd listens."""
        assert self.netns is not None and self.cgroup is not None
        sshd = [*self.netns.exec_prefix, "taskset", "-c", self.cpus,
                SSHD, "-D", "-f", str(self.config), "-E", str(self.log)]
        return ["sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh",
                str(self.cgroup.procs_file), *sshd]

    def start(self, timeout: float = 20.0) -> "SlowSshdServer":
        """As SshdServer.start, with more patience: sshd starts slowly on a quarter of a CPU."""
        super().start(timeout)
        return self


def require_slow_device() -> CpuHierarchy:
    """Skip (fail under CI) unless this machine can host a slow device; returns the cgroup
    hierarchy to use."""
    require(os.geteuid() == 0, "root (network namespaces and cgroups need it)",
            "run the tests as root")
    require(shutil.which("ip") is not None, "iproute2 (ip)", "apt-get install -y iproute2")
    require(shutil.which("taskset") is not None, "taskset", "apt-get install -y util-linux")
    hierarchy = find_cpu_hierarchy()
    require(hierarchy is not None, "a cgroup hierarchy with the cpu controller",
            "mount cgroup v1 with -o cpu, or cgroup2 with cpu in cgroup.controllers")
    return hierarchy  # type: ignore[return-value]


def _create(what: str, make, *args) -> None:
    try:
        make(*args)
    except Forbidden as exc:
        require(False, f"permission to create {what} ({exc})",
                "run as root on a machine (or a privileged container) that allows it")


@contextmanager
def start_slow_sshd(tmp_dir: str | os.PathLike, *, quota_us: int = 2500, period_us: int = 10000,
                    cpus: str = "0") -> Iterator[SlowSshdServer]:
    """Set up namespace, cgroup and keys in ``tmp_dir``, start sshd, and tear it all down
    on exit (also when setup or the test fails)."""
    hierarchy = require_slow_device()
    tag = secrets.token_hex(3)
    d = Path(tmp_dir)
    d.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        cgroup = CpuCgroup(hierarchy, f"ofa-edge-slow-{tag}")
        cleanup.callback(cgroup.remove)
        _create(f"a cgroup v{hierarchy.version} with a CPU quota", cgroup.create, quota_us,
                period_us)
        netns = VethNamespace.fresh(tag)
        cleanup.callback(netns.remove)
        _create("a network namespace with a veth pair", netns.create)

        keygen(d / "ssh_host_ed25519_key", "ofa-edge-test-host")
        keygen(d / "client_key", "ofa-edge-test-client")
        (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
        # any port is free in a brand-new namespace: free_port just makes it vary
        server = SlowSshdServer(dir=d, port=free_port(), host=netns.device_ip, netns=netns,
                                cgroup=cgroup, cpus=cpus)
        cleanup.callback(server.stop)
        server.start()
        server.known_hosts.write_text(server.host_key_line + "\n")  # [10.213.x.2]:PORT ...
        server.known_hosts.chmod(0o600)
        yield server
