"""``ofa-edge report``: run the benchmarks (quick, or ``--full``), derive the dashboard's results
from the bench tables, the bundles and the ledger, and write the dashboard.

Every figure comes from a results JSON in ``benchmarks/results/`` (machine, versions, date, raw
figures), so the dashboard can be rebuilt from committed results alone (``--from-results``).
The training comparisons (``benchmarks/bench_training.py``) take hours; they are reused from
their committed results unless ``--full``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ofa_edge.errors import OfaEdgeError

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


def _results_dir() -> Path:
    import os

    return Path(os.environ.get("OFA_EDGE_RESULTS") or BENCHMARKS / "results")


def _write(name: str, figures: dict, settings: dict) -> Path:
    sys.path.insert(0, str(BENCHMARKS))
    from common import write_results

    return write_results(name, figures, settings)


def _script(name: str, *args: str, log: Callable[[str], None]) -> None:
    path = BENCHMARKS / name
    log(f"report: python benchmarks/{name} {' '.join(args)}")
    done = subprocess.run([sys.executable, str(path), *args], cwd=str(REPO), capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise OfaEdgeError(f"benchmarks/{name} failed: {tail}")


def latency_validation(runs: Path, space_id: str) -> dict:
    """Predicted vs measured latency of every bench's held-out subnets in ``runs``."""
    from ofa_edge.devices.statistic import statistic_key
    from ofa_edge.predictors.latency import LatencyPredictor
    from ofa_edge.space.arch import Arch

    devices = []
    for folder in sorted(Path(runs).glob(f"*/{space_id}")):
        if not (folder / "latency_predictor.json").is_file() or not (folder / "subnets.json").is_file():
            continue
        lp = LatencyPredictor.load(folder)
        if lp.identity.get("emulated"):  # an emulated device's timings are no latencies
            continue
        rows = [r for r in json.loads((folder / "subnets.json").read_text())["subnets"] if r.get("role") == "validation"]
        if not rows:
            continue
        predicted = lp.predict([Arch.parse(r["arch"]) for r in rows])
        key = statistic_key(lp.statistic)
        devices.append({"spec": folder.parent.name, "statistic": lp.statistic, "archs": [r["arch"] for r in rows],
                        "predicted_ms": [float(v) for v in predicted],
                        "measured_ms": [float(r[key]) for r in rows], "validation": lp.validation})
    summaries = []  # the benches of benchmarks/bench_latency_predictor.py, when on record
    path = _results_dir() / "latency_predictor.json"
    if path.is_file():
        for b in json.loads(path.read_text())["figures"].get("benches", []):
            summaries.append({"spec": f"local, {b['method']} method ({b['statistic']}, {b['passes']} passes), "
                                      f"{b['condition']}", **b["validation"],
                              "source": "benchmarks/results/latency_predictor.json"})
    return {"devices": devices, "summaries": summaries}


def harness_noise(runs: Path, spec: str, space_id: str) -> dict:
    blocks = json.loads((Path(runs) / spec / space_id / "blocks.json").read_text())["blocks"]
    return {"spec": spec, "block_cov": [b["cov"] for b in blocks], "blocks": [b["id"] for b in blocks], "goal": 0.03}


def deployed(bundles: list[Path]) -> dict:
    out = []
    for b in bundles:
        m = json.loads((b / "manifest.json").read_text())
        out.append({"spec": m["spec"], "arch": m["arch"], "format": m["format"], "accuracy": m["accuracy"],
                    "agreement": m["agreement"], "passed": m["verification"]["passed"], "latency_ms": m["latency_ms"],
                    "bundle": str(b.relative_to(REPO) if b.is_relative_to(REPO) else b)})
    return {"bundles": out}


def carbon(ledger_entries: list[dict], spec: str, training: dict | None) -> dict:
    """The N = 1..40 scenarios from the shipped supernet's own ledger (train, predictor fit), one
    specialisation (the costliest quick bench of ``spec`` on record, i.e. a cold one, plus the
    latest deploy, which includes its search) and the from-scratch trainings."""
    import os

    from ofa_edge.report.carbon import scenarios
    from ofa_edge.space.checkpoint import supernet_dir

    report = json.loads((supernet_dir("default") / "eval_report.json").read_text())
    once = [report["ledger"], report["accuracy_predictor"]["ledger"]]
    of_spec = [e for e in ledger_entries if e.get("spec") == spec]
    benches = [e for e in of_spec if e["command"] == "bench" and e.get("quick")]
    deploys = [e for e in of_spec if e["command"] == "deploy"]
    if not benches or not deploys:
        raise OfaEdgeError(f"the ledger has no quick bench and deploy of {spec}: run ofa-edge report (it runs them)")
    per_device = [max(benches, key=lambda e: e["cpu_s"]), deploys[-1]]
    if not training or not training.get("scratch"):
        raise OfaEdgeError("no from-scratch training results (benchmarks/results/training.json): run "
                           "python benchmarks/bench_training.py --train, or ofa-edge report --full")
    per_training = [row["scratch_ledger"] for row in training["scratch"]]
    grid = float(os.environ.get("OFA_EDGE_GRID_G_PER_KWH", "400"))
    for entries in (once, per_device, per_training):  # one grid intensity for every bar
        for e in entries:
            e["co2e_g"] = e["energy_j"] / 3.6e6 * grid
    return {"scenarios": scenarios(once, per_device, per_training), "grid_g_per_kwh": grid,
            "energy_source": sorted({e["energy_source"] for e in once + per_device + per_training}),
            "entries": {"once": once, "per_device": per_device, "per_training": per_training},
            "sources": {"once": "ofa_edge/assets/default/eval_report.json",
                        "per_device": f"ledger: the costliest (cold) quick bench + the latest deploy of {spec}",
                        "per_training": f"{len(per_training)} from-scratch runs (benchmarks/results/training.json)"}}


