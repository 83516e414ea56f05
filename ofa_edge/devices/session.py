"""A working session on a device: a run folder of its own, the runner pushed there and checked,
files pushed and runner commands run, and only that folder removed at the end.

    with DeviceSession(spec, "bench") as dev:       # mktemp -d <work_dir>/ofa-edge-bench.XXXXXX
        info = dev.ready()                          # the readiness check: one line when not ready
        dev.run("time", "--model", dev.put(path), *dev.timing_args())

``device.work_dir`` and ``device.python`` may start with ``~`` or ``$HOME``: both are expanded on
the device. The work dir itself is made if missing and never removed; ofa-edge removes only the
run folders it made with ``mktemp -d`` (their names start with ``ofa-edge-``).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ofa_edge.devices.spec import DeviceSpec
from ofa_edge.errors import OfaEdgeError

RUN_PREFIX = "ofa-edge-"  # every run folder's name starts so: nothing else is ever removed
TRT_CACHE = "tensorrt-engines"  # a persistent folder under the work dir, with a marker file
TRT_MARKER = ".ofa-edge-tensorrt-cache"


class NotReady(OfaEdgeError):
    """The device cannot run what the spec asks (Python, numpy, runtime, delegate, pinning)."""


def device_python(spec: DeviceSpec) -> str:
    """The Python to run the runner with; ``host`` (local transport only) is this interpreter."""
    return sys.executable if spec.device.python == "host" else spec.device.python


def runtime_args(spec: DeviceSpec, affinity: bool = True, trt_cache: str | None = None) -> list[str]:
    """``--threads``, ``--affinity`` (unless ``affinity=False``), the delegate and the ONNX providers,
    as the spec asks; ``time`` takes all of them, ``eval`` all but the affinity."""
    r = spec.runtime
    args = ["--threads", str(r.threads)]
    if affinity and r.cpu_affinity:
        args += ["--affinity", ",".join(str(c) for c in r.cpu_affinity)]
    if r.name == "tflite" and r.delegate:
        args += ["--delegate", r.delegate]
    for provider in (r.execution_providers or []) if r.name == "onnxruntime" else []:
        args += ["--provider", provider]
    if trt_cache and "TensorrtExecutionProvider" in (r.execution_providers or []):
        args += ["--trt-cache", trt_cache] + (["--trt-fp16"] if spec.precision == "fp16" else [])
    return args


class DeviceSession:
    """``transport``: an open transport to use instead of the spec's (tests: a MockTransport)."""

    def __init__(self, spec: DeviceSpec, purpose: str = "run", transport=None, **transport_overrides):
        self.spec, self.purpose, self.given, self.overrides = spec, purpose, transport, transport_overrides
        self.work, self._trt = None, False

    def __enter__(self) -> "DeviceSession":
        from ofa_edge.devices.transports import make_transport

        self.transport = self.given or make_transport(self.spec, **self.overrides).__enter__()
        try:
            self.root = self.expand(self.spec.device.work_dir)
            self.python = device_python(self.spec)
            self.python = self.expand(self.python) if self.python != sys.executable else self.python
            self.work = self._make_run_folder()
            self.runner = self._push_runner()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    # ------------------------------------------------------------ setup
    def expand(self, path: str) -> str:
        """``~`` and ``$HOME`` (or ``${HOME}``) at the start of ``path``, expanded on the device."""
        for form in ("${HOME}", "$HOME"):
            if path == form or path.startswith(form + "/"):
                path = "~" + path[len(form):]
        return self.transport.expand_user(path)

    def _make_run_folder(self) -> str:
        root = self.root.rstrip("/") or "/"
        template = f"{root}/{RUN_PREFIX}{self.purpose}.XXXXXX"
        done = self.transport.run(f"mkdir -p {shlex.quote(root)} && mktemp -d {shlex.quote(template)}", timeout=30)
        folder = done.stdout.strip().splitlines()[-1] if done.ok and done.stdout.strip() else ""
        if not (done.ok and folder.startswith(f"{root}/{RUN_PREFIX}{self.purpose}.")):
            raise NotReady(f"cannot make a run folder under device.work_dir {self.spec.device.work_dir!r} "
                           f"({(done.stderr or done.stdout).strip()[:200] or 'mktemp -d failed'}): point work_dir "
                           "at a folder the device user can write")
        return folder

    def _push_runner(self) -> str:
        """Push the runner zipapp and check, with its own answer, that it is the one pushed."""
        from ofa_edge.devices.runner_host import RUNNER_NAME, check_runner_answer, runner_app

        runner = self.put(runner_app(), RUNNER_NAME)
        check_runner_answer(self.run("protocol", runner=runner), self.transport.describe())
        return runner

    @property
    def trt_cache(self) -> str | None:
        """TensorRT's engine cache, made on first use (after the readiness check)."""
        if self._trt is False:
            self._trt = self._make_trt_cache()
        return self._trt

    def _make_trt_cache(self) -> str | None:
        """A persistent folder that ofa-edge owns (marked) under the work dir: each model's engine is
        built once, not on every call."""
        if "TensorrtExecutionProvider" not in (self.spec.runtime.execution_providers or []):
            return None
        cache = f"{self.root.rstrip('/')}/{TRT_CACHE}"
        q = shlex.quote(cache)
        made = self.transport.run(f"if [ -d {q} ] && [ ! -e {q}/{TRT_MARKER} ]; then exit 3; fi; "
                                  f"mkdir -p {q} && touch {q}/{TRT_MARKER}", timeout=30)
        if made.returncode == 3:
            raise NotReady(f"{cache} exists on the device but ofa-edge did not make it (no {TRT_MARKER}): "
                           "move it away; ofa-edge keeps TensorRT engines there")
        made.check("mkdir")
        return cache

    # ------------------------------------------------------------ use
    def put(self, local: str | Path, name: str | None = None) -> str:
        """Push ``local`` into the run folder; returns its remote path."""
        from ofa_edge.devices.transports import remote_path_join

        remote = remote_path_join(self.work, name or Path(local).name)
        self.transport.put(str(local), remote)
        return remote

    def run(self, *args: str, runner: str | None = None) -> dict:
        """One runner command on the device; its parsed answer (errors raise)."""
        from ofa_edge.devices.runner_host import parse_answer

        done = self.transport.run([self.python, runner or self.runner, *args],
                                  timeout=self.spec.connection.command_timeout_s)
        if done.returncode == 127 and not done.stdout.strip():
            raise NotReady(f"device.python {self.spec.device.python!r} is not on the device "
                           f"({done.stderr.strip()[:160] or 'command not found'}); install Python 3.6+ there "
                           f"or fix device.python in {self.spec.source or self.spec.name}")
        try:
            return parse_answer(done.stdout)
        except OfaEdgeError as exc:
            if "too old for the ofa-edge runner" in str(exc):
                raise NotReady(str(exc).split(": ", 1)[-1]) from None
            raise

    def info(self) -> dict:
        """``runner info`` with the spec's runtime, delegate, providers and pinning tried out."""
        return self.run("info", *runtime_args(self.spec))

    def ready(self, log=None) -> dict:
        """The readiness check: ``info``, compared with the spec; raises NotReady with one line."""
        from ofa_edge.devices.readiness import assess

        info = self.info()
        problems, warnings = assess(self.spec, info)
        for line in warnings:
            if log:
                log(f"warning: {line}")
        if problems:
            more = f" (and {len(problems) - 1} more: ofa-edge devices check --spec {self.spec.source or self.spec.name})"
            raise NotReady(f"device {self.spec.name} is not ready: {problems[0]}" + (more if len(problems) > 1 else ""))
        return info

    def runtime_args(self) -> list[str]:
        """``--threads``, the delegate and the ONNX providers, as bench evaluates with them."""
        return runtime_args(self.spec, affinity=False, trt_cache=self.trt_cache)

    def timing_args(self) -> list[str]:
        """The spec's measurement settings, CPU affinity, threads, delegate and providers, for ``time``."""
        m = self.spec.measure
        return ["--warmup", str(m.warmup), "--repeats", str(m.repeats), "--runs", str(m.runs_per_repeat),
                *runtime_args(self.spec, trt_cache=self.trt_cache)]

    def __exit__(self, *exc) -> None:
        """Remove this session's run folder. When an error is already on its way out (a lost link),
        a failed removal is ignored: a stale run folder is harmless and the first error says more."""
        from ofa_edge.devices.transports import TransportError

        try:
            if self.work and Path(self.work).name.startswith(RUN_PREFIX):
                self.transport.run(["rm", "-rf", "--", self.work], timeout=60)
        except TransportError:
            if exc[0] is None:
                raise
        finally:
            if not self.given:
                self.transport.__exit__(*exc)
