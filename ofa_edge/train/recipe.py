"""Training recipes: a YAML file describing the phases of progressive shrinking (or the
sandwich rule), validated strictly like device specs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ofa_edge.errors import OfaEdgeError


class RecipeError(OfaEdgeError):
    """A recipe is malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Phase(_Strict):
    """One phase: which elastic dims are open, how many subnets each step trains, its LR."""

    name: str
    epochs: int = Field(ge=0)
    lr: float = Field(gt=0)
    warmup_epochs: float = Field(default=0.0, ge=0)
    kernel: list[int] = Field(min_length=1)
    expand: list[int] = Field(min_length=1)
    depth: list[int] = Field(min_length=1)
    subnets_per_step: int = Field(default=1, ge=1)
    rule: Literal["random", "sandwich"] = "random"  # sandwich: largest + smallest + (n-2) random
    kd_ratio: float = Field(default=0.0, ge=0)       # 0 in the full-network phase
    sort_channels: bool = False                      # sort middle channels before this phase


class Augment(_Strict):
    pad_crop: int = Field(default=2, ge=0)   # random crop after zero padding by this many pixels
    hflip: bool = True
    erase: float = Field(default=0.0, ge=0, le=1)  # probability of random erasing


class Recipe(_Strict):
    schema_version: Literal[1]
    name: str
    space: str
    dataset: str = "fashion-mnist"
    # val images carved out of train: a count, or a fraction of train in (0, 1)
    val_size: Union[int, float] = 5000
    train_subset: Optional[int] = Field(default=None, ge=1)  # for tests: only the first N train images
    seed: int = 0
    batch_size: int = Field(default=256, ge=1)               # per process
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=3e-5, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    resolutions: list[int] = Field(min_length=1)              # sampled per step
    eval_resolution: int = Field(gt=0)
    bn_calibration_images: int = Field(default=2000, ge=1)
    eval_images: Optional[int] = Field(default=None, ge=1)    # val images per epoch-end evaluation
    threads: int = Field(default=1, ge=1)
    augment: Augment = Augment()
    phases: list[Phase] = Field(min_length=1)

    @field_validator("val_size")
    @classmethod
    def _count_or_fraction(cls, v: int | float) -> int | float:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"a count of val images must be >= 1, got {v}")
        if isinstance(v, float) and not 0 < v < 1:
            raise ValueError(f"a fraction of train must be in (0, 1), got {v}; a count is an integer")
        return v

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)


def load_recipe(path: str | os.PathLike) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file (see recipes/ for examples)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: YAML syntax error: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: the top level must be a mapping")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise RecipeError(f"{path}: {key}: {err['msg']}") from None
    _check_against_space(recipe, path)
    return recipe


def _check_against_space(recipe: Recipe, path: Path) -> None:
    from ofa_edge.space import get_preset

    try:
        preset = get_preset(recipe.space)
    except OfaEdgeError as exc:
        raise RecipeError(f"{path}: space: {exc}") from None
    for i, phase in enumerate(recipe.phases):
        for key, allowed in (("kernel", preset.kernel_choices), ("expand", preset.expand_choices),
                             ("depth", preset.depth_choices)):
            bad = [v for v in getattr(phase, key) if v not in allowed]
            if bad:
                raise RecipeError(f"{path}: phases[{i}].{key}: {bad} not in space {preset.id} ({list(allowed)})")
        if phase.rule == "sandwich" and phase.subnets_per_step < 2:
            raise RecipeError(f"{path}: phases[{i}].subnets_per_step: the sandwich rule trains the largest and "
                              "the smallest subnet each step, so it needs at least 2")
    bad = [r for r in (*recipe.resolutions, recipe.eval_resolution) if r not in preset.resolutions]
    if bad:
        raise RecipeError(f"{path}: resolutions {bad} not in space {preset.id} ({list(preset.resolutions)})")
