"""A working session on a device: a work folder, the runner pushed there, files pushed and
runner commands run, and the folder removed at the end (``with DeviceSession(spec) as dev``)."""
from __future__ import annotations

from pathlib import Path

from ofa_edge.devices.spec import DeviceSpec


class DeviceSession:
    def __init__(self, spec: DeviceSpec, folder: str = "session"):
        self.spec, self.folder = spec, folder

    def __enter__(self) -> "DeviceSession":
        from ofa_edge.devices.runner import RUNNER_PATH
        from ofa_edge.devices.transports import make_transport, remote_path_join

        self.transport = make_transport(self.spec).__enter__()
        try:
            self.work = remote_path_join(self.transport.expand_user(self.spec.device.work_dir), self.folder)
            self.transport.run(["mkdir", "-p", self.work], timeout=30).check("mkdir")
            self.runner = self.put(RUNNER_PATH, "ofa_edge_runner.py")
        except BaseException:
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
        """``--threads`` and the ONNX providers, as bench times with them."""
        r = self.spec.runtime
        args = ["--threads", str(r.threads)]
        for provider in (r.execution_providers or []) if r.name == "onnxruntime" else []:
            args += ["--provider", provider]
        return args

    def timing_args(self) -> list[str]:
        """The spec's measurement settings and CPU affinity, for ``time``."""
        m, r = self.spec.measure, self.spec.runtime
        args = ["--warmup", str(m.warmup), "--repeats", str(m.repeats), "--runs", str(m.runs_per_repeat)]
        if r.cpu_affinity:
            args += ["--affinity", ",".join(str(c) for c in r.cpu_affinity)]
        return args + self.runtime_args()

    def __exit__(self, *exc) -> None:
        try:
            self.transport.run(["rm", "-rf", self.work], timeout=60)
        finally:
            self.transport.__exit__(*exc)
