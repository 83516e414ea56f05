"""Progressive shrinking with knowledge distillation (OFA), or the sandwich rule (BigNAS).

A run folder holds the recipe, ``metrics.jsonl`` (one line per epoch), ``checkpoint/``
(rewritten atomically at every epoch end and on SIGINT/SIGTERM) and, at the end,
``supernet.safetensors`` and ``run.json``. ``resume=True`` continues at the same phase,
epoch and step with the same RNG state, so a resumed run gives the same weights as an
uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ofa_edge.data import load_dataset, make_splits
from ofa_edge.data.tensors import resize_float
from ofa_edge.errors import OfaEdgeError
from ofa_edge.evaluate import EvalData, calibration_indices, evaluate_arch
from ofa_edge.ledger import Ledger, record
from ofa_edge.space.arch import Arch
from ofa_edge.space.checkpoint import save_supernet
from ofa_edge.space.searchspace import SearchSpace
from ofa_edge.space.supernet import OFASupernet
from ofa_edge.train import distributed as D
from ofa_edge.train.augment import augment_batch
from ofa_edge.train.recipe import Phase, Recipe

CKPT = "checkpoint"


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


class Trainer:
    def __init__(self, recipe: Recipe, out: str | os.PathLike, resume: bool = False,
                 progress: bool = True, dist: D.Dist | None = None):
        self.recipe, self.out, self.progress = recipe, Path(out), progress
        self.dist = dist or D.Dist()
        torch.set_num_threads(recipe.threads)
        self._load_data()
        torch.manual_seed(recipe.seed)  # the same initial weights on every rank and every run
        self.net = OFASupernet(recipe.space, len(self.classes), self.mean, self.std)
        self.net.to(memory_format=torch.channels_last)
        self.space = self.net.space
        self.teacher: torch.nn.Module | None = None
        self.pos = Position()
        self.elapsed = {"wall_s": 0.0, "cpu_s": 0.0, "energy_j": 0.0}
        self.momentum_buffers: dict[str, torch.Tensor] = {}
        self.rng_states: dict | None = None
        if resume:
            self._load_checkpoint()
        elif (self.out / CKPT).exists():
            raise OfaEdgeError(f"{self.out} already holds a training run; pass --resume {self.out} to continue it, "
                               "or choose another --out")
        self._stop = False

    # ------------------------------------------------------------ data
    def _load_data(self) -> None:
        r = self.recipe
        ds = load_dataset(r.dataset)
        splits = make_splits(ds, val_size=r.val_size, seed=r.seed)
        train_x, train_y = splits.train_x, splits.train_y
        if r.train_subset:
            train_x, train_y = train_x[:r.train_subset], train_y[:r.train_subset]
        self.classes = ds.classes
        self.train_x, self.train_y = torch.from_numpy(train_x), torch.from_numpy(train_y)
        gray = train_x.astype(np.float32) / 255.0
        self.mean = (float(gray.mean()),) * 3
        self.std = (float(gray.std()),) * 3
        calib = calibration_indices(len(train_x), min(r.bn_calibration_images, len(train_x)), r.seed)
        n_val = r.eval_images or len(splits.val_x)
        self.eval_data = EvalData.from_arrays(train_x[calib], splits.val_x[:n_val], splits.val_y[:n_val])

    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_x) // (self.recipe.batch_size * self.dist.world))

    def _epoch_order(self, phase: int, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(_seed(self.recipe.seed, phase, epoch))
        return torch.randperm(len(self.train_x), generator=gen)

    def _batch(self, order: torch.Tensor, step: int, gen: torch.Generator, resolution: int):
        b, r = self.recipe.batch_size, self.dist.rank
        start = (step * self.dist.world + r) * b
        idx = order[start:start + b]
        x = self.train_x[idx].permute(0, 3, 1, 2).float().div_(255.0)
        a = self.recipe.augment
        x = resize_float(augment_batch(x, gen, a.pad_crop, a.hflip, a.erase), resolution)
        x = x.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)
        return x, self.train_y[idx]

    # ------------------------------------------------------------ one step
    def _train_step(self, phase: Phase, x: torch.Tensor, y: torch.Tensor, rng: random.Random,
                    resolution: int, opt: torch.optim.Optimizer) -> float:
        net, ls = self.net, self.recipe.label_smoothing
        opt.zero_grad(set_to_none=True)
        total = 0.0
        if phase.rule == "sandwich":
            archs = [extreme_in(self.space, phase, resolution, True), extreme_in(self.space, phase, resolution, False)]
            archs += [sample_in(self.space, phase, rng, resolution) for _ in range(phase.subnets_per_step - 2)]
            soft = None
            for i, arch in enumerate(archs[:phase.subnets_per_step]):
                net.set_active(arch)
                logits = net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=ls)
                if i == 0:
                    soft = F.softmax(logits.detach(), dim=1)  # in-place distillation from the largest
                elif phase.kd_ratio > 0:
                    loss = loss + phase.kd_ratio * soft_cross_entropy(logits, soft)
                loss.backward()
                total += float(loss.detach())
        else:
            soft = None
            if phase.kd_ratio > 0:
                with torch.no_grad():
                    soft = F.softmax(self.teacher(x), dim=1)
            for _ in range(phase.subnets_per_step):
                net.set_active(sample_in(self.space, phase, rng, resolution))
                logits = net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=ls)
                if soft is not None:
                    loss = loss + phase.kd_ratio * soft_cross_entropy(logits, soft)
                loss.backward()
                total += float(loss.detach())
        D.average_gradients([p for p in net.parameters()], self.dist)
        opt.step()
        return total / phase.subnets_per_step

    def _optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        r = self.recipe
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            (no_decay if p.dim() == 1 or "transforms" in name else decay).append(p)
        opt = torch.optim.SGD([{"params": decay, "weight_decay": r.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=phase.lr, momentum=r.momentum, nesterov=r.nesterov)
        if self.momentum_buffers:
            for name, p in self.net.named_parameters():
                if name in self.momentum_buffers:
                    opt.state[p]["momentum_buffer"] = self.momentum_buffers[name].clone()
            self.momentum_buffers = {}
        return opt

    def _make_teacher(self) -> None:
        """Freeze a copy of the full network (the end of the full-network phase) as teacher."""
        if self.teacher is None:
            self.teacher = self.net.extract(self.space.largest()).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    # ------------------------------------------------------------ the loop
    def run(self) -> dict:
        r = self.recipe
        ledger = Ledger("train")
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
        if phase.sort_channels and self.pos.epoch == 0 and self.pos.step == 0:
            self.net.sort_channels()
        opt = self._optimizer(phase)
        spe = self.steps_per_epoch()
        for epoch in range(self.pos.epoch, phase.epochs):
            order = self._epoch_order(phase_i, epoch)
            rng = random.Random(_seed(r.seed, phase_i, epoch, 1))
            gen = torch.Generator().manual_seed(_seed(r.seed, phase_i, epoch, 2, self.dist.rank))
            torch.manual_seed(_seed(r.seed, phase_i, epoch, 3, self.dist.rank))
            start_step = self.pos.step
            if start_step and self.rng_states:
                rng.setstate(_tuplify(self.rng_states["python"]))
                gen.set_state(self.rng_states["augment"])
                torch.set_rng_state(self.rng_states["torch"])
            self.net.train()
            losses, t0 = [], time.time()
            bar = self._bar(f"{phase.name} {epoch + 1}/{phase.epochs}", spe, start_step)
            for step in range(start_step, spe):
                for group in opt.param_groups:
                    group["lr"] = lr_at(phase, epoch * spe + step, spe)
                resolution = rng.choice(r.resolutions)
                x, y = self._batch(order, step, gen, resolution)
                losses.append(self._train_step(phase, x, y, rng, resolution, opt))
                if bar:
                    bar[0].update(bar[1], advance=1, description=f"{phase.name} {epoch + 1}/{phase.epochs} "
                                                                  f"loss {np.mean(losses[-20:]):.3f}")
                if D.any_rank(self._stop, self.dist):
                    self.pos = Position(phase_i, epoch, step + 1)
                    self._save_checkpoint(opt, ledger, rng=rng, gen=gen)
                    self._close_bar(bar)
                    raise TrainingInterrupted(
                        f"interrupted at phase {phase.name}, epoch {epoch + 1}, step {step + 1}/{spe}; "
                        f"checkpoint written; continue with: ofa-edge train --recipe ... --resume {self.out}")
            self._close_bar(bar)
            D.average_buffers(self.net, self.dist)
            self.pos = Position(phase_i, epoch + 1, 0) if epoch + 1 < phase.epochs else Position(phase_i + 1, 0, 0)
            self.rng_states = None
            metrics = {"phase": phase.name, "epoch": epoch + 1, "epochs": phase.epochs,
                       "loss": float(np.mean(losses)) if losses else None, "lr_end": opt.param_groups[0]["lr"],
                       "images_per_s": (spe - start_step) * r.batch_size * self.dist.world / max(1e-9, time.time() - t0)}
            if self.dist.is_main:
                metrics.update(self._epoch_eval())
            self._save_checkpoint(opt, ledger, metrics=metrics)
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
    def _save_checkpoint(self, opt, ledger: Ledger, metrics: dict | None = None, rng=None, gen=None) -> None:
        rng_payload = None
        if rng is not None:
            local = {"python": rng.getstate(), "augment": gen.get_state(), "torch": torch.get_rng_state()}
            rng_payload = _gather(local, self.dist)
        entry = self._totals(ledger)
        if self.dist.is_main:
            state = {
                "schema_version": 1, "recipe": self.recipe.name, "space": self.space.id,
                "recipe_fingerprint": self.recipe.model_dump_json(),
                "phase": self.pos.phase, "epoch": self.pos.epoch, "step": self.pos.step,
                "world": self.dist.world,
                "elapsed_wall_s": entry.wall_s, "elapsed_cpu_s": entry.cpu_s, "elapsed_energy_j": entry.energy_j,
                "python_rng": [s["python"] for s in rng_payload] if rng_payload else None,
            }
            tensors = {f"momentum/{name}": opt.state[p]["momentum_buffer"].contiguous()
                       for name, p in self.net.named_parameters() if "momentum_buffer" in opt.state.get(p, {})}
            if rng_payload:
                for rank, s in enumerate(rng_payload):
                    tensors[f"rng/augment/{rank}"] = s["augment"]
                    tensors[f"rng/torch/{rank}"] = s["torch"]
            tmp = self.out / f".{CKPT}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_supernet(self.net, tmp / "supernet.safetensors")
            save_file(tensors or {"empty": torch.zeros(1)}, str(tmp / "trainer.safetensors"))
            if self.teacher is not None:
                save_file({k: v.contiguous() for k, v in self.teacher.state_dict().items()},
                          str(tmp / "teacher.safetensors"))
            (tmp / "state.json").write_text(json.dumps(state, indent=1))
            final, old = self.out / CKPT, self.out / f".{CKPT}.old"
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            if metrics is not None:
                metrics.update({"wall_s": state["elapsed_wall_s"], "cpu_s": state["elapsed_cpu_s"]})
                with open(self.out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                print(_metrics_line(metrics), flush=True)
        D.barrier(self.dist)

    def _load_checkpoint(self) -> None:
        from ofa_edge.space.checkpoint import CheckpointError, load_checkpoint, load_state

        ckpt = self.out / CKPT
        if not ckpt.exists() and (self.out / f".{CKPT}.old").exists():
            ckpt = self.out / f".{CKPT}.old"  # a crash between the two renames
        if not (ckpt / "state.json").is_file():
            raise OfaEdgeError(f"{self.out}: no checkpoint to resume (expected {ckpt}/state.json)")
        try:
            state = json.loads((ckpt / "state.json").read_text())
            trainer = load_file(str(ckpt / "trainer.safetensors"))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{ckpt}: corrupt training checkpoint ({type(exc).__name__}: {exc})") from None
        if state.get("recipe_fingerprint") != self.recipe.model_dump_json():
            raise OfaEdgeError(f"{self.out} was trained with a different recipe ({state.get('recipe')}); "
                               "resume with the same recipe file")
        if state.get("step") and state.get("world") != self.dist.world:
            raise OfaEdgeError(f"{self.out} stopped mid-epoch with {state.get('world')} processes; resume with the same number")
        saved = load_checkpoint(ckpt)
        self.net.load_state_dict(saved.state_dict())
        self.net.to(memory_format=torch.channels_last)
        if (ckpt / "teacher.safetensors").is_file():
            self._make_teacher()
            load_state(self.teacher, load_file(str(ckpt / "teacher.safetensors")), str(ckpt / "teacher.safetensors"))
        self.pos = Position(state["phase"], state["epoch"], state["step"])
        self.elapsed = {"wall_s": state["elapsed_wall_s"], "cpu_s": state["elapsed_cpu_s"],
                        "energy_j": state.get("elapsed_energy_j", 0.0)}
        self.momentum_buffers = {k.removeprefix("momentum/"): v for k, v in trainer.items() if k.startswith("momentum/")}
        if state["step"] and state.get("python_rng"):
            rank = self.dist.rank
            self.rng_states = {"python": state["python_rng"][rank], "augment": trainer[f"rng/augment/{rank}"],
                               "torch": trainer[f"rng/torch/{rank}"]}

    def _totals(self, ledger: Ledger):
        """The ledger entry over all ranks and all earlier segments of this run."""
        own = ledger.cpu_s()
        others = _sum_over_ranks(own, self.dist) - own
        return ledger.stop(extra_cpu_s=others + self.elapsed["cpu_s"], extra_wall_s=self.elapsed["wall_s"],
                           extra_energy_j=self.elapsed["energy_j"])

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
        checksums = _gather(self.weight_checksum(), self.dist)  # every rank must hold the same weights
        if self.dist.is_main:
            trained = sorted(set(self.recipe.resolutions))
            save_supernet(self.net, self.out / "supernet.safetensors",
                          extra={"trained_resolutions": trained, "recipe": self.recipe.name})
            summary = {"recipe": self.recipe.name, "space": self.space.id, "world": self.dist.world,
                       "rank_weight_checksums": checksums,
                       "threads_per_process": self.recipe.threads, "trained_resolutions": trained,
                       "ledger": entry.to_json(), **self._epoch_eval()}
            (self.out / "run.json").write_text(json.dumps(summary, indent=2))
            print(entry.line(), flush=True)
            record(entry, recipe=self.recipe.name, run=str(self.out))
        D.barrier(self.dist)
        return summary


def _metrics_line(m: dict) -> str:
    acc = ""
    if "val_top1_largest" in m:
        acc = f"  val largest {m['val_top1_largest'] * 100:.2f}%  smallest {m['val_top1_smallest'] * 100:.2f}%"
    return (f"{m['phase']} epoch {m['epoch']}/{m['epochs']}: loss {m['loss']:.4f}, "
            f"{m['images_per_s']:.0f} img/s{acc}  [{m['wall_s'] / 60:.1f} min]")


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def _gather(obj, d: D.Dist) -> list:
    if not d.active:
        return [obj]
    import torch.distributed as dist

    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def _sum_over_ranks(value: float, d: D.Dist) -> float:
    if not d.active:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())
