"""A scripted transport for fast unit tests: no processes, no network, no sleeping.

    t = MockTransport({"python3 -c": "3.11.2\\n", "nproc": (0, "4\\n", "")},
                      faults={3: "drop"}, latency=0.002)

* ``script``: a callable ``(command_text, input) -> response``, or a dict mapping command
  prefixes to responses (the longest matching prefix wins; no match -> exit 127).
* A response is a :class:`Result`, ``str`` (stdout, exit 0), ``int`` (exit code), a tuple
  ``(returncode, stdout[, stderr])``, a dict with those keys, an exception (raised) or a
  callable ``(command_text, input)`` returning any of these.
* ``faults`` maps a 1-based call number (counting run, put and get) to ``"drop"``
  (:class:`LinkDropped`), ``"timeout"`` (:class:`CommandTimeout`), ``"connect"``
  (:class:`ConnectError`) or an exception instance.
* ``latency``: seconds per call, a list of them (cycled) or ``(command_text) -> seconds``.
  Time is fake: ``clock`` advances by the latency, :attr:`Result.seconds` reports it, and a
  latency above the call's timeout raises :class:`CommandTimeout`.
* Every call is recorded in :attr:`calls`; put/get move bytes through :attr:`files`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ofa_edge.devices.transports.base import (
    Command,
    CommandTimeout,
    ConnectError,
    LinkDropped,
    Result,
    Transport,
    TransportError,
    expand_home,
    to_shell,
)


class FakeClock:
    """Fake monotonic time: ``now()`` and ``sleep()`` (which only advances it)."""

    def __init__(self, start: float = 0.0):
        self.t = start

    def now(self) -> float:
        return self.t

    __call__ = now

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    advance = sleep


@dataclass
class Call:
    op: str  # "run", "put" or "get"
    command: str  # the shell text for run; "SRC -> DST" for put/get
    timeout: float | None = None
    input: bytes | None = None
    at: float = 0.0  # fake clock time when the call started
    args: tuple = field(default_factory=tuple)  # put/get: (src, dst)


class MockTransport(Transport):
    kind = "mock"

    def __init__(self, script: Callable | Mapping[str, Any] | None = None, *,
                 faults: Mapping[int, Any] | None = None,
                 latency: float | list[float] | Callable[[str], float] = 0.0,
                 clock: FakeClock | None = None, command_timeout: float = 600.0,
                 home: str = "/home/mock", name: str = "mock"):
        self.script = script if script is not None else {}
        self.faults = dict(faults or {})
        self._latency = itertools.cycle(latency) if isinstance(latency, (list, tuple)) else latency
        self.clock = clock or FakeClock()
        self.command_timeout = command_timeout
        self._home = home
        self.name = name
        self.calls: list[Call] = []
        self.files: dict[str, bytes] = {}
        self.closed = False

    # ---------------------------------------------------------------- the interface

    def run(self, cmd: Command, timeout: float | None = None, input: bytes | None = None) -> Result:
        text = to_shell(cmd)
        limit = self.command_timeout if timeout is None else timeout
        self._begin(Call("run", text, timeout, input, self.clock.now()))
        seconds = self._latency(text) if callable(self._latency) else (
            next(self._latency) if isinstance(self._latency, itertools.cycle) else self._latency)
        if seconds > limit:
            self.clock.sleep(limit)
            raise CommandTimeout(f"command timed out after {limit:g} s on {self.name}: {text}")
        self.clock.sleep(seconds)
        return self._respond(self._lookup(text), text, input, seconds)

    def put(self, local_path, remote_path) -> None:
        dst = self.expand_user(str(remote_path))
        self._begin(Call("put", f"{local_path} -> {dst}", at=self.clock.now(), args=(str(local_path), dst)))
        try:
            self.files[dst] = Path(local_path).expanduser().read_bytes()
        except OSError as exc:
            raise TransportError(f"cannot upload {local_path}: {exc.strerror or exc}") from None

    def get(self, remote_path, local_path) -> None:
        src = self.expand_user(str(remote_path))
        self._begin(Call("get", f"{src} -> {local_path}", at=self.clock.now(), args=(src, str(local_path))))
        if src not in self.files:
            raise TransportError(f"cannot download {self.name}:{src}: no such file")
        dst = Path(local_path).expanduser()
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(self.files[src])

    def home(self) -> str:
        return self._home

    def expand_user(self, path: str) -> str:
        return expand_home(path, self._home)

    def close(self) -> None:
        self.closed = True

    def describe(self) -> str:
        return f"mock {self.name}"

    # ---------------------------------------------------------------- helpers

    @property
    def commands(self) -> list[str]:
        """The shell text of every run call, in order."""
        return [c.command for c in self.calls if c.op == "run"]

    def _begin(self, call: Call) -> None:
        if self.closed:
            raise TransportError(f"the mock transport {self.name} was closed")
        self.calls.append(call)
        fault = self.faults.get(len(self.calls))
        if fault is None:
            return
        if isinstance(fault, BaseException):
            raise fault
        what = {"drop": LinkDropped(f"the connection to {self.name} dropped while running "
                                    f"{call.command!r} (scripted fault)"),
                "timeout": CommandTimeout(f"command timed out on {self.name}: {call.command} "
                                          "(scripted fault)"),
                "connect": ConnectError(f"cannot connect to {self.name} (scripted fault)")}
        if fault not in what:
            raise ValueError(f"unknown scripted fault {fault!r} (use drop, timeout, connect or an exception)")
        raise what[fault]

    def _lookup(self, text: str) -> Any:
        if callable(self.script):
            return self.script
        matches = [p for p in self.script if text == p or text.startswith(p)]
        if not matches:
            return Result(127, "", f"mock: no scripted response for: {text}\n", 0.0, text)
        return self.script[max(matches, key=len)]

    def _respond(self, response: Any, text: str, input: bytes | None, seconds: float) -> Result:
        if callable(response) and not isinstance(response, type):
            response = response(text, input)
        if isinstance(response, BaseException) or (isinstance(response, type)
                                                    and issubclass(response, BaseException)):
            raise response
        if isinstance(response, Result):
            return Result(response.returncode, response.stdout, response.stderr, seconds, text)
        if response is None:
            return Result(0, "", "", seconds, text)
        if isinstance(response, str):
            return Result(0, response, "", seconds, text)
        if isinstance(response, bool) or not isinstance(response, (int, tuple, list, dict)):
            raise TypeError(f"cannot turn {response!r} into a mock Result")
        if isinstance(response, int):
            return Result(response, "", "", seconds, text)
        if isinstance(response, dict):
            return Result(int(response.get("returncode", 0)), response.get("stdout", ""),
                          response.get("stderr", ""), seconds, text)
        rc, out, *rest = response
        return Result(int(rc), out, rest[0] if rest else "", seconds, text)


__all__ = ["Call", "FakeClock", "MockTransport"]
