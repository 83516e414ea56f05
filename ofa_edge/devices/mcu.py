"""Microcontroller-class devices: latency, peak SRAM and flash from the spec's cost model.

No shell reaches an MCU, so nothing is timed. Latency = sum over layer types of MACs x cycles
per MAC (the spec's ``cost_model.cycles_per_mac``, cited there) / clock. SE convs run on a 1x1
map and are charged at the ``linear`` rate. Peak SRAM is the runtime's arena model
(``ofa_edge.space.costs``, MCUNet-style, for TFLite Micro) plus the spec's
``runtime_sram_kb``; flash is the int8 weights plus ``runtime_flash_kb``. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from ofa_edge.devices.spec import DeviceSpec
from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.arch import Arch
from ofa_edge.space.costs import arch_costs, macs_by_type
from ofa_edge.space.presets import SpacePreset

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
        self.hz = spec.hardware.clock_mhz * 1e6
        self.runtime = "tflite-micro"
        self._memo: dict[tuple[str, str], McuCosts] = {}

    def costs(self, preset: SpacePreset, arch: Arch, num_classes: int) -> McuCosts:
        key = (preset.id, str(arch))
        if key not in self._memo:
            self._memo[key] = self._costs(preset, arch, num_classes)
        return self._memo[key]

    def _costs(self, preset: SpacePreset, arch: Arch, num_classes: int) -> McuCosts:
        by_type = macs_by_type(preset, arch, num_classes)
        cycles = sum(macs * self.rates[RATE_OF[kind]] for kind, macs in by_type.items())
        c = arch_costs(preset, arch, num_classes, runtime=self.runtime)
        cm = self.spec.cost_model
        return McuCosts(latency_ms=cycles / self.hz * 1e3,
                        peak_sram_kb=c.peak_sram_bytes / 1024 + cm.runtime_sram_kb,
                        flash_kb=c.flash_bytes / 1024 + cm.runtime_flash_kb, macs=c.macs)
