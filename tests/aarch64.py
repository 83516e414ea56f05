"""An emulated Raspberry Pi 4 (aarch64, Debian bookworm's Python 3.11) for tests (DESIGN.md §10.2).

    aarch64_sysroot                     # session fixture: the sysroot (built once, cached)
    build_sysroot(cache_root)           # the builder itself
    write_device_python(path, sysroot)  # the device's ``python3``: a wrapper around qemu-aarch64

The sysroot holds Debian bookworm's arm64 ``python3.11`` and ``python3-numpy`` (apt with a
private state, arm64 only, ``--download-only``, then ``dpkg-deb -x``), the links their
post-install scripts would make, a Pi 4's ``/proc/cpuinfo`` (4x Cortex-A72), precompiled .pyc,
and the aarch64 wheels of ai-edge-litert and tflite-runtime in ``opt/site``. It is built once
per key (the package list, the wheel pins and ``BUILDER_VERSION``) into
``$OFA_EDGE_TEST_CACHE/aarch64-<key>`` or ``~/.cache/ofa-edge-tests/aarch64-<key>``, in a
temporary folder renamed at the end, from Debian and PyPI packages only.

Under QEMU, two settings are required or results are wrong (DESIGN.md §10.2): ``QEMU_CPU=cortex-a72``
(the default ``max`` CPU advertises SVE/SME and XNNPACK's int8 kernels then give wrong outputs)
and the fake ``/proc/cpuinfo`` (QEMU 7.2 passes the host's x86 text through and ai-edge-litert
crashes in its CPU detection). The wrapper sets the first; ``-L SYSROOT`` finds the second.

Needs ``qemu-aarch64`` (``apt-get install -y qemu-user``), apt-get, dpkg-deb, and the network
to the Debian mirror and PyPI on the first build.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import require

BUILDER_VERSION = 1
SUITE = "bookworm"
PACKAGES = ("python3.11", "python3-numpy", "libstdc++6")
#: tflite-runtime 2.14 (the last release) needs numpy < 2: --no-deps keeps Debian's numpy 1.24.
WHEELS = ("ai-edge-litert==2.1.0", "tflite-runtime==2.14.0")
#: tflite-runtime 2.14.0 is tagged manylinux_2_34: pip needs the whole tag list up to bookworm's glibc.
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{m}_aarch64" for m in range(17, 37)))
QEMU = "qemu-aarch64"
QEMU_CPU = "cortex-a72"
SITE = "opt/site"
PYTHON = "usr/bin/python3.11"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# A Raspberry Pi 4 Model B (BCM2711, 4x Cortex-A72) as its 64-bit kernel shows it.
PI4_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
    "CPU revision\t: 3\n\n" for i in range(4)
) + "Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 10000000c0ffee42\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


def require_qemu() -> None:
    require(qemu_available(), "QEMU user-mode emulation (qemu-aarch64)", "apt-get install -y qemu-user")


def sysroot_key() -> str:
    text = json.dumps({"suite": SUITE, "packages": PACKAGES, "wheels": WHEELS, "platforms": PLATFORMS,
                       "builder": BUILDER_VERSION, "cpuinfo": PI4_CPUINFO}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    kept = os.environ.get("OFA_EDGE_TEST_CACHE")
    return Path(kept) if kept else Path.home() / ".cache" / "ofa-edge-tests"


def debian_mirror(etc: Path = Path("/etc/apt")) -> tuple[str, str | None]:
    """(URI, Signed-By keyring or None) of the Debian mirror this machine's apt uses for SUITE."""
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in one_line:
        for line in _read(path).splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] != ["deb"]:
                continue
            options, words = {}, words[1:]
            if words and words[0].startswith("["):  # deb [arch=amd64 signed-by=...] URI suite ...
                opts = [words.pop(0)]
                while words and not opts[-1].endswith("]"):
                    opts.append(words.pop(0))
                options = dict(o.strip("[]").split("=", 1) for o in opts if "=" in o.strip("[]"))
            if len(words) >= 3 and words[1] == SUITE and "main" in words[2:]:
                return words[0].rstrip("/"), options.get("signed-by")
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in _read(path).split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if ("deb" in fields.get("types", "").split() and SUITE in fields.get("suites", "").split()
                    and "main" in fields.get("components", "").split() and fields.get("enabled", "yes") != "no"
                    and fields.get("uris")):
                return fields["uris"].split()[0].rstrip("/"), fields.get("signed-by")
    return DEFAULT_MIRROR, None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _run(argv: list[str], what: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {' '.join(argv[:6])} ...\n"
                           f"{(done.stderr or done.stdout)[-3000:]}")
    return done


def build_sysroot(root: Path | None = None, log=lambda line: None) -> Path:
    """The cached sysroot for ``sysroot_key()``, built first when it is not there."""
    root = Path(root or cache_root())
    final = root / f"aarch64-{sysroot_key()}"
    if (final / ".complete").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        sysroot = work / "sysroot"
        sysroot.mkdir()
        _fetch_debs(work / "apt", sysroot, log)
        _post_install(sysroot)
        _install_wheels(sysroot, log)
        _precompile(sysroot)
        shutil.rmtree(work / "apt")
        (sysroot / ".complete").write_text(json.dumps({"key": sysroot_key(), "packages": PACKAGES,
                                                       "wheels": WHEELS, "seconds": round(time.monotonic() - t0, 1)}))
        try:
            os.rename(sysroot, final)
        except OSError:  # another session built it meanwhile: keep theirs
            if not (final / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"aarch64 sysroot built in {time.monotonic() - t0:.0f} s: {final}")
    return final


