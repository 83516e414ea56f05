"""A device over SSH, on paramiko.

* Host keys are checked against ``known_hosts`` (the spec's file, else ``~/.ssh/known_hosts``).
  An unknown key is refused (policy ``reject``) or recorded (``accept-new``, as OpenSSH); a
  changed key is always refused.
* ``connection.ssh_config`` names a ``~/.ssh/config`` host alias (HostName, Port, User,
  IdentityFile, UserKnownHostsFile); values set in the spec win over the config's.
* Keys come from ``identity_file``, else ssh-agent and the default ``~/.ssh/id_*`` keys.
* The socket is ours, with TCP_NODELAY (a round trip drops from ~44 ms to ~2 ms), keepalives
  every 15 s, and timeouts on connect, banner, auth and every command.
* A link found dead before a command starts is reconnected with backoff; a link that dies
  during a command raises :class:`LinkDropped` (re-running may not be safe: the caller decides).
* Each command runs as ``echo $$; COMMAND`` in the login shell (the pid line is stripped from
  stdout): on a timeout the command's whole process group is killed over a second channel
  (OpenSSH's own 'signal' request is refused for root logins).
* Files move over SFTP; uploads and downloads land under a temporary name and are renamed,
  so a reader never sees half a file.

paramiko is imported here only, so ``import ofa_edge.devices.transports`` stays light.
"""
from __future__ import annotations

import getpass
import logging
import os
import posixpath
import select
import shlex
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from ofa_edge.devices.transports.base import (
    AuthError,
    Command,
    CommandTimeout,
    ConnectError,
    HostKeyError,
    LinkDropped,
    Result,
    Transport,
    TransportError,
    shorten,
    to_shell,
)

# A library must not print paramiko's internal tracebacks through logging's last-resort
# handler: our errors already say what went wrong in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_SSH_CONFIG = "~/.ssh/config"
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
DEFAULT_RECONNECT_DELAYS = (0.5, 1.0, 2.0)
_LINK_ERRORS = (paramiko.SSHException, EOFError, OSError)


def host_key_name(host: str, port: int) -> str:
    """How known_hosts names a host: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def _short_type(key_type: str) -> str:
    for short in ("ed25519", "ecdsa", "rsa", "dss"):
        if short in key_type:
            return short
    return key_type


# ---------------------------------------------------------------- host key policies


class RejectUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Refuse a host whose key is not in known_hosts, saying how to add it."""

    def __init__(self, host: str, port: int, known_hosts: Path):
        self.host, self.port, self.known_hosts = host, port, known_hosts

    def missing_host_key(self, client, hostname, key) -> None:
        kh = shlex.quote(str(self.known_hosts))
        raise HostKeyError(
            f"unknown host key for {self.host}:{self.port}: {key.get_name()} {key.fingerprint} "
            f"is not in {self.known_hosts}; check that fingerprint on the device "
            f"(ssh-keygen -lf /etc/ssh/ssh_host_{_short_type(key.get_name())}_key.pub), then add it "
            f"with `ssh-keyscan -p {self.port} {self.host} >> {kh}`, or set "
            "connection.host_key_policy: accept-new to trust it on first use"
        )


class AcceptNewHostKey(paramiko.MissingHostKeyPolicy):
    """Trust on first use, as OpenSSH's ``StrictHostKeyChecking accept-new``: record an unknown
    key in known_hosts (created with mode 600). A *changed* key never reaches this policy:
    it is refused before (see :meth:`SshTransport._connect_once`)."""

    def __init__(self, host: str, port: int, known_hosts: Path):
        self.host, self.port, self.known_hosts = host, port, known_hosts
        self.recorded: str | None = None

    def missing_host_key(self, client, hostname, key) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        path = self.known_hosts
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                if f.tell() > 0 and not _ends_with_newline(path):
                    f.write("\n")
                f.write(line)
        except OSError as exc:
            raise HostKeyError(f"cannot record the host key of {self.host}:{self.port} in {path}: "
                               f"{exc.strerror or exc}; fix the file's permissions or set "
                               "connection.known_hosts to a writable file") from None
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.recorded = f"{key.get_name()} {key.fingerprint}"


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


# ---------------------------------------------------------------- the transport


