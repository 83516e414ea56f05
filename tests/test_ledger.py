"""The resource ledger: entries, the ledger file, and totals that add up."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ofa_edge.ledger import Ledger, gpu_ids, read_ledger, record, totals


def test_ledger_entries_are_recorded_and_totals_are_their_sums(tmp_path, monkeypatch):
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("OFA_EDGE_LEDGER", str(path))
    monkeypatch.setenv("OFA_EDGE_GRID_G_PER_KWH", "100")
    entries = []
    for command in ("bench", "search", "search", "deploy"):
        ledger = Ledger(command)
        sum(i * i for i in range(200_000))  # some CPU time
        entries.append(ledger.finish(spec="local"))
    got = read_ledger()
    assert [e["command"] for e in got] == ["bench", "search", "search", "deploy"]
    assert all(e["spec"] == "local" and e["grid_g_per_kwh"] == 100 for e in got)
    t = totals(got)
    for key in ("wall_s", "cpu_s", "energy_j", "co2e_g"):
        assert t["all"][key] == pytest.approx(sum(getattr(e, key) for e in entries))
        assert t["all"][key] == pytest.approx(sum(b[key] for b in t["by_command"].values()))
    assert t["by_command"]["search"]["commands"] == 2 and t["all"]["commands"] == 4
    # carbon follows the grid intensity: energy (J) / 3.6e6 * g/kWh
    assert got[0]["co2e_g"] == pytest.approx(got[0]["energy_j"] / 3.6e6 * 100)
    assert got[0]["cpu_s"] > 0 and got[0]["energy_j"] > 0


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "l.jsonl"
    record(Ledger("train").stop(), path)
    with open(path, "a") as f:
        f.write('{"command": "bench", "wall')  # a process killed mid-write
    assert [e["command"] for e in read_ledger(path)] == ["train"]
    assert json.loads(path.read_text().splitlines()[0])["command"] == "train"


class _FakeNvml:
    """A stand-in pynvml: each GPU's energy counter (mJ) advances by 1,000 mJ per reading."""

    def __init__(self):
        self.reads = 0

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return int(uuid.removeprefix("GPU-"))

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self.reads += 1
        return 5_000_000 + 1_000 * self.reads + 100 * handle


def test_gpu_energy_comes_from_nvml_beside_the_cpu_figure(monkeypatch, tmp_path):
    import sys

    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("OFA_EDGE_GRID_G_PER_KWH", "100")
    ledger = Ledger("train", gpus=[0])  # reading 1 at the start
    entry = ledger.stop()               # reading 2: 1,000 mJ later
    assert entry.gpu_energy_j == pytest.approx(1.0) and entry.energy_j > 0
    assert entry.co2e_g == pytest.approx((entry.energy_j + entry.gpu_energy_j) / 3.6e6 * 100)
    assert "GPU" in entry.line() and entry.to_json()["gpu_energy_j"] == pytest.approx(1.0)
    record(entry, tmp_path / "l.jsonl")
    record(Ledger("bench").stop(), tmp_path / "l.jsonl")  # no GPU: no GPU figure
    assert Ledger("train", gpus=["GPU-1", 0]).stop().gpu_energy_j == pytest.approx(4.0)  # 2 GPUs by UUID, index
    t = totals(read_ledger(tmp_path / "l.jsonl"))
    assert t["all"]["gpu_energy_j"] == pytest.approx(1.0) and "gpu_energy_j" not in t["by_command"]["bench"]


def test_no_pynvml_or_no_gpu_means_no_gpu_figure(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    entry = Ledger("train", gpus=[0]).stop()
    assert entry.gpu_energy_j is None and "gpu_energy_j" not in entry.to_json() and "GPU" not in entry.line()

    class NoGpu(_FakeNvml):
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", NoGpu())
    assert Ledger("train", gpus=[0]).stop().gpu_energy_j is None
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert Ledger("train").stop().gpu_energy_j is None and fake.reads == 0  # a CPU command never asks NVML
    assert gpu_ids(SimpleNamespace(type="cpu", index=None)) == []
