"""Import OFA's reference accuracy predictors into ofa-edge's own predictor format.

Two layouts exist; the layout is told from the tensor shapes alone:

- ``ofa.nas.accuracy_predictor`` (the reference implementation): ``n`` hidden Linear+ReLU layers,
  a bias-free last Linear and a ``base_acc`` (added to the output). Input features (its
  ``MobileNetArchEncoder``): one-hot resolutions (in the encoder's ``image_size_list`` order),
  then one-hot kernels of all 20 block slots (3 each: 3, 5, 7), then one-hot expands of all 20
  slots (3 each: 3, 4, 6); zeros for skipped blocks. The state dict does not store the resolution
  list, only its length: 25 columns are 128..224 step 4, 4 are 128/160/192/224 (the reference's
  acc-dataset default), 1 is 224 (the encoder's default); pass ``resolutions`` for anything else.
- the OFA tutorial's ``acc_predictor.pth``: Linear(128, 400), ReLU, ... Linear(400, 1) with a
  bias. Inputs: 60 kernel one-hots and 60 expand one-hots (20 slots x 3), then 8 resolution
  buckets ``(r - 112) // 16``.

ofa-edge's encoding (``accuracy.encode``) is per slot [k3 k5 k7 e3 e4 e6], then one-hot
resolution over the space's resolutions. The first layer's columns are permuted (and, for the
tutorial's buckets, duplicated) onto that encoding; the other layers are copied; ``base_acc``
becomes the last layer's bias. Both predict top-1 as a fraction, as ofa-edge does, so the output
transform is the identity. Weights are kept in float64 (exact copies of the float32 values).
Space resolutions the predictor has no column for are left out of ``report["resolutions"]``,
which search already uses to narrow the space; none covered is refused.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ofa_edge.errors import OfaEdgeError
from ofa_edge.predictors.accuracy import AccuracyPredictor
from ofa_edge.space.searchspace import SearchSpace

NAS = "ofa.nas.accuracy_predictor"
TUTORIAL = "ofa-tutorial-acc_predictor"
ACCEPTED = ("accepted: ofa.nas.accuracy_predictor (Linear(120+R, H), ReLU, ..., bias-free Linear(H, 1) "
            "plus base_acc) or the OFA tutorial's acc_predictor.pth (Linear(128, 400), ReLU, ..., "
            "Linear(400, 1) with bias)")
KERNELS = (3, 5, 7)     # both reference encodings, in this column order
EXPANDS = (3, 4, 6)
STAGES, DEPTH = 5, 4
SLOTS = STAGES * DEPTH  # 20
# the nas layout stores only the number of resolution columns; the lists it is known to be used with
KNOWN_NAS_RESOLUTIONS = {25: tuple(range(128, 225, 4)), 4: (128, 160, 192, 224), 1: (224,)}
TUTORIAL_BUCKETS = 8


def import_reference_predictor(path: str | os.PathLike, space: SearchSpace | str,
                               resolutions: Sequence[int] | None = None) -> AccuracyPredictor:
    """Load a reference accuracy-predictor state dict (weights-only) as ofa-edge's predictor for
    ``space``. ``resolutions``: the nas layout's ``image_size_list``, when its column count is not
    one of the known lists. Raises OfaEdgeError (one line) for anything it cannot import."""
    space = SearchSpace(space) if isinstance(space, str) else space
    path = Path(path)
    tensors = _load(path)
    layout, weights, biases, base_acc = _detect(path, tensors)
    _check_space(path, space)
    in_dim = weights[0].shape[1]
    if layout == NAS:
        n_res = in_dim - 2 * SLOTS * 3
        if resolutions is None:
            if n_res not in KNOWN_NAS_RESOLUTIONS:
                known = ", ".join(f"{n}: {_span(r)}" for n, r in KNOWN_NAS_RESOLUTIONS.items())
                raise OfaEdgeError(
                    f"{path}: an {NAS} predictor with {n_res} resolution columns, which is none of the "
                    f"known resolution lists ({known}); pass its encoder's image_size_list as resolutions")
            resolutions = KNOWN_NAS_RESOLUTIONS[n_res]
        resolutions = tuple(int(r) for r in resolutions)
        if len(resolutions) != n_res:
            raise OfaEdgeError(f"{path}: {len(resolutions)} resolutions given, the predictor has {n_res} columns")
        column_of = {r: i for i, r in enumerate(resolutions)}
        covered_by = _span(resolutions)

        def kcol(slot: int, i: int) -> int:
            return n_res + slot * 3 + i

        def ecol(slot: int, i: int) -> int:
            return n_res + SLOTS * 3 + slot * 3 + i
    else:
        column_of = {r: 2 * SLOTS * 3 + (r - 112) // 16 for r in space.preset.resolutions
                     if 0 <= (r - 112) // 16 < TUTORIAL_BUCKETS}
        covered_by = "112-239 px in 8 buckets of 16"

        def kcol(slot: int, i: int) -> int:
            return slot * 3 + i

        def ecol(slot: int, i: int) -> int:
            return SLOTS * 3 + slot * 3 + i

    space_res = list(space.preset.resolutions)
    covered = [r for r in space_res if r in column_of]
    if not covered:
        raise OfaEdgeError(f"{path}: the predictor's resolution columns ({covered_by}) cover none of space "
                           f"{space.id}'s resolutions ({_span(space_res)})")
    # ofa-edge column j <- reference column cols[j] (-1: no reference column, weight 0)
    cols = []
    for slot in range(SLOTS):
        cols += [kcol(slot, i) for i in range(len(KERNELS))] + [ecol(slot, i) for i in range(len(EXPANDS))]
    cols += [column_of.get(r, -1) for r in space_res]
    cols = np.array(cols)
    first = np.zeros((len(cols), weights[0].shape[0]), dtype=np.float64)
    first[cols >= 0] = weights[0].T[cols[cols >= 0]]
    ours_w = [first] + [w.T.copy() for w in weights[1:]]
    ours_b = [b.copy() for b in biases]
    ours_b[-1] = ours_b[-1] + base_acc
    report = {"source": "reference", "layout": layout, "file": path.name, "sha256": _sha256(path),
              "hidden": [int(w.shape[0]) for w in weights[:-1]], "resolutions": covered,
              "reference_resolutions": list(resolutions) if layout == NAS else covered_by}
    if len(covered) < len(space_res):
        missing = [r for r in space_res if r not in column_of]
        report["restricted"] = f"the predictor has no column for {_span(missing)}; search keeps to {_span(covered)}"
    return AccuracyPredictor(space.id, ours_w, ours_b, 0.0, 1.0, report)


def _load(path: Path) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise OfaEdgeError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        first = (str(exc).splitlines() or [""])[0][:200]
        raise OfaEdgeError(f"{path}: cannot read it as a weights-only torch file ({type(exc).__name__}: {first}); "
                           f"{ACCEPTED}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise OfaEdgeError(f"{path}: expected an accuracy-predictor state dict, found "
                           f"{'an empty dict' if isinstance(state, dict) else 'a ' + type(state).__name__}; {ACCEPTED}")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise OfaEdgeError(f"{path}: {key!r} is a {type(value).__name__}, not a tensor; {ACCEPTED}")
        tensors[str(key).removeprefix("module.")] = value.detach().to(torch.float64).numpy()
    return tensors


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _detect(path: Path, tensors: dict) -> tuple[str, list[np.ndarray], list[np.ndarray], float]:
    """The layout, the Linear weights (out, in) in order, their biases (zeros where absent) and base_acc."""
    base = [k for k in tensors if k.split(".")[-1] == "base_acc"]
    weights = sorted((k for k, v in tensors.items() if v.ndim == 2 and k.endswith("weight")), key=_natural)
    others = set(tensors) - set(base) - set(weights) - {k[:-len("weight")] + "bias" for k in weights}
    chain = [tensors[k] for k in weights]
    ok = (not others and len(chain) >= 2 and chain[-1].shape[0] == 1
          and all(a.shape[0] == b.shape[1] for a, b in zip(chain, chain[1:])))
    has_bias = [k[:-len("weight")] + "bias" in tensors for k in weights]
    ok = ok and all(tensors[k[:-len("weight")] + "bias"].shape == (tensors[k].shape[0],)
                    for k, h in zip(weights, has_bias) if h)
    layout = None
    if ok and len(base) == 1 and tensors[base[0]].size == 1 and all(has_bias[:-1]) and not has_bias[-1] \
            and chain[0].shape[1] > 2 * SLOTS * 3:
        layout = NAS
    elif ok and not base and all(has_bias) and chain[0].shape[1] == 2 * SLOTS * 3 + TUTORIAL_BUCKETS:
        layout = TUTORIAL
    if layout is None:
        found = ", ".join(f"{k} {'x'.join(map(str, v.shape)) or 'scalar'}" for k, v in list(tensors.items())[:8])
        more = f" and {len(tensors) - 8} more" if len(tensors) > 8 else ""
        raise OfaEdgeError(f"{path}: not a reference accuracy predictor (found {found}{more}); {ACCEPTED}")
    biases = [tensors[k[:-len("weight")] + "bias"] if h else np.zeros(tensors[k].shape[0])
              for k, h in zip(weights, has_bias)]
    return layout, chain, biases, float(tensors[base[0]].reshape(-1)[0]) if base else 0.0


def _check_space(path: Path, space: SearchSpace) -> None:
    p = space.preset
    if tuple(p.kernel_choices) != KERNELS or tuple(p.expand_choices) != EXPANDS or len(p.stages) != STAGES \
            or p.max_depth != DEPTH:
        raise OfaEdgeError(
            f"{path}: the reference predictors encode {STAGES} stages x {DEPTH} blocks with kernels "
            f"{'/'.join(map(str, KERNELS))} and expands {'/'.join(map(str, EXPANDS))}; space {space.id} has "
            f"{len(p.stages)} x {p.max_depth}, kernels {'/'.join(map(str, p.kernel_choices))}, expands "
            f"{'/'.join(map(str, p.expand_choices))}")


def _span(values: Sequence[int]) -> str:
    values = list(values)
    if len(values) > 2:
        steps = {b - a for a, b in zip(values, values[1:])}
        if len(steps) == 1:
            return f"{values[0]}-{values[-1]} px step {steps.pop()}"
    return ", ".join(map(str, values)) + " px"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
