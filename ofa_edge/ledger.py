"""Resource ledger: wall time, CPU-seconds and an energy estimate for long commands.

Energy comes from Intel RAPL (``/sys/class/powercap/intel-rapl:*/energy_uj``) when it is
readable, and otherwise from a per-core power model: ``energy = cpu_seconds x W_per_core``
with ``OFA_EDGE_WATTS_PER_CORE`` (default 5 W, roughly one busy core's share of a server CPU's
TDP, e.g. 225 W / 64 cores = 3.5 W plus memory and uncore). Carbon uses
``OFA_EDGE_GRID_G_PER_KWH`` (default 400 gCO2e/kWh, about the world average; ``ofa-edge
--grid-g-per-kwh`` sets it for one command).

When a command runs on GPUs, their energy is read from NVML (``pynvml``, imported only then;
without it, or without a GPU, there is no GPU figure) and recorded beside the CPU figure as
``gpu_energy_j``; the carbon estimate counts both.

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


def _nvml_energy_j(gpus: tuple[int | str, ...]) -> float | None:
    """Total energy (J) NVML has counted on ``gpus`` (NVML indices, or ``GPU-...`` UUIDs) since
    the driver loaded, or None when pynvml is missing, no GPU answers, or the GPU cannot count
    energy."""
    if not gpus:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        total = 0.0
        for index in gpus:
            handle = (pynvml.nvmlDeviceGetHandleByUUID(index) if isinstance(index, str)
                      else pynvml.nvmlDeviceGetHandleByIndex(index))
            total += pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0  # mJ
        return total
    except Exception:  # noqa: BLE001 - no pynvml, no driver, no GPU, no energy counter
        return None


@dataclass
class LedgerEntry:
    command: str
    wall_s: float
    cpu_s: float
    energy_j: float
    energy_source: str
    co2e_g: float
    gpu_energy_j: float | None = None  # NVML, when the command used GPUs

    def to_json(self) -> dict:
        """The fields; ``gpu_energy_j`` only when a GPU was measured."""
        out = asdict(self)
        if out["gpu_energy_j"] is None:
            del out["gpu_energy_j"]
        return out

    def line(self) -> str:
        gpu = "" if self.gpu_energy_j is None else f", GPU {self.gpu_energy_j / 3600:.2f} Wh (nvml)"
        return (f"ledger: {self.command}: wall {self.wall_s:.1f} s, CPU {self.cpu_s:.1f} s, "
                f"energy {self.energy_j / 3600:.2f} Wh ({self.energy_source}){gpu}, {self.co2e_g:.2f} gCO2e")


class Ledger:
    """Start at construction; ``stop()`` returns the entry. ``extra_cpu_s`` adds CPU time of
    processes this one did not wait for (e.g. other torchrun ranks). ``gpus``: the GPUs this
    process uses, whose energy NVML counts: NVML indices or UUIDs (``gpu_ids`` maps a torch
    CUDA device to its UUID, which stays right under CUDA_VISIBLE_DEVICES)."""

    def __init__(self, command: str, gpus: tuple[int | str, ...] | list[int | str] = ()):
        self.command = command
        self.gpus = tuple(gpus)
        self.wall0, self.cpu0, self.rapl0 = time.time(), _cpu_seconds(), _rapl_uj()
        self.gpu0 = _nvml_energy_j(self.gpus)

    def gpu_energy_j(self) -> float | None:
        """This process's GPUs' energy since the start, or None without NVML."""
        now = _nvml_energy_j(self.gpus)
        return None if now is None or self.gpu0 is None else max(0.0, now - self.gpu0)

    def cpu_s(self) -> float:
        return _cpu_seconds() - self.cpu0

    def finish(self, **context) -> LedgerEntry:
        """The final entry, appended to the ledger file."""
        entry = self.stop()
        record(entry, **context)
        return entry

    def stop(self, extra_cpu_s: float = 0.0, extra_wall_s: float = 0.0, extra_energy_j: float = 0.0,
             gpu_energy_j: float | None = None) -> LedgerEntry:
        """The entry so far. ``extra_*`` add what this process did not see: other ranks' CPU
        time (the model counts it; RAPL already measures the whole package) and earlier
        segments of a resumed run. ``gpu_energy_j`` replaces this process's own NVML figure
        (e.g. with the sum over ranks and segments)."""
        wall = time.time() - self.wall0 + extra_wall_s
        own_cpu = _cpu_seconds() - self.cpu0
        cpu = own_cpu + extra_cpu_s
        rapl = _rapl_uj()
        if self.rapl0 is not None and rapl is not None and rapl >= self.rapl0:
            energy, source = (rapl - self.rapl0) / 1e6 + extra_energy_j, "rapl"
        else:
            watts = float(os.environ.get("OFA_EDGE_WATTS_PER_CORE", "5"))
            energy, source = cpu * watts, f"model {watts:g} W/core"
        gpu = self.gpu_energy_j() if gpu_energy_j is None else gpu_energy_j
        grid = float(os.environ.get("OFA_EDGE_GRID_G_PER_KWH", "400"))
        return LedgerEntry(self.command, wall, cpu, energy, source, (energy + (gpu or 0.0)) / 3.6e6 * grid, gpu)


def gpu_ids(device) -> list[int | str]:
    """The NVML id of a torch device: its UUID when torch knows it, else its index; [] off CUDA."""
    if getattr(device, "type", None) != "cuda":
        return []
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device).uuid)
        return [uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"]
    except Exception:  # noqa: BLE001 - an older torch without .uuid
        return [device.index or 0]


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
            if e.get("gpu_energy_j") is not None:
                bucket["gpu_energy_j"] = bucket.get("gpu_energy_j", 0.0) + float(e["gpu_energy_j"])
            bucket["commands"] += 1
    return out
