"""Resume is exact at phase boundaries: a finished phase's optimizer state never carries into
the next phase, and a phase that sorts channels resumes as an uninterrupted run does."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import REPO, require_fmnist
from ofa_edge.train.engine import CKPT, Trainer, TrainingInterrupted
from ofa_edge.train.recipe import load_recipe

PHASES = [{"name": "full", "epochs": 1, "lr": 0.1, "kernel": [7], "expand": [6], "depth": [4]},
          {"name": "expand", "epochs": 1, "lr": 0.03, "kernel": [3, 7], "expand": [3, 6], "depth": [2, 3, 4],
           "subnets_per_step": 2, "kd_ratio": 1.0, "sort_channels": True}]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run of a 2-phase recipe (4 steps each), and a copy of its checkpoint
    at the end of phase 1."""
    require_fmnist()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("resume")
    data = yaml.safe_load((REPO / "recipes" / "ci-tiny.yaml").read_text())
    data.update(train_subset=128, batch_size=32, resolutions=[28], bn_calibration_images=32, eval_images=32,
                phases=PHASES)
    (root / "recipe.yaml").write_text(yaml.safe_dump(data))
    recipe = load_recipe(root / "recipe.yaml")
    trainer = Trainer(recipe, root / "straight", progress=False, device="cpu")
    save = trainer._save_checkpoint

    def keep_phase_end(*args, **kwargs):
        save(*args, **kwargs)
        if (trainer.pos.phase, trainer.pos.epoch, trainer.pos.step) == (1, 0, 0):
            shutil.copytree(root / "straight" / CKPT, root / "boundary" / CKPT)

    trainer._save_checkpoint = keep_phase_end
    trainer.run()
    return recipe, root


def _assert_same_weights(a_dir, b_dir):
    a, b = load_file(str(a_dir / "supernet.safetensors")), load_file(str(b_dir / "supernet.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_from_the_end_of_a_phase_is_exact(straight):
    recipe, root = straight
    state = json.loads((root / "boundary" / CKPT / "state.json").read_text())
    assert (state["phase"], state["epoch"], state["step"]) == (1, 0, 0)
    # a finished phase keeps no optimizer state for the next one
    assert not any(k.startswith("momentum/") for k in load_file(str(root / "boundary" / CKPT / "trainer.safetensors")))
    Trainer(recipe, root / "boundary", resume=True, progress=False, device="cpu").run()
    _assert_same_weights(root / "straight", root / "boundary")


def test_resume_after_one_step_of_the_sorting_phase_is_exact(straight):
    recipe, root = straight
    out = root / "step1"
    trainer = Trainer(recipe, out, progress=False, device="cpu")
    step, calls = trainer._train_step, {"n": 0}

    def stop_after_first_step_of_phase_2(*args, **kwargs):  # phase 1 has 4 steps
        calls["n"] += 1
        if calls["n"] == 5:
            trainer._stop = True
        return step(*args, **kwargs)

    trainer._train_step = stop_after_first_step_of_phase_2
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    state = json.loads((out / CKPT / "state.json").read_text())
    assert (state["phase"], state["epoch"], state["step"]) == (1, 0, 1)
    Trainer(recipe, out, resume=True, progress=False, device="cpu").run()
    _assert_same_weights(root / "straight", out)
