"""Measure (arch, val top-1) pairs for the accuracy predictor: resumable, in worker processes.

Each subnet is extracted, its BN statistics are re-estimated on a fixed set of training
images, and it is scored on the whole val split. Results are appended to a JSONL file as they
arrive, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
from pathlib import Path

from ofa_edge.predictors.accuracy import is_holdout
from ofa_edge.space.arch import Arch
from ofa_edge.space.searchspace import SearchSpace

_WORKER: dict = {}


def choose_archs(space: SearchSpace, n_train: int, n_holdout: int, resolutions: list[int], seed: int = 0
                 ) -> tuple[list[Arch], list[Arch]]:
    """Distinct random archs at the given resolutions, split by arch hash into train and held-out
    (the split is fixed before anything is measured)."""
    rng = random.Random(seed)
    train: list[Arch] = []
    holdout: list[Arch] = []
    seen: set[Arch] = set()
    while len(train) < n_train or len(holdout) < n_holdout:
        arch = space.sample(rng, resolution=rng.choice(resolutions))
        if arch in seen:
            continue
        seen.add(arch)
        bucket, limit = (holdout, n_holdout) if is_holdout(arch) else (train, n_train)
        if len(bucket) < limit:
            bucket.append(arch)
    return train, holdout


def worker_devices(device: str, workers: int) -> list[str]:
    """One device per worker: the visible GPUs in turn on CUDA, the CPU otherwise."""
    import torch

    from ofa_edge.train.device import resolve_device

    dev = resolve_device(device)
    if dev.type != "cuda":
        return ["cpu"] * workers
    if dev.index is not None:
        return [str(dev)] * workers
    return [f"cuda:{i % torch.cuda.device_count()}" for i in range(workers)]


def _init(supernet: str, data: str | None, calib_images: int, devices) -> None:
    import torch

    torch.set_num_threads(1)
    from ofa_edge.evaluate import EvalData, open_supernet_data
    from ofa_edge.space.checkpoint import load_supernet

    worker = mp.current_process()._identity  # (1,), (2,) ... in a Pool; () in the main process
    device = devices[(worker[0] - 1) % len(devices)] if worker else devices[0]
    net = load_supernet(supernet).to(device)
    rd, calib = open_supernet_data(supernet, data)
    _WORKER.update(net=net, data=EvalData.from_arrays(calib.bn_images(calib_images), rd.val_x, rd.val_y))


def _score(text: str) -> tuple[str, float]:
    from ofa_edge.evaluate import evaluate_arch

    net = _WORKER["net"]
    return text, evaluate_arch(net, net.space.parse(text), _WORKER["data"])


def measure(supernet: str, archs: list[Arch], out: Path, workers: int = 2, data: str | None = None,
            calib_images: int = 2000, device: str = "auto", progress: bool = True) -> dict[str, float]:
    """Val top-1 of ``archs`` on the supernet's recorded dataset (or ``data``), fp32, spread over
    ``workers`` processes and the visible GPUs (cached scores are read from ``out``, new ones
    appended to it)."""
    done: dict[str, float] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["arch"]] = row["val_top1"]
    todo = [str(a) for a in archs if str(a) not in done]
    if todo:
        out.parent.mkdir(parents=True, exist_ok=True)
        ctx = mp.get_context("spawn")
        bar = None
        if progress:
            from rich.progress import Progress

            bar = Progress()
            bar.start()
            task = bar.add_task("scoring subnets on val", total=len(archs), completed=len(archs) - len(todo))
        try:
            with ctx.Pool(workers, initializer=_init, initargs=(supernet, data, calib_images, worker_devices(device, workers))) as pool, \
                    open(out, "a") as f:
                for text, acc in pool.imap_unordered(_score, todo):
                    done[text] = acc
                    f.write(json.dumps({"arch": text, "val_top1": acc}) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                    if bar:
                        bar.update(task, advance=1)
        finally:
            if bar:
                bar.stop()
    return {str(a): done[str(a)] for a in archs}
