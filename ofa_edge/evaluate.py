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
from ofa_edge.data.imagenet import ImageList, images_at
from ofa_edge.data.record import calibration_indices  # noqa: F401 - re-exported
from ofa_edge.data.tensors import to_model_input


@dataclass(frozen=True)
class EvalData:
    """uint8 NHWC images as tensors: a fixed calibration set and the images to score."""

    calib_x: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_arrays(cls, calib_x, x, y: np.ndarray) -> "EvalData":
        return cls(as_images(calib_x), as_images(x), torch.from_numpy(np.asarray(y, dtype=np.int64)))


def as_images(x):
    """uint8 NHWC images as a tensor; an ImageList (decoded per resolution) stays as it is."""
    return x if isinstance(x, ImageList) else torch.from_numpy(np.ascontiguousarray(x))


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, resolution: int, batch: int = 500) -> float:
    """Top-1 of ``model`` on uint8 NHWC images ``x``, in fp32 on the model's device; in [0, 1]."""
    model.eval()
    device = _device_of(model)
    x = images_at(x, resolution)
    correct = 0
    for i in range(0, len(x), batch):
        logits = model(to_model_input(x[i:i + batch], resolution).to(device, non_blocking=True))
        correct += int((logits.argmax(1).cpu() == y[i:i + batch]).sum())
    return correct / max(1, len(x))


def recalibrate(sub: torch.nn.Module, calib_x: torch.Tensor, resolution: int, batch: int = 500,
                device: torch.device | str | None = None) -> torch.nn.Module:
    """Re-estimate the BN statistics of an extracted subnet on uint8 NHWC images ``calib_x``, in
    fp32 on ``device`` (default: where the subnet is)."""
    if device is not None:
        sub = sub.to(device)
    device = _device_of(sub)
    calib_x = images_at(calib_x, resolution)
    sub = sub.to(memory_format=torch.channels_last)
    recalibrate_bn(sub, (to_model_input(calib_x[i:i + batch], resolution).to(device, non_blocking=True)
                         for i in range(0, len(calib_x), batch)))
    return sub


def calibrated_subnet(net: OFASupernet, arch: Arch, calib_x: torch.Tensor, batch: int = 500) -> torch.nn.Module:
    """The plain subnet for ``arch`` (on the supernet's device) with BN statistics re-estimated on
    ``calib_x``."""
    return recalibrate(net.extract(arch).to(_device_of(net)), calib_x, arch.resolution, batch)


def evaluate_arch(net: OFASupernet, arch: Arch, data: EvalData) -> float:
    return top1(calibrated_subnet(net, arch, data.calib_x), data.x, data.y, arch.resolution)


def supernet_record(supernet):
    """The dataset record in a supernet's checkpoint header (the documented default without one).
    ``supernet``: any source open_supernet takes; a reference OFA checkpoint records ImageNet."""
    from ofa_edge.data.record import LEGACY_RECORD, record_from_header
    from ofa_edge.space.source import open_supernet

    src = open_supernet(supernet)
    if src.kind == "preset":
        return LEGACY_RECORD  # an untrained preset records no dataset
    return record_from_header(src.header)


def _kept_calibration(supernet, record):
    """The calibration images a run kept in its folder (None for a checkpoint without a record,
    or a raw reference file, which has no folder)."""
    from ofa_edge.data.record import load_calibration
    from ofa_edge.space.source import open_supernet

    if record.legacy:
        return None
    folder = open_supernet(supernet).folder
    return None if folder is None else load_calibration(folder)


def open_supernet_data(supernet, data: str | None = None, log=None):
    """(RecordData, Calibration) for a supernet: its recorded images (or ``data``), and the BN/int8
    calibration images stored with the run (or taken from the recorded training split)."""
    from ofa_edge.data.record import Calibration, open_record_data
    from ofa_edge.space.source import open_supernet

    supernet = open_supernet(supernet)  # opened once for the record and the calibration images
    record = supernet_record(supernet)
    rd = open_record_data(record, data, log=log)
    kept = _kept_calibration(supernet, record)
    return rd, kept if kept is not None else Calibration.from_data(rd)


def stored_calibration(supernet, data: str | None = None, log=None):
    """The calibration images of a supernet, without loading the dataset when the run kept them."""
    from ofa_edge.data.record import Calibration, open_record_data
    from ofa_edge.space.source import open_supernet

    supernet = open_supernet(supernet)  # opened once for the record and the calibration images
    record = supernet_record(supernet)
    kept = _kept_calibration(supernet, record)
    return kept if kept is not None else Calibration.from_data(open_record_data(record, data, log=log))


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
             seed: int = 0, resolution: int | None = None, calib_images: int = 2000, data: str | None = None,
             device: str = "auto", log=None) -> dict:
    """Top-1 of each arch on a split of the supernet's recorded dataset (or ``data``), BN
    recalibrated per subnet, in fp32 on ``device``. Test-split runs are logged."""
    import datetime as dt
    import json
    import statistics

    from ofa_edge.space.checkpoint import DEFAULT_DIR
    from ofa_edge.space.source import open_supernet
    from ofa_edge.train.device import resolve_device

    torch.set_num_threads(int(os.environ.get("OFA_EDGE_THREADS", "1")))
    dev = resolve_device(device)
    src = open_supernet(supernet)
    net = src.net.to(dev)
    trained = src.header.get("trained_resolutions")
    resolutions = [resolution] if resolution else trained
    archs = parse_arch_specs(net.space, arch_specs, seed, resolutions)
    if resolution:
        archs = [Arch(resolution, a.stages) for a in archs]
    rd, calib = open_supernet_data(src, data, log=log)
    x, y = rd.split(split)
    if images:
        x, y = x[:images], y[:images]
    data_ = EvalData.from_arrays(calib.bn_images(calib_images), x, y)
    rows = [{"arch": str(a), "top1": evaluate_arch(net, net.space.validate(a), data_)} for a in archs]
    result = {"supernet": str(supernet), "space": net.space.id, "split": split, "images": len(x),
              "dataset": {"source": rd.source, "recorded": rd.matches, "note": rd.note,
                          "fingerprint": rd.record.fingerprint or rd.fingerprint, "scored_fingerprint": rd.fingerprint,
                          "classes": list(rd.record.classes)},
              "device": str(dev), "bn_calibration_images": len(data_.calib_x), "bn_calibration_source": rd.bn_source,
              "archs": rows,
              "median_top1": statistics.median(r["top1"] for r in rows)}
    if split == "test":
        record = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **result}
        folders = [src.folder] if src.folder not in (None, DEFAULT_DIR) else []
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
