"""Microcontroller-class devices: latency, peak SRAM and flash from the spec's cost model.

No shell reaches an MCU, so nothing is timed. Latency = sum over layer types of MACs x cycles
per MAC (the spec's ``cost_model.cycles_per_mac``, cited there) / clock. SE convs run on a 1x1
map and are charged at the ``linear`` rate.

Memory is TFLite Micro's, for the files our converter writes (``tflite-micro-int8``). The head
and the file were calibrated against TFLite Micro's allocator in its x86 host build
(``benchmarks/calibrate_tflm_memory.py``, ``results/tflm_memory.json``); the tail against
Cortex-M7 and Cortex-M4 firmware (32-bit pointers: a smaller tail than the 64-bit host build's)
by ``benchmarks/calibrate_firmware.py`` (``results/firmware_calibration.json``):

* arena = head + tail. The head (activations) is the larger of the MCUNet-style peak
  (``ofa_edge.space.costs``, with CMSIS-NN scratch) and the explicit PAD that onnx2tf puts
  before every strided k>1 conv (its input and the padded copy, or the padded copy and the
  conv's output, live at once); it matched TFLite Micro's head exactly on 11 of 14 subnets and
  over-estimated the rest. The tail (persistent data: per-channel multipliers and shifts, op
  data, eval tensors) is linear in output channels and layers; its fixed part carries the fit's
  worst under-estimate, so the arena model was never below a firmware's arena (over by at most
  0.5% on 12 subnets, on both cores).
* the .tflite file = int8 weights + int32 biases + per-channel quantization parameters
  (float32 scale + int64 zero point, for weights and biases: about 24 bytes per output
  channel) + per-layer graph metadata (max error 0.1%).

Peak SRAM adds the spec's ``runtime_sram_kb``; flash adds ``runtime_flash_kb`` (for the shipped
MCU specs: measured on their firmware, with the file and arena models' worst under-estimate, so
that model + overhead was never below the firmware). Latency is the spec's cycles per MAC (for
the shipped specs: instructions per MAC counted on the firmware, at an assumed CPI of 1), plus
``cycles_per_element`` per activation element. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from ofa_edge.devices.spec import DeviceSpec
from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.arch import Arch
from ofa_edge.space.costs import Layer, arch_costs, layers
from ofa_edge.space.presets import SpacePreset

#: Fitted by benchmarks/calibrate_firmware.py on Cortex-M7/M4 firmware (12 subnets of ofa-mbv3-tiny,
#: TFLM 90b983c, arm-none-eabi-gcc 12.2.1): bytes per output channel, per layer, and fixed (243 + 295
#: B, plus the fit's worst under-estimate, 315 B). The x86-64 host build's tail was (8.05, 375, 624).
TFLM_TAIL = (8.06, 243.4, 609.2)
#: Fitted by benchmarks/calibrate_tflm_memory.py (14 subnets; TFLite Micro 0.dev20261023182759,
#: onnx2tf 1.29.24): bytes per output channel, per layer, and fixed.
TFLM_FILE_OVERHEAD = (24.24, 654.0, 1219.0)


def explicit_pad_bytes(preset: SpacePreset, arch: Arch, num_classes: int, ls: list[Layer] | None = None) -> int:
    """The largest live set around onnx2tf's explicit PAD before a strided k>1 conv (``ls``:
    the arch's ``layers``, when the caller has them)."""
    peak = 0
    for layer in ls if ls is not None else layers(preset, arch, num_classes):
        if layer.stride > 1 and layer.kernel > 1:
            padded = layer.in_c * (layer.in_hw + layer.kernel - 1) ** 2
            peak = max(peak, layer.in_c * layer.in_hw ** 2 + padded, padded + layer.out_c * layer.out_hw ** 2)
    return peak


@dataclass(frozen=True)
class TflmMemory:
    """TFLite Micro's memory for one subnet, in bytes (see the module docstring)."""

    head: int
    tail: int
    file: int

    @property
    def arena(self) -> int:
        return self.head + self.tail


def tflm_memory(preset: SpacePreset, arch: Arch, num_classes: int, ls: list[Layer] | None = None) -> TflmMemory:
    ls = ls if ls is not None else layers(preset, arch, num_classes)
    channels, count = sum(layer.out_c for layer in ls), len(ls)
    c = arch_costs(preset, arch, num_classes, runtime="tflite-micro")
    head = max(c.peak_sram_bytes, explicit_pad_bytes(preset, arch, num_classes, ls))
    a, b, k = TFLM_TAIL
    fa, fb, fk = TFLM_FILE_OVERHEAD
    return TflmMemory(head=head, tail=round(a * channels + b * count + k),
                      file=round(c.flash_bytes + fa * channels + fb * count + fk))

#: layer type (ofa_edge.space.costs.LAYER_TYPES) -> cost-model rate
RATE_OF = {"conv": "conv", "pointwise": "pointwise", "depthwise": "depthwise", "linear": "linear",
           "se_reduce": "linear", "se_expand": "linear"}


@dataclass(frozen=True)
class McuCosts:
    latency_ms: float
    peak_sram_kb: float
    flash_kb: float
    macs: int


class McuModel:
    """The cost model of one MCU spec."""

    def __init__(self, spec: DeviceSpec):
        if spec.cost_model is None:
            raise OfaEdgeError(f"device {spec.name} has no cost_model: add cycles_per_mac, runtime_sram_kb "
                               "and runtime_flash_kb to its spec")
        self.spec = spec
        self.rates = spec.cost_model.cycles_per_mac.model_dump()
        self.per_element = spec.cost_model.cycles_per_element
        self.hz = spec.hardware.clock_mhz * 1e6
        self.runtime = "tflite-micro"
        self._memo: dict[tuple[str, str], McuCosts] = {}

    def costs(self, preset: SpacePreset, arch: Arch, num_classes: int) -> McuCosts:
        key = (preset.id, str(arch))
        if key not in self._memo:
            self._memo[key] = self._costs(preset, arch, num_classes)
        return self._memo[key]

    def _costs(self, preset: SpacePreset, arch: Arch, num_classes: int) -> McuCosts:
        ls = layers(preset, arch, num_classes)   # one op walk for the cycles and the memory
        cycles = sum(layer.macs * self.rates[RATE_OF[layer.op]] + layer.out_c * layer.out_hw ** 2 * self.per_element
                     for layer in ls)
        c = arch_costs(preset, arch, num_classes, runtime=self.runtime)
        memory = tflm_memory(preset, arch, num_classes, ls)
        cm = self.spec.cost_model
        return McuCosts(latency_ms=cycles / self.hz * 1e3,
                        peak_sram_kb=memory.arena / 1024 + cm.runtime_sram_kb,
                        flash_kb=memory.file / 1024 + cm.runtime_flash_kb, macs=c.macs)
