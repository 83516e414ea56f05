"""``ofa-edge search``: the device's budgets, its latency source and the accuracy predictor, put
together; the search space is the supernet's, narrowed to what bench measured (its coverage),
to the accuracy predictor's resolutions and to the spec's resolution range."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ofa_edge.devices.spec import DeviceSpec
from ofa_edge.errors import OfaEdgeError
from ofa_edge.search.evolution import SearchResult, SearchSettings, evolve
from ofa_edge.search.pareto import pareto_front
from ofa_edge.search.objective import BUDGET_KEYS, Objective, report_row
from ofa_edge.space.searchspace import SearchSpace


@dataclass
class SearchSetup:
    space: SearchSpace        # the full space
    coverage: SearchSpace     # where search may go
    objective: Objective
    latency_source: str


def _accuracy_predictor(supernet):
    from ofa_edge.predictors.accuracy import AccuracyPredictor
    from ofa_edge.space.source import open_supernet

    src = open_supernet(supernet)
    return AccuracyPredictor.load(src.side_file("accuracy_predictor.json", "accuracy predictor",
                                                f"run ofa-edge predictor fit --supernet {src.given}"))


def _header(supernet) -> dict:
    from ofa_edge.space.source import open_supernet

    return open_supernet(supernet).header


def budgets_for(spec: DeviceSpec, overrides: dict[str, float | None]) -> dict[str, float]:
    """The spec's budgets, with the command line's on top."""
    b = spec.budgets
    out = {k: getattr(b, k) for k in BUDGET_KEYS if b is not None and getattr(b, k, None) is not None}
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def setup_search(spec: DeviceSpec, supernet="default", runs: str | Path = "runs",
                 overrides: dict[str, float | None] | None = None) -> SearchSetup:
    """``supernet``: any source open_supernet takes (a name or path, or an opened source)."""
    from ofa_edge.space.source import open_supernet

    supernet = open_supernet(supernet)
    header = _header(supernet)
    space = SearchSpace(header["space_id"])
    num_classes = header["num_classes"]
    predictor = _accuracy_predictor(supernet)
    trained = predictor.report.get("resolutions") or header.get("trained_resolutions") or list(space.preset.resolutions)
    budgets = budgets_for(spec, overrides or {})
    if spec.latency_table is not None:
        from ofa_edge.predictors.latency_table import load_table_latency

        table = load_table_latency(spec.latency_table_path(), space.preset, num_classes)
        latency, coverage, memory = table.predict, table.coverage(), None
        source = f"published latency table of {spec.name} ({spec.latency_table}; {len(table.resolutions)} resolutions)"
    elif spec.connection.transport == "none":
        from ofa_edge.devices.mcu import McuModel

        mcu = McuModel(spec)
        latency = lambda archs: [mcu.costs(space.preset, a, num_classes).latency_ms for a in archs]  # noqa: E731
        def memory(arch):
            c = mcu.costs(space.preset, arch, num_classes)
            return c.peak_sram_kb, c.flash_kb, c.macs / 1e6

        coverage = {"resolutions": list(space.preset.resolutions), "kernels": list(space.preset.kernel_choices),
                    "expands": list(space.preset.expand_choices)}
        source = f"cost model of {spec.name} ({spec.hardware.clock_mhz:g} MHz)"
    else:
        from ofa_edge.predictors.latency import predictor_for

        memory = None
        folder = Path(runs) / spec.name / space.id
        if not (folder / "latency_predictor.json").is_file():
            raise OfaEdgeError(f"no latency predictor for {spec.name} in {folder}: run ofa-edge bench --spec "
                               f"{spec.source or spec.name} --quick first (or pass --runs DIR)")
        lp = predictor_for(folder, spec.measure.statistic)
        latency, coverage = lp.predict, lp.coverage
        v = lp.validation
        source = (f"measured on {spec.name} ({folder}; {lp.statistic}; held-out {v.get('n')} subnets, "
                  f"{(v.get('within_10pct') or 0):.0%} within ±10%)")
    resolutions = spec.in_resolution_range(r for r in coverage["resolutions"] if r in trained)
    if not resolutions:
        raise OfaEdgeError(f"no resolution is both measured ({coverage['resolutions']}), known to the accuracy "
                           f"predictor ({trained}) and inside the spec's range; bench other resolutions")
    narrowed = SearchSpace(dataclasses.replace(space.preset, resolutions=tuple(resolutions),
                                               kernel_choices=tuple(coverage["kernels"]),
                                               expand_choices=tuple(coverage["expands"])))
    objective = Objective(space, lambda archs: predictor.predict(space, archs), latency, num_classes, budgets,
                          memory=memory)
    return SearchSetup(space, narrowed, objective, source)


def run_search(setup: SearchSetup, settings: SearchSettings, pareto: bool = False) -> tuple[SearchResult, list[dict]]:
    """Search; returns the result and its JSON rows (one, or the whole front)."""
    setup.objective.check_fits(setup.coverage.smallest())
    if pareto:
        result = pareto_front(setup.coverage, setup.objective, settings)
        return result, [report_row(setup.objective, a) for a in result.front]
    result = evolve(setup.coverage, setup.objective, settings)
    return result, [report_row(setup.objective, result.best)]


def format_row(row: dict) -> str:
    p = row["predicted"]
    margins = ", ".join(f"{k} {v:+.4g}" for k, v in row["margins"].items()) or "no budgets"
    return (f"{row['arch']}\n  predicted top-1 {p['top1']:.2%}, latency {p['latency_ms']:.3f} ms, "
            f"{p['macs'] / 1e6:.2f}M MACs, peak SRAM {p['peak_sram_kb']:.1f} KiB, flash {p['flash_kb']:.1f} KiB\n"
            f"  margins to budgets: {margins}")
