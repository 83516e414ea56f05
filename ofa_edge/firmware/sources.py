"""The library sources one model's firmware needs, and its op resolver.

TFLite Micro's core (the interpreter, allocators, planners and the TFLite files it shares) is
always built; of its kernels, only the files that register the model's ops (with CMSIS-NN's
version of a kernel where one exists, as TFLM's ``OPTIMIZED_KERNEL_DIR=cmsis_nn`` does); of
CMSIS-NN, every int8 source (the linker keeps only what is called). The model's ops are read
from the .tflite itself, and their names from the tree's own schema header.
"""
from __future__ import annotations

import re
import struct
from functools import lru_cache
from pathlib import Path

from ofa_edge.firmware.toolchain import FirmwareSetupError, SourceTree

MICRO = Path("tensorflow/lite/micro")
#: micro/*.cc that only tests use, and the DebugLog the app brings itself
NOT_IN_LIBRARY = {"test_helpers.cc", "test_helper_custom_ops.cc", "fake_micro_context.cc", "mock_micro_graph.cc",
                  "debug_log.cc", "recording_micro_allocator.cc"}
#: kernel files every kernel build needs
KERNEL_SUPPORT = ("kernel_util.cc", "micro_tensor_utils.cc")


def core_sources(tree: SourceTree) -> list[Path]:
    """TFLite Micro's core files (relative to ``tree.tflm``)."""
    micro = tree.tflm / MICRO
    files = [p for p in micro.glob("*.cc") if not p.name.endswith("_test.cc") and p.name not in NOT_IN_LIBRARY]
    for sub in ("arena_allocator", "memory_planner", "tflite_bridge"):
        files += [p for p in (micro / sub).glob("*.cc") if not p.name.endswith("_test.cc")]
    shared = tree.tflm / "tensorflow"
    for p in shared.rglob("*"):
        rel = p.relative_to(tree.tflm).as_posix()
        if (p.suffix in (".cc", ".c") and not rel.startswith(("tensorflow/lite/micro/", "tensorflow/lite/experimental/"))
                and p.name != "array.cc" and not p.name.endswith("_test.cc")):
            files.append(p)
    return sorted(p.relative_to(tree.tflm) for p in files)


def kernel_sources(tree: SourceTree, ops: list[str]) -> list[Path]:
    """The kernel files that register ``ops`` (CMSIS-NN's where it has one), plus support files."""
    kernels, defining = tree.tflm / MICRO / "kernels", _registrations(tree)
    stems = set()
    for op in ops:
        if op not in defining:
            raise FirmwareSetupError(f"the model uses {op}, which TFLite Micro in {tree.root} has no kernel for")
        stems.add(defining[op])
    files = [kernels / name for name in KERNEL_SUPPORT]
    for stem in sorted(stems):
        optimized = kernels / "cmsis_nn" / f"{stem}.cc"
        files.append(optimized if optimized.is_file() else kernels / f"{stem}.cc")
        common = kernels / f"{stem}_common.cc"
        if common.is_file():
            files.append(common)
    return [p.relative_to(tree.tflm) for p in files]


def cmsis_nn_sources(tree: SourceTree) -> list[Path]:
    """CMSIS-NN's sources without the float16/float32 ones (relative to its folder)."""
    base = tree.parts["cmsis_nn"]
    return sorted(p.relative_to(base) for p in (base / "Source").rglob("*.c")
                  if not p.name.endswith(("_f16.c", "_f32.c")) and p.name != "arm_nntables_flt.c")


@lru_cache(maxsize=8)
def _registrations(tree: SourceTree) -> dict[str, str]:
    """op name -> the kernel file stem that defines ``Register_<OP>()``."""
    found = {}
    for path in sorted((tree.tflm / MICRO / "kernels").glob("*.cc")):
        for op in re.findall(r"^TFLMRegistration\*?\s+Register_(\w+)\(\)\s*\{", path.read_text(errors="replace"), re.M):
            found.setdefault(op, path.stem)
    return found


