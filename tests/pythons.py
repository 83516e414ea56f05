"""Device Pythons for the tests: one virtualenv per CPython minor version that edge devices run,
each with the last runtimes that support it (as on a Jetson Nano, Pi OS, Termux).

``PYTHONS`` is the one table: the README's "Device Pythons" table is checked against it
(tests/test_runner_pythons.py), and it drives the venvs the runner is tested on.

Venvs are built from the pyenv interpreters (``~/.pyenv/versions/<x.y.z>/bin/python``) into a
cache folder (``$OFA_EDGE_PYVENVS``, else ``$OFA_EDGE_TEST_CACHE/pyvenvs``, else
``~/.cache/ofa-edge-tests/pyvenvs``), one folder per (interpreter, pinned requirements):
``py3.6-<sha12>``. A build holds an exclusive lock file beside its folder (two test processes
never build the same venv), starts from an empty folder and writes ``.complete`` last: a
folder without that marker is a half-built venv and is never used (the next build removes it).
Venvs are built in place, never moved, because a venv is not relocatable (its scripts and
``activate`` hold its absolute path); pip is always run as ``<venv>/bin/python -m pip``.
Every package is pinned, dependencies included, and a build fails unless what pip installed is
exactly the pinned set. Builds run in threads (pip is network-bound): the first session on a
fresh machine pays about a minute, later ones nothing.

Python 3.11 is the host's own set (the project's .venv, ``sys.executable``): no venv is built.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
BUILD_TIMEOUT_S = 900
_FORMAT = 1  # bump to rebuild every venv (part of the cache key)

# distribution name -> the module the runner imports for it
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "tflite-runtime": "tflite_runtime",
                   "ai-edge-litert": "ai_edge_litert"}


@dataclass(frozen=True)
class DevicePython:
    """One device Python: the interpreter, the runtimes (shown in the README) and their
    dependencies (``lock``), all pinned to exact versions."""

    minor: str                      # "3.6"
    version: str                    # the pyenv interpreter: "3.6.15"
    packages: dict[str, str]        # numpy and the runtimes: what the README table shows
    like: str                       # the devices whose Python this is
    lock: dict[str, str] = field(default_factory=dict)   # their dependencies, pinned too
    bootstrap: tuple[str, ...] = ()  # installed before the rest (an old pip that cannot see new wheels)
    host: bool = False              # the host's own .venv (sys.executable), not a built venv

    @property
    def runtimes(self) -> dict[str, str]:
        """The runtimes (distribution -> version) among the packages."""
        return {name: v for name, v in self.packages.items() if name in RUNTIME_MODULES}

    @property
    def has_onnx(self) -> bool:
        return "onnxruntime" in self.packages

    @property
    def tflite_runtimes(self) -> list[str]:
        """The TFLite interpreters (runner module names) this Python has."""
        return [RUNTIME_MODULES[n] for n in ("ai-edge-litert", "tflite-runtime") if n in self.packages]

    def requirements(self) -> list[str]:
        """Every pinned requirement, sorted by name."""
        pins = {**self.lock, **self.packages}
        return [f"{name}=={pins[name]}" for name in sorted(pins, key=normalize)]

    def interpreter(self) -> Path:
        return Path(sys.executable) if self.host else PYENV_VERSIONS / self.version / "bin" / "python"

    def key(self) -> str:
        text = json.dumps({"format": _FORMAT, "python": self.version, "bootstrap": list(self.bootstrap),
                           "requirements": self.requirements()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def folder(self) -> Path:
        return cache_root() / f"py{self.minor}-{self.key()}"


# The last releases that support each Python (checked with `pip index versions` against PyPI);
# tflite-runtime 2.14.0 is its last release and needs numpy < 2; ai-edge-litert stops at 2.1.0 on
# Python 3.9. The lock holds what those pull in, as pip resolved it.
_ORT_DEPS = {"coloredlogs": "15.0.1", "humanfriendly": "10.0", "mpmath": "1.3.0", "flatbuffers": "25.12.19"}
PYTHONS: tuple[DevicePython, ...] = (
    DevicePython("3.6", "3.6.15", {"numpy": "1.19.5", "onnxruntime": "1.10.0"},
                 "Jetson Nano (JetPack 4.6)",
                 lock={"flatbuffers": "25.12.19", "protobuf": "3.19.6"},
                 bootstrap=("pip==21.3.1",)),
    DevicePython("3.7", "3.7.16", {"numpy": "1.21.6", "onnxruntime": "1.14.1"},
                 "Raspberry Pi OS buster (legacy)",
                 lock={**_ORT_DEPS, "packaging": "24.0", "protobuf": "4.24.4", "sympy": "1.10.1"}),
    DevicePython("3.8", "3.8.18", {"numpy": "1.24.4", "tflite-runtime": "2.14.0", "onnxruntime": "1.19.2"},
                 "Jetson Orin/Xavier (JetPack 5)",
                 lock={**_ORT_DEPS, "packaging": "26.2", "protobuf": "5.29.6", "sympy": "1.13.3"}),
    DevicePython("3.9", "3.9.18", {"numpy": "1.26.4", "tflite-runtime": "2.14.0", "ai-edge-litert": "2.1.0"},
                 "Raspberry Pi OS bullseye",
                 lock={"backports.strenum": "1.3.1", "flatbuffers": "25.12.19", "protobuf": "6.33.6",
                       "tqdm": "4.70.1", "typing-extensions": "4.16.0"}),
    DevicePython("3.10", "3.10.13", {"numpy": "2.2.6", "ai-edge-litert": "2.3.0", "onnxruntime": "1.23.2"},
                 "Jetson Orin (JetPack 6)",
                 lock={**_ORT_DEPS, "backports.strenum": "1.3.1", "ml-dtypes": "0.7.0", "packaging": "26.4",
                       "protobuf": "7.36.2", "sympy": "1.14.0", "tqdm": "4.70.1",
                       "typing-extensions": "4.16.0"}),
    # The host's locked set (constraints.txt); test_runner_pythons checks the .venv has it.
    DevicePython("3.11", "3.11", {"numpy": "1.26.4", "ai-edge-litert": "2.1.0", "onnxruntime": "1.23.0"},
                 "Raspberry Pi OS bookworm", host=True),
    DevicePython("3.12", "3.12.1", {"numpy": "2.5.5", "ai-edge-litert": "2.3.0"},
                 "Termux, Ubuntu 24.04",
                 lock={"backports.strenum": "1.2.8", "flatbuffers": "25.12.19", "ml-dtypes": "0.7.0",
                       "protobuf": "7.36.2", "tqdm": "4.70.1", "typing-extensions": "4.16.0"}),
    DevicePython("3.13", "3.13.0", {"numpy": "2.5.5", "ai-edge-litert": "2.3.0"},
                 "Termux, Raspberry Pi OS trixie",
                 lock={"backports.strenum": "1.2.8", "flatbuffers": "25.12.19", "ml-dtypes": "0.7.0",
                       "protobuf": "7.36.2", "tqdm": "4.70.1", "typing-extensions": "4.16.0"}),
)
BY_MINOR = {p.minor: p for p in PYTHONS}


class VenvBuildError(RuntimeError):
    pass


def normalize(name: str) -> str:
    """PEP 503 name: ``typing_extensions`` and ``Typing-Extensions`` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def cache_root() -> Path:
    if os.environ.get("OFA_EDGE_PYVENVS"):
        return Path(os.environ["OFA_EDGE_PYVENVS"])
    if os.environ.get("OFA_EDGE_TEST_CACHE"):
        return Path(os.environ["OFA_EDGE_TEST_CACHE"]) / "pyvenvs"
    return Path.home() / ".cache" / "ofa-edge-tests" / "pyvenvs"


