"""``ofa-edge devices check``: is the device reachable, and does it have what a bench needs?

Pushes the runner to the device's work dir, runs ``runner info`` there (a separate process, also
for the local transport), compares the answer with the spec, and removes what it pushed.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field

from ofa_edge.devices.runner import RUNNER_PATH
from ofa_edge.devices.runner_host import parse_answer
from ofa_edge.devices.spec import DeviceSpec
from ofa_edge.devices.transports import make_transport, remote_path_join

TFLITE_INTERPRETERS = ("ai_edge_litert", "tflite_runtime", "tensorflow")


@dataclass
class CheckReport:
    spec: str
    transport: str
    ready: bool
    info: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return self.__dict__.copy()


def check_device(spec: DeviceSpec, **transport_overrides) -> CheckReport:
    if spec.connection.transport == "none":
        return CheckReport(spec.name, "none", True, {"cost_model": spec.cost_model.model_dump()}, [],
                           ["no transport: latency, SRAM and flash come from the spec's cost model"])
    with make_transport(spec, **transport_overrides) as transport:
        work = transport.expand_user(spec.device.work_dir)
        runner = remote_path_join(work, "ofa_edge_runner_check.py")
        transport.put(RUNNER_PATH, runner)
        try:
            result = transport.run([device_python(spec), runner, "info"], timeout=spec.connection.command_timeout_s)
        finally:
            transport.run(f"rm -f {shlex.quote(runner)}", timeout=30)
        if result.returncode == 127 or "not found" in result.stderr and not result.stdout.strip():
            return CheckReport(spec.name, transport.describe(), False, {},
                               [f"device.python {spec.device.python!r} is not on the device "
                                f"({result.stderr.strip()[:200]}); install Python 3.8+ or fix device.python"])
        info = parse_answer(result.stdout)
        info.pop("ok", None)
        report = CheckReport(spec.name, transport.describe(), True, info)
    _compare(spec, report)
    report.ready = not report.problems
    return report


def device_python(spec: DeviceSpec) -> str:
    """The Python to run the runner with; ``host`` (local transport only) is this interpreter."""
    return sys.executable if spec.device.python == "host" else spec.device.python


def _compare(spec: DeviceSpec, report: CheckReport) -> None:
    info, problems, warnings = report.info, report.problems, report.warnings
    py = tuple(int(p) for p in str(info.get("python", {}).get("version", "0.0")).split(".")[:2])
    if py < (3, 8):
        problems.append(f"Python {info['python']['version']} on the device; the runner needs 3.8 or newer")
    if not info.get("numpy"):
        problems.append("numpy is missing on the device (pip install numpy)")
    runtimes = info.get("runtimes", {})
    r = spec.runtime
    if r.name == "tflite":
        have = [name for name in TFLITE_INTERPRETERS if runtimes.get(name, {}).get("available")]
        if not have:
            problems.append("no TFLite interpreter on the device (pip install ai-edge-litert, or tflite-runtime)")
        else:
            version = runtimes[have[0]].get("version")
            if r.version and version and version != r.version:
                warnings.append(f"spec says runtime {r.version}, device has {have[0]} {version}: timings are "
                                "only valid for the version measured")
    elif r.name == "onnxruntime":
        ort = runtimes.get("onnxruntime", {})
        if not ort.get("available"):
            problems.append("onnxruntime is missing on the device (pip install onnxruntime)")
        else:
            missing = [ep for ep in (r.execution_providers or []) if ep not in ort.get("providers", [])]
            if missing:
                warnings.append(f"execution providers {missing} are not available on the device; the runner "
                                "will fall back to CPUExecutionProvider")
    cores = info.get("cores", {}).get("logical")
    if cores and r.threads > cores:
        problems.append(f"runtime.threads {r.threads} > the device's {cores} cores")
    if cores and cores != spec.hardware.cores:
        warnings.append(f"spec says {spec.hardware.cores} cores, the device reports {cores}")
    governor = (info.get("cpufreq") or {}).get("governor")
    if governor and governor != "performance":
        warnings.append(f"CPU governor is {governor!r}; 'performance' gives steadier timings")


def format_report(report: CheckReport) -> str:
    info = report.info
    lines = [f"device     {report.spec} via {report.transport}"]
    if "python" in info:
        rt = ", ".join(f"{k} {v.get('version')}" for k, v in info.get("runtimes", {}).items() if v.get("available"))
        lines += [
            f"python     {info.get('python', {}).get('version')}   numpy {info.get('numpy')}",
            f"runtimes   {rt or 'none'}",
            f"cpu        {(info.get('cpu') or {}).get('model')}, {info.get('cores', {}).get('logical')} cores",
            f"governor   {(info.get('cpufreq') or {}).get('governor', 'unknown')}",
            f"memory     {(info.get('memory') or {}).get('available_mb')} MB available",
        ]
    lines += [f"warning    {w}" for w in report.warnings]
    lines += [f"PROBLEM    {p}" for p in report.problems]
    lines.append("ready" if report.ready else "NOT ready")
    return "\n".join(lines)