class SshTransport(Transport):
    """Run commands and copy files on a device over SSH. Connects on first use."""

    kind = "ssh"

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        *,
        identity_file: str | os.PathLike | None = None,
        known_hosts: str | os.PathLike | None = None,
        host_key_policy: str = "reject",
        ssh_config: str | None = None,
        ssh_config_path: str | os.PathLike = DEFAULT_SSH_CONFIG,
        connect_timeout: float = 10.0,
        command_timeout: float = 600.0,
        keepalive_s: int = 15,
        reconnect_delays: Sequence[float] = DEFAULT_RECONNECT_DELAYS,
    ):
        if host_key_policy not in ("reject", "accept-new"):
            raise ValueError(f"host_key_policy must be reject or accept-new, not {host_key_policy!r}")
        if not host and not ssh_config:
            raise ConnectError("no host to connect to: set connection.host, or connection.ssh_config "
                               "to a ~/.ssh/config host alias")
        cfg: dict[str, Any] = {}
        self.alias = ssh_config
        self._config_note = ""
        if ssh_config:
            cfg_path = Path(os.path.expanduser(str(ssh_config_path)))
            if cfg_path.is_file():
                try:
                    cfg = paramiko.SSHConfig.from_path(str(cfg_path)).lookup(ssh_config)
                except Exception as exc:  # paramiko raises several types for a bad file
                    raise ConnectError(f"cannot read ssh config {cfg_path}: {exc}; fix the file or "
                                       "set connection.host instead of connection.ssh_config") from None
                self._config_note = f" (host alias {ssh_config!r} from {cfg_path})"
            else:
                self._config_note = f" (host alias {ssh_config!r}, but there is no {cfg_path})"
        self.host: str = host or cfg.get("hostname") or ssh_config  # type: ignore[assignment]
        self.port: int = int(port if port is not None else cfg.get("port", 22))
        self.user: str = user or cfg.get("user") or getpass.getuser()
        if identity_file:
            self.identity_files = [os.path.expanduser(str(identity_file))]
        else:
            self.identity_files = [os.path.expanduser(p) for p in cfg.get("identityfile", [])]
        self._explicit_known_hosts = known_hosts is not None
        if known_hosts is None and cfg.get("userknownhostsfile"):
            known_hosts = cfg["userknownhostsfile"].split()[0]
        self.known_hosts = Path(os.path.expanduser(str(known_hosts or DEFAULT_KNOWN_HOSTS)))
        self.host_key_policy = host_key_policy
        self.connect_timeout = float(connect_timeout)
        self.command_timeout = float(command_timeout)
        self.keepalive_s = int(keepalive_s)
        self.reconnect_delays = tuple(float(d) for d in reconnect_delays)

        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._ever_connected = False
        self._closed = False
        #: "ssh-ed25519 SHA256:..." when accept-new recorded a key on the last connect
        self.recorded_host_key: str | None = None

    @classmethod
    def from_spec(cls, spec, **overrides) -> "SshTransport":
        """Build from a :class:`~ofa_edge.devices.spec.DeviceSpec`. Relative key and
        known_hosts paths are relative to the spec file's folder (as the spec check does)."""
        c = spec.connection
        base = Path(spec.source).parent if getattr(spec, "source", None) else Path.cwd()

        def resolve(p: str | None) -> str | None:
            if p is None:
                return None
            path = Path(os.path.expanduser(p))
            return str(path if path.is_absolute() else base / path)

        kwargs: dict[str, Any] = dict(
            host=c.host,
            # the default 22 must not override a Port from ~/.ssh/config: only an explicit one
            port=c.port if "port" in c.model_fields_set else None,
            user=c.user,
            identity_file=resolve(c.identity_file),
            known_hosts=resolve(c.known_hosts),
            host_key_policy=c.host_key_policy,
            ssh_config=c.ssh_config,
            connect_timeout=c.connect_timeout_s,
            command_timeout=c.command_timeout_s,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    # ---------------------------------------------------------------- the interface

    def describe(self) -> str:
        alias = f" (alias {self.alias})" if self.alias and self.alias != self.host else ""
        return f"ssh {self.user}@{self.host}:{self.port}{alias}"

    def connect(self) -> None:
        """Connect now (otherwise the first call connects). Raises :class:`ConnectError`."""
        with self._lock:
            self._check_open()
            if not self._alive():
                self._connect_with_retries()

    def run(self, cmd: Command, timeout: float | None = None, input: bytes | None = None) -> Result:
        text = to_shell(cmd)
        limit = self.command_timeout if timeout is None else float(timeout)
        start = time.monotonic()
        deadline = start + limit
        chan = self._open_channel()
        transport = chan.get_transport()
        try:
            try:
                # the first output line is the shell's pid (a process group and session leader,
                # as sshd calls setsid): a timed-out command can then be killed with its children
                chan.exec_command(f"echo $$; {text}")
            except _LINK_ERRORS as exc:
                if transport.is_active():
                    raise TransportError(f"{self._where()} refused to run the command "
                                         f"{shorten(text)}: {exc}") from None
                raise self._dropped(text) from None
            out: list[bytes] = []
            err: list[bytes] = []
            try:
                self._send_input(chan, transport, input, deadline, text)
                self._collect(chan, transport, deadline, text, out, err)
            except CommandTimeout:
                self._kill(chan, _split_pid(b"".join(out))[0])
                raise CommandTimeout(f"command timed out after {limit:g} s on {self._where()} and was "
                                     f"killed: {shorten(text)} (pass a longer timeout or raise "
                                     "connection.command_timeout_s)") from None
        finally:
            chan.close()
        _, stdout = _split_pid(b"".join(out))
        return Result(chan.exit_status, _decode(stdout), _decode(b"".join(err)),
                      time.monotonic() - start, text)

    def put(self, local_path, remote_path) -> None:
        src = Path(local_path).expanduser()
        if not src.is_file():
            why = "is a folder, not a file" if src.is_dir() else "no such file"
            raise TransportError(f"cannot upload {src}: {why}")
        dst = self.expand_user(str(remote_path))
        parent = posixpath.dirname(dst.rstrip("/"))
        if parent:
            made = self.run(["mkdir", "-p", "--", parent], timeout=max(self.connect_timeout, 30.0))
            if made.returncode != 0:
                raise TransportError(f"cannot create {parent} on {self._where()}: "
                                     f"{made.stderr.strip() or 'mkdir -p failed'}")
        tmp = f"{dst}.part-{uuid.uuid4().hex[:8]}"
        sftp = self._sftp_client()
        try:
            sftp.put(str(src), tmp, confirm=True)
            sftp.chmod(tmp, src.stat().st_mode & 0o777)
            self._rename(sftp, tmp, dst)
        except _LINK_ERRORS as exc:
            if not self._alive():
                raise LinkDropped(f"the connection to {self._where()} dropped while uploading "
                                  f"{src} to {dst}; upload it again") from None
            _try(lambda: sftp.remove(tmp))
            raise TransportError(f"cannot upload {src} to {self._where()}:{dst}: "
                                 f"{_reason(exc)}") from None

    def get(self, remote_path, local_path) -> None:
        src = self.expand_user(str(remote_path))
        dst = Path(local_path).expanduser()
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot create {dst.parent}: {exc.strerror or exc}") from None
        tmp = dst.with_name(f".{dst.name}.part-{uuid.uuid4().hex[:8]}")
        sftp = self._sftp_client()
        try:
            sftp.get(src, str(tmp))
            os.replace(tmp, dst)
        except _LINK_ERRORS as exc:
            tmp.unlink(missing_ok=True)
            if not self._alive():
                raise LinkDropped(f"the connection to {self._where()} dropped while downloading "
                                  f"{src}; download it again") from None
            raise TransportError(f"cannot download {self._where()}:{src} to {dst}: "
                                 f"{_reason(exc)}") from None

    def home(self) -> str:
        """The remote user's ``$HOME``, asked once from the remote shell."""
        if self._home is None:
            res = self.run('printf %s "$HOME"', timeout=max(self.connect_timeout, 30.0))
            if res.returncode != 0 or not res.stdout.startswith("/"):
                raise TransportError(f"cannot find the home folder on {self._where()} "
                                     f"($HOME is {res.stdout!r}); use absolute remote paths")
            self._home = res.stdout
        return self._home

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._discard()

    # ---------------------------------------------------------------- connecting

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"the ssh transport to {self._where()} was closed; "
                                 "make a new one with make_transport(spec)")

    def _alive(self) -> bool:
        t = self._client.get_transport() if self._client is not None else None
        return t is not None and t.is_active()

    def _discard(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        for thing in (sftp, client):
            if thing is not None:
                _try(thing.close)

    def _connect_with_retries(self) -> None:
        """Connect once; after a lost link, retry with backoff (host key and auth errors are final)."""
        self._discard()
        if not self._ever_connected:
            self._connect_once()
            return
        last: ConnectError | None = None
        for delay in self.reconnect_delays or (0.0,):
            time.sleep(delay)
            try:
                self._connect_once()
                return
            except (HostKeyError, AuthError):
                raise
            except ConnectError as exc:
                last = exc
        n = len(self.reconnect_delays) or 1
        raise ConnectError(f"lost the connection to {self._where()} and {n} reconnect attempt"
                           f"{'s' if n > 1 else ''} over {sum(self.reconnect_delays):g} s failed; "
                           f"last: {last}") from None

    def _connect_once(self) -> None:
        host, port, where = self.host, self.port, self._where()
        try:
            sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        except socket.gaierror as exc:
            raise ConnectError(f"cannot connect to {where}: unknown host {host!r} "
                               f"({exc.strerror}){self._config_note}; check connection.host") from None
        except TimeoutError:
            raise ConnectError(f"cannot connect to {where}: no answer within {self.connect_timeout:g} s"
                               f"{self._config_note}; check the device is on and reachable, or raise "
                               "connection.connect_timeout_s") from None
        except ConnectionRefusedError:
            raise ConnectError(f"cannot connect to {where}: connection refused{self._config_note}; "
                               f"is sshd running there and listening on port {port}?") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {where}: {exc.strerror or exc}{self._config_note}; "
                               "check the network and connection.host") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        client = paramiko.SSHClient()
        try:
            policy = self._load_host_keys(client)
            client.connect(
                hostname=host, port=port, username=self.user, sock=sock,
                key_filename=self.identity_files or None,
                allow_agent=True, look_for_keys=not self.identity_files,
                timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout, channel_timeout=self.connect_timeout,
            )
            client.get_transport().set_keepalive(self.keepalive_s)
        except BaseException as exc:
            _try(client.close)
            _try(sock.close)
            raise self._connect_error(exc) from None
        self._client = client
        self._ever_connected = True
        if isinstance(policy, AcceptNewHostKey):
            self.recorded_host_key = policy.recorded

    def _load_host_keys(self, client: paramiko.SSHClient) -> paramiko.MissingHostKeyPolicy:
        kh = self.known_hosts
        try:
            if not self._explicit_known_hosts and os.path.isfile(SYSTEM_KNOWN_HOSTS):
                client.load_system_host_keys(SYSTEM_KNOWN_HOSTS)
            if kh.is_file():
                client.load_host_keys(str(kh))
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise HostKeyError(f"cannot read the known_hosts file {kh}: {_reason(exc)}; fix or "
                               "delete the bad line") from None
        cls = AcceptNewHostKey if self.host_key_policy == "accept-new" else RejectUnknownHostKey
        policy = cls(self.host, self.port, kh)
        client.set_missing_host_key_policy(policy)
        return policy

    def _connect_error(self, exc: BaseException) -> BaseException:
        where = self._where()
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            name = host_key_name(self.host, self.port)
            return HostKeyError(
                f"host key for {where} changed: the device now offers {exc.key.get_name()} "
                f"{exc.key.fingerprint}, {self.known_hosts} has {exc.expected_key.get_name()} "
                f"{exc.expected_key.fingerprint}; this is a possible man-in-the-middle attack (or "
                "a reinstalled device). If you trust the change, remove the old key with "
                f"`ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(str(self.known_hosts))}` and "
                "connect again (accept-new does not replace a changed key)"
            )
        if isinstance(exc, paramiko.PasswordRequiredException):
            return AuthError(f"cannot log in to {where}: the key {exc} needs a passphrase; load it "
                             "into ssh-agent (ssh-add) instead of connection.identity_file")
        if isinstance(exc, paramiko.AuthenticationException):
            keys = (f"key {', '.join(self.identity_files)}" if self.identity_files
                    else "ssh-agent and ~/.ssh/id_* keys")
            return AuthError(f"cannot log in to {where} as {self.user}: the server refused the "
                             f"{keys}; check connection.user and connection.identity_file, and "
                             "that the public key is in the device's ~/.ssh/authorized_keys")
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return ConnectError(f"cannot connect to {where}: the SSH handshake did not finish within "
                                f"{self.connect_timeout:g} s; raise connection.connect_timeout_s")
        if isinstance(exc, _LINK_ERRORS):
            return ConnectError(f"cannot open an SSH session with {where}: {_reason(exc)}; is an "
                                f"SSH server listening on port {self.port}?")
        return exc

    def _open_channel(self) -> paramiko.Channel:
        with self._lock:
            self._check_open()
            if self._alive():
                try:
                    return self._client.get_transport().open_session(timeout=self.connect_timeout)
                except _LINK_ERRORS:
                    pass  # found dead before the command started: reconnecting is safe
            self._connect_with_retries()
            try:
                return self._client.get_transport().open_session(timeout=self.connect_timeout)
            except _LINK_ERRORS as exc:
                self._discard()
                raise ConnectError(f"connected to {self._where()} but could not open a session: "
                                   f"{_reason(exc)}") from None

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            self._check_open()
            if self._sftp is not None and self._alive() and not self._sftp.get_channel().closed:
                return self._sftp
            chan = self._open_channel()
            try:
                chan.invoke_subsystem("sftp")
                sftp = paramiko.SFTPClient(chan)
            except _LINK_ERRORS as exc:
                _try(chan.close)
                raise TransportError(f"{self._where()} has no working SFTP server ({_reason(exc)}); "
                                     "enable `Subsystem sftp` in its sshd_config (package "
                                     "openssh-sftp-server)") from None
            # each SFTP request waits for its reply at most this long
            chan.settimeout(min(self.command_timeout, max(30.0, 3 * self.connect_timeout)))
            self._sftp = sftp
            return sftp

    # ---------------------------------------------------------------- running a command

    def _dropped(self, text: str) -> LinkDropped:
        return LinkDropped(f"the connection to {self._where()} dropped while running "
                           f"{shorten(text, 60)!r}; it may or may not have finished (the next call "
                           "reconnects; run it again only if that is safe)")

    def _kill(self, chan: paramiko.Channel, pid: int | None) -> None:
        """Stop a timed-out command: a 'signal' request (OpenSSH ≥ 7.9 killpg()s the session,
        but refuses for root logins), then ``kill`` of its process group over a new channel."""
        _signal(chan, "KILL")
        _try(chan.close)
        if pid is None:
            return
        try:
            killer = self._client.get_transport().open_session(timeout=self.connect_timeout)
            killer.settimeout(max(self.connect_timeout, 5.0))
            killer.exec_command(f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null")
            killer.status_event.wait(max(self.connect_timeout, 5.0))
            killer.close()
        except Exception:  # best effort: the link may be the reason it timed out
            pass

    def _send_input(self, chan, transport, data: bytes | None, deadline: float, text: str) -> None:
        if data:
            chan.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chan.sendall(data)
            except TimeoutError:
                raise CommandTimeout(text) from None
            except OSError:
                if not transport.is_active():
                    raise self._dropped(text) from None
                # the command exited without reading all its input: not our error
            chan.settimeout(None)
        _try(chan.shutdown_write)

    def _collect(self, chan, transport, deadline: float, text: str, out: list[bytes],
                 err: list[bytes]) -> None:
        def drain() -> None:
            while chan.recv_ready():
                out.append(chan.recv(1 << 16))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(1 << 16))

        while True:
            drain()
            if chan.eof_received or chan.closed:
                # all output is in; wait for the exit status (or the close)
                if not chan.status_event.wait(max(deadline - time.monotonic(), 0.0)):
                    raise CommandTimeout(text)
                drain()
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout(text)
            if not transport.is_active():
                raise self._dropped(text)
            select.select([chan], [], [], min(remaining, 1.0))
        if chan.exit_status == -1 and (not transport.is_active() or not chan.eof_received):
            # closed without an exit status or an EOF: the link went, not the command
            raise self._dropped(text)

    @staticmethod
    def _rename(sftp: paramiko.SFTPClient, tmp: str, dst: str) -> None:
        try:
            sftp.posix_rename(tmp, dst)  # atomic replace (OpenSSH extension)
        except OSError:
            _try(lambda: sftp.remove(dst))
            sftp.rename(tmp, dst)


def _signal(chan: paramiko.Channel, name: str) -> None:
    """Send an RFC 4254 'signal' request (OpenSSH ≥ 7.9 delivers it to the process group)."""
    try:
        m = Message()
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string(name)
        chan.transport._send_user_message(m)
    except Exception:  # best effort: the channel is closed next anyway
        pass


def _split_pid(data: bytes) -> tuple[int | None, bytes]:
    """Split the ``echo $$`` line off a command's stdout."""
    head, sep, rest = data.partition(b"\n")
    if sep and head.isdigit():
        return int(head), rest
    return None, data


def _try(fn) -> None:
    try:
        fn()
    except Exception:
        pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