def venv_python(folder: Path) -> Path:
    return folder / "bin" / "python"


def is_complete(entry: DevicePython) -> bool:
    return entry.host or (entry.folder() / ".complete").is_file()


def _run(command: list[str], log, timeout: float) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
           "PYTHONNOUSERSITE": "1"}
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    if env.pop("PIP_NO_CACHE_DIR", "").lower() in ("1", "true", "yes", "on") and "pip" in command:
        command = [*command, "--no-cache-dir"]  # pip 18 (Python 3.6) crashes on PIP_NO_CACHE_DIR=1
    env.pop("PIP_REQUIRE_VIRTUALENV", None)
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, timeout=timeout)
    log.write(done.stdout)
    log.flush()
    if done.returncode != 0:
        raise VenvBuildError(f"`{' '.join(command)}` exited {done.returncode}: "
                             + " | ".join(done.stdout.strip().splitlines()[-8:]))


def _frozen(python: Path) -> dict[str, str]:
    done = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    pins = {}
    for line in done.stdout.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def _build(entry: DevicePython, folder: Path) -> None:
    """Create the venv in ``folder`` (empty or absent) and install the pinned set; raises
    VenvBuildError with pip's last lines when something fails."""
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    log_path = folder.parent / f"{folder.name}.log"
    with open(log_path, "w") as log:
        _run([str(entry.interpreter()), "-m", "venv", str(folder)], log, 120)
        python = venv_python(folder)
        pip = [str(python), "-m", "pip", "install", "--only-binary=:all:", "--no-warn-script-location"]
        if entry.bootstrap:
            _run([*pip, *entry.bootstrap], log, deadline - time.monotonic())
        _run([*pip, *entry.requirements()], log, deadline - time.monotonic())
        _run([str(python), "-m", "pip", "check"], log, 120)
        # Exactly the pinned set: nothing missing, nothing unpinned pulled in on the side.
        installed = _frozen(python)
        ignore = {"pip", "setuptools", "wheel", "distribute"}
        wanted = {normalize(r.split("==")[0]): r.split("==")[1] for r in entry.requirements()}
        got = {name: v for name, v in installed.items() if name not in ignore}
        if got != wanted:
            missing = {n: v for n, v in wanted.items() if got.get(n) != v}
            extra = {n: v for n, v in got.items() if wanted.get(n) != v}
            raise VenvBuildError(f"Python {entry.version}: pip installed {extra or 'nothing else'} besides the "
                                 f"pins, missing {missing or 'nothing'}; update the lock in tests/pythons.py")
        for spec in entry.bootstrap:
            name, version = spec.split("==")
            if installed.get(normalize(name)) != version:
                raise VenvBuildError(f"Python {entry.version}: {spec} not installed (got "
                                     f"{installed.get(normalize(name))})")
        log.write("complete\n")


