"""The firmware build's inputs: the Arm GNU toolchain, QEMU and a TFLite Micro source tree.

Each missing input is one line that names the install command or the flag to set (exit 2).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ofa_edge.errors import OfaEdgeError

APT = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm"
NO_FIRMWARE = "or pass --no-firmware to check in TFLite Micro's host build instead"
SOURCE_ENV = "OFA_EDGE_TFLM_SRC"
PARTS = ("cmsis", "cmsis_nn", "flatbuffers", "gemmlowp", "ruy")
SOURCE_SUFFIXES = {".h", ".hpp", ".cc", ".c", ".cpp", ".inc", ".patch", ".S"}


class FirmwareSetupError(OfaEdgeError):
    """A firmware input (toolchain, QEMU, source tree) is missing or unusable."""


@dataclass(frozen=True)
class Toolchain:
    gcc: str
    gxx: str
    size: str
    objcopy: str
    qemu: str
    gcc_version: str
    newlib_version: str
    qemu_version: str

    def record(self) -> dict:
        return {"compiler": f"arm-none-eabi-gcc {self.gcc_version}", "libc": f"newlib {self.newlib_version}",
                "emulator": self.qemu_version}


def find_toolchain() -> Toolchain:
    """The Arm GNU toolchain and qemu-system-arm on PATH, with their versions."""
    tools = {name: shutil.which(f"arm-none-eabi-{name}") for name in ("gcc", "g++", "size", "objcopy")}
    missing = [f"arm-none-eabi-{n}" for n, path in tools.items() if path is None]
    if missing:
        raise FirmwareSetupError(f"{', '.join(missing)} not found: install the Arm GNU toolchain ({APT}), "
                                 f"{NO_FIRMWARE}")
    if not _compiles(tools["gcc"], "c", "newlib.h"):
        raise FirmwareSetupError(f"arm-none-eabi-gcc has no C library (newlib): {APT}, {NO_FIRMWARE}")
    if not _compiles(tools["g++"], "c++", "cstdarg"):
        raise FirmwareSetupError(f"arm-none-eabi-g++ has no C++ library headers: {APT}, {NO_FIRMWARE}")
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise FirmwareSetupError(f"qemu-system-arm not found: it runs the test firmware ({APT}), {NO_FIRMWARE}")
    defines = _run([tools["gcc"], "-E", "-dM", "-x", "c", "-"], stdin="#include <newlib.h>\n")
    newlib = re.search(r'_NEWLIB_VERSION\s+"([^"]+)"', defines)
    return Toolchain(gcc=tools["gcc"], gxx=tools["g++"], size=tools["size"], objcopy=tools["objcopy"], qemu=qemu,
                     gcc_version=_run([tools["gcc"], "-dumpversion"]).strip(),
                     newlib_version=newlib.group(1) if newlib else "unknown",
                     qemu_version=_run([qemu, "--version"]).splitlines()[0].strip())


def _compiles(compiler: str, language: str, header: str) -> bool:
    try:
        _run([compiler, "-E", "-x", language, "-"], stdin=f"#include <{header}>\n")
        return True
    except FirmwareSetupError:
        return False


def _run(cmd: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirmwareSetupError(f"{cmd[0]} could not run: {exc}") from exc
    if done.returncode != 0:
        raise FirmwareSetupError(f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done.stdout


@dataclass(frozen=True, eq=False)  # hashed by identity: the lookups below cache per tree
class SourceTree:
    """A TFLite Micro tree and the third-party code a CMSIS-NN build reads."""

    root: Path
    tflm: Path                  # the folder holding tensorflow/lite/micro
    parts: dict                 # part name -> folder (cmsis, cmsis_nn, flatbuffers, gemmlowp, ruy)
    layout: str                 # "tflm-cmsis-src" or "tflite-micro checkout"

    def fingerprint(self) -> str:
        """sha256 over every source file's path and content (what the object cache is keyed by)."""
        digest = hashlib.sha256()
        for base in (self.tflm / "tensorflow", self.tflm / "signal", *self.parts.values()):
            if not base.is_dir():
                continue
            for path in sorted(p for p in base.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()):
                digest.update(str(path.relative_to(self.root)).encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    def git_commit(self) -> str | None:
        if not (self.tflm / ".git").exists() or shutil.which("git") is None:
            return None
        done = subprocess.run(["git", "-C", str(self.tflm), "rev-parse", "HEAD"], capture_output=True, text=True)
        return done.stdout.strip() or None if done.returncode == 0 else None

    def flatbuffers_patched(self) -> bool:
        base = self.parts["flatbuffers"] / "include" / "flatbuffers" / "base.h"
        return "For TFLM, we always want" in base.read_text(errors="replace")


def find_source_tree(path: str | os.PathLike | None) -> SourceTree:
    """``--tflm-src`` (or ``$OFA_EDGE_TFLM_SRC``): the tflm-cmsis-src folder, or a tflite-micro
    checkout after ``make -f tensorflow/lite/micro/tools/make/Makefile third_party_downloads``."""
    given = path or os.environ.get(SOURCE_ENV)
    if not given:
        raise FirmwareSetupError(f"no TFLite Micro source tree: pass --tflm-src DIR or set {SOURCE_ENV} (a "
                                 "tflite-micro checkout with its third-party downloads, or an unpacked "
                                 f"tflm-cmsis-src folder), {NO_FIRMWARE}")
    root = Path(given).expanduser().resolve()
    flag = "--tflm-src" if path else f"${SOURCE_ENV}"
    if not root.is_dir():
        raise FirmwareSetupError(f"{flag} {given}: no such folder (a tflite-micro checkout or an unpacked "
                                 f"tflm-cmsis-src folder), {NO_FIRMWARE}")
    if (root / "tflm-cmsis-src").is_dir():
        root = root / "tflm-cmsis-src"
    header = Path("tensorflow/lite/micro/micro_interpreter.h")
    if (root / "tflite-micro" / header).is_file():
        tflm, parts, layout = root / "tflite-micro", {p: root / "third_party" / p for p in PARTS}, "tflm-cmsis-src"
    elif (root / header).is_file():
        downloads = root / "tensorflow/lite/micro/tools/make/downloads"
        tflm, parts, layout = root, {p: downloads / p for p in PARTS}, "tflite-micro checkout"
    else:
        raise FirmwareSetupError(f"{flag} {given}: no {header} in it or in its tflite-micro/ folder: not a TFLite "
                                 f"Micro source tree, {NO_FIRMWARE}")
    missing = [name for name, folder in parts.items() if not folder.is_dir()]
    if missing:
        where = ("run make -f tensorflow/lite/micro/tools/make/Makefile third_party_downloads in it"
                 if layout == "tflite-micro checkout" else "unpack the full tflm-cmsis-src archive")
        raise FirmwareSetupError(f"{flag} {given}: {', '.join(missing)} missing from {parts[missing[0]].parent}: "
                                 f"{where}")
    return SourceTree(root=root, tflm=tflm, parts=parts, layout=layout)
