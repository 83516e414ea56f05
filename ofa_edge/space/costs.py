"""Costs of a subnet without building it: MACs, parameters, int8 flash and peak activation SRAM.

The network described here is exactly the one the supernet extracts for an arch (torch hooks that
count Conv2d/Linear MACs and ``sum(p.numel() for p in net.parameters())`` give the same numbers):

1. ``input_norm``: per-channel ``x * scale + shift`` (buffers: no parameters, no MACs).
2. ``stem``: dense 3x3 conv, ``3 -> stem_width``, stride ``stem_stride``, + BN + ``stem_act``.
3. ``first_block``: depthwise 3x3 + BN + ``first_block_act``, then 1x1 ``-> first_block_width``
   + BN; residual add if the widths match.
4. per stage and active block ``(k, e)``: 1x1 expand to ``mid = make_divisible(round(in_c * e))``
   + BN + act; depthwise ``k x k`` (stride on the stage's first block) + BN + act; optional
   squeeze-excite (mean -> 1x1 with bias -> ReLU -> 1x1 with bias -> hard-sigmoid -> multiply,
   hidden width ``make_divisible(mid // se_reduction)``); 1x1 project + BN; residual add iff
   stride 1 and ``in_c == width``.
5. ``final_expand``: 1x1 + BN + hswish; global average pool; ``feature_mix``: 1x1 + hswish (no
   BN); ``classifier``: linear with bias.

Every conv pads ``k // 2``, so a map of side ``h`` comes out with side ``ceil(h / stride)``.

Counting rules:

* MACs: Conv2d and Linear only: ``out_h * out_w * out_c * (in_c / groups) * k * k``; SE convs run
  on a 1x1 map. BN, activations, pooling, multiply and add count 0.
* Params: every learnable tensor: conv weights, BN weight and bias (running stats are buffers),
  SE conv biases, classifier weight and bias.
* Flash (int8 deployment, BN folded into the conv before it): 1 byte per weight plus a 4-byte int32
  bias per output channel of every conv and linear layer (folding gives each conv a bias; the
  converter gives ``feature_mix`` a zero bias too). NOT counted: the runtime's code, the model's
  flatbuffer/graph metadata, per-channel quantisation scales and zero points, and the input-norm
  constants. The device spec's ``cost_model.runtime_flash_kb`` adds those overheads.
* Peak SRAM (int8 activations, 1 byte per element): the peak-memory definition of MCUNet
  (Lin et al., "MCUNet: Tiny Deep Learning on IoT Devices", NeurIPS 2020): the largest, over the
  ops, of input + output + scratch. We add the tensors that must stay alive across an op: the
  input of a residual block, kept for its add, and the depthwise output inside squeeze-excite,
  kept for the multiply. How ops fuse and which run in place depends on the runtime (MCUNet
  reports mcunet-in3 at 493 kB on TFLite Micro and 260 kB on TinyEngine), so it is a parameter;
  see ``RUNTIMES``. Not counted: the interpreter's own arena overhead, which the device spec's
  ``cost_model.runtime_sram_kb`` adds.

Torch-free and pure Python: one ``arch_costs`` call takes tens of microseconds.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.arch import Arch
from ofa_edge.space.presets import SpacePreset, make_divisible
from ofa_edge.space.searchspace import SearchSpace

#: The op types of conv and linear layers, the keys of ``macs_by_type``. ``conv`` is the stem's
#: dense 3x3; ``pointwise`` every dense 1x1 (expand, project, final_expand, feature_mix);
#: ``se_reduce``/``se_expand`` are the squeeze-excite 1x1 convs on a 1x1 map.
LAYER_TYPES = ("conv", "pointwise", "depthwise", "linear", "se_reduce", "se_expand")

#: The runtimes the peak-SRAM model knows.
#:
#: ``tflite-micro`` (TFLite Micro with CMSIS-NN kernels): ReLU is fused into the conv before it;
#: hswish and hard-sigmoid are separate ops (input and output both live); the SE multiply is a
#: separate op (depthwise output + scale vector + output); the residual add is a separate op (two
#: inputs + output); ``input_norm`` is one elementwise op (3RR in + 3RR out). CMSIS-NN scratch
#: buffers (``arm_convolve_s8_get_buffer_size``, ``arm_depthwise_conv_s8_get_buffer_size``): a dense
#: non-1x1 conv needs an int16 im2col of two columns, ``2 * in_c * k * k * 2`` bytes; a depthwise
#: conv ``in_c * k * k * 2`` bytes; 1x1 convs and linear layers none.
#:
#: ``tinyengine`` (MCUNet's TinyEngine): every activation (hswish, hard-sigmoid, ReLU) is fused into
#: the conv before it; depthwise convs run in place (``max(in, out)``, no scratch); the SE
#: multiply and the elementwise input norm run in place. Dense convs keep the im2col scratch, and
#: the residual add still holds both inputs and its output.
#:
#: In both, the input of a residual block stays alive in every op of the block.
RUNTIMES = ("tflite-micro", "tinyengine")

_FUSED = {"tflite-micro": frozenset(), "tinyengine": frozenset({"hswish", "hardsigmoid"})}
_IN_PLACE = {"tflite-micro": frozenset(), "tinyengine": frozenset({"depthwise", "se_mul", "input_norm"})}

_CONV_TYPES = frozenset(LAYER_TYPES)


# ---------------------------------------------------------------------------------------------
# public records


@dataclass(frozen=True)
class Layer:
    """One Conv2d or Linear layer of the subnet, with its own costs.

    ``params`` includes the BN after it (weight and bias) and its own bias. ``in_hw``/``out_hw``
    are the sides of the square input and output maps (1 for SE convs and the classifier).
    ``has_bias_after_fold`` says the int8 model stores an int32 bias per output channel (true for
    every layer here: from BN folding, an own bias, or the converter's zero bias).
    """

    name: str
    op: str
    in_c: int
    out_c: int
    kernel: int
    stride: int
    groups: int
    in_hw: int
    out_hw: int
    macs: int
    params: int
    has_bias_after_fold: bool
    has_bn: bool = False

    @property
    def weights(self) -> int:
        return self.out_c * (self.in_c // self.groups) * self.kernel * self.kernel

    @property
    def flash_bytes(self) -> int:
        """int8 weights plus an int32 bias per output channel."""
        return self.weights + (4 * self.out_c if self.has_bias_after_fold else 0)


@dataclass(frozen=True)
class Costs:
    """The costs of one subnet. Bytes are exact; see the module docstring for what is counted."""

    macs: int
    params: int
    peak_sram_bytes: int
    flash_bytes: int
    runtime: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Costs":
        try:
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})
        except (KeyError, TypeError) as exc:
            raise OfaEdgeError(f"malformed costs JSON: missing {exc}") from None

    def __str__(self) -> str:
        return (f"macs {self.macs / 1e6:.1f}M  params {self.params / 1e6:.2f}M  "
                f"peak SRAM {self.peak_sram_bytes / 1024:.1f} KiB ({self.runtime})  "
                f"flash {self.flash_bytes / 2**20:.2f} MiB")


# ---------------------------------------------------------------------------------------------
# the op sequence


class _Op(NamedTuple):
    """One op of the forward pass, as the memory model and the layer list see it.

    ``kind`` is a layer type (``LAYER_TYPES``) or one of ``input_norm``, ``hswish``,
    ``hardsigmoid``, ``pool``, ``se_mul``, ``add``. ``in_bytes`` sums all inputs; ``held`` counts the
    tensors that stay alive through the op without being its inputs or output.
    """

    name: str
    kind: str
    in_bytes: int
    out_bytes: int
    held: int = 0
    in_c: int = 0
    out_c: int = 0
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    in_hw: int = 1
    out_hw: int = 1
    bias: bool = False
    bn: bool = False


def _out_side(side: int, stride: int) -> int:
    return -(-side // stride)


def _conv(name: str, kind: str, in_c: int, out_c: int, side: int, *, kernel: int = 1, stride: int = 1,
          depthwise: bool = False, bias: bool = False, bn: bool = True, held: int = 0) -> _Op:
    out_side = _out_side(side, stride)
    return _Op(name, kind, in_c * side * side, out_c * out_side * out_side, held, in_c, out_c, kernel, stride,
               in_c if depthwise else 1, side, out_side, bias, bn)


def _act(name: str, act: str, elems: int, held: int) -> Iterator[_Op]:
    """ReLU is fused everywhere, so only hswish becomes an op (which a runtime may fuse)."""
    if act == "hswish":
        yield _Op(name, "hswish", elems, elems, held)


def _ops(p: SpacePreset, arch: Arch, num_classes: int) -> Iterator[_Op]:
    """The forward pass of the subnet, op by op (see the module docstring)."""
    yield from _stem_ops(p, arch.resolution)
    for name, block in _blocks(p, arch):
        yield from _mbconv(name, *block)
    yield from _head_ops(p, arch.resolution, num_classes)


def _stem_ops(p: SpacePreset, resolution: int) -> Iterator[_Op]:
    """input_norm, the stem conv and the fixed first block."""
    side = resolution
    yield _Op("input_norm", "input_norm", 3 * side * side, 3 * side * side)

    stem = _conv("stem", "conv", 3, p.stem_width, side, kernel=3, stride=p.stem_stride)
    yield stem
    yield from _act("stem.act", p.stem_act, stem.out_bytes, 0)
    side = stem.out_hw

    c = p.stem_width
    residual = c == p.first_block_width
    keep = c * side * side if residual else 0  # the block input, alive until the add
    dw = _conv("first_block.depthwise", "depthwise", c, c, side, kernel=3, depthwise=True)
    yield dw
    yield from _act("first_block.depthwise.act", p.first_block_act, dw.out_bytes, keep)
    pw = _conv("first_block.project", "pointwise", c, p.first_block_width, side, held=keep)
    yield pw
    if residual:
        yield _Op("first_block.add", "add", keep + pw.out_bytes, pw.out_bytes)


def _blocks(p: SpacePreset, arch: Arch) -> Iterator[tuple[str, tuple]]:
    """``(name, arguments of _mbconv after the name)`` for every active block, in order."""
    side, c = _out_side(arch.resolution, p.stem_stride), p.first_block_width
    for s, (spec, blocks) in enumerate(zip(p.stages, arch.stages), start=1):
        for b, (k, e) in enumerate(blocks, start=1):
            stride = spec.stride if b == 1 else 1
            yield f"stage{s}.block{b}", (c, spec.width, side, k, e, stride, spec.act, spec.se, p.se_reduction)
            side, c = _out_side(side, stride), spec.width


def _head_ops(p: SpacePreset, resolution: int, num_classes: int) -> Iterator[_Op]:
    """final_expand, pooling, feature_mix and the classifier. Every stage has at least one block,
    so the map side after the stages follows from the strides alone."""
    side = _out_side(resolution, p.stem_stride)
    for spec in p.stages:
        side = _out_side(side, spec.stride)
    c = p.stages[-1].width

    fe = _conv("final_expand", "pointwise", c, p.final_expand_width, side)
    yield fe
    yield from _act("final_expand.act", "hswish", fe.out_bytes, 0)
    c = p.final_expand_width
    yield _Op("pool", "pool", fe.out_bytes, c)
    fm = _conv("feature_mix", "pointwise", c, p.feature_mix_width, 1, bn=False)
    yield fm
    yield from _act("feature_mix.act", "hswish", fm.out_bytes, 0)
    yield _Op("classifier", "linear", p.feature_mix_width, num_classes, 0, p.feature_mix_width, num_classes,
              bias=True)


def _mbconv(name: str, in_c: int, out_c: int, side: int, k: int, e: int, stride: int, act: str, se: bool,
            se_reduction: int) -> Iterator[_Op]:
    """One inverted-residual block (expand, depthwise, optional SE, project, optional add)."""
    residual = stride == 1 and in_c == out_c
    keep = in_c * side * side if residual else 0  # the block input, alive until the add
    mid = make_divisible(round(in_c * e), 8)

    expand = _conv(f"{name}.expand", "pointwise", in_c, mid, side)
    yield expand
    yield from _act(f"{name}.expand.act", act, expand.out_bytes, keep)
    dw = _conv(f"{name}.depthwise", "depthwise", mid, mid, side, kernel=k, stride=stride, depthwise=True,
               held=keep)
    yield dw
    yield from _act(f"{name}.depthwise.act", act, dw.out_bytes, keep)
    d = dw.out_bytes  # the SE input, alive until the multiply
    if se:
        se_mid = make_divisible(mid // se_reduction, 8)
        yield _Op(f"{name}.se_pool", "pool", d, mid, keep)
        yield _Op(f"{name}.se_reduce", "se_reduce", mid, se_mid, keep + d, mid, se_mid, bias=True)
        yield _Op(f"{name}.se_expand", "se_expand", se_mid, mid, keep + d, se_mid, mid, bias=True)
        yield _Op(f"{name}.se_hardsigmoid", "hardsigmoid", mid, mid, keep + d)
        yield _Op(f"{name}.se_mul", "se_mul", d + mid, d, keep)
    project = _conv(f"{name}.project", "pointwise", mid, out_c, dw.out_hw, held=keep)
    yield project
    if residual:
        yield _Op(f"{name}.add", "add", keep + project.out_bytes, project.out_bytes)


# ---------------------------------------------------------------------------------------------
# per-op costs


def _weights(op: _Op) -> int:
    return op.out_c * (op.in_c // op.groups) * op.kernel * op.kernel


def _macs(op: _Op) -> int:
    return op.out_hw * op.out_hw * _weights(op)


def _params(op: _Op) -> int:
    return _weights(op) + (op.out_c if op.bias else 0) + (2 * op.out_c if op.bn else 0)


def _flash(op: _Op) -> int:
    return _weights(op) + 4 * op.out_c


def _scratch(op: _Op, runtime: str) -> int:
    """CMSIS-NN scratch buffers (TinyEngine's depthwise runs in place and needs none)."""
    if op.kind == "conv" and op.kernel > 1:
        return 2 * op.in_c * op.kernel * op.kernel * 2
    if op.kind == "depthwise" and runtime == "tflite-micro":
        return op.in_c * op.kernel * op.kernel * 2
    return 0


def _live_bytes(op: _Op, runtime: str) -> int | None:
    """Bytes alive while ``op`` runs, or None if the runtime fuses the op away."""
    if op.kind in _FUSED[runtime]:
        return None
    if op.kind in _IN_PLACE[runtime]:
        tensors = max(op.in_bytes, op.out_bytes)
    else:
        tensors = op.in_bytes + op.out_bytes
    return op.held + tensors + _scratch(op, runtime)


# ---------------------------------------------------------------------------------------------
# public functions


def _resolve(preset_or_space: SpacePreset | SearchSpace | str, arch: Arch, num_classes: int) -> SpacePreset:
    """The preset, after checking that ``arch`` is in its space and ``num_classes`` is sane."""
    if isinstance(preset_or_space, SearchSpace):
        space = preset_or_space
    elif isinstance(preset_or_space, (SpacePreset, str)):
        space = SearchSpace(preset_or_space)
    else:
        raise OfaEdgeError(f"expected a search space, a preset or a preset id, got {preset_or_space!r}")
    space.validate(arch)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise OfaEdgeError(f"num_classes must be a positive integer, got {num_classes!r}")
    return space.preset


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise OfaEdgeError(f"unknown runtime {runtime!r} for the SRAM model (runtimes: {', '.join(RUNTIMES)})")


def layers(preset: SpacePreset | SearchSpace | str, arch: Arch, num_classes: int) -> list[Layer]:
    """The Conv2d and Linear layers of the subnet, in forward order.

    Names: ``stem``, ``first_block.{depthwise,project}``, ``stage<s>.block<b>.{expand,depthwise,
    se_reduce,se_expand,project}`` (stages and blocks counted from 1, as in ArchError messages),
    ``final_expand``, ``feature_mix``, ``classifier``.
    """
    p = _resolve(preset, arch, num_classes)
    return [
        Layer(op.name, op.kind, op.in_c, op.out_c, op.kernel, op.stride, op.groups, op.in_hw, op.out_hw,
              _macs(op), _params(op), True, op.bn)
        for op in _ops(p, arch, num_classes) if op.kind in _CONV_TYPES
    ]


def macs_by_type(preset: SpacePreset | SearchSpace | str, arch: Arch, num_classes: int) -> dict[str, int]:
    """MACs per layer type (every key of ``LAYER_TYPES``, 0 where absent), for latency models that
    charge cycles per MAC by op type. The SE convs are 1x1 convs on a 1x1 map: a device cost model
    with only conv/depthwise/pointwise/linear rates should charge them as ``linear``."""
    p = _resolve(preset, arch, num_classes)
    out = dict.fromkeys(LAYER_TYPES, 0)
    for op in _ops(p, arch, num_classes):
        if op.kind in _CONV_TYPES:
            out[op.kind] += _macs(op)
    return out


def peak_sram_profile(preset: SpacePreset | SearchSpace | str, arch: Arch, num_classes: int,
                      runtime: str = "tflite-micro") -> list[tuple[str, int]]:
    """``(op name, live activation bytes)`` for every op the runtime executes, in order.

    Live bytes = tensors held across the op (a residual block's input, the SE input) + the op's
    inputs and output (or the larger of them for an in-place op) + its scratch buffer. The maximum
    is MCUNet's peak SRAM (Lin et al., NeurIPS 2020). Fused ops (ReLU everywhere; hswish and
    hard-sigmoid on TinyEngine) have no entry.
    """
    _check_runtime(runtime)
    p = _resolve(preset, arch, num_classes)
    profile = []
    for op in _ops(p, arch, num_classes):
        live = _live_bytes(op, runtime)
        if live is not None:
            profile.append((op.name, live))
    return profile


def arch_costs(preset_or_space: SpacePreset | SearchSpace | str, arch: Arch, num_classes: int,
               runtime: str = "tflite-micro") -> Costs:
    """MACs, params, peak SRAM on ``runtime`` and int8 flash of ``arch``; validates it first
    (ArchError if it is not in the space, OfaEdgeError for an unknown runtime).

    The same op walk as ``layers`` and ``peak_sram_profile``; only the per-block sums are memoised
    (a space has a few thousand distinct blocks), which keeps a call under 100 us."""
    _check_runtime(runtime)
    p = _resolve(preset_or_space, arch, num_classes)
    macs, params, flash, peak = _summary(_stem_ops(p, arch.resolution), runtime)
    for _, block in _blocks(p, arch):
        b_macs, b_params, b_flash, b_peak = _block_summary(block, runtime)
        macs, params, flash, peak = macs + b_macs, params + b_params, flash + b_flash, max(peak, b_peak)
    h_macs, h_params, h_flash, h_peak = _summary(_head_ops(p, arch.resolution, num_classes), runtime)
    return Costs(macs + h_macs, params + h_params, max(peak, h_peak), flash + h_flash, runtime)


def _summary(ops: Iterable[_Op], runtime: str) -> tuple[int, int, int, int]:
    """(MACs, params, flash bytes, peak live bytes) of a run of ops."""
    macs = params = flash = peak = 0
    for op in ops:
        if op.kind in _CONV_TYPES:
            macs += _macs(op)
            params += _params(op)
            flash += _flash(op)
        live = _live_bytes(op, runtime)
        if live is not None:
            peak = max(peak, live)
    return macs, params, flash, peak


@functools.lru_cache(maxsize=1 << 16)
def _block_summary(block: tuple, runtime: str) -> tuple[int, int, int, int]:
    return _summary(_mbconv("", *block), runtime)


def _report(num_classes: int = 1000, calls: int = 1000) -> None:
    """Print the costs of the extreme archs of every preset, and the time per ``arch_costs`` call."""
    import time

    from ofa_edge.space.presets import PRESETS

    for pid, preset in PRESETS.items():
        space = SearchSpace(preset)
        for label, make in (("largest", space.largest), ("smallest", space.smallest)):
            for r in (max(preset.resolutions), min(preset.resolutions)):
                arch = make(r)
                tf = arch_costs(space, arch, num_classes)
                te = arch_costs(space, arch, num_classes, "tinyengine")
                print(f"{pid:<13} {label:<8} r{r:<4} {tf}  | tinyengine {te.peak_sram_bytes / 1024:.1f} KiB")
    space = SearchSpace("ofa-mbv3-w1.0")
    archs = space.sample_many(calls, seed=0)
    _block_summary.cache_clear()
    for label in ("cold block cache", "warm block cache"):
        start = time.perf_counter()
        for arch in archs:
            arch_costs(space, arch, num_classes)
        us = (time.perf_counter() - start) / calls * 1e6
        print(f"arch_costs: {us:.0f} us per call ({calls} random ofa-mbv3-w1.0 archs, {label})")


if __name__ == "__main__":
    _report()
