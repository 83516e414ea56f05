"""Resource ledger: wall time, CPU-seconds and an energy estimate for long commands.

Energy comes from Intel RAPL (``/sys/class/powercap/intel-rapl:*/energy_uj``) when it is
readable, and otherwise from a per-core power model: ``energy = cpu_seconds x W_per_core``
with ``OFA_EDGE_WATTS_PER_CORE`` (default 5 W, roughly one busy core's share of a server CPU's
TDP, e.g. 225 W / 64 cores = 3.5 W plus memory and uncore). Carbon uses
``OFA_EDGE_GRID_G_PER_KWH`` (default 400 gCO2e/kWh, about the world average; ``ofa-edge
--grid-g-per-kwh`` sets it for one command).

Every long command (train, predictor fit, bench, search, deploy) prints its line at the end and
appends its entry to the ledger file, ``$OFA_EDGE_LEDGER`` or ``runs/ledger.jsonl``: one JSON
object per line, so concurrent commands never interleave half lines. ``totals`` adds it up.
"""
from __future__ import annotations

import glob
import json
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _rapl_uj() -> int | None:
    total, found = 0, False
    for path in glob.glob("/sys/class/powercap/intel-rapl:[0-9]*/energy_uj"):
        try:
            total += int(open(path).read())
            found = True
        except (OSError, ValueError):
            return None
    return total if found else None


@dataclass
class LedgerEntry:
    command: str
    wall_s: float
    cpu_s: float
    energy_j: float
    energy_source: str
    co2e_g: float

    def to_json(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"ledger: {self.command}: wall {self.wall_s:.1f} s, CPU {self.cpu_s:.1f} s, "
                f"energy {self.energy_j / 3600:.2f} Wh ({self.energy_source}), {self.co2e_g:.2f} gCO2e")


class Ledger:
    """Start at construction; ``stop()`` returns the entry. ``extra_cpu_s`` adds CPU time of
    processes this one did not wait for (e.g. other torchrun ranks)."""

    def __init__(self, command: str):
        self.command = command
        self.wall0, self.cpu0, self.rapl0 = time.time(), _cpu_seconds(), _rapl_uj()

    def cpu_s(self) -> float:
        return _cpu_seconds() - self.cpu0

    def finish(self, **context) -> LedgerEntry:
        """The final entry, appended to the ledger file."""
        entry = self.stop()
        record(entry, **context)
        return entry

    def stop(self, extra_cpu_s: float = 0.0, extra_wall_s: float = 0.0, extra_energy_j: float = 0.0) -> LedgerEntry:
        """The entry so far. ``extra_*`` add what this process did not see: other ranks' CPU
        time (the model counts it; RAPL already measures the whole package) and earlier
        segments of a resumed run."""
        wall = time.time() - self.wall0 + extra_wall_s
        own_cpu = _cpu_seconds() - self.cpu0
        cpu = own_cpu + extra_cpu_s
        rapl = _rapl_uj()
        if self.rapl0 is not None and rapl is not None and rapl >= self.rapl0:
            energy, source = (rapl - self.rapl0) / 1e6 + extra_energy_j, "rapl"
        else:
            watts = float(os.environ.get("OFA_EDGE_WATTS_PER_CORE", "5"))
            energy, source = cpu * watts, f"model {watts:g} W/core"
        grid = float(os.environ.get("OFA_EDGE_GRID_G_PER_KWH", "400"))
        return LedgerEntry(self.command, wall, cpu, energy, source, energy / 3.6e6 * grid)


def machine_info() -> dict:
    """This machine, for reports: platform, Python, CPU model and core count."""
    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": os.cpu_count(), "host": platform.node()}


def ledger_path() -> Path:
    return Path(os.environ.get("OFA_EDGE_LEDGER", "runs/ledger.jsonl"))


def record(entry: LedgerEntry, path: Path | None = None, **context) -> Path:
    """Append ``entry`` (with the time and ``context``, e.g. the spec) to the ledger file, as one
    line written in one ``write`` on an O_APPEND descriptor."""
    path = Path(path or ledger_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**entry.to_json(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "grid_g_per_kwh": float(os.environ.get("OFA_EDGE_GRID_G_PER_KWH", "400")),
                       **context}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return path


def read_ledger(path: Path | None = None) -> list[dict]:
    """The entries of a ledger file (a torn last line from a killed process is skipped)."""
    path = Path(path or ledger_path())
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


TOTAL_KEYS = ("wall_s", "cpu_s", "energy_j", "co2e_g")


def totals(entries: list[dict]) -> dict:
    """Sums of wall time, CPU-seconds, energy and CO2e, overall and per command."""
    out = {"all": dict.fromkeys(TOTAL_KEYS, 0.0) | {"commands": 0}, "by_command": {}}
    for e in entries:
        for bucket in (out["all"], out["by_command"].setdefault(e["command"], dict.fromkeys(TOTAL_KEYS, 0.0)
                                                                | {"commands": 0})):
            for key in TOTAL_KEYS:
                bucket[key] += float(e[key])
            bucket["commands"] += 1
    return out
