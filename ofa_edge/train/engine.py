"""Progressive shrinking with knowledge distillation (OFA), or the sandwich rule (BigNAS).

A run folder holds the recipe, ``metrics.jsonl`` (one line per epoch), ``checkpoint/``
(rewritten atomically at every epoch end and on SIGINT/SIGTERM) and, at the end,
``supernet.safetensors`` and ``run.json``. ``resume=True`` continues at the same phase,
epoch and step with the same RNG state, so a resumed run gives the same weights as an
uninterrupted one; a phase always starts with a fresh optimizer, resumed or not.

One code path for the CPU and CUDA (``device``): on CUDA the training forward runs under bf16
(or fp16 with a GradScaler) autocast and DataLoader workers cut batches into pinned memory; on
the CPU batches are cut in this process and training is fp32. Each sample's augmentation and
each shard's dropout depend only on the seed, the position in training and the sample or shard,
so ``micro_batches=M`` in one process takes the same steps as M DDP ranks.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ofa_edge.data import load_dataset, make_splits
from ofa_edge.data.record import Calibration, DatasetRecord, input_contract, save_calibration
from ofa_edge.data.tensors import resize_float
from ofa_edge.errors import OfaEdgeError
from ofa_edge.evaluate import EvalData, evaluate_arch
from ofa_edge.ledger import Ledger, gpu_ids, record
from ofa_edge.space.arch import Arch
from ofa_edge.space.checkpoint import save_supernet
from ofa_edge.space.searchspace import SearchSpace
from ofa_edge.space.supernet import OFASupernet
from ofa_edge.train import distributed as D
from ofa_edge.train.augment import augment_batch
from ofa_edge.train.checkpointing import CKPT, read_checkpoint, write_checkpoint
from ofa_edge.train.device import amp_dtype, autocast, resolve_device
from ofa_edge.train.recipe import Phase, Recipe


class TrainingInterrupted(OfaEdgeError):
    """Stopped by a signal after writing a checkpoint."""


# ---------------------------------------------------------------- subnet sampling


def sample_in(space: SearchSpace, phase: Phase, rng: random.Random, resolution: int) -> Arch:
    """A random arch using only the phase's open kernel/expand/depth choices."""
    stages = tuple(tuple((rng.choice(phase.kernel), rng.choice(phase.expand))
                         for _ in range(rng.choice(phase.depth))) for _ in space.preset.stages)
    return Arch(resolution, stages)


def extreme_in(space: SearchSpace, phase: Phase, resolution: int, largest: bool) -> Arch:
    pick = max if largest else min
    block = (pick(phase.kernel), pick(phase.expand))
    return Arch(resolution, tuple((block,) * pick(phase.depth) for _ in space.preset.stages))


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def lr_at(phase: Phase, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to zero over the phase."""
    total = max(1, phase.epochs * steps_per_epoch)
    warm = int(phase.warmup_epochs * steps_per_epoch)
    if step < warm:
        return phase.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * phase.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def _seed(*parts: int) -> int:
    return int.from_bytes(json.dumps(parts).encode(), "little") % (2**31 - 1)


# ---------------------------------------------------------------- state


@dataclass
class Position:
    phase: int = 0
    epoch: int = 0
    step: int = 0  # steps already done in this epoch


class _Shards(torch.utils.data.Dataset):
    """One item per micro-batch: (sample indices, uint8 NHWC images, labels)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, shards: list[torch.Tensor]):
        self.x, self.y, self.shards = x, y, shards

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.shards[i]
        return idx, self.x[idx], self.y[idx]


