"""Data-parallel training under torchrun, on torch.distributed (gloo on CPU, nccl on GPU).

Every rank trains the same sequence of subnets on its own shard of each batch; after the
step's backward passes the gradients are summed across ranks and divided by the world size
(one flat all-reduce). Rank 0 alone writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_from_env() -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR...), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size())


def average_gradients(params: list[torch.nn.Parameter], d: Dist) -> None:
    """Sum gradients over ranks and divide by the world size; a parameter a subnet did not
    use counts as a zero gradient on that rank."""
    if not d.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for p, mean in zip(params, _mean_over_ranks(grads, d)):
        p.grad = mean


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if ``flag`` is true on any rank (to stop together on a signal)."""
    if not d.active:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t)
    return bool(t.item())


def barrier(d: Dist) -> None:
    if d.active:
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
    """The element-wise mean of each tensor over ranks, in one flat all-reduce."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat.div_(d.world)
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset:offset + t.numel()].view_as(t).clone())
        offset += t.numel()
    return out
