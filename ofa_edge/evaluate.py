"""Scoring subnets: extract, recalibrate BN on training images, top-1 on a split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ofa_edge.space.arch import Arch
from ofa_edge.space.bn import recalibrate_bn
from ofa_edge.space.supernet import OFASupernet
from ofa_edge.train.augment import to_input


@dataclass(frozen=True)
class EvalData:
    """uint8 NHWC images as tensors: a fixed calibration set and the images to score."""

    calib_x: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_arrays(cls, calib_x: np.ndarray, x: np.ndarray, y: np.ndarray) -> "EvalData":
        return cls(torch.from_numpy(np.ascontiguousarray(calib_x)), torch.from_numpy(np.ascontiguousarray(x)),
                   torch.from_numpy(np.asarray(y, dtype=np.int64)))


@torch.no_grad()
def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, resolution: int, batch: int = 500) -> float:
    """Top-1 of ``model`` on uint8 NHWC images ``x``; a fraction in [0, 1]."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        logits = model(to_input(x[i:i + batch], resolution))
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    return correct / max(1, len(x))


def calibrated_subnet(net: OFASupernet, arch: Arch, calib_x: torch.Tensor, batch: int = 500) -> torch.nn.Module:
    """The plain subnet for ``arch`` with BN statistics re-estimated on ``calib_x``."""
    sub = net.extract(arch).to(memory_format=torch.channels_last)
    recalibrate_bn(sub, (to_input(calib_x[i:i + batch], arch.resolution) for i in range(0, len(calib_x), batch)))
    return sub


def evaluate_arch(net: OFASupernet, arch: Arch, data: EvalData) -> float:
    return top1(calibrated_subnet(net, arch, data.calib_x), data.x, data.y, arch.resolution)


def calibration_indices(n_train: int, n: int, seed: int = 0) -> np.ndarray:
    """A fixed, seeded choice of ``n`` training images for BN recalibration."""
    return np.sort(np.random.default_rng(seed + 12345).permutation(n_train)[:n])
