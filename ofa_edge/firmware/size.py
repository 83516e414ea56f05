"""Flash and RAM of a firmware image, from ``arm-none-eabi-size -A`` and the linker map.

Flash = every section stored in flash: the vector table, code, read-only data, unwind tables,
init arrays and the initial values of ``.data``. Static RAM = ``.data`` + ``.bss`` (the arena
included). The map attributes the flash bytes to their source: the model, CMSIS-NN, TFLM's
kernels and core, the C/C++ runtime libraries, ofa-edge's startup and app, and alignment fill.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".init_array", ".data")
RAM_SECTIONS = (".data", ".bss")
PARTS = ("model", "CMSIS-NN", "TFLM kernels", "TFLM core", "C/C++ runtime", "startup and app", "fill")


@dataclass
class Sizes:
    """One image's sections (bytes) and its flash breakdown."""

    sections: dict[str, int]
    breakdown: dict[str, int] = field(default_factory=dict)
    arena_symbol: int = 0   # the static arena's bytes (inside .bss)

    @property
    def flash(self) -> int:
        return sum(self.sections.get(s, 0) for s in FLASH_SECTIONS)

    @property
    def static_ram(self) -> int:
        return sum(self.sections.get(s, 0) for s in RAM_SECTIONS)


def read_sizes(size_tool: str, elf: Path, map_file: Path, library_folders: dict[str, str]) -> Sizes:
    done = subprocess.run([size_tool, "-A", "-d", str(elf)], capture_output=True, text=True, check=True)
    sections = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    sizes = Sizes(sections)
    sizes.breakdown, sizes.arena_symbol = _breakdown(map_file.read_text(errors="replace"), library_folders)
    sizes.breakdown["fill"] += sizes.flash - sum(sizes.breakdown.values())  # section alignment the map leaves out
    return sizes


_OUTPUT = re.compile(r"^(\.\S+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+")
_INPUT = re.compile(r"^ (\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
_INPUT_NAME = re.compile(r"^ (\S+)$")
_INPUT_REST = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
_FILL = re.compile(r"^ \*fill\*\s+0x[0-9a-f]+\s+0x([0-9a-f]+)")


def _breakdown(text: str, library_folders: dict[str, str]) -> tuple[dict[str, int], int]:
    """Flash bytes per part, and the arena's bytes, from a GNU ld map. The map lists merged
    string sections (``.rodata.str1.*``) at their size before merging: what merging saved in
    an output section is taken back from each part's strings, in proportion."""
    parts = {p: 0 for p in PARTS}
    strings: dict[str, dict[str, int]] = {}   # output section -> part -> bytes of mergeable strings
    listed: dict[str, int] = {}               # output section -> bytes the map lists in it
    actual: dict[str, int] = {}               # output section -> its size
    arena = 0
    body = text.split("Linker script and memory map", 1)[-1]
    section, pending = None, None
    for line in body.splitlines():
        out = _OUTPUT.match(line)
        if out:
            section, pending = out.group(1), None
            actual[section] = int(line.split()[2], 16)
            continue
        if line.startswith((".", "/", "LOAD", "OUTPUT")) and not line.startswith(" "):
            section, pending = None, None
            continue
        fill = _FILL.match(line)
        if fill:
            if section in FLASH_SECTIONS:
                parts["fill"] += int(fill.group(1), 16)
                listed[section] = listed.get(section, 0) + int(fill.group(1), 16)
            continue
        m = _INPUT.match(line)
        if m:
            name, size, origin = m.group(1), int(m.group(3), 16), m.group(4)
        else:
            named = _INPUT_NAME.match(line)
            if named and not named.group(1).startswith("*"):
                pending = named.group(1)
                continue
            rest = _INPUT_REST.match(line) if pending else None
            if not rest:
                continue
            name, size, origin, pending = pending, int(rest.group(2), 16), rest.group(3), None
        if name.startswith(".bss.ofa_arena"):
            arena += size
        if section in FLASH_SECTIONS and size:
            part = _part(origin, name, library_folders)
            parts[part] += size
            listed[section] = listed.get(section, 0) + size
            if ".str" in name:
                strings.setdefault(section, {}).setdefault(part, 0)
                strings[section][part] += size
    for section, by_part in strings.items():
        saved, total = listed.get(section, 0) - actual.get(section, 0), sum(by_part.values())
        if saved > 0 and total:
            for part, size in by_part.items():
                parts[part] -= round(saved * size / total)
    return parts, arena


def _part(origin: str, section: str, library_folders: dict[str, str]) -> str:
    if section.startswith(".rodata.ofa_model"):
        return "model"
    for prefix, part in library_folders.items():
        if f"/{prefix}" in origin:
            return part
    if ".a(" in origin or "/lib/gcc/" in origin or "arm-none-eabi/lib" in origin:
        return "C/C++ runtime"
    return "startup and app"
