"""DDP is the same algorithm as one process: skipped parameters stay untouched, collectives use
the group's device, and torchrun works across two (loopback) nodes.

Run as a script (``python tests/test_ddp.py worker ...``) it is one DDP rank of the
equivalence test.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, require_fmnist  # noqa: E402
from ofa_edge.train import distributed as D  # noqa: E402

CI_RECIPE = REPO / "recipes" / "ci-tiny.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _depth_recipe(tmp_path: Path) -> Path:
    """One random-rule phase with depth {2, 3}: the third block of a stage is used in some steps
    and skipped in others (the fourth never). 4 steps of 2 x 16 images."""
    data = yaml.safe_load(CI_RECIPE.read_text())
    data.update(train_subset=128, batch_size=16, resolutions=[28], bn_calibration_images=32, eval_images=32,
                phases=[{"name": "depth", "epochs": 1, "lr": 0.1, "kernel": [3, 5], "expand": [3],
                         "depth": [2, 3], "subnets_per_step": 1}])
    path = tmp_path / "depth.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def train_and_check(recipe_path: str, out: str, report: str, dist: D.Dist, micro_batches: int) -> None:
    """Train (fp32, CPU), checking after every step that each parameter no subnet used (grad
    None before averaging) and its momentum buffer are bit-identical to before the step.
    Writes ``report``.json (violations, skipped names per step) and ``report``.safetensors."""
    from ofa_edge.train.engine import Trainer
    from ofa_edge.train.recipe import load_recipe

    trainer = Trainer(load_recipe(recipe_path), out, progress=False, dist=dist, device="cpu", amp="off",
                      micro_batches=micro_batches)
    names = {id(p): n for n, p in trainer.net.named_parameters()}
    seen: dict = {"skipped": [], "steps": [], "violations": []}
    average = D.average_gradients

    def recording_average(params, d):
        seen["skipped"] = [p for p in params if p.grad is None]
        return average(params, d)

    step = trainer._train_step

    def checked_step(phase, batches, archs, opt, scaler=None):
        before = {id(p): (p.detach().clone(), _momentum(opt, p)) for p in trainer.net.parameters()}
        loss = step(phase, batches, archs, opt, scaler)
        k = len(seen["steps"])
        seen["steps"].append(sorted(names[id(p)] for p in seen["skipped"]))
        for p in seen["skipped"]:
            w0, m0 = before[id(p)]
            m1 = _momentum(opt, p)
            if not torch.equal(p.detach(), w0):
                seen["violations"].append(f"rank {dist.rank} step {k}: {names[id(p)]} (no subnet used it) changed "
                                          f"by up to {float((p.detach() - w0).abs().max()):.3g}")
            if (m0 is None) != (m1 is None) or (m0 is not None and not torch.equal(m0, m1)):
                seen["violations"].append(f"rank {dist.rank} step {k}: the momentum buffer of {names[id(p)]} "
                                          f"(no subnet used it) changed ({'created' if m0 is None else 'updated'})")
        return loss

    D.average_gradients = recording_average
    trainer._train_step = checked_step
    try:
        trainer.run()
    finally:
        D.average_gradients = average
    save_file({n: p.detach().contiguous() for n, p in trainer.net.named_parameters()}, report + ".safetensors")
    Path(report + ".json").write_text(json.dumps({"violations": seen["violations"], "steps": seen["steps"]}))


def _momentum(opt, p):
    buf = opt.state.get(p, {}).get("momentum_buffer")
    return None if buf is None else buf.clone()


def _rank_process(recipe: Path, out: Path, report: Path, rank: int, port: int) -> subprocess.Popen:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
           "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, __file__, "worker", str(recipe), str(out), str(report)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_rank_ddp_equals_one_process_with_two_micro_batches(tmp_path):
    """2-rank gloo DDP vs one process running the same two half-batches as micro-batches."""
    require_fmnist()
    torch.set_num_threads(1)
    recipe = _depth_recipe(tmp_path)
    port = _free_port()
    ranks = [_rank_process(recipe, tmp_path / "ddp", tmp_path / f"rank{r}", r, port) for r in range(2)]
    train_and_check(str(recipe), str(tmp_path / "one"), str(tmp_path / "one"), D.Dist(), micro_batches=2)
    for r, proc in enumerate(ranks):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"rank {r}: {err[-3000:]}"
    one = json.loads((tmp_path / "one.json").read_text())
    # the test means something: a block was skipped in one step and trained in another
    skipped = [set(s) for s in one["steps"]]
    assert len(skipped) == 4 and set.union(*skipped) - set.intersection(*skipped)
    assert not one["violations"], "\n".join(one["violations"][:5])
    for r in range(2):
        report = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert report["steps"] == one["steps"], "DDP ranks trained other subnets than the one process"
        assert not report["violations"], "\n".join(report["violations"][:8])
    reference = load_file(str(tmp_path / "one.safetensors"))
    for r in range(2):
        ddp = load_file(str(tmp_path / f"rank{r}.safetensors"))
        worst = max((float((ddp[k] - reference[k]).abs().max()), k) for k in reference)
        assert worst[0] <= 1e-5, f"rank {r}: {worst[1]} differs from one process by {worst[0]:.3g}"
        for name in set.intersection(*skipped):  # never used: still the initial weights, like one process
            assert torch.equal(ddp[name], reference[name]), name


# ---------------------------------------------------------------- collectives and their devices


class _Recorder:
    """Stands in for torch.distributed's collectives; records the device of every tensor."""

    def __init__(self):
        self.devices: list[tuple[str, torch.device]] = []

    def install(self, monkeypatch) -> None:
        dist = torch.distributed
        monkeypatch.setattr(dist, "all_reduce", lambda t, op=None, **kw: self.devices.append(("all_reduce", t.device)))
        monkeypatch.setattr(dist, "broadcast", lambda t, *a, **kw: self.devices.append(("broadcast", t.device)))
        monkeypatch.setattr(dist, "barrier", lambda *a, **kw: self.devices.append(("barrier", kw.get("device_ids"))))
        monkeypatch.setattr(dist, "all_gather_object", lambda out, obj, **kw: out.__setitem__(slice(None), [obj] * len(out)))


