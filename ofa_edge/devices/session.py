"""A working session on a device: a work folder, the runner pushed there, files pushed and
runner commands run, and the folder removed at the end (``with DeviceSession(spec) as dev``)."""
from __future__ import annotations

from pathlib import Path

from ofa_edge.devices.spec import DeviceSpec


def runtime_args(spec: DeviceSpec, affinity: bool = True) -> list[str]:
    """``--threads``, ``--affinity`` (unless ``affinity=False``) and the ONNX providers, as the
    spec asks; ``time`` takes all of them, ``eval`` all but the affinity."""
    r = spec.runtime
    args = ["--threads", str(r.threads)]
    if affinity and r.cpu_affinity:
        args += ["--affinity", ",".join(str(c) for c in r.cpu_affinity)]
    for provider in (r.execution_providers or []) if r.name == "onnxruntime" else []:
        args += ["--provider", provider]
    return args


class DeviceSession:
    """``transport``: an open transport to use instead of the spec's (tests: a MockTransport)."""

    def __init__(self, spec: DeviceSpec, folder: str = "session", transport=None):
        self.spec, self.folder, self.given = spec, folder, transport

    def __enter__(self) -> "DeviceSession":
        from ofa_edge.devices.runner import RUNNER_PATH
        from ofa_edge.devices.transports import make_transport, remote_path_join

        self.transport = self.given or make_transport(self.spec).__enter__()
        try:
            self.work = remote_path_join(self.transport.expand_user(self.spec.device.work_dir), self.folder)
            self.transport.run(["mkdir", "-p", self.work], timeout=30).check("mkdir")
            self.runner = self.put(RUNNER_PATH, "ofa_edge_runner.py")
        except BaseException:
            if not self.given:  # a given transport stays open: its owner closes it
                self.transport.__exit__(None, None, None)
            raise
        return self

    def put(self, local: str | Path, name: str | None = None) -> str:
        """Push ``local`` into the work folder; returns its remote path."""
        from ofa_edge.devices.transports import remote_path_join

        remote = remote_path_join(self.work, name or Path(local).name)
        self.transport.put(str(local), remote)
        return remote

    def run(self, *args: str) -> dict:
        """One runner command on the device; its parsed answer (errors raise)."""
        from ofa_edge.devices.check import device_python
        from ofa_edge.devices.runner_host import parse_answer

        done = self.transport.run([device_python(self.spec), self.runner, *args],
                                  timeout=self.spec.connection.command_timeout_s)
        return parse_answer(done.stdout)

    def runtime_args(self) -> list[str]:
        """``--threads`` and the ONNX providers, as bench evaluates with them."""
        return runtime_args(self.spec, affinity=False)

    def timing_args(self) -> list[str]:
        """The spec's measurement settings, CPU affinity, threads and providers, for ``time``."""
        m = self.spec.measure
        return ["--warmup", str(m.warmup), "--repeats", str(m.repeats), "--runs", str(m.runs_per_repeat),
                *runtime_args(self.spec)]

    def __exit__(self, *exc) -> None:
        try:
            self.transport.run(["rm", "-rf", self.work], timeout=60)
        finally:
            if not self.given:
                self.transport.__exit__(*exc)
