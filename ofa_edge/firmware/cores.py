"""The Cortex-M cores ofa-edge builds for: compiler flags and the QEMU board that runs each."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    """A memory region of a linker script (origin and length in bytes)."""

    origin: int
    length: int


@dataclass(frozen=True)
class Core:
    name: str
    mcpu: str
    default_fpu: str        # -mfpu for the hard and softfp float ABIs
    board: str              # qemu-system-arm -M
    flash: Region           # where the test image's code and model go on that board
    ram: Region             # where its data, arena, heap and stack go
    vectors: Region | None = None  # a separate region for the vector table (mps3-an547: ITCM)

    def flags(self, float_abi: str, fpu: str | None = None) -> list[str]:
        """Code-generation flags shared by every file of a build."""
        flags = [f"-mcpu={self.mcpu}", "-mthumb", "-mlittle-endian", f"-mfloat-abi={float_abi}"]
        if float_abi != "soft":
            flags.append(f"-mfpu={fpu or self.default_fpu}")
        return flags


MIB = 1024 * 1024
# Boards and memory maps: QEMU 7.2's MPS2/MPS3 models (../shared/DESIGN.md §8.1). The MPS2 boards
# give 4 MiB at 0x0 (code) and 4 MiB at 0x20000000 (data); mps3-an547 boots from ITCM at 0x0,
# with code in QSPI at 0x28000000 and data in SRAM at 0x21000000.
CORES = {
    "cortex-m4": Core("cortex-m4", "cortex-m4", "fpv4-sp-d16", "mps2-an386",
                      Region(0x0, 4 * MIB), Region(0x20000000, 4 * MIB)),
    "cortex-m7": Core("cortex-m7", "cortex-m7", "fpv5-d16", "mps2-an500",
                      Region(0x0, 4 * MIB), Region(0x20000000, 4 * MIB)),
    "cortex-m55": Core("cortex-m55", "cortex-m55", "auto", "mps3-an547",
                       Region(0x28000000, 8 * MIB), Region(0x21000000, 2 * MIB), vectors=Region(0x0, 512 * 1024)),
}