def _fetch_debs(apt: Path, sysroot: Path, log) -> None:
    mirror, keyring = debian_mirror()
    keyring = keyring or (DEFAULT_KEYRING if Path(DEFAULT_KEYRING).is_file() else None)
    for d in ("lists/partial", "archives/partial", "cache", "parts", "prefs"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "status").write_text("")
    signed = f" signed-by={keyring}" if keyring else ""
    (apt / "arm64.list").write_text(f"deb [arch=arm64{signed}] {mirror} {SUITE} main\n")
    options = {
        "APT::Architecture": "arm64", "APT::Architectures": "arm64", "APT::Install-Recommends": "false",
        "APT::Sandbox::User": "root", "Debug::NoLocking": "1", "Acquire::Languages": "none",
        "Dir::State": str(apt), "Dir::State::Lists": str(apt / "lists"), "Dir::State::status": str(apt / "status"),
        "Dir::Cache": str(apt / "cache"), "Dir::Cache::archives": str(apt / "archives"),
        "Dir::Etc::SourceList": str(apt / "arm64.list"), "Dir::Etc::SourceParts": str(apt / "parts"),
        "Dir::Etc::Preferences": str(apt / "prefs" / "none"), "Dir::Etc::PreferencesParts": str(apt / "prefs"),
    }
    argv = ["apt-get", "-q", *(x for k, v in options.items() for x in ("-o", f"{k}={v}"))]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"apt-get update ({mirror} {SUITE} main, arm64)")
    _run([*argv, "update"], "apt-get update (arm64)", env=env)
    _run([*argv, "install", "-y", "--download-only", *PACKAGES], "apt-get install --download-only", env=env)
    debs = sorted((apt / "archives").glob("*.deb"))
    log(f"{len(debs)} arm64 packages, {sum(d.stat().st_size for d in debs) / 1e6:.0f} MB")
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"dpkg-deb -x {deb.name}")


def _post_install(sysroot: Path) -> None:
    """What the post-install scripts would do, and a Pi 4's /proc/cpuinfo."""
    lib = sysroot / "usr/lib/aarch64-linux-gnu"
    for name, folder in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
        target = lib / folder / name
        if not target.exists():
            raise RuntimeError(f"{target} is missing: python3-numpy's BLAS/LAPACK did not unpack")
        link = lib / name
        if not link.exists():
            link.symlink_to(f"{folder}/{name}")
    (sysroot / "proc").mkdir(exist_ok=True)
    (sysroot / "proc/cpuinfo").write_text(PI4_CPUINFO)
    if not (sysroot / PYTHON).is_file():
        raise RuntimeError(f"{sysroot / PYTHON} is missing after unpacking")


def _install_wheels(sysroot: Path, log) -> None:
    log(f"pip install --target {SITE} {' '.join(WHEELS)} (aarch64 wheels, no dependencies)")
    argv = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
            "--target", str(sysroot / SITE), "--no-deps", "--only-binary=:all:",
            *(x for p in PLATFORMS for x in ("--platform", p)),
            "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *WHEELS]
    _run(argv, "pip install (aarch64 wheels)")


def _precompile(sysroot: Path) -> None:
    """Byte-compile with this python3.11 (the bytecode is the same): ``import numpy`` under
    QEMU then takes ~1.4 s instead of compiling every run (the sysroot is read-only in use)."""
    if sys.version_info[:2] != (3, 11):
        return
    dirs = [sysroot / "usr/lib/python3.11", sysroot / "usr/lib/python3/dist-packages", sysroot / SITE]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "2", "-s", str(sysroot), "-p", "/",
                    *map(str, dirs)], capture_output=True, timeout=600)  # a few files of tests fail: fine


def device_env(sysroot: Path) -> dict:
    return {"QEMU_CPU": QEMU_CPU, "PYTHONPATH": str(sysroot / SITE)}


def device_python_argv(sysroot: Path) -> list[str]:
    """argv that runs the emulated device's Python 3.11 (with ``device_env``)."""
    return [shutil.which(QEMU) or QEMU, "-L", str(sysroot), str(sysroot / PYTHON)]


def write_device_python(path: Path, sysroot: Path) -> Path:
    """The device's ``python3``: a shell script that runs Python 3.11 under qemu-aarch64 with
    the sysroot, QEMU_CPU and the wheels on PYTHONPATH (the host has no binfmt: the device side
    must never start ``sys.executable``)."""
    import shlex

    env = device_env(sysroot)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n# the emulated Raspberry Pi 4's python3 (tests/aarch64.py)\n"
                    + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
                    + f"exec {' '.join(shlex.quote(a) for a in device_python_argv(sysroot))} \"$@\"\n")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def aarch64_sysroot() -> Path:
    """The emulated Pi 4's sysroot (built once per key, then cached; see the module docstring)."""
    require_qemu()
    for tool in ("apt-get", "dpkg-deb"):
        require(shutil.which(tool) is not None, tool, "run the tests on Debian")
    return build_sysroot(log=lambda line: print(f"[aarch64] {line}", file=sys.stderr))
