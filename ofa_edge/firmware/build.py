"""Builds a model's firmware: library objects cached by source tree, core and flags; the app
(startup, the model API, a test or deployment main, the embedded model) relinked per model.

The build is ofa-edge's own: a compiler call per file, run in parallel from Python with
argument lists (no shell), so any path works and nothing reaches the network. The bundle gets
the same calls as a generated makefile (``project``) to rebuild the deployment image by hand.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

from ofa_edge.errors import OfaEdgeError
from ofa_edge.firmware import sources
from ofa_edge.firmware.cores import Core, Region
from ofa_edge.firmware.toolchain import SourceTree, Toolchain

APP = Path(__file__).parent / "app"
COMMON = ["-ffunction-sections", "-fdata-sections", "-fno-unwind-tables", "-fno-asynchronous-unwind-tables",
          "-fmessage-length=0", "-fomit-frame-pointer", "-fsigned-char"]
TFLM_DEFINES = ["-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON", "-DTF_LITE_MCU_DEBUG_LOG", "-DCMSIS_NN",
                "-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0"]
CXX = ["-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics"]
C = ["-std=gnu11"]
#: TFLM's own levels: its core for size, kernels and CMSIS-NN for speed
LEVEL = {"core": "-Os", "kernels": "-O2", "cmsis_nn": "-O2", "app": "-Os"}
TEST_HEAP, TEST_STACK = 256 * 1024, 64 * 1024
TREE_ALIAS, FLATBUFFERS_ALIAS = "tflm-src", "flatbuffers"  # what the tree's paths read as in the objects
CACHE_VERSION = "2"  # part of the object cache's key: bump when the flags change in ways the key misses


class FirmwareBuildError(OfaEdgeError):
    """The compiler or linker failed: the message carries its first error lines."""


@dataclass(frozen=True)
class Image:
    """One linked firmware image."""

    kind: str          # "test" (semihosting, QEMU) or "deploy" (no stdio)
    elf: Path
    map: Path
    arena_bytes: int
    release: bool
    flash: Region
    ram: Region
    stack_bytes: int
    ops: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    """Library files compiled with the same flags: ``files`` relative to ``base``."""

    name: str          # the cache folder's prefix
    title: str         # the flash breakdown's name
    base: Path
    base_var: str      # ``base``'s name among ``include_dirs``
    files: list[Path]
    flags: list[str]   # level and defines, without include paths


def app_units(kind: str) -> list[str]:
    """The application's files (in ``app/``) of a ``test`` or ``deploy`` image, in link order."""
    return ["startup.c", "model.S", "ofa_model.cc", "main_test.cc" if kind == "test" else "main_deploy.cc"]


#: language flags by name (the generated makefile's variables)
LANGUAGE_FLAGS = {"CXX_LANG": CXX, "C_LANG": C}


def language(suffix: str) -> tuple[str, str | None]:
    """The compiler (``gcc`` or ``g++``) and the ``LANGUAGE_FLAGS`` name for a file ending in ``suffix``."""
    return ("g++", "CXX_LANG") if suffix == ".cc" else ("gcc", "C_LANG" if suffix == ".c" else None)


def link_specs(kind: str) -> list[str]:
    return ["--specs=rdimon.specs"] if kind == "test" else ["--specs=nano.specs", "--specs=nosys.specs"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("OFA_EDGE_FIRMWARE_CACHE") or Path.home() / ".cache" / "ofa-edge" / "firmware")


