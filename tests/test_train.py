"""Training: resume is exact, DDP keeps ranks identical, checkpoints are atomic and checked."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import REPO, require_fmnist
from ofa_edge.errors import OfaEdgeError
from ofa_edge.train.engine import Trainer, TrainingInterrupted, lr_at
from ofa_edge.train.recipe import Phase, RecipeError, load_recipe

CI_RECIPE = REPO / "recipes" / "ci-tiny.yaml"


def _small_recipe(tmp_path, **changes):
    data = yaml.safe_load(CI_RECIPE.read_text())
    data.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


def _weights(run_dir):
    return load_file(str(run_dir / "supernet.safetensors"))


def test_ci_run_writes_everything(ci_run):
    out, summary = ci_run
    assert (out / "supernet.safetensors").is_file() and (out / "checkpoint" / "state.json").is_file()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in lines] == ["full", "kernel", "depth-1", "expand-1"]
    for m in lines:
        assert 0 <= m["val_top1_largest"] <= 1 and 0 <= m["val_top1_smallest"] <= 1 and m["loss"] > 0
    ledger = summary["ledger"]
    assert ledger["wall_s"] > 0 and ledger["cpu_s"] > 0 and ledger["energy_j"] > 0
    assert summary["trained_resolutions"] == [28, 32]
    from ofa_edge.space.checkpoint import read_header
    assert read_header(out)["trained_resolutions"] == [28, 32]


def test_resume_mid_epoch_gives_the_same_weights(tmp_path):
    require_fmnist()
    recipe = _small_recipe(tmp_path, phases=yaml.safe_load(CI_RECIPE.read_text())["phases"][:3])
    straight = tmp_path / "straight"
    Trainer(recipe, straight, progress=False).run()

    interrupted = tmp_path / "interrupted"
    trainer = Trainer(recipe, interrupted, progress=False)
    calls = {"n": 0}
    original = trainer._train_step

    def stop_after_11(*args, **kwargs):  # phase 2 (kernel), epoch 1, step 3 of 8
        calls["n"] += 1
        if calls["n"] == 11:
            trainer._stop = True
        return original(*args, **kwargs)

    trainer._train_step = stop_after_11
    with pytest.raises(TrainingInterrupted, match="resume"):
        trainer.run()
    state = json.loads((interrupted / "checkpoint" / "state.json").read_text())
    assert (state["phase"], state["epoch"], state["step"]) == (1, 0, 3)
    Trainer(recipe, interrupted, resume=True, progress=False).run()
    a, b = _weights(straight), _weights(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_new_run_refuses_an_existing_folder(ci_run):
    out, _ = ci_run
    with pytest.raises(OfaEdgeError, match="--resume"):
        Trainer(load_recipe(CI_RECIPE), out, progress=False)


def test_resume_with_another_recipe_is_refused(ci_run, tmp_path):
    out, _ = ci_run
    other = _small_recipe(tmp_path, seed=5)
    with pytest.raises(OfaEdgeError, match="different recipe"):
        Trainer(other, out, resume=True, progress=False)


def test_corrupt_checkpoint_is_one_clear_error(ci_run, tmp_path, run_cli):
    import shutil

    out, _ = ci_run
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    weights = broken / "checkpoint" / "supernet.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    result = run_cli("train", "--recipe", str(CI_RECIPE), "--resume", str(broken))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "corrupt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sigint_leaves_a_usable_checkpoint(tmp_path):
    """A real SIGINT to a running `ofa-edge train`: one clear line, then --resume finishes."""
    require_fmnist()
    recipe = tmp_path / "r.yaml"
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["phases"][0]["epochs"] = 3
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    exe = [sys.executable, "-m", "ofa_edge.cli", "train", "--recipe", str(recipe)]
    proc = subprocess.Popen([*exe, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["phase"] == 0 and state["epoch"] >= 1
    done = subprocess.run([*exe, "--resume", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "supernet.safetensors").is_file()


def test_ddp_two_processes_keep_identical_weights(tmp_path):
    require_fmnist()
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "ofa_edge.train", "--recipe", str(CI_RECIPE), "--out", str(out)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "run.json").read_text())
    assert summary["world"] == 2
    sums = summary["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    # the global batch is split: each rank saw half of each step's images
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 4


def test_lr_schedule_warms_up_then_decays():
    phase = Phase(name="p", epochs=2, lr=0.1, warmup_epochs=0.5, kernel=[7], expand=[6], depth=[4])
    lrs = [lr_at(phase, s, 10) for s in range(20)]
    assert lrs[0] < lrs[4] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:])) and lrs[-1] < 0.01


def test_bad_recipe_is_a_clear_error(tmp_path):
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["phases"][1]["kernel"] = [3, 9]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match=r"phases\[1\].kernel: \[9\] not in space ofa-mbv3-ci"):
        load_recipe(path)
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["learning_rate"] = 1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="learning_rate"):
        load_recipe(path)


def test_sandwich_rule_trains_and_validates(tmp_path):
    require_fmnist()
    phases = [{"name": "sandwich", "epochs": 1, "lr": 0.05, "kernel": [3, 5, 7], "expand": [3, 4, 6],
               "depth": [2, 3, 4], "subnets_per_step": 3, "rule": "sandwich", "kd_ratio": 1.0}]
    recipe = _small_recipe(tmp_path, phases=phases)
    trainer = Trainer(recipe, tmp_path / "sw", progress=False)
    seen = []
    original = trainer.net.set_active

    def record(arch):
        seen.append(arch)
        return original(arch)

    trainer.net.set_active = record
    trainer.run()
    space = trainer.space
    # each step: the largest, then the smallest, then one random subnet (at the step's resolution)
    assert seen[0] == space.largest(seen[0].resolution) and seen[1] == space.smallest(seen[1].resolution)
    assert seen[3] == space.largest(seen[3].resolution)
    assert trainer.teacher is None  # in-place distillation: no separate teacher
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    data["phases"][0]["subnets_per_step"] = 1
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="needs at least 2"):
        load_recipe(bad)


# ---------------------------------------------------------------- devices, precision, data loading


def test_device_and_amp_choices(monkeypatch):
    from ofa_edge.train.device import amp_dtype, autocast, resolve_device

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == cpu and resolve_device("cpu") == cpu
    with pytest.raises(OfaEdgeError, match="CUDA is not available") as err:
        resolve_device("cuda")
    assert "\n" not in str(err.value)
    with pytest.raises(OfaEdgeError, match="unknown device"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(OfaEdgeError, match="2 CUDA device"):
        resolve_device("cuda:2")
    gpu = torch.device("cuda", 0)
    assert amp_dtype("auto", gpu) == torch.bfloat16 and amp_dtype("auto", cpu) is None
    assert amp_dtype("fp16", gpu) == torch.float16 and amp_dtype("off", gpu) is None
    assert amp_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(OfaEdgeError, match="fp16.*CUDA"):
        amp_dtype("fp16", cpu)
    with pytest.raises(OfaEdgeError, match="--amp"):
        amp_dtype("fp8", gpu)
    with autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu")
    with autocast(cpu, None):
        assert not torch.is_autocast_enabled("cpu")


def test_cuda_asked_without_cuda_is_one_clear_error(run_cli, tmp_path):
    """No CUDA device visible (as on CI, or hidden here): one line, exit 2."""
    result = run_cli("train", "--recipe", str(CI_RECIPE), "--out", str(tmp_path / "run"), "--device", "cuda",
                     env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "CUDA is not available" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_augmentation_depends_only_on_the_seed_and_the_sample_index():
    from ofa_edge.train.augment import augment_batch, sample_uniforms

    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([40, 7, 123, 9, 5000])
    whole = augment_batch(images, 17, index, pad_crop=2, hflip=True, erase=0.5)
    order = [3, 0, 4]  # another batch, another order: each sample gets the same augmentation
    part = augment_batch(images[order], 17, index[order], pad_crop=2, hflip=True, erase=0.5)
    assert torch.equal(part, whole[order])
    assert not torch.equal(augment_batch(images, 18, index, 2, True, 0.5), whole)  # another epoch/phase
    u = sample_uniforms(3, torch.arange(20_000))
    assert u.shape == (20_000, 8) and 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_loader_workers_and_bf16(tmp_path):
    """DataLoader workers (the CUDA path, here on the CPU) cut the same batches as in-process
    batching, so the weights are identical; bf16 autocast trains too."""
    require_fmnist()
    recipe = _small_recipe(tmp_path, train_subset=128, batch_size=32, resolutions=[28], eval_images=32,
                           bn_calibration_images=32, phases=yaml.safe_load(CI_RECIPE.read_text())["phases"][2:3])
    runs = {name: Trainer(recipe, tmp_path / name, progress=False, device="cpu", **kw).run()
            for name, kw in {"inline": {}, "workers": {"workers": 1}, "bf16": {"amp": "bf16"}}.items()}
    assert runs["inline"]["rank_weight_checksums"] == runs["workers"]["rank_weight_checksums"]
    assert runs["inline"]["amp"] == "off" and runs["bf16"]["amp"] == "bfloat16"
    assert runs["bf16"]["rank_weight_checksums"] != runs["inline"]["rank_weight_checksums"]
    loss = json.loads((tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert 0 < loss < 10


def test_val_size_is_a_count_or_a_fraction(tmp_path):
    assert _small_recipe(tmp_path, val_size=0.1).val_size == 0.1
    assert _small_recipe(tmp_path, val_size=300).val_size == 300
    for bad in (1.5, 0, 1.0):
        with pytest.raises(RecipeError, match="val_size"):
            _small_recipe(tmp_path, val_size=bad)
