"""The measured latency predictor of one device identity: a block table, calibrated end to end.

prediction(arch) = a * sum(block figures of arch) + b          (the calibration; the figure is
                                                                the spec's measure.statistic)
                   [+ c * blocks(arch) + d * resolution]       (a residual term, kept only when
                                                                it lowers the leave-one-out error)

Summing isolated blocks misses fusion, cache and per-invoke effects (DESIGN.md §5), so the
calibration is fitted on the whole subnets bench measured with role ``calibration``, and judged
on the ``validation`` ones, which were chosen by arch hash before anything was measured and are
never fitted on. The report (share within ±5% and ±10%, RMSE, RMSPE, Kendall tau) is stored in
``latency_predictor.json`` beside ``blocks.json``. An arch that uses a block bench never measured
is refused: never 0 ms. Torch-free.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ofa_edge.devices.blocks import arch_blocks
from ofa_edge.devices.statistic import DEFAULT_STATISTIC, statistic_key
from ofa_edge.errors import OfaEdgeError
from ofa_edge.fileio import write_json_atomic
from ofa_edge.predictors.accuracy import kendall_tau
from ofa_edge.space.arch import Arch
from ofa_edge.space.presets import get_preset

SCHEMA_VERSION = 2
FILE_NAME = "latency_predictor.json"
BENCH_SCHEMA = 2  # the bench outputs it reads (blocks.json, subnets.json: figures across passes)


class LatencyPredictorError(OfaEdgeError):
    """The predictor cannot be built, loaded or asked about this arch."""


def error_report(predicted: np.ndarray, measured: np.ndarray) -> dict:
    """n, within_5pct, within_10pct (fractions), rmse_ms, rmspe (fraction), kendall_tau."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    if len(measured) == 0:
        return {"n": 0, "within_5pct": None, "within_10pct": None, "rmse_ms": None, "rmspe": None, "kendall_tau": None}
    rel = (predicted - measured) / measured
    return {"n": int(len(measured)), "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
            "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
            "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "kendall_tau": float(kendall_tau(predicted, measured)) if len(measured) > 1 else None}


def _design(sums: np.ndarray, counts: np.ndarray, resolutions: np.ndarray, residual: bool) -> np.ndarray:
    cols = [sums, np.ones_like(sums)]
    if residual:
        cols += [counts, resolutions]
    return np.stack(cols, axis=1)


def _fit_weights(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error (rows weighted by 1/y), since the budget is relative."""
    w = 1.0 / y
    coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    return coef


def _loo_rmspe(x: np.ndarray, y: np.ndarray) -> float:
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = _fit_weights(x[keep], y[keep])
        errors.append((x[i] @ coef - y[i]) / y[i])
    return float(np.sqrt(np.mean(np.square(errors))))


@dataclass
class LatencyPredictor:
    space_id: str
    num_classes: int
    identity: dict
    coverage: dict
    table: dict[str, float]          # block id -> ms (the statistic across passes)
    coef: list[float]                # [a, b] or [a, b, c, d]
    validation: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    statistic: str = DEFAULT_STATISTIC  # median | p90 | p10 (ofa_edge.devices.statistic)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)  # see _arch_sum

    @property
    def residual(self) -> bool:
        return len(self.coef) == 4

    # -------------------------------------------------------- predicting
    def _features(self, archs: list[Arch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        preset = get_preset(self.space_id)
        sums, counts = np.empty(len(archs)), np.empty(len(archs))
        for i, arch in enumerate(archs):
            sums[i], counts[i] = self._arch_sum(preset, arch)
        return sums, counts, np.array([a.resolution for a in archs], float)

    def _arch_sum(self, preset, arch: Arch) -> tuple[float, int]:
        """(sum of the arch's block figures, its block count). The fixed blocks' sum per resolution
        and each stage's sum are memoised: search meets the same stages in many archs."""
        memo, r = self._memo, arch.resolution
        try:
            total = memo[(r, -1, ())]
            for s, stage in enumerate(arch.stages):
                total += memo[(r, s, stage)]
            return total, 3 + sum(len(stage) for stage in arch.stages)
        except KeyError:
            pass
        keys = arch_blocks(preset, arch, self.num_classes)
        ms = [self._block_ms(arch, key) for key in keys]
        memo[(r, -1, ())] = ms[0] + ms[1] + ms[-1]
        start = 2
        for s, stage in enumerate(arch.stages):
            memo[(r, s, stage)] = sum(ms[start:start + len(stage)])
            start += len(stage)
        return self._arch_sum(preset, arch)

    def _block_ms(self, arch: Arch, key) -> float:
        ms = self.table.get(key.id)
        if ms is None:
            raise LatencyPredictorError(
                f"arch {arch} uses block {key.id}, which bench never measured on {self.identity.get('spec')} "
                f"(coverage: resolutions {self.coverage.get('resolutions')}, kernels {self.coverage.get('kernels')}, "
                f"expands {self.coverage.get('expands')}); stay inside the coverage or bench it")
        return ms

    def block_sum(self, archs: list[Arch]) -> np.ndarray:
        """The uncalibrated sum of the blocks' figures (ms), for a batch."""
        return self._features(archs)[0]

    def predict(self, archs: list[Arch]) -> np.ndarray:
        """Predicted latency in ms for a batch of archs (vectorized over the batch)."""
        sums, counts, res = self._features(archs)
        return _design(sums, counts, res, self.residual) @ np.asarray(self.coef)

    # -------------------------------------------------------- files
    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "kind": "latency-calibrated-block-table",
                "statistic": self.statistic, "space_id": self.space_id, "num_classes": self.num_classes, "identity": self.identity,
                "coverage": self.coverage, "model": "a*sum+b" + ("+c*blocks+d*resolution" if self.residual else ""),
                "coef": self.coef, "validation": self.validation, "report": self.report, "table": self.table}

    def save(self, folder: str | os.PathLike) -> Path:
        return write_json_atomic(Path(folder) / FILE_NAME, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyPredictor":
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        try:
            data = json.loads(path.read_text())
            if data.get("schema_version") != SCHEMA_VERSION or data.get("kind") != "latency-calibrated-block-table":
                raise ValueError(f"schema {data.get('schema_version')}/{data.get('kind')}, this ofa-edge reads "
                                 f"{SCHEMA_VERSION}/latency-calibrated-block-table")
            statistic_key(data["statistic"])
            return cls(data["space_id"], data["num_classes"], data["identity"], data["coverage"],
                       {k: float(v) for k, v in data["table"].items()}, [float(c) for c in data["coef"]],
                       data.get("validation", {}), data.get("report", {}), data["statistic"])
        except FileNotFoundError:
            raise LatencyPredictorError(f"no latency predictor at {path}: run ofa-edge bench for this device "
                                        "first") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LatencyPredictorError(f"{path}: not a usable latency predictor ({type(exc).__name__}: {exc}); "
                                        "run ofa-edge bench again to rebuild it") from None


def fit_latency_predictor(folder: str | os.PathLike, statistic: str = DEFAULT_STATISTIC) -> LatencyPredictor:
    """Fit on ``folder``'s blocks.json and subnets.json (a bench output) and validate, with the
    figures of ``statistic`` (each model stores all three, so any can be fitted without a new bench)."""
    folder = Path(folder)
    STATISTIC = statistic_key(statistic)
    try:
        blocks = json.loads((folder / "blocks.json").read_text())
        subnets = json.loads((folder / "subnets.json").read_text())
    except FileNotFoundError as exc:
        raise LatencyPredictorError(f"{exc.filename} is missing: run ofa-edge bench first") from None
    except ValueError as exc:
        raise LatencyPredictorError(f"{folder}: unreadable bench output ({exc}); run ofa-edge bench again") from None
    from ofa_edge.space.searchspace import SearchSpace

    space = SearchSpace(blocks["space_id"])
    heads = {b["out_c"] for b in blocks["blocks"] if b["role"] == "head"}
    if blocks.get("schema_version") != BENCH_SCHEMA or any(STATISTIC not in row
                                                          for row in blocks["blocks"] + subnets["subnets"]):
        raise LatencyPredictorError(f"{folder}: the bench output has no {STATISTIC} across passes (an older "
                                    "ofa-edge made it); run ofa-edge bench again: it measures in passes now")
    table = {b["id"]: float(b[STATISTIC]) for b in blocks["blocks"]}
    draft = LatencyPredictor(space.id, heads.pop(), blocks["identity"], blocks["coverage"], table, [1.0, 0.0],
                             statistic=statistic)
    rows = subnets["subnets"]
    archs = [space.parse(r["arch"]) for r in rows]
    measured = np.array([r[STATISTIC] for r in rows], float)
    sums, counts, res = draft._features(archs)
    fit_rows = np.array([r["role"] == "calibration" for r in rows])
    val_rows = ~fit_rows
    if fit_rows.sum() < 3:
        raise LatencyPredictorError(f"{folder}: only {int(fit_rows.sum())} calibration subnets; bench more whole "
                                    "subnets (--subnets)")
    candidates = {}
    for residual in (False, True):
        x = _design(sums[fit_rows], counts[fit_rows], res[fit_rows], residual)
        if residual and len(x) < 8:
            continue
        candidates[residual] = _loo_rmspe(x, measured[fit_rows])
    residual = candidates.get(True, np.inf) < 0.9 * candidates[False]  # only when it measurably helps
    coef = _fit_weights(_design(sums[fit_rows], counts[fit_rows], res[fit_rows], residual), measured[fit_rows])
    draft.coef = [float(c) for c in coef]
    predicted = _design(sums, counts, res, residual) @ coef
    draft.validation = error_report(predicted[val_rows], measured[val_rows])
    draft.report = {
        "calibration_subnets": int(fit_rows.sum()), "validation_subnets": int(val_rows.sum()),
        "loo_rmspe": {"linear": candidates[False], "residual": candidates.get(True)},
        "residual_kept": bool(residual),
        "validation_table_sum_only": error_report(sums[val_rows], measured[val_rows]),
        "validation_points": [{"arch": r["arch"], "measured_ms": float(m), "predicted_ms": float(p),
                               "blocks_sum_ms": float(s)}
                              for r, m, p, s, v in zip(rows, measured, predicted, sums, val_rows) if v],
    }
    return draft


def predictor_for(folder: str | os.PathLike, statistic: str) -> LatencyPredictor:
    """The predictor in ``folder`` for ``statistic``: refitted (and saved) from the stored figures
    when the one there was fitted on another statistic; no new measurement is needed."""
    predictor = LatencyPredictor.load(folder)
    if predictor.statistic != statistic:
        predictor = fit_latency_predictor(folder, statistic)
        predictor.save(folder)
    return predictor


def format_summary(p: LatencyPredictor) -> str:
    v = p.validation
    if not v.get("n"):
        return "latency predictor: no held-out subnets to validate on (bench more whole subnets)"
    return (f"latency predictor ({p.to_json()['model']}, {p.statistic}): held-out {v['n']} whole subnets: "
            f"{v['within_5pct']:.0%} within ±5%, {v['within_10pct']:.0%} within ±10%, RMSE {v['rmse_ms']:.3f} ms, "
            f"RMSPE {v['rmspe']:.1%}, Kendall tau "
            + (f"{v['kendall_tau']:.3f}" if v["kendall_tau"] is not None else "n/a (one held-out subnet)"))
