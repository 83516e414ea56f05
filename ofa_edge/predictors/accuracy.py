"""The accuracy predictor: an MLP over the reference OFA encoding of an arch.

Encoding (as the reference): for every block slot (stages x max depth) a one-hot kernel and a
one-hot expand, zeros for skipped blocks; then a one-hot resolution. The MLP (3 hidden layers
of 400, ReLU) is fitted with torch, but stored as JSON + npz and evaluated with numpy, so
search needs no torch. Reference figure: 0.21% RMSE from 16k subnets on ImageNet.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ofa_edge.errors import OfaEdgeError
from ofa_edge.fileio import atomic_path
from ofa_edge.space.arch import Arch
from ofa_edge.space.searchspace import SearchSpace

SCHEMA_VERSION = 1


def encode(space: SearchSpace, archs: list[Arch]) -> np.ndarray:
    """(n, features) float32: one-hot kernel and expand per block slot, one-hot resolution."""
    p = space.preset
    nk, ne, d = len(p.kernel_choices), len(p.expand_choices), p.max_depth
    kidx = {k: i for i, k in enumerate(p.kernel_choices)}
    eidx = {e: i for i, e in enumerate(p.expand_choices)}
    ridx = {r: i for i, r in enumerate(p.resolutions)}
    slot = nk + ne
    out = np.zeros((len(archs), len(p.stages) * d * slot + len(p.resolutions)), dtype=np.float32)
    for row, arch in enumerate(archs):
        for s, stage in enumerate(arch.stages):
            for b, (k, e) in enumerate(stage):
                base = (s * d + b) * slot
                out[row, base + kidx[k]] = 1.0
                out[row, base + nk + eidx[e]] = 1.0
        out[row, len(p.stages) * d * slot + ridx[arch.resolution]] = 1.0
    return out


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b between two score vectors (ties handled), O(n^2)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    da, db = da[iu], db[iu]
    concordant_minus_discordant = float((da * db).sum())
    denom = np.sqrt(float((da != 0).sum()) * float((db != 0).sum()))
    return concordant_minus_discordant / denom if denom else 0.0


def is_holdout(arch: Arch, share: int = 6) -> bool:
    """A stable held-out choice by arch hash (about 1 in ``share``), fixed before measuring."""
    return int(hashlib.sha256(str(arch).encode()).hexdigest(), 16) % share == 0


@dataclass
class AccuracyPredictor:
    space_id: str
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    target_mean: float
    target_scale: float
    report: dict

    def predict(self, space: SearchSpace, archs: list[Arch]) -> np.ndarray:
        """Predicted top-1 (fractions) for a batch of archs, vectorised."""
        if space.id != self.space_id:
            raise OfaEdgeError(f"accuracy predictor is for space {self.space_id}, not {space.id}")
        h = encode(space, archs)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0] * self.target_scale + self.target_mean

    # ------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """``path`` (.json) plus ``path`` with .npz for the weights; both written atomically."""
        path = Path(path).with_suffix(".json")
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)} | {f"b{i}": b for i, b in enumerate(self.biases)}
        _atomic(path.with_suffix(".npz"), lambda f: np.savez(f, **arrays), binary=True)
        meta = {"schema_version": SCHEMA_VERSION, "kind": "accuracy-mlp", "space_id": self.space_id,
                "layers": len(self.weights), "target_mean": self.target_mean, "target_scale": self.target_scale,
                "weights_file": path.with_suffix(".npz").name, "report": self.report}
        _atomic(path, lambda f: f.write(json.dumps(meta, indent=2)), binary=False)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AccuracyPredictor":
        path = Path(path).with_suffix(".json")
        try:
            meta = json.loads(path.read_text())
            if meta.get("schema_version") != SCHEMA_VERSION or meta.get("kind") != "accuracy-mlp":
                raise ValueError(f"schema {meta.get('schema_version')}/{meta.get('kind')}")
            with np.load(path.with_name(meta["weights_file"]), allow_pickle=False) as z:
                n = meta["layers"]
                weights = [z[f"w{i}"] for i in range(n)]
                biases = [z[f"b{i}"] for i in range(n)]
        except (OSError, ValueError, KeyError) as exc:
            raise OfaEdgeError(f"{path}: not a usable accuracy predictor ({type(exc).__name__}: {exc}); "
                               "refit it with ofa-edge predictor fit") from None
        return cls(meta["space_id"], weights, biases, meta["target_mean"], meta["target_scale"], meta["report"])


def fit(space: SearchSpace, archs: list[Arch], accs: np.ndarray, hidden: int = 400, layers: int = 3,
        epochs: int = 500, seed: int = 0) -> AccuracyPredictor:
    """Fit the MLP (Adam, MSE on standardised accuracy, full batch) with torch."""
    import torch

    torch.manual_seed(seed)
    x = torch.from_numpy(encode(space, archs))
    mean, scale = float(np.mean(accs)), float(np.std(accs) or 1.0)
    y = torch.from_numpy(((np.asarray(accs) - mean) / scale).astype(np.float32))[:, None]
    dims = [x.shape[1]] + [hidden] * layers + [1]
    mods: list = []
    for i in range(len(dims) - 1):
        mods.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            mods.append(torch.nn.ReLU())
    mlp = torch.nn.Sequential(*mods)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.mse_loss(mlp(x), y).backward()
        opt.step()
        sched.step()
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    return AccuracyPredictor(space.id, [m.weight.detach().numpy().T.copy() for m in linears],
                             [m.bias.detach().numpy().copy() for m in linears], mean, scale, {})


def score(pred: AccuracyPredictor, space: SearchSpace, archs: list[Arch], accs: np.ndarray) -> dict:
    predicted = pred.predict(space, archs)
    accs = np.asarray(accs, dtype=float)
    return {"n": len(archs), "rmse": float(np.sqrt(np.mean((predicted - accs) ** 2))),
            "kendall_tau": kendall_tau(predicted, accs)}


def _atomic(path: Path, write, binary: bool) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w") as f:
        write(f)
