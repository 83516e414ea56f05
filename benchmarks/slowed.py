"""The slowed emulated device for the benchmarks: sshd in a network namespace with a 25% CPU
quota (10 ms period), pinned to CPU 0 (the [4/7] test fixture in ``tests/slowdevice.py``).

Needs root (network namespaces and cgroups); ``slowed_device`` raises when it cannot start.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]
NAME = "slowed-local"


def slow_spec(server, folder: Path) -> Path:
    """A device spec (TFLite full-int8, one thread) reaching ``server`` over SSH."""
    spec = {"schema_version": 1, "name": NAME, "kind": "cpu",
            "description": "sshd in a netns with a 25% CPU quota (10 ms period), pinned to CPU 0",
            "hardware": {"cores": 1, "clock_mhz": 2445}, "connection": server.connection(),
            "runtime": {"name": "tflite", "version": "2.1.0", "delegate": "xnnpack", "threads": 1},
            "precision": "int8", "device": {"python": sys.executable, "work_dir": f"{server.home}/work"},
            "budgets": {"resolution": [28, 64]},
            "measure": {"warmup": 20, "repeats": 7, "runs_per_repeat": 30}}
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@contextmanager
def slowed_device(folder: Path) -> Iterator[Path]:
    """Start the slowed device in ``folder`` and yield its spec's path; stops it on exit."""
    sys.path.insert(0, str(REPO / "tests"))  # the emulated-device helpers live with the tests
    from slowdevice import start_slow_sshd

    with start_slow_sshd(folder / "sshd") as server:
        yield slow_spec(server, folder)
