"""Shared fixtures. Heavy, session-scoped artefacts (search space, bench, block cache) live here
so that tests never convert or measure from cold twice."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNDER_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, what: str, fix: str) -> None:
    """A missing system dependency fails the run under CI=true, and skips elsewhere."""
    if condition:
        return
    message = f"{what} is missing: {fix}"
    if UNDER_CI:
        pytest.fail(f"{message} (CI=true: a missing system dependency is a failure, never a skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def _cli_executable() -> list[str]:
    script = Path(sys.executable).with_name("ofa-edge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ofa_edge.cli"]


@pytest.fixture(scope="session")
def run_cli():
    """Run the installed ``ofa-edge`` console script as a user would, in a subprocess."""

    def run(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run([*_cli_executable(), *args], cwd=cwd or REPO, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return run
