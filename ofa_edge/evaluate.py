"""Scoring subnets: extract, recalibrate BN on training images, top-1 on a split."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ofa_edge.space.arch import Arch
from ofa_edge.space.bn import recalibrate_bn
from ofa_edge.space.supernet import OFASupernet
from ofa_edge.data.tensors import to_model_input


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
        logits = model(to_model_input(x[i:i + batch], resolution))
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    return correct / max(1, len(x))


def recalibrate(sub: torch.nn.Module, calib_x: torch.Tensor, resolution: int, batch: int = 500) -> torch.nn.Module:
    """Re-estimate the BN statistics of an extracted subnet on uint8 NHWC images ``calib_x``."""
    sub = sub.to(memory_format=torch.channels_last)
    recalibrate_bn(sub, (to_model_input(calib_x[i:i + batch], resolution) for i in range(0, len(calib_x), batch)))
    return sub


def calibrated_subnet(net: OFASupernet, arch: Arch, calib_x: torch.Tensor, batch: int = 500) -> torch.nn.Module:
    """The plain subnet for ``arch`` with BN statistics re-estimated on ``calib_x``."""
    return recalibrate(net.extract(arch), calib_x, arch.resolution, batch)


def evaluate_arch(net: OFASupernet, arch: Arch, data: EvalData) -> float:
    return top1(calibrated_subnet(net, arch, data.calib_x), data.x, data.y, arch.resolution)


def calibration_indices(n_train: int, n: int, seed: int = 0) -> np.ndarray:
    """A fixed, seeded choice of ``n`` training images for BN recalibration."""
    return np.sort(np.random.default_rng(seed + 12345).permutation(n_train)[:n])


def parse_arch_specs(space, specs: list[str], seed: int = 0, resolutions: list[int] | None = None) -> list[Arch]:
    """``max``, ``min``, ``random:N`` (seeded, at the given resolutions) or an arch's text form."""
    import random

    from ofa_edge.errors import OfaEdgeError

    archs: list[Arch] = []
    rng = random.Random(seed)
    for spec in specs:
        if spec.startswith("random:"):
            try:
                n = int(spec.split(":", 1)[1])
            except ValueError:
                raise OfaEdgeError(f"--arch {spec!r}: expected random:N with a whole number N") from None
            archs += [space.sample(rng, resolution=rng.choice(resolutions) if resolutions else None) for _ in range(n)]
        elif spec in ("max", "min"):
            res = max(resolutions) if spec == "max" and resolutions else (min(resolutions) if resolutions else None)
            archs.append(space.largest(res) if spec == "max" else space.smallest(res))
        else:
            archs.append(space.parse(spec))
    return archs


def run_eval(supernet: str, arch_specs: list[str], split: str = "val", images: int | None = None,
             seed: int = 0, resolution: int | None = None, calib_images: int = 2000, val_size: int = 5000) -> dict:
    """Top-1 of each arch on a split, BN recalibrated per subnet. Test-split runs are logged."""
    import datetime as dt
    import json
    import statistics

    from ofa_edge.data import load_dataset, make_splits
    from ofa_edge.space.checkpoint import DEFAULT_DIR, load_supernet, read_header, supernet_dir

    torch.set_num_threads(int(os.environ.get("OFA_EDGE_THREADS", "1")))
    net = load_supernet(supernet)
    try:
        trained = read_header(supernet).get("trained_resolutions")
    except Exception:  # noqa: BLE001 - a preset has no header
        trained = None
    resolutions = [resolution] if resolution else trained
    archs = parse_arch_specs(net.space, arch_specs, seed, resolutions)
    if resolution:
        archs = [Arch(resolution, a.stages) for a in archs]
    ds = load_dataset("fashion-mnist")
    splits = make_splits(ds, val_size=val_size, seed=0)
    x, y = (splits.val_x, splits.val_y) if split == "val" else (splits.test_x, splits.test_y)
    if images:
        x, y = x[:images], y[:images]
    calib = calibration_indices(len(splits.train_x), calib_images, 0)
    data = EvalData.from_arrays(splits.train_x[calib], x, y)
    rows = [{"arch": str(a), "top1": evaluate_arch(net, net.space.validate(a), data)} for a in archs]
    result = {"supernet": str(supernet), "space": net.space.id, "split": split, "images": len(x),
              "bn_calibration_images": calib_images, "archs": rows,
              "median_top1": statistics.median(r["top1"] for r in rows)}
    if split == "test":
        record = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **result}
        folders = [supernet_dir(supernet)] if supernet_dir(supernet) != DEFAULT_DIR else []
        for folder in (*folders, Path("runs")):  # never write into the installed package
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with open(folder / "test_eval_log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                result["logged_to"] = str(folder / "test_eval_log.jsonl")
                break
            except OSError:
                continue
    return result
