"""A real OpenSSH server on 127.0.0.1 for integration tests (DESIGN.md §10).

    sshd_server                           # session-scoped fixture in conftest.py: one shared server
    from sshd import start_sshd           # your own server (to stop, restart or re-key it)

    with start_sshd(tmp_path) as server:
        t = SshTransport(server.host, server.port, server.user,
                         identity_file=server.client_key, known_hosts=server.known_hosts)

The server runs as the current user (root here) with its own host key, client key,
authorized_keys and known_hosts in ``tmp_dir``. Its sessions get ``HOME=<tmp_dir>/home``
(sshd's ``SetEnv``): the remote shell then skips the user's real ~/.bashrc (root's sources
pyenv, 360 ms per command) and ``~`` on the "device" is a private temporary folder.
The login folder (the shell's and SFTP's starting folder) is still the user's real home,
so tests should use absolute or ``~``-prefixed remote paths.

Needs /usr/sbin/sshd and ssh-keygen (``apt-get install -y openssh-server``).
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


from conftest import require

SSHD = "/usr/sbin/sshd"


def sshd_available() -> bool:
    return os.access(SSHD, os.X_OK) and shutil.which("ssh-keygen") is not None


def require_sshd() -> None:
    require(sshd_available(), "OpenSSH server (/usr/sbin/sshd and ssh-keygen)",
            "apt-get install -y openssh-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> None:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    path.chmod(0o600)


def fingerprint(pub: Path) -> str:
    """The SHA256 fingerprint of a public key file, as ssh-keygen -l prints it."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    return out.split()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd's per-connection children call setsid, so a process
    group kill would miss them)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (orphans of a killed sshd may wait a while to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@dataclass
class SshdServer:
    dir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = field(default_factory=getpass.getuser)
    pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # more variables for the sessions (e.g. PATH)
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    # ---------------------------------------------------------------- files
    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def home(self) -> Path:
        """$HOME of the remote sessions."""
        return self.dir / "home"

    @property
    def host_key_line(self) -> str:
        """The known_hosts line for this server: ``[127.0.0.1]:PORT ssh-ed25519 AAAA...``."""
        kind, b64 = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {b64}"

    @property
    def host_key_fingerprint(self) -> str:
        return fingerprint(self.host_key.with_suffix(".pub"))

    def connection(self, **overrides) -> dict:
        """A spec's ``connection:`` block that reaches this server."""
        return {"transport": "ssh", "host": self.host, "port": self.port, "user": self.user,
                "identity_file": str(self.client_key), "known_hosts": str(self.known_hosts),
                **overrides}

    def transport(self, **overrides):
        """An SshTransport to this server (closed by the caller)."""
        from ofa_edge.devices.transports.ssh import SshTransport

        kwargs = dict(identity_file=self.client_key, known_hosts=self.known_hosts,
                      connect_timeout=5, command_timeout=30, reconnect_delays=(0.1, 0.2, 0.4))
        return SshTransport(self.host, self.port, self.user, **{**kwargs, **overrides})

    def write_ssh_config(self, path: Path, alias: str) -> Path:
        """A ~/.ssh/config-style file mapping ``alias`` to this server."""
        path.write_text(f"Host {alias}\n    HostName {self.host}\n    Port {self.port}\n"
                        f"    User {self.user}\n    IdentityFile {self.client_key}\n")
        return path

    # ---------------------------------------------------------------- lifecycle
    def write_config(self) -> None:
        self.home.mkdir(exist_ok=True)
        q = lambda p: f'"{p}"'  # noqa: E731 - sshd_config quotes paths with spaces
        self.config.write_text("\n".join([
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {q(self.host_key)}",
            f"AuthorizedKeysFile {q(self.dir / 'authorized_keys')}",
            f"PidFile {q(self.dir / 'sshd.pid')}",
            f"AllowUsers {self.user}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel VERBOSE",
            "MaxStartups 50",
            # one SetEnv line: sshd keeps only the first
            " ".join(["SetEnv", f"HOME={self.home}", *(f"{k}={v}" for k, v in self.env.items())]),
            "Subsystem sftp internal-sftp",
            "",
        ]))

    def command(self) -> list[str]:
        """The argv that starts sshd in the foreground (subclasses wrap it)."""
        return [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)]

    def start(self, timeout: float = 10.0) -> "SshdServer":
        if self._proc is not None and self._proc.poll() is None:
            return self
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation folder
        self.write_config()
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True)
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace").strip()
                log = self.log.read_text(errors="replace").strip() if self.log.exists() else ""
                self._proc = self.pid = None
                raise RuntimeError(f"sshd exited at start: {err or log or 'no output'}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not accept connections on {self.host}:{self.port} "
                           f"within {timeout:g} s (see {self.log})")

    def stop(self) -> None:
        """Kill the server and every session it serves (like a device going down)."""
        proc, self._proc, self.pid = self._proc, None, None
        if proc is None:
            return
        victims = _descendants(proc.pid) + [proc.pid]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()
        for pid in victims[:-1]:  # sessions that ignored SIGTERM
            for _ in range(50):
                if not _running(pid):
                    break
                time.sleep(0.01)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def restart(self) -> "SshdServer":
        self.stop()
        return self.start()

    def rotate_host_key(self) -> str:
        """Give the server a new host key and restart it (a reinstalled device, or a MITM).
        The ``known_hosts`` file keeps the old key. Returns the new fingerprint."""
        keygen(self.host_key, "ofa-edge-test-host")
        self.restart()
        return self.host_key_fingerprint

    def __enter__(self) -> "SshdServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_sshd(tmp_dir: str | os.PathLike, port: int | None = None, env: dict[str, str] | None = None) -> SshdServer:
    """Generate keys in ``tmp_dir`` and start sshd on a free loopback port. ``env``: more
    environment variables for its sessions (no spaces in values), e.g. a ``PATH`` whose first
    folder holds an emulated device's ``python3``."""
    d = Path(tmp_dir)
    d.mkdir(parents=True, exist_ok=True)
    keygen(d / "ssh_host_ed25519_key", "ofa-edge-test-host")
    keygen(d / "client_key", "ofa-edge-test-client")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    for attempt in range(3):
        server = SshdServer(dir=d, port=port or free_port(), env=dict(env or {}))
        try:
            server.start()
        except RuntimeError:
            if port is not None or attempt == 2:  # a free port can be taken meanwhile: retry
                raise
            continue
        server.known_hosts.write_text(server.host_key_line + "\n")
        server.known_hosts.chmod(0o600)
        return server
    raise AssertionError("unreachable")