class FirmwareBuilder:
    """Compiles and links firmware for one core from one source tree."""

    def __init__(self, tree: SourceTree, toolchain: Toolchain, core: Core, float_abi: str = "hard",
                 fpu: str | None = None, cache_dir: Path | None = None, log: Callable[[str], None] = print,
                 jobs: int | None = None):
        self.tree, self.tc, self.core, self.log = tree, toolchain, core, log
        self.arch_flags = core.flags(float_abi, fpu)
        self.cache = Path(cache_dir or default_cache_dir())
        self.jobs = jobs or os.cpu_count() or 1
        self.fingerprint = tree.fingerprint()
        self.compiled = 0  # library files compiled by this builder (0: everything came from the cache)

    # -- library objects ---------------------------------------------------------------------
    def include_dirs(self) -> dict[str, Path]:
        """The include folders of every build, by name (the generated makefile's variables)."""
        p = self.tree.parts
        return {"TFLM": self.tree.tflm, "FLATBUFFERS_INCLUDE": self._flatbuffers(), "GEMMLOWP": p["gemmlowp"],
                "RUY": p["ruy"], "CMSIS": p["cmsis"], "CMSIS_CORE": p["cmsis"] / "CMSIS" / "Core" / "Include",
                "CMSIS_NN": p["cmsis_nn"], "CMSIS_NN_INCLUDE": p["cmsis_nn"] / "Include"}

    @cached_property
    def _includes(self) -> list[str]:
        """Include paths, and prefix maps that keep where the tree lies out of the objects (__FILE__
        in asserts): the same tree anywhere gives the same bytes."""
        maps = [f"-fmacro-prefix-map={self.tree.root}={TREE_ALIAS}"]
        if not self.tree.flatbuffers_patched():
            maps.append(f"-fmacro-prefix-map={self._flatbuffers().parent}={FLATBUFFERS_ALIAS}")
        return [*(f"-I{folder}" for folder in self.include_dirs().values()), *maps]

    def _flatbuffers(self) -> Path:
        """flatbuffers' headers with TFLM's patch applied (in the cache when the tree has it unapplied)."""
        folder = self.tree.parts["flatbuffers"]
        if self.tree.flatbuffers_patched():
            return folder / "include"
        patched = self.cache / f"flatbuffers-{self.fingerprint[:16]}"
        if not (patched / "include").is_dir():
            patch = self.tree.tflm / "tensorflow/lite/micro/tools/make/flatbuffers.patch"
            staging = Path(tempfile.mkdtemp(prefix=".flatbuffers-", dir=_ensure(self.cache)))
            subprocess.run(["cp", "-r", str(folder / "include"), str(staging / "include")], check=True)
            done = subprocess.run(["patch", "-s", "-p1", "-d", str(staging), "-i", str(patch)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise FirmwareBuildError(f"TFLM's flatbuffers.patch does not apply to {folder}: "
                                         f"{(done.stdout + done.stderr).strip()[:300]}")
            try:
                os.replace(staging, patched)
            except OSError:  # another build got there first
                subprocess.run(["rm", "-rf", str(staging)])
        return patched / "include"

    def _group(self, name: str, base: Path, files: list[Path], flags: list[str]) -> list[Path]:
        """Compiles ``files`` (relative to ``base``) into the cache folder keyed by tree, core and
        flags; returns the objects. A folder is locked while it is filled."""
        # include paths point into the tree, which the fingerprint covers: a moved tree reuses the objects
        keyed = [CACHE_VERSION, self.fingerprint, name, *self.arch_flags,
                 *(f for f in flags if not f.startswith(("-I", "-fmacro-prefix-map=")))]
        key = hashlib.sha256("\0".join(keyed).encode()).hexdigest()[:16]
        folder = _ensure(self.cache / f"{name}-{self.core.name}-{key}")
        objects = [folder / (f.as_posix().replace("/", "__") + ".o") for f in files]
        todo = [(base / f, o) for f, o in zip(files, objects) if not o.is_file()]
        if todo:
            with open(folder.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                todo = [(s, o) for s, o in todo if not o.is_file()]
                self.log(f"compiling {len(todo)} {name} files for {self.core.name} ({self.jobs} jobs; cached in "
                         f"{folder})")
                self._compile_all([(s, o, flags) for s, o in todo])
                self.compiled += len(todo)
        return objects

    def _compile_all(self, jobs: list[tuple[Path, Path, list[str]]]) -> None:
        with ThreadPoolExecutor(self.jobs) as pool:
            for failure in pool.map(lambda job: self._compile(*job), jobs):
                if failure:
                    raise FirmwareBuildError(failure)

    def _compile(self, source: Path, obj: Path, flags: list[str]) -> str | None:
        tool, lang_name = language(source.suffix)
        compiler, lang = self.tc.gxx if tool == "g++" else self.tc.gcc, LANGUAGE_FLAGS.get(lang_name, [])
        tmp = obj.with_name(f".{obj.name}.{os.getpid()}.tmp")
        done = subprocess.run([compiler, *self.arch_flags, *COMMON, *lang, *flags, "-c", str(source), "-o", str(tmp)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()
            return f"compiling {source.name} for {self.core.name} failed: {' | '.join(errors[:3])}"
        os.replace(tmp, obj)
        return None

    def groups(self, ops: list[str], release: bool) -> list[Group]:
        """The library's object groups for ``ops``, in link order (flags without include paths)."""
        tflm = [*TFLM_DEFINES, *(["-DTF_LITE_STRIP_ERROR_STRINGS"] if release else []), "-w"]
        cmsis = ["-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0", "-w"]
        return [Group("tflm-core", "TFLM core", self.tree.tflm, "TFLM", sources.core_sources(self.tree),
                      [LEVEL["core"], *tflm]),
                Group("tflm-kernels", "TFLM kernels", self.tree.tflm, "TFLM", sources.kernel_sources(self.tree, ops),
                      [LEVEL["kernels"], *tflm]),
                Group("cmsis-nn", "CMSIS-NN", self.tree.parts["cmsis_nn"], "CMSIS_NN",
                      sources.cmsis_nn_sources(self.tree), [LEVEL["cmsis_nn"], *cmsis])]

    def library(self, ops: list[str], release: bool) -> dict[str, list[Path]]:
        """The library objects for ``ops``: TFLM core, kernels and CMSIS-NN, by group."""
        return {g.title: self._group(g.name, g.base, g.files, [*g.flags, *self._includes])
                for g in self.groups(ops, release)}

    def app_flags(self, kind: str, arena_bytes: int, release: bool) -> list[str]:
        """The application's flags besides include paths and the model file."""
        return [LEVEL["app"], f"-DOFA_ARENA_BYTES={arena_bytes}", *(["-DOFA_SEMIHOSTING"] if kind == "test" else []),
                *TFLM_DEFINES, *(["-DTF_LITE_STRIP_ERROR_STRINGS"] if release else [])]

    # -- images ------------------------------------------------------------------------------
    def image(self, model: Path, kind: str, out: Path, arena_bytes: int, release: bool = False,
              flash: Region | None = None, ram: Region | None = None, stack_bytes: int = TEST_STACK) -> Image:
        """Links the ``test`` or ``deploy`` image of ``model`` into ``out`` (``firmware-<kind>.elf``)."""
        out = _ensure(out)
        model_bytes = model.read_bytes()
        ops = sources.model_ops(model_bytes, self.tree)
        library = self.library(ops, release)
        app = _ensure(out / f"{kind}-app")
        (app / "ofa_ops.h").write_text(sources.resolver_header(ops, self.tree))
        flash, ram = flash or self.core.flash, ram or self.core.ram
        flags = [*self.app_flags(kind, arena_bytes, release), f'-DOFA_MODEL_FILE="{model.resolve()}"', f"-I{app}",
                 f"-I{APP}", *self._includes]
        units = [APP / name for name in app_units(kind)]
        if kind == "test":  # TFLM's own DebugLog (vfprintf to stderr) reports errors over semihosting
            units.append(self.tree.tflm / "tensorflow/lite/micro/debug_log.cc")
        objects = [app / (u.name + ".o") for u in units]
        for unit, obj in zip(units, objects):
            failure = self._compile(unit, obj, flags)
            if failure:
                raise FirmwareBuildError(failure)
        script = out / f"firmware-{kind}.ld"
        script.write_text(linker_script(flash, ram, self.core.vectors if kind == "test" else None,
                                        heap=TEST_HEAP if kind == "test" else 0, stack=stack_bytes))
        elf, map_file = out / f"firmware-{kind}.elf", out / f"firmware-{kind}.map"
        specs = link_specs(kind)
        groups = [o for objs in library.values() for o in objs]
        done = subprocess.run([self.tc.gxx, *self.arch_flags, *specs, "-nostartfiles", "-Wl,--gc-sections",
                               f"-Wl,-Map={map_file}", "-T", str(script), *map(str, objects), *map(str, groups),
                               "-lm", "-o", str(elf)], capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line.split(": ", 1)[-1] for line in done.stderr.splitlines()
                      if ("error" in line or "undefined" in line or "overflow" in line) and "collect2" not in line]
            raise FirmwareBuildError(f"linking the {kind} image for {self.core.name} failed: "
                                     f"{' | '.join((errors or done.stderr.splitlines())[:3])}")
        return Image(kind=kind, elf=elf, map=map_file, arena_bytes=arena_bytes, release=release, flash=flash, ram=ram,
                     stack_bytes=stack_bytes, ops=tuple(ops))

    def library_folders(self) -> dict[str, str]:
        """Object-group prefix -> breakdown name, for the map's attribution (``size.breakdown``)."""
        return {f"tflm-core-{self.core.name}-": "TFLM core", f"tflm-kernels-{self.core.name}-": "TFLM kernels",
                f"cmsis-nn-{self.core.name}-": "CMSIS-NN"}


def linker_script(flash: Region, ram: Region, vectors: Region | None, heap: int, stack: int) -> str:
    memory = [f"  FLASH (rx) : ORIGIN = {flash.origin:#x}, LENGTH = {flash.length:#x}",
              f"  RAM (rwx) : ORIGIN = {ram.origin:#x}, LENGTH = {ram.length:#x}"]
    if vectors is not None:
        memory.insert(0, f"  VECTORS (rx) : ORIGIN = {vectors.origin:#x}, LENGTH = {vectors.length:#x}")
    text = (APP / "linker.ld.in").read_text()
    return (text.replace("@MEMORY@", "\n".join(memory)).replace("@VECTORS@", "VECTORS" if vectors else "FLASH")
            .replace("@HEAP@", f"{heap:#x}").replace("@STACK@", f"{stack:#x}"))


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