def _optional(results: Path, name: str, key: str) -> dict | None:
    """``figures[key]`` of an optional results file, or None when it was not run."""
    path = results / f"{name}.json"
    return json.loads(path.read_text())["figures"].get(key) if path.is_file() else None


def build_dashboard(results: Path, out: Path) -> Path:
    """The dashboard from the results JSONs in ``results`` (no benchmark runs)."""
    from ofa_edge.report import panels
    from ofa_edge.report.dashboard import write_dashboard

    def load(name: str) -> dict:
        path = results / f"{name}.json"
        if not path.is_file():
            raise OfaEdgeError(f"missing results {path}: run ofa-edge report (without --from-results)")
        return json.loads(path.read_text())

    fronts = [json.loads(p.read_text()) for p in sorted(results.glob("fronts_*.json"))]
    if not fronts:
        raise OfaEdgeError(f"no fronts_*.json in {results}: run python benchmarks/bench_fronts.py")
    built = [panels.fronts(fronts), panels.latency(load("latency_validation")), panels.accuracy(load("deployed")),
             panels.search(load("search")), panels.noise(load("harness_noise")),
             panels.carbon(load("carbon"), _optional(results, "uniform", "ledger")),
             panels.training(load("training"))]
    built += [panel(load(name)) for name, panel in (("uniform", panels.uniform_imagenet),
                                                    ("search_reference", panels.search_reference),
                                                    ("firmware_calibration", panels.firmware))
              if (results / f"{name}.json").is_file()]
    machine = fronts[0]["machine"]
    return write_dashboard(built, out, f"{machine.get('cpu')} x{machine.get('cores')}, "
                                       f"ofa-edge {machine.get('versions', {}).get('ofa-edge')}")


def run_report(full: bool = False, from_results: bool = False, runs: Path = Path("runs"),
               out: Path | None = None, log: Callable[[str], None] = print) -> Path:
    if not BENCHMARKS.is_dir():
        raise OfaEdgeError(f"report needs the repository's benchmarks/ folder ({BENCHMARKS}); run it from a checkout")
    results = _results_dir()
    out = out or BENCHMARKS / "dashboard"
    t0 = time.time()
    if not from_results:
        _run_benchmarks(full, Path(runs), results, log)
    path = build_dashboard(results, out)
    log(f"report: dashboard {path} ({time.time() - t0:.0f} s)")
    return path


def _run_benchmarks(full: bool, runs: Path, results: Path, log: Callable[[str], None]) -> None:
    from ofa_edge.deploy import DeployOptions, deploy
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec, resolve_spec_path
    from ofa_edge.space.checkpoint import checkpoint_file, read_header

    runs = Path(runs).resolve()  # the scripts run in the repository
    local = load_spec(resolve_spec_path("local"))
    space_id = read_header(checkpoint_file("default"))["space_id"]
    log(f"report: bench {local.name} ({'full' if full else 'quick'})")
    run_bench(local, BenchOptions(quick=not full, out=runs, progress=sys.stderr.isatty(),
                                  log=lambda line: log("  " + line)))
    if full:
        _script("bench_harness.py", "--full", log=log)
        _script("calibrate_tflm_memory.py", log=log)
        _script("bench_training.py", "--train", "--runs", str(runs), log=log)
    _script("bench_search.py", "--runs", str(runs), log=log)
    _script("bench_fronts.py", "--runs", str(runs), *([] if full else ["--quick"]), log=log)
    if os.geteuid() == 0:  # the slowed emulated device needs a network namespace and a cgroup
        _script("bench_fronts.py", "--slowed", "--quick", "--runs", str(runs), log=log)
    else:
        log("report: skip the slowed emulated device (it needs root for a network namespace and a cgroup)")
    bundles = []
    no_firmware = not os.environ.get("OFA_EDGE_TFLM_SRC")  # the MCU bundle: its firmware when sources are there
    for spec_name in ("local", "stm32f746"):
        log(f"report: deploy {spec_name}" + (" (--no-firmware: set OFA_EDGE_TFLM_SRC for its firmware)"
                                             if spec_name == "stm32f746" and no_firmware else ""))
        result = deploy(load_spec(resolve_spec_path(spec_name)),
                        DeployOptions(runs=runs, out=runs / "report-bundles", no_firmware=no_firmware,
                                      log=lambda line: log("  " + line)))
        bundles.append(result.bundle)
    derive_results(runs, bundles, local.name, space_id, results)


def derive_results(runs: Path, bundles: list[Path], spec: str, space_id: str, results: Path) -> None:
    """The results the dashboard reads that no benchmark script writes: deployed subnets, latency
    validation pairs and block noise from the bench tables, and the carbon ledger."""
    from ofa_edge.ledger import read_ledger

    _write("deployed", deployed(bundles), {"bundles": [str(b) for b in bundles]})
    _write("latency_validation", latency_validation(runs, space_id), {"runs": str(runs)})
    _write("harness_noise", harness_noise(runs, spec, space_id), {"runs": str(runs)})
    training_path = results / "training.json"
    training = json.loads(training_path.read_text())["figures"] if training_path.is_file() else None
    _write("carbon", carbon(read_ledger(), spec, training), {"n_max": 40})