def ensure(entry: DevicePython) -> Path:
    """The python executable of ``entry``'s venv, built first if it is not complete yet.

    Raises FileNotFoundError when the pyenv interpreter is missing, VenvBuildError when the
    build fails (the half-built folder is left without its marker and rebuilt next time).
    """
    if entry.host:
        return Path(sys.executable)
    if not entry.interpreter().is_file():
        raise FileNotFoundError(f"no Python {entry.version} at {entry.interpreter()}")
    folder = entry.folder()
    marker = folder / ".complete"
    if marker.is_file():
        return venv_python(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building the same venv: wait for it
        if marker.is_file():
            return venv_python(folder)
        if folder.exists():
            shutil.rmtree(folder)  # a half-built venv from a killed build
        started = time.monotonic()
        _build(entry, folder)
        record = {"python": entry.version, "requirements": entry.requirements(),
                  "bootstrap": list(entry.bootstrap), "seconds": round(time.monotonic() - started, 1)}
        tmp = folder / ".complete.tmp"
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, marker)  # written last: the venv is complete
    return venv_python(folder)


def ensure_all(entries=PYTHONS) -> dict[str, Path | BaseException]:
    """Build every missing venv concurrently; minor -> python executable, or the error."""
    def one(entry):
        try:
            return ensure(entry)
        except BaseException as exc:  # noqa: BLE001 - reported per Python by the tests
            return exc

    todo = [e for e in entries if not e.host]
    results = {e.minor: Path(sys.executable) for e in entries if e.host}
    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        for entry, result in zip(todo, pool.map(one, todo)):
            results[entry.minor] = result
    return results


def runner_file() -> Path:
    """The device runner as it is pushed to a device: the zipapp when runner_host builds one,
    else the lone runner.py (the one place that decides; the tests run whatever this returns)."""
    from ofa_edge.devices import runner_host

    if hasattr(runner_host, "runner_app"):
        return Path(runner_host.runner_app())
    from ofa_edge.devices.runner import RUNNER_PATH

    return Path(RUNNER_PATH)


README_HEADER = "| Python | interpreter in the tests | numpy | runtimes | like |"


def readme_rows() -> list[str]:
    """The README's "Device Pythons" table rows, from PYTHONS (test_runner_pythons checks them)."""
    rows = []
    for p in PYTHONS:
        where = "the project's `.venv`" if p.host else f"pyenv {p.version}"
        if p.bootstrap:
            where += ", " + ", ".join(b.replace("==", " ") for b in p.bootstrap) + " first"
        runtimes = ", ".join(f"{name} {version}" for name, version in p.runtimes.items())
        rows.append(f"| {p.minor} | {where} | {p.packages['numpy']} | {runtimes} | {p.like} |")
    return rows


if __name__ == "__main__":  # build them all and say how long it took: python tests/pythons.py
    if sys.argv[1:] == ["--readme"]:
        print("\n".join([README_HEADER, "|---|---|---|---|---|", *readme_rows()]))
        sys.exit(0)
    t0 = time.monotonic()
    for minor, result in ensure_all().items():
        print(f"{minor:5} {result}")
    print(f"{time.monotonic() - t0:.1f} s, in {cache_root()}")
