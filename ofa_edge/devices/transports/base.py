"""The transport interface: run a command on a device, copy files to and from it.

A transport is the one way the rest of ofa-edge talks to a device, whether the device is
this machine (:class:`~ofa_edge.devices.transports.local.LocalTransport`), a board over SSH
(:class:`~ofa_edge.devices.transports.ssh.SshTransport`) or a script in a unit test
(:class:`~ofa_edge.devices.transports.mock.MockTransport`).

Commands run through the device's shell. A ``list[str]`` command is quoted with
:func:`shlex.join` first, so every argument and path reaches the program as one word, spaces
and quotes included; a ``str`` command is passed to the shell as it is (pipes, ``&&``,
``$HOME`` and ``~`` work, and quoting is the caller's job). ``~`` inside a list element is
*not* expanded by the shell: call :meth:`Transport.expand_user` on the path first.

Errors are :class:`TransportError` subclasses with a one-line message saying what is wrong
and how to fix it. A command that runs and exits non-zero is not an error: look at
:attr:`Result.returncode`, or call :meth:`Result.check`.

This module imports only the standard library.
"""
from __future__ import annotations

import posixpath
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence, Union

from ofa_edge.errors import OfaEdgeError

Command = Union[str, Sequence[str]]


class TransportError(OfaEdgeError):
    """Talking to a device failed (not: a command ran and exited non-zero)."""


class ConnectError(TransportError):
    """The device could not be reached: refused, unreachable, unknown host, timeout, auth."""


class AuthError(ConnectError):
    """The device answered but refused every key we offered."""


class HostKeyError(ConnectError):
    """The device's host key is unknown (and the policy is ``reject``) or has changed."""


class CommandTimeout(TransportError):
    """A command ran longer than its timeout; it was stopped (best effort on a remote device)."""


class LinkDropped(TransportError):
    """The link died while a command or a copy was under way; it may or may not have finished.

    The transport does not retry by itself: re-running a command may not be idempotent. The
    next call reconnects.
    """


class CommandFailed(TransportError):
    """Raised by :meth:`Result.check` when a command exited non-zero."""


class NoTransport(OfaEdgeError):
    """The device has no transport (``connection.transport: none``, an MCU)."""


@dataclass(frozen=True)
class Result:
    """What a command did: its exit code, its output decoded as UTF-8, and how long it took."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    command: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self, what: str | None = None) -> "Result":
        """Return self if the command succeeded, else raise :class:`CommandFailed` (one line)."""
        if self.returncode == 0:
            return self
        last = next((ln.strip() for ln in reversed(self.stderr.splitlines()) if ln.strip()), "")
        detail = f": {last}" if last else " (no output on stderr)"
        raise CommandFailed(f"{what or shorten(self.command)} failed with exit code "
                            f"{self.returncode}{detail}")


def to_shell(cmd: Command) -> str:
    """The shell text for ``cmd``: a list is quoted word by word, a string is kept as is."""
    if isinstance(cmd, str):
        return cmd
    if isinstance(cmd, (bytes, bytearray)):
        raise TypeError("a command is a str or a list of str, not bytes")
    words = list(cmd)
    if not words:
        raise ValueError("empty command")
    return shlex.join(str(w) for w in words)


def shorten(text: str, limit: int = 80) -> str:
    """One line of at most ``limit`` characters, for error messages."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def remote_path_join(*parts: str) -> str:
    """Join POSIX path parts for a remote device (never uses the local ``os.sep``)."""
    return posixpath.join(*(str(p) for p in parts)) if parts else ""


def expand_home(path: str, home: str) -> str:
    """Replace a leading ``~`` or ``~/`` with ``home`` (``~user`` is left alone)."""
    path = str(path)
    if path == "~":
        return home
    if path.startswith("~/"):
        return posixpath.join(home, path[2:])
    return path


class Transport(ABC):
    """Run commands on a device and copy files to and from it. Use it as a context manager."""

    #: short kind name: "local", "ssh", "mock"
    kind: str = "?"

    @abstractmethod
    def run(self, cmd: Command, timeout: float | None = None, input: bytes | None = None) -> Result:
        """Run ``cmd`` through the device's shell and wait for it.

        ``timeout`` (seconds) defaults to the transport's command timeout; past it the
        command is stopped and :class:`CommandTimeout` is raised. ``input`` is fed to the
        command's stdin (which is otherwise empty).
        """

    @abstractmethod
    def put(self, local_path: str, remote_path: str) -> None:
        """Copy a local file to ``remote_path`` (a file path), creating its parent folders."""

    @abstractmethod
    def get(self, remote_path: str, local_path: str) -> None:
        """Copy the remote file ``remote_path`` to ``local_path``, creating its parent folders."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Safe to call twice."""

    @abstractmethod
    def describe(self) -> str:
        """A short human description, e.g. ``ssh pi@raspberrypi.local:22``."""

    def expand_user(self, path: str) -> str:
        """``path`` with a leading ``~`` replaced by the device user's home directory."""
        return expand_home(path, self.home())

    def home(self) -> str:
        """The device user's home directory."""
        raise NotImplementedError

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
