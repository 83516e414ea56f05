"""Host-side helpers for the device runner: package it, and read its answers.

Uses the standard library only (plus ``ofa_edge.errors`` for the error type).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipapp
from pathlib import Path

from ofa_edge.errors import OfaEdgeError

from ofa_edge.devices.runner import PROTOCOL_VERSION, RUNNER_PATH


def runner_source() -> str:
    """The text of ``runner.py``, as it is pushed to a device."""
    return RUNNER_PATH.read_text(encoding="utf-8")


def runner_sha256() -> str:
    """sha256 of ``runner.py``: compare with the device's copy to know whether to re-push."""
    return hashlib.sha256(RUNNER_PATH.read_bytes()).hexdigest()


def build_zipapp(out_path: str | os.PathLike, interpreter: str = "/usr/bin/env python3") -> Path:
    """Package ``runner.py`` as a zipapp (its ``__main__.py``); run with ``python3 app.pyz info``."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ofa-edge-runner-") as staging:
        shutil.copyfile(RUNNER_PATH, Path(staging) / "__main__.py")
        zipapp.create_archive(staging, target=out, interpreter=interpreter, compressed=True)
    return out


def parse_answer(stdout: str) -> dict:
    """The runner's answer from its stdout: the last JSON line that carries ``protocol``.

    Raises OfaEdgeError when there is no answer, when the runner speaks another protocol,
    or when it reports a failure (``ok: false``), with the runner's own error line.
    """
    answer = None
    for line in reversed((stdout or "").splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            candidate = json.loads(line)
        except ValueError:
            continue
        if isinstance(candidate, dict) and "protocol" in candidate:
            answer = candidate
            break
    if answer is None:
        shown = " ".join((stdout or "").split())
        shown = shown[:200] + ("..." if len(shown) > 200 else "")
        raise OfaEdgeError("device runner gave no JSON answer (is runner.py intact and is python3 "
                           f"on the device?); its stdout was: {shown!r}" if shown else
                           "device runner gave no answer: its stdout was empty (did it crash? "
                           "check its stderr)")
    if answer.get("protocol") != PROTOCOL_VERSION:
        raise OfaEdgeError(f"device runner speaks protocol {answer.get('protocol')}, host expects "
                           f"{PROTOCOL_VERSION}: re-push the runner")
    if answer.get("ok") is not True:
        error = answer.get("error") or "no error message"
        raise OfaEdgeError(f"device runner failed ({answer.get('command') or 'command'}): {error}")
    return answer


def run_local(*args: str, python: str | None = None, timeout: float | None = None,
              runner: str | os.PathLike | None = None) -> dict:
    """Run the runner on this machine in a subprocess and parse its answer."""
    command = [python or sys.executable, str(runner or RUNNER_PATH), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OfaEdgeError(f"local runner timed out after {timeout} s: {' '.join(command)}") from None
    return parse_answer(done.stdout)
