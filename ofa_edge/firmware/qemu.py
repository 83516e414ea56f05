"""Runs a test image under qemu-system-arm on the core's board and reads back what it wrote.

``-icount shift=0`` makes QEMU's virtual clock advance 1 ns per instruction, so the firmware's
SysTick counts instructions (the image measures how many per tick with a spin loop of known
length). QEMU models no pipeline, caches or flash wait states: these are instruction counts,
not cycles.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ofa_edge.firmware.cores import Core

PREFIX = "ofa-firmware "


@dataclass
class FirmwareRun:
    ok: bool
    exit_code: int
    errors: list[str]                      # the firmware's own error lines (and TFLM's log)
    outputs: np.ndarray | None = None      # int8, one row per image
    arena_used: int = 0
    arena_size: int = 0
    stack_used: int = 0
    stack_size: int = 0
    instructions_per_image: float = 0.0
    op_instructions: dict[str, float] = field(default_factory=dict)  # per image, by op
    seconds: float = 0.0


def run_test_image(qemu: str, core: Core, elf: Path, inputs: np.ndarray, timeout_s: float | None = None) -> FirmwareRun:
    """Feeds ``inputs`` (int8, one row per image) to the test image and collects its report."""
    import time

    work = Path(tempfile.mkdtemp(prefix="ofa-edge-qemu-"))
    try:
        np.ascontiguousarray(inputs, dtype=np.int8).tofile(work / "input.bin")
        cmd = [qemu, "-M", core.board, "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf.resolve())]
        timeout = timeout_s or 120 + 2.0 * len(inputs)
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return FirmwareRun(False, -1, [f"the firmware did not finish within {timeout:.0f} s under QEMU "
                                           f"({core.board}): it hangs or faulted without a report"])
        seconds = time.perf_counter() - start
        lines = (done.stdout + "\n" + done.stderr).splitlines()
        report = [line[len(PREFIX):].split() for line in done.stdout.splitlines() if line.startswith(PREFIX)]
        errors = _errors(lines)
        finished = any(r and r[0] == "done" for r in report)
        run = FirmwareRun(ok=done.returncode == 0 and finished, exit_code=done.returncode, errors=errors,
                          seconds=seconds)
        if not run.ok and not errors:
            run.errors = [f"the firmware stopped (exit {done.returncode}) without a report"]
        _read_report(run, report)
        out_file = work / "output.bin"
        if run.ok and out_file.is_file():
            raw = np.fromfile(out_file, dtype=np.int8)
            run.outputs = raw.reshape(len(inputs), -1) if len(inputs) else raw
        return run
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _errors(lines: list[str]) -> list[str]:
    """The firmware's own error lines first, then TFLite Micro's log, each line once."""
    own = [line.strip() for line in lines if line.startswith(PREFIX + "error")]
    log = [line.strip() for line in lines if line.strip() and not line.startswith(PREFIX)]
    return list(dict.fromkeys(own + log))


def _read_report(run: FirmwareRun, report: list[list[str]]) -> None:
    per_tick, invoke, images, ops = 0.0, 0, 0, {}
    for words in report:
        key, values = words[0], words[1:]
        if key == "spin" and int(values[1]):
            per_tick = int(values[0]) / int(values[1])
        elif key == "arena":
            run.arena_used, run.arena_size = int(values[0]), int(values[1])
        elif key == "stack":
            run.stack_used, run.stack_size = int(values[0]), int(values[1])
        elif key == "io":
            images = int(values[0])
        elif key == "invoke":
            invoke = int(values[0])
        elif key == "op":
            ops[values[0]] = int(values[1])
    if images and per_tick:
        run.instructions_per_image = invoke * per_tick / images
        run.op_instructions = {op: ticks * per_tick / images for op, ticks in ops.items()}
