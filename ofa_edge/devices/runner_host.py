"""Host-side helpers for the device runner: package it, and read its answers.

Uses the standard library only (plus ``ofa_edge.errors`` for the error type).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ofa_edge.errors import OfaEdgeError

from ofa_edge.devices.runner import PROTOCOL_VERSION


RUNNER_PACKAGE = Path(__file__).with_name("runner")
RUNNER_NAME = "ofa_edge_runner.pyz"   # its name on the device
_ZIP_PACKAGE = "ofa_edge_runner"      # the package's name inside the zipapp
_MAIN = b"""import sys
if sys.version_info < (3, 6):  # Python 2 syntax too: an old Python gets the answer, not a SyntaxError
    sys.stdout.write('{"protocol": 1, "ok": false, "command": null, "error": "Python %d.%d is too old for the '
                     'ofa-edge runner: it needs Python 3.6 or newer (set device.python in the spec)"}\\n'
                     % sys.version_info[:2])
    sys.exit(2)
from ofa_edge_runner.cli import main
sys.exit(main())
"""
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)   # zip entries get a fixed date: the same sources give the same bytes


def runner_sources() -> dict[str, bytes]:
    """The runner package's modules: file name -> bytes, sorted."""
    return {path.name: path.read_bytes() for path in sorted(RUNNER_PACKAGE.glob("*.py"))}


def runner_archive() -> bytes:
    """The zipapp's bytes: a shebang, ``__main__.py`` and the package; deterministic."""
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        entries = [("__main__.py", _MAIN)]
        entries += [(f"{_ZIP_PACKAGE}/{name}", data) for name, data in runner_sources().items()]
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def runner_sha256() -> str:
    """sha256 of the zipapp: the device's copy must have the same (its ``protocol`` answer says)."""
    return hashlib.sha256(runner_archive()).hexdigest()


def runner_app() -> Path:
    """The zipapp on this machine (built once per content, in the user's cache), to push or run."""
    data = runner_archive()
    digest = hashlib.sha256(data).hexdigest()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ofa-edge" / "runner"
    path = cache / f"{digest[:16]}-{RUNNER_NAME}"
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".runner-", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
    return path


def build_zipapp(out_path: str | os.PathLike) -> Path:
    """Write the zipapp to ``out_path`` (run with ``python3 app.pyz info``)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(runner_archive())
    return out


def check_runner_answer(answer: dict, where: str) -> None:
    """The ``protocol`` answer of a pushed runner names its own sha256: it must be ours."""
    theirs, ours = answer.get("runner_sha256"), runner_sha256()
    if theirs != ours:
        raise OfaEdgeError(f"the runner on {where} is not the one pushed (sha256 {str(theirs)[:12]}, expected "
                           f"{ours[:12]}): the copy was damaged in transfer or changed; run again")


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
        raise OfaEdgeError("device runner gave no JSON answer (is the runner intact and is python3 "
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
    command = [python or sys.executable, str(runner or runner_app()), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OfaEdgeError(f"local runner timed out after {timeout} s: {' '.join(command)}") from None
    return parse_answer(done.stdout)