class Trainer:
    """``device``: a torch.device or auto/cpu/cuda (default: the DDP group's device, else auto);
    ``amp``: bf16/fp16/off for the training forward (default bf16 on CUDA, off on the CPU);
    ``micro_batches``: batches of ``batch_size`` per step and process, their gradients summed;
    ``workers``: DataLoader processes (default: a few on CUDA, none on the CPU)."""

    def __init__(self, recipe: Recipe, out: str | os.PathLike, resume: bool = False,
                 progress: bool = True, dist: D.Dist | None = None, device: str | torch.device | None = None,
                 amp: str | None = None, micro_batches: int = 1, workers: int | None = None):
        self.recipe, self.out, self.progress = recipe, Path(out), progress
        self.dist = dist or D.Dist()
        self.device = self._pick_device(device, dist)
        self.amp = amp_dtype(amp, self.device)
        if micro_batches < 1:
            raise OfaEdgeError(f"micro_batches must be >= 1, got {micro_batches}")
        self.micro_batches = micro_batches
        self.workers = _default_workers(self.device) if workers is None else workers
        torch.set_num_threads(recipe.threads)
        self._load_data()
        torch.manual_seed(recipe.seed)  # the same initial weights on every rank, device and run
        self.net = OFASupernet(recipe.space, len(self.classes), self.mean, self.std)
        self.net.to(self.device, memory_format=torch.channels_last)
        self.space = self.net.space
        self.teacher: torch.nn.Module | None = None
        self.pos = Position()
        self.elapsed = {"wall_s": 0.0, "cpu_s": 0.0, "energy_j": 0.0, "gpu_energy_j": 0.0}
        self.momentum_buffers: dict[str, torch.Tensor] = {}
        self.scaler_state: dict | None = None
        self.rng_states: dict | None = None
        if resume:
            self._load_checkpoint()
        elif (self.out / CKPT).exists():
            raise OfaEdgeError(f"{self.out} already holds a training run; pass --resume {self.out} to continue it, "
                               "or choose another --out")
        self._stop = False

    def _pick_device(self, device: str | torch.device | None, dist: D.Dist | None) -> torch.device:
        if device is None:
            chosen = self.dist.device if dist is not None else resolve_device("auto")
        else:
            chosen = device if isinstance(device, torch.device) else resolve_device(device)
        if chosen.type == "cuda" and chosen.index is None:
            chosen = torch.device("cuda", torch.cuda.current_device())
        if self.dist.active and chosen != self.dist.device:
            raise OfaEdgeError(f"training on {chosen} but the process group uses {self.dist.device}; "
                               "pass the same device to init_from_env and the Trainer")
        return chosen

    # ------------------------------------------------------------ data
    def _load_data(self) -> None:
        """The recipe's dataset, decoded once (cached) at up to the largest trained resolution; its
        record (kept in the checkpoint header) and the calibration images kept with the run."""
        r = self.recipe
        ds = load_dataset(r.dataset, max_size=max(r.resolutions))
        self.dataset_record = DatasetRecord.from_dataset(ds, r.val_size, r.seed, r.resolutions)
        splits = make_splits(ds, val_size=r.val_size, seed=r.seed)
        train_x, train_y = splits.train_x, splits.train_y
        if r.train_subset:
            train_x, train_y = train_x[:r.train_subset], train_y[:r.train_subset]
        self.classes = ds.classes
        self.train_x, self.train_y = torch.from_numpy(np.ascontiguousarray(train_x)), torch.from_numpy(train_y)
        mean, std = _pixel_mean_std(train_x)
        self.mean, self.std = (mean,) * 3, (std,) * 3
        self.calibration = Calibration.from_train(train_x)
        n_val = r.eval_images or len(splits.val_x)
        self.eval_data = EvalData.from_arrays(self.calibration.bn_images(r.bn_calibration_images),
                                              splits.val_x[:n_val], splits.val_y[:n_val])

    @property
    def shards_per_step(self) -> int:
        """Batches of ``batch_size`` images in one step, over all ranks: world x micro-batches."""
        return self.dist.world * self.micro_batches

    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_x) // (self.recipe.batch_size * self.shards_per_step))

    def _epoch_order(self, phase: int, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(_seed(self.recipe.seed, phase, epoch))
        return torch.randperm(len(self.train_x), generator=gen)

    def _shard(self, micro: int) -> int:
        """The step's shard this rank's micro-batch ``micro`` takes (of ``shards_per_step``)."""
        return self.dist.rank * self.micro_batches + micro

    def _loader(self, order: torch.Tensor, steps: range) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(indices, uint8 images, labels) of this rank's micro-batches of ``steps``, in order: cut in
        this process (no workers: the CPU default), or by DataLoader workers into pinned memory."""
        b, n = self.recipe.batch_size, self.shards_per_step
        starts = [(step * n + self._shard(m)) * b for step in steps for m in range(self.micro_batches)]
        shards = [order[start:start + b] for start in starts]
        if not self.workers:
            return ((idx, self.train_x[idx], self.train_y[idx]) for idx in shards)
        loader = torch.utils.data.DataLoader(_Shards(self.train_x, self.train_y, shards), batch_size=None,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                             prefetch_factor=4)
        return iter(loader)

    def _to_input(self, idx: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, key: int,
                  resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NHWC images -> augmented float NCHW (3 channels, channels_last) on the device."""
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        a = self.recipe.augment
        x = resize_float(augment_batch(x, key, idx, a.pad_crop, a.hflip, a.erase), resolution)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.contiguous(memory_format=torch.channels_last), labels.to(self.device, non_blocking=True)

    # ------------------------------------------------------------ one step
    def _archs(self, phase: Phase, rng: random.Random, resolution: int) -> list[Arch]:
        """The subnets of one step (the same on every rank: ``rng`` is seeded without the rank)."""
        n = phase.subnets_per_step
        if phase.rule == "sandwich":  # the largest, the smallest, then random ones
            extremes = [extreme_in(self.space, phase, resolution, True), extreme_in(self.space, phase, resolution, False)]
            return extremes + [sample_in(self.space, phase, rng, resolution) for _ in range(n - 2)]
        return [sample_in(self.space, phase, rng, resolution) for _ in range(n)]

    def _train_step(self, phase: Phase, batches: list[tuple[torch.Tensor, torch.Tensor, int]], archs: list[Arch],
                    opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None) -> float:
        """One optimizer step: every arch on every micro-batch ``(x, y, dropout seed)``, each loss
        divided by the number of micro-batches, gradients averaged over ranks, one SGD step.
        Returns the mean loss."""
        net, ls, m = self.net, self.recipe.label_smoothing, len(batches)
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for x, y, seed in batches:
            torch.manual_seed(seed)  # dropout: per shard, whichever rank or micro-batch runs it
            soft = None
            if phase.rule == "random" and phase.kd_ratio > 0:
                with torch.no_grad(), autocast(self.device, self.amp):
                    soft = F.softmax(self.teacher(x).float(), dim=1)
            for i, arch in enumerate(archs):
                net.set_active(arch)
                with autocast(self.device, self.amp):
                    logits = net(x)
                logits = logits.float()
                loss = F.cross_entropy(logits, y, label_smoothing=ls)
                if phase.rule == "sandwich" and i == 0:
                    soft = F.softmax(logits.detach(), dim=1)  # in-place distillation from the largest
                elif soft is not None and phase.kd_ratio > 0:
                    loss = loss + phase.kd_ratio * soft_cross_entropy(logits, soft)
                scaled = loss / m if m > 1 else loss
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
                total += loss.detach()
        D.average_gradients(list(net.parameters()), self.dist)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return float(total) / (m * len(archs))

    def _optimizer(self, phase: Phase, resumed: bool = False) -> torch.optim.Optimizer:
        """A fresh SGD for the phase; ``resumed`` (a checkpoint inside this phase) restores its
        momentum. A finished phase's momentum never carries into the next phase."""
        r = self.recipe
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            (no_decay if p.dim() == 1 or "transforms" in name else decay).append(p)
        opt = torch.optim.SGD([{"params": decay, "weight_decay": r.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=phase.lr, momentum=r.momentum, nesterov=r.nesterov)
        if resumed and self.momentum_buffers:
            for name, p in self.net.named_parameters():
                if name in self.momentum_buffers:
                    opt.state[p]["momentum_buffer"] = self.momentum_buffers[name].to(self.device, copy=True)
        self.momentum_buffers = {}
        return opt

    def _grad_scaler(self, resumed: bool = False) -> torch.amp.GradScaler | None:
        """fp16 only: a loss scaler per phase (restored when resuming inside the phase)."""
        state, self.scaler_state = self.scaler_state, None
        if self.amp != torch.float16:
            return None
        scaler = torch.amp.GradScaler(self.device.type)
        if resumed and state:
            scaler.load_state_dict(state)
        return scaler

    def _make_teacher(self) -> None:
        """Freeze a copy of the full network (the end of the full-network phase) as teacher."""
        if self.teacher is None:
            self.teacher = self.net.extract(self.space.largest()).to(self.device, memory_format=torch.channels_last).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    # ------------------------------------------------------------ the loop
    def run(self) -> dict:
        r = self.recipe
        ledger = Ledger("train", gpus=gpu_ids(self.device))
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "recipe.json").write_text(r.model_dump_json(indent=2))
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for phase_i in range(self.pos.phase, len(r.phases)):
                self._run_phase(phase_i, ledger)
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        summary = self._finish(ledger)
        return summary

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._stop = True

    def _run_phase(self, phase_i: int, ledger: Ledger) -> None:
        r, phase = self.recipe, self.recipe.phases[phase_i]
        if phase.kd_ratio > 0 and phase.rule == "random":
            self._make_teacher()
        resumed = self.pos.epoch > 0 or self.pos.step > 0  # a checkpoint inside this phase
        if phase.sort_channels and not resumed:
            self.net.sort_channels()
        opt, scaler = self._optimizer(phase, resumed), self._grad_scaler(resumed)
        spe = self.steps_per_epoch()
        for epoch in range(self.pos.epoch, phase.epochs):
            order = self._epoch_order(phase_i, epoch)
            rng = random.Random(_seed(r.seed, phase_i, epoch, 1))
            key = _seed(r.seed, phase_i, epoch, 2)  # augmentation: per sample index under this key
            start_step = self.pos.step
            if start_step and self.rng_states:
                rng.setstate(_tuplify(self.rng_states["python"]))
            self.net.train()
            losses, t0 = [], time.time()
            bar = self._bar(f"{phase.name} {epoch + 1}/{phase.epochs}", spe, start_step)
            loader = self._loader(order, range(start_step, spe))
            for step in range(start_step, spe):
                for group in opt.param_groups:
                    group["lr"] = lr_at(phase, epoch * spe + step, spe)
                resolution = rng.choice(r.resolutions)
                archs = self._archs(phase, rng, resolution)
                batches = []
                for micro in range(self.micro_batches):
                    x, y = self._to_input(*next(loader), key, resolution)
                    batches.append((x, y, _seed(r.seed, phase_i, epoch, step, self._shard(micro), 3)))
                losses.append(self._train_step(phase, batches, archs, opt, scaler))
                if bar:
                    bar[0].update(bar[1], advance=1, description=f"{phase.name} {epoch + 1}/{phase.epochs} "
                                                                  f"loss {np.mean(losses[-20:]):.3f}")
                if D.any_rank(self._stop, self.dist):
                    self.pos = Position(phase_i, epoch, step + 1)
                    self._save_checkpoint(opt, ledger, rng=rng, scaler=scaler)
                    self._close_bar(bar)
                    raise TrainingInterrupted(
                        f"interrupted at phase {phase.name}, epoch {epoch + 1}, step {step + 1}/{spe}; "
                        f"checkpoint written; continue with: ofa-edge train --recipe ... --resume {self.out}")
            self._close_bar(bar)
            D.average_buffers(self.net, self.dist)
            self.pos = Position(phase_i, epoch + 1, 0) if epoch + 1 < phase.epochs else Position(phase_i + 1, 0, 0)
            self.rng_states = None
            images = (spe - start_step) * r.batch_size * self.shards_per_step
            metrics = {"phase": phase.name, "epoch": epoch + 1, "epochs": phase.epochs,
                       "loss": float(np.mean(losses)) if losses else None, "lr_end": opt.param_groups[0]["lr"],
                       "images_per_s": images / max(1e-9, time.time() - t0)}
            if self.dist.is_main:
                metrics.update(self._epoch_eval())
            self._save_checkpoint(opt, ledger, metrics=metrics, scaler=scaler)
        self.pos = Position(phase_i + 1, 0, 0)

    def _epoch_eval(self) -> dict:
        res = self.recipe.eval_resolution
        return {"val_top1_largest": evaluate_arch(self.net, self.space.largest(res), self.eval_data),
                "val_top1_smallest": evaluate_arch(self.net, self.space.smallest(res), self.eval_data),
                "val_images": len(self.eval_data.x)}

    # ------------------------------------------------------------ progress
    def _bar(self, description: str, total: int, done: int):
        if not (self.progress and self.dist.is_main):
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), transient=False)
        progress.start()
        return progress, progress.add_task(description, total=total, completed=done)

    @staticmethod
    def _close_bar(bar) -> None:
        if bar:
            bar[0].stop()

    # ------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, opt, ledger: Ledger, metrics: dict | None = None, rng=None,
                         scaler: torch.amp.GradScaler | None = None) -> None:
        """Atomically rewrite ``checkpoint/``. The optimizer (and fp16 loss-scaler) state is kept
        only inside a phase: at a phase's end the next phase starts fresh, as without a stop."""
        rng_payload = D.gather_objects(rng.getstate(), self.dist) if rng is not None else None
        entry = self._totals(ledger)
        inside_phase = self.pos.epoch > 0 or self.pos.step > 0
        if self.dist.is_main:
            state = {
                "schema_version": 1, "recipe": self.recipe.name, "space": self.space.id,
                "recipe_fingerprint": self.recipe.model_dump_json(),
                "phase": self.pos.phase, "epoch": self.pos.epoch, "step": self.pos.step,
                "world": self.dist.world, "micro_batches": self.micro_batches, "device": str(self.device),
                "elapsed_wall_s": entry.wall_s, "elapsed_cpu_s": entry.cpu_s, "elapsed_energy_j": entry.energy_j,
                "elapsed_gpu_energy_j": entry.gpu_energy_j or 0.0,
                "python_rng": rng_payload,
                "grad_scaler": scaler.state_dict() if scaler is not None and inside_phase else None,
            }
            tensors = {}
            if inside_phase:
                tensors = {f"momentum/{name}": opt.state[p]["momentum_buffer"].detach().cpu().contiguous()
                           for name, p in self.net.named_parameters() if "momentum_buffer" in opt.state.get(p, {})}
            write_checkpoint(self.out, self.net, state, tensors, self.teacher)
            if metrics is not None:
                metrics.update({"wall_s": state["elapsed_wall_s"], "cpu_s": state["elapsed_cpu_s"]})
                with open(self.out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                print(_metrics_line(metrics), flush=True)
        D.barrier(self.dist)

    def _load_checkpoint(self) -> None:
        from ofa_edge.space.checkpoint import load_checkpoint, load_state

        ckpt, state, trainer = read_checkpoint(self.out)
        if state.get("recipe_fingerprint") != self.recipe.model_dump_json():
            raise OfaEdgeError(f"{self.out} was trained with a different recipe ({state.get('recipe')}); "
                               "resume with the same recipe file")
        before = (state.get("world"), state.get("micro_batches", 1))
        if state.get("step") and before != (self.dist.world, self.micro_batches):
            raise OfaEdgeError(f"{self.out} stopped mid-epoch with {before[0]} processes x {before[1]} micro-batches; "
                               "resume with the same numbers")
        saved = load_checkpoint(ckpt)
        self.net.load_state_dict(saved.state_dict())
        self.net.to(memory_format=torch.channels_last)
        if (ckpt / "teacher.safetensors").is_file():
            self._make_teacher()
            load_state(self.teacher, load_file(str(ckpt / "teacher.safetensors")), str(ckpt / "teacher.safetensors"))
        self.pos = Position(state["phase"], state["epoch"], state["step"])
        self.elapsed = {"wall_s": state["elapsed_wall_s"], "cpu_s": state["elapsed_cpu_s"],
                        "energy_j": state.get("elapsed_energy_j", 0.0),
                        "gpu_energy_j": state.get("elapsed_gpu_energy_j", 0.0)}
        self.momentum_buffers = {k.removeprefix("momentum/"): v for k, v in trainer.items() if k.startswith("momentum/")}
        self.scaler_state = state.get("grad_scaler")
        if state["step"] and state.get("python_rng"):
            self.rng_states = {"python": state["python_rng"][self.dist.rank]}

    def _totals(self, ledger: Ledger):
        """The ledger entry over all ranks and all earlier segments of this run."""
        own, gpu = ledger.cpu_s(), ledger.gpu_energy_j()
        cpu_all, gpu_all, measured = D.sum_over_ranks([own, gpu or 0.0, float(gpu is not None)], self.dist)
        gpu_total = gpu_all + self.elapsed["gpu_energy_j"] if measured or self.elapsed["gpu_energy_j"] else None
        return ledger.stop(extra_cpu_s=cpu_all - own + self.elapsed["cpu_s"], extra_wall_s=self.elapsed["wall_s"],
                           extra_energy_j=self.elapsed["energy_j"], gpu_energy_j=gpu_total)

    def weight_checksum(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for name, t in sorted(self.net.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def _finish(self, ledger: Ledger) -> dict:
        summary: dict = {}
        entry = self._totals(ledger)
        checksums = D.gather_objects(self.weight_checksum(), self.dist)  # every rank must hold the same weights
        if self.dist.is_main:
            trained = sorted(set(self.recipe.resolutions))
            save_calibration(self.out, self.calibration)
            save_supernet(self.net, self.out / "supernet.safetensors",
                          extra={"trained_resolutions": trained, "recipe": self.recipe.name,
                                 "dataset": self.dataset_record.to_json(),
                                 "input": {**input_contract(self.dataset_record.channels, self.mean, self.std),
                                           "layout": "NCHW"}})
            summary = {"recipe": self.recipe.name, "space": self.space.id, "world": self.dist.world,
                       "rank_weight_checksums": checksums,
                       "threads_per_process": self.recipe.threads, "trained_resolutions": trained,
                       "device": str(self.device), "amp": str(self.amp).removeprefix("torch.") if self.amp else "off",
                       "micro_batches": self.micro_batches,
                       "ledger": entry.to_json(), **self._epoch_eval()}
            (self.out / "run.json").write_text(json.dumps(summary, indent=2))
            print(entry.line(), flush=True)
            record(entry, recipe=self.recipe.name, run=str(self.out))
        D.barrier(self.dist)
        return summary


def _pixel_mean_std(x: np.ndarray, chunk: int = 4096) -> tuple[float, float]:
    """Mean and standard deviation of all pixel values of uint8 images, in [0, 1], accumulated
    in float64 over chunks (a large image folder never becomes one float array)."""
    total = total_sq = 0.0
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].astype(np.float64) / 255.0
        total += float(part.sum())
        total_sq += float(np.square(part).sum())
    n = max(1, x.size)
    mean = total / n
    return mean, float(np.sqrt(max(0.0, total_sq / n - mean * mean)))


def _metrics_line(m: dict) -> str:
    acc = ""
    if "val_top1_largest" in m:
        acc = f"  val largest {m['val_top1_largest'] * 100:.2f}%  smallest {m['val_top1_smallest'] * 100:.2f}%"
    return (f"{m['phase']} epoch {m['epoch']}/{m['epochs']}: loss {m['loss']:.4f}, "
            f"{m['images_per_s']:.0f} img/s{acc}  [{m['wall_s'] / 60:.1f} min]")


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def _default_workers(device: torch.device) -> int:
    """DataLoader processes per rank: a few on CUDA (the GPU outruns one core), none on the CPU."""
    if device.type != "cuda":
        return 0
    per_rank = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(4, per_rank - 1))
