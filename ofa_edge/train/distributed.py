"""Data-parallel training under torchrun, on torch.distributed: NCCL when training on CUDA,
gloo on the CPU (the backend follows the training device, never NCCL with CPU tensors).

Every rank trains the same sequence of subnets on its own shard of each batch; after the
step's backward passes the gradients of the parameters the subnets used are summed across
ranks and divided by the world size (one flat all-reduce). A parameter no subnet used keeps
``grad=None`` on every rank, so the optimizer leaves it alone, as in one process. Every tensor
that reaches a collective lives on ``Dist.device``. Rank 0 alone writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ofa_edge.errors import OfaEdgeError


@dataclass(frozen=True)
class Dist:
    """This process's place in the group, and the device its collectives use."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def backend_for(device: torch.device) -> str:
    """The process-group backend for tensors on ``device``."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(device: torch.device | str = "cpu") -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR...),
    if any. On CUDA each rank takes GPU ``LOCAL_RANK`` and the group uses NCCL; else gloo."""
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else (device.index or 0)
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if world <= 1:
        return Dist(device=device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def average_gradients(params: list[torch.nn.Parameter], d: Dist) -> None:
    """Average the gradients of the used parameters over ranks. Parameters without a gradient
    (no sampled subnet used them) keep ``grad=None`` on every rank; the ranks must agree on
    which those are (they sample the same subnets), which one small all-reduce checks."""
    if not d.active:
        return
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=d.device)
    seen = torch.cat([used, 1 - used])
    dist.all_reduce(seen, op=dist.ReduceOp.MAX)  # max(used) and max(unused) both 1: ranks disagree
    n = len(params)
    if (seen[:n] * seen[n:]).any().item():
        raise OfaEdgeError("DDP ranks trained different subnets in one step (they must sample the same "
                           "ones); check that every rank runs the same recipe and seed")
    with_grad = [p for p in params if p.grad is not None]
    if with_grad:
        for p, mean in zip(with_grad, _mean_over_ranks([p.grad for p in with_grad], d)):
            p.grad = mean


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if ``flag`` is true on any rank (to stop together on a signal)."""
    if not d.active:
        return flag
    t = torch.tensor([1 if flag else 0], device=d.device)
    dist.all_reduce(t)
    return bool(t.item())


def sum_over_ranks(values: list[float], d: Dist) -> list[float]:
    """Each number summed over ranks (one float64 all-reduce on the group's device)."""
    if not d.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, d: Dist) -> list:
    """``obj`` from every rank, in rank order (NCCL sends through the current CUDA device,
    which ``init_from_env`` set to this rank's)."""
    if not d.active:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.active:
        if d.device.type == "cuda":
            dist.barrier(device_ids=[d.device.index or 0])
        else:
            dist.barrier()


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def average_buffers(module: torch.nn.Module, d: Dist) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, so every rank
    and the checkpoint hold the same statistics (each rank estimated them on its own shard)."""
    if not d.active:
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]
    for b, mean in zip(bufs, _mean_over_ranks(bufs, d)):
        b.copy_(mean)


def _mean_over_ranks(tensors: list[torch.Tensor], d: Dist) -> list[torch.Tensor]:
    """The element-wise mean of each tensor over ranks, in one flat all-reduce on d.device."""
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(d.device)
    dist.all_reduce(flat)
    flat.div_(d.world)
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset:offset + t.numel()].view_as(t).clone().to(t.device))
        offset += t.numel()
    return out
