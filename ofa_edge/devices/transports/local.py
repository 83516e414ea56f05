"""This machine as the device: commands run in a separate process, files are copied locally."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ofa_edge.devices.transports.base import (
    Command,
    CommandTimeout,
    Result,
    Transport,
    TransportError,
    shorten,
    to_shell,
)

DEFAULT_COMMAND_TIMEOUT_S = 600.0


class LocalTransport(Transport):
    """Run commands with ``/bin/sh -c`` in a new process group on this machine.

    On a timeout the whole process group is killed, so a command's children go too.
    """

    kind = "local"

    def __init__(self, command_timeout: float = DEFAULT_COMMAND_TIMEOUT_S, *,
                 cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                 shell: str = "/bin/sh"):
        self.command_timeout = command_timeout
        self.cwd = str(cwd) if cwd is not None else None
        self.env = env
        self.shell = shell
        self._closed = False

    def run(self, cmd: Command, timeout: float | None = None, input: bytes | None = None) -> Result:
        self._check_open()
        text = to_shell(cmd)
        limit = self.command_timeout if timeout is None else timeout
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                [self.shell, "-c", text], cwd=self.cwd, env=self.env,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )
        except OSError as exc:
            raise TransportError(f"cannot start {self.shell} on this machine: {exc.strerror or exc}"
                                 " (check the shell exists and the working folder is valid)") from None
        try:
            out, err = proc.communicate(input=input, timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CommandTimeout(f"command timed out after {limit:g} s on this machine and was "
                                 f"killed: {shorten(text)} (pass a longer timeout or raise "
                                 "connection.command_timeout_s)") from None
        except BaseException:
            _kill_group(proc)
            raise
        return Result(proc.returncode, _decode(out), _decode(err), time.monotonic() - start, text)

    def put(self, local_path, remote_path) -> None:
        self._copy(Path(local_path).expanduser(), Path(self.expand_user(str(remote_path))), "upload")

    def get(self, remote_path, local_path) -> None:
        self._copy(Path(self.expand_user(str(remote_path))), Path(local_path).expanduser(), "download")

    def home(self) -> str:
        return os.path.expanduser("~")

    def close(self) -> None:
        self._closed = True

    def describe(self) -> str:
        return "local (this machine)"

    # ---------------------------------------------------------------- helpers

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("this local transport was closed; make a new one with make_transport(spec)")

    def _copy(self, src: Path, dst: Path, verb: str) -> None:
        self._check_open()
        if self.cwd is not None:
            src, dst = Path(self.cwd) / src, Path(self.cwd) / dst
        if not src.is_file():
            why = "is a folder, not a file" if src.is_dir() else "no such file"
            raise TransportError(f"cannot {verb} {src}: {why}")
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            # copy to a temporary name, then rename: a reader never sees half a file
            fd, tmp = tempfile.mkstemp(prefix=".part-", dir=dst.parent)
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                shutil.copymode(src, tmp)
                os.replace(tmp, dst)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise TransportError(f"cannot {verb} {src} to {dst}: {exc.strerror or exc}") from None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds the pipes
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
        proc.wait(timeout=5)


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")