def test_every_collective_uses_the_groups_device(monkeypatch):
    """With the group's device faked as ``meta`` (CPU tensors would be the bug NCCL rejects),
    every tensor that reaches a collective must be on it."""
    recorder = _Recorder()
    recorder.install(monkeypatch)
    monkeypatch.setattr(torch.Tensor, "item", lambda self: 0)  # meta tensors hold no values
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: [0.0] * self.numel())
    d = D.Dist(rank=0, world=2, device=torch.device("meta"))
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)).to("meta")
    params = list(net.parameters())
    for p in params[:4]:
        p.grad = torch.zeros_like(p)  # the last Linear was not used: no grad
    D.average_gradients(params, d)
    D.average_buffers(net, d)
    assert D.any_rank(False, d) is False
    assert D.sum_over_ranks([1.0, 2.0], d) == [0.0, 0.0]
    assert D.gather_objects("x", d) == ["x", "x"]
    D.barrier(d)
    D.barrier(D.Dist(0, 2, torch.device("cuda", 1)))
    assert ("barrier", [1]) in recorder.devices  # NCCL's barrier on this rank's GPU
    reductions = [dev for op, dev in recorder.devices if op == "all_reduce"]
    assert len(reductions) >= 5 and all(dev == torch.device("meta") for dev in reductions), recorder.devices
    assert params[4].grad is None and params[5].grad is None  # unused: no gradient, so no update


def test_backend_follows_the_training_device(monkeypatch):
    calls: dict = {}
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.setdefault("backend", []).append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("set_device", []).append(i))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    d = D.init_from_env("cpu")  # CUDA present or not: CPU tensors take gloo
    assert calls["backend"] == ["gloo"] and "set_device" not in calls and d.device == torch.device("cpu")
    d = D.init_from_env(torch.device("cuda"))
    assert calls["backend"] == ["gloo", "nccl"] and calls["set_device"] == [1]
    assert d == D.Dist(1, 2, torch.device("cuda", 1))
    assert D.backend_for(torch.device("cuda", 0)) == "nccl" and D.backend_for(torch.device("cpu")) == "gloo"


def test_ranks_that_disagree_on_used_parameters_are_an_error(monkeypatch):
    from ofa_edge.errors import OfaEdgeError

    def used_and_unused_somewhere(t, op=None, **kw):
        t.fill_(1)  # the max over ranks: every parameter used on some rank and unused on another

    monkeypatch.setattr(torch.distributed, "all_reduce", used_and_unused_somewhere)
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    a.grad = torch.ones(2)
    with pytest.raises(OfaEdgeError, match="different subnets"):
        D.average_gradients([a, b], D.Dist(0, 2))


# ---------------------------------------------------------------- torchrun across two nodes


def test_torchrun_two_nodes_on_loopback(tmp_path):
    """2 nodes x 1 gloo process, c10d rendezvous on 127.0.0.1 (two torchrun agents, as on two
    machines), training a tiny recipe: both ranks end with identical weights."""
    require_fmnist()
    data = yaml.safe_load(CI_RECIPE.read_text())
    data.update(train_subset=128, batch_size=16, resolutions=[28], bn_calibration_images=32, eval_images=32,
                phases=data["phases"][:2])
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out, run_id, endpoint = tmp_path / "run", uuid.uuid4().hex, f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                               "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}",
                               f"--node-rank={node}", "--local-addr=127.0.0.1", "--max-restarts=0",
                               "-m", "ofa_edge.train", "--recipe", str(recipe), "--out", str(out), "--device", "cpu"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for node in range(2)]
    for node, proc in enumerate(nodes):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"node {node}: {err[-3000:]}"
    summary = json.loads((out / "run.json").read_text())
    assert summary["world"] == 2 and summary["device"] == "cpu"
    sums = summary["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    torch.set_num_threads(1)
    recipe_arg, out_arg, report_arg = sys.argv[2:5]
    group = D.init_from_env("cpu")
    try:
        train_and_check(recipe_arg, out_arg, report_arg, group, micro_batches=1)
    finally:
        D.shutdown(group)
