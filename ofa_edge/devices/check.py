"""``ofa-edge devices check``: is the device reachable, and does it have what a bench needs?

Pushes the runner into a run folder of its own under the device's work dir, runs ``runner info``
there with the spec's runtime, delegate, providers and pinning tried out (a separate process, also
for the local transport), compares the answer with the spec (``readiness``), and removes the folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ofa_edge.devices.readiness import assess
from ofa_edge.devices.session import DeviceSession, NotReady
from ofa_edge.devices.spec import DeviceSpec


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


def check_device(spec: DeviceSpec, transport=None) -> CheckReport:
    """Push the runner, run ``info`` with the spec's settings tried out, and compare (readiness)."""
    if spec.latency_table is not None:
        return CheckReport(spec.name, "none", True, {"latency_table": str(spec.latency_table_path())}, [],
                           ["no transport: latency comes from the published latency table; nothing to check"])
    if spec.connection.transport == "none":
        return CheckReport(spec.name, "none", True, {"cost_model": spec.cost_model.model_dump()}, [],
                           ["no transport: latency, SRAM and flash come from the spec's cost model"])
    try:
        with DeviceSession(spec, "check", transport) as dev:
            where, info = dev.transport.describe(), dev.info()
    except NotReady as exc:
        return CheckReport(spec.name, spec.connection.transport, False, {}, [str(exc)])
    info.pop("ok", None)
    problems, warnings = assess(spec, info)
    return CheckReport(spec.name, where, not problems, info, problems, warnings)


def _requested_lines(requested: dict) -> list[str]:
    """What the spec asked for and what the device really gave (pinning, delegate, providers)."""
    lines = []
    pin = requested.get("affinity")
    if pin:
        lines.append(f"pinning    {pin.get('requested')} {'applied' if pin.get('applied') else 'NOT applied'}; "
                     f"the device allows CPUs {pin.get('allowed')}")
    delegate = requested.get("delegate")
    if delegate:
        lines.append(f"delegate   {delegate.get('requested')}: "
                     + ("loaded" if delegate.get("loaded") else f"NOT loaded ({delegate.get('error')})"))
    return lines


def _state_lines(state: dict) -> list[str]:
    """Temperature, throttling and Jetson's power model, where the device exposes them."""
    lines = []
    if state.get("temperature_c") is not None:
        lines.append(f"temp       {state['temperature_c']:.1f} °C")
    throttled = state.get("throttled")
    if throttled:
        lines.append(f"throttling {throttled['flags']}: now {', '.join(throttled['now']) or 'none'}; since boot "
                     f"{', '.join(throttled['since_boot']) or 'none'}")
    if state.get("nvpmodel"):
        lines.append(f"nvpmodel   {state['nvpmodel']}")
    return lines


def format_report(report: CheckReport) -> str:
    info = report.info
    lines = [f"device     {report.spec} via {report.transport}"]
    if "python" in info:
        rt = ", ".join(f"{k} {v.get('version')}" for k, v in info.get("runtimes", {}).items() if v.get("available"))
        lines += [
            f"python     {info.get('python', {}).get('version')}   numpy {info.get('numpy')}",
            f"runtimes   {rt or 'none'}",
            f"cpu        {(info.get('cpu') or {}).get('model')}, {info.get('cores', {}).get('logical')} cores, "
            f"{info.get('machine')}",
            f"governor   {(info.get('cpufreq') or {}).get('governor', 'unknown')}",
            *_requested_lines(info.get("requested") or {}),
            f"memory     {(info.get('memory') or {}).get('available_mb')} MB available",
            *_state_lines(info.get("state") or {}),
        ]
    lines += [f"warning    {w}" for w in report.warnings]
    lines += [f"PROBLEM    {p}" for p in report.problems]
    lines.append("ready" if report.ready else "NOT ready")
    return "\n".join(lines)