@lru_cache(maxsize=8)
def resolver_methods(tree: SourceTree) -> dict[str, str]:
    """op name -> the ``MicroMutableOpResolver`` method that adds it (``CONV_2D`` -> ``AddConv2D``)."""
    text = (tree.tflm / MICRO / "micro_mutable_op_resolver.h").read_text()
    methods = {}
    for method, _, body in re.findall(r"TfLiteStatus (Add\w+)\((.*?)\)\s*\{(.*?)\n  \}", text, re.S):
        for op in re.findall(r"BuiltinOperator_(\w+)", body):
            methods.setdefault(op, method)
    return methods


@lru_cache(maxsize=8)
def builtin_names(tree: SourceTree) -> dict[int, str]:
    """BuiltinOperator code -> name, from the tree's schema header."""
    text = (tree.tflm / "tensorflow/lite/schema/schema_generated.h").read_text()
    enum = re.search(r"enum BuiltinOperator : int32_t \{(.*?)\};", text, re.S)
    return {int(code): name for name, code in re.findall(r"BuiltinOperator_(\w+) = (-?\d+)", enum.group(1))
            if name not in ("MIN", "MAX")}


def model_ops(model: bytes, tree: SourceTree) -> list[str]:
    """The builtin ops a .tflite uses (sorted names), read from its flatbuffer."""
    names = builtin_names(tree)
    try:
        codes = sorted({_builtin_code(model, table) for table in _operator_code_tables(model)})
    except (struct.error, IndexError) as exc:
        raise FirmwareSetupError(f"the model is not a readable .tflite flatbuffer ({exc})") from exc
    unknown = [c for c in codes if c not in names]
    if unknown:
        raise FirmwareSetupError(f"the model uses builtin op codes {unknown}, unknown to TFLite Micro in {tree.root}")
    return [names[c] for c in codes]


def resolver_header(ops: list[str], tree: SourceTree) -> str:
    """``ofa_ops.h``: an op resolver holding exactly the model's ops."""
    methods = resolver_methods(tree)
    missing = [op for op in ops if op not in methods]
    if missing:
        raise FirmwareSetupError(f"TFLite Micro's MicroMutableOpResolver has no method for {', '.join(missing)}")
    adds = "\n".join(f"  if (r.{methods[op]}() != kTfLiteOk) return kTfLiteError;" for op in ops)
    return ("// Generated by ofa-edge from the model's own ops.\n#pragma once\n"
            '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
            f"constexpr int kOfaOpCount = {len(ops)};\n"
            f"using OfaOpResolver = tflite::MicroMutableOpResolver<kOfaOpCount>;\n\n"
            f"inline TfLiteStatus ofa_add_ops(OfaOpResolver& r) {{\n{adds}\n  return kTfLiteOk;\n}}\n")


# A minimal flatbuffer walk: Model.operator_codes[i].{deprecated_builtin_code, builtin_code}.
def _table(buf: bytes, pos: int) -> tuple[int, int]:
    vtable = pos - struct.unpack_from("<i", buf, pos)[0]
    return pos, vtable


def _field(buf: bytes, table: tuple[int, int], index: int) -> int | None:
    pos, vtable = table
    vsize = struct.unpack_from("<H", buf, vtable)[0]
    slot = 4 + 2 * index
    if slot >= vsize:
        return None
    offset = struct.unpack_from("<H", buf, vtable + slot)[0]
    return pos + offset if offset else None


def _operator_code_tables(buf: bytes):
    model = _table(buf, struct.unpack_from("<I", buf, 0)[0])
    at = _field(buf, model, 1)  # Model.operator_codes
    if at is None:
        return []
    vec = at + struct.unpack_from("<I", buf, at)[0]
    count = struct.unpack_from("<I", buf, vec)[0]
    out = []
    for i in range(count):
        slot = vec + 4 + 4 * i
        out.append(_table(buf, slot + struct.unpack_from("<I", buf, slot)[0]))
    return out


def _builtin_code(buf: bytes, table: tuple[int, int]) -> int:
    deprecated = _field(buf, table, 0)
    code = _field(buf, table, 3)
    old = struct.unpack_from("<b", buf, deprecated)[0] if deprecated is not None else 0
    new = struct.unpack_from("<i", buf, code)[0] if code is not None else 0
    return max(old, new)
