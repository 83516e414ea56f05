"""The README's Results and shipped-supernet figures match the committed results JSON and eval
report, so that a rerun that changes the results cannot leave the README quoting old numbers."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
RESULTS = REPO / "benchmarks" / "results"


def _figures(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())["figures"]


def _row(label: str, cells: int) -> list[str]:
    """The cells after the label of the one README table row that starts with ``label`` and has
    ``cells`` more cells."""
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")][1:] for ln in README.splitlines()
            if ln.startswith(f"| {label} |")]
    (row,) = [r for r in rows if len(r) == cells]
    return row


def _pct(cell: str) -> float:
    return float(re.match(r"([\d.]+)%", cell).group(1)) / 100


def test_training_table_matches_training_json():
    f = _figures("training")
    labels = {"small": "small (k3 e3 d2)", "middle": "middle (k5 e4 d3)", "large": "large (k7 e6 d4)"}
    rows = [(labels[r["name"]], r) for r in f["scratch"]] + [(labels[r["name"]] + ", longer", r) for r in f["scratch_long"]]
    assert len(rows) == 4
    for label, row in rows:
        scratch, epochs, cpu, ofa17, shipped = _row(label, 5)
        assert abs(_pct(scratch) - row["scratch_top1"]) < 6e-5 and int(epochs) == row["epochs"]
        assert int(cpu.replace(",", "")) == round(row["scratch_ledger"]["cpu_s"])
        assert abs(_pct(ofa17) - row["ofa17_top1"]) < 6e-5 and abs(_pct(shipped) - row["ofa_top1"]) < 6e-5


def test_sandwich_table_matches_training_json():
    sw = _figures("training")["sandwich"]
    columns = [sw[k]["archs"] for k in ("progressive_shrinking", "sandwich", "sandwich17", "shipped")]
    for label, pick in (("largest", lambda a: a[0]["top1"]), ("smallest", lambda a: a[1]["top1"]),
                        ("median of 20 random", lambda a: statistics.median(x["top1"] for x in a[2:]))):
        cells = _row(label, 4)
        for cell, archs in zip(cells, columns):
            assert abs(_pct(cell) - pick(archs)) < 6e-5, (label, cell)


def test_shipped_supernet_table_matches_the_eval_report():
    report = json.loads((REPO / "ofa_edge" / "assets" / "default" / "eval_report.json").read_text())
    for label, key in (("largest (k7 e6 d4, 32 px)", "largest"), ("smallest (k3 e3 d2, 24 px)", "smallest"),
                       ("median of 20 random", "median_random20")):
        cells = _row(label, 2)
        target = report["targets"][key]
        assert abs(_pct(cells[0]) - target["reached"]) < 6e-5
        assert ("not met" in cells[1]) == (not target["met"])


def test_carbon_paragraph_matches_carbon_json():
    sc = _figures("carbon")["scenarios"]
    m = re.search(r"ofa-edge costs ([\d.]+) Wh \(([\d.]+) gCO2e\)\. Forty\s+separate trainings cost ([\d.]+) Wh "
                  r"\(([\d.]+) g\), ([\d.]+)× more\. ofa-edge is cheaper from N = (\d+) on", README)
    assert m, "the carbon paragraph of the README changed shape"
    wh, g, sep_wh, sep_g, ratio, crossover = m.groups()
    assert float(wh) == round(sc["ofa"]["energy_j"][-1] / 3600, 1)
    assert float(g) == round(sc["ofa"]["co2e_g"][-1], 1)
    assert float(sep_wh) == round(sc["separate"]["energy_j"][-1] / 3600, 1)
    assert float(sep_g) == round(sc["separate"]["co2e_g"][-1], 1)
    assert float(ratio) == round(sc["ratio_at_max"], 1) and int(crossover) == sc["crossover_n"]


def test_latency_method_table_matches_latency_predictor_json():
    """The README's old-vs-new measuring table is benchmarks/results/latency_predictor.json."""
    benches = _figures("latency_predictor")["benches"]
    assert len(benches) == 6
    for b in benches:
        label = f"{b['method']}, {b['statistic']}, {b['passes']} pass{'es' if b['passes'] > 1 else ''}, {b['condition']}"
        within5, within10, rmspe, tau, measure_s, again, flagged = _row(label, 7)
        v, d = b["validation"], b["drift"]
        assert abs(_pct(within5) - v["within_5pct"]) < 0.006 and abs(_pct(within10) - v["within_10pct"]) < 0.006
        assert abs(_pct(rmspe) - v["rmspe"]) < 0.0006 and abs(float(tau) - v["kendall_tau"]) < 0.0006
        assert float(measure_s) == round(b["measure_s"]) and int(again) == d["passes_remeasured"]
        assert int(flagged) == d["passes_flagged"]


def test_imagenet_quick_bench_figures_match_their_results():
    f = _figures("harness_imagenet_quick")
    cold, warm = f["cold_cache"], f["warm_cache"]
    assert (cold["blocks"], cold["subnets"]) == (186, 62) and cold["coverage"]["resolutions"] == [128, 224]
    assert f"{cold['blocks']} blocks and {cold['subnets']} whole subnets" in README
    assert f"it took\n{cold['wall_s']:,.0f} s from an empty converter cache ({cold['convert_s']:.0f} s converting, " \
           f"{cold['measure_s']:.0f} s measuring) and {warm['wall_s']:.0f} s with a warm" in README
    assert warm["wall_s"] <= 600  # the goal the README states: at most 10 minutes warm
    v = cold["predictor_validation"]
    assert v["n"] == 30 and v["within_10pct"] == 1.0
    assert f"(RMSPE {v['rmspe']:.1%}, Kendall τ {v['kendall_tau']:.2f})" in README


def test_imagenet_uniform_table_and_ledger_match_uniform_json():
    f = _figures("uniform")
    assert f["accuracy_axis"] == "predicted ImageNet top-1 (OFA's published predictor)"
    for dev in f["devices"]:
        _source, front, faster, gain = _row(dev["device"], 4)
        assert int(front.split()[0]) == len(dev["uniform_front"])
        r, g = dev["latency_ratio"], dev["accuracy_gain"]
        assert faster == f"{r['median']:.2f}×, {r['max']:.2f}×"
        assert gain == f"+{100 * g['median']:.2f}, +{100 * g['max']:.2f} points"
    ledger = f["ledger"]
    cpu = ledger["per_device"]["local_imagenet"]
    assert f"an {cpu['bench_cpu_s']:.0f} CPU-s quick bench\nand a {cpu['search_cpu_s']:.1f} CPU-s search" in README
    assert f"{ledger['n_devices_cpu_s']:,.0f} CPU-s ({ledger['n_devices_energy_wh']:.1f} Wh" in README


def test_search_reference_table_matches_its_results():
    rows = _figures("search_reference")["budgets"]
    ours, ref, wall = _row("ofa-edge", 5), _row("reference", 5), _row("wall time, ofa-edge / reference", 5)
    for i, r in enumerate(rows):
        m = r["median"]
        assert abs(_pct(ours[i]) - m["ofa_edge"]["top1"]) < 6e-5 and abs(_pct(ref[i]) - m["reference"]["top1"]) < 6e-5
        assert float(wall[i]) == round(r["wall_ratio"], 2)


def test_firmware_figures_match_the_calibration_json():
    fit = _figures("firmware_calibration")["fit"]
    m7, m4 = fit["cortex-m7"], fit["cortex-m4"]
    before = [c["arena"]["error_before"] for c in (m7, m4)]
    low = min(-b["max_under"] for b in before)  # never under: the smallest over-estimate
    high = max(b["max_over"] for b in before)
    assert f"by {100 * low:.1f}–{100 * high:.1f}%" in README
    after = max(c["arena"]["error_after"]["max_over"] for c in (m7, m4))
    assert f"it is over by 0–{100 * after:.1f}% and never under" in README
    assert all(c["arena"]["error_after"]["max_under"] <= 0 for c in (m7, m4))
    ratios = [c["instructions"]["cost_model_before"]["median_ratio"] for c in (m7, m4)]
    assert f"predicted\n{ratios[0]:.2f}× (M7) and {ratios[1]:.2f}× (M4)" in README
    worst = max(c["instructions"]["error_after"]["max_abs"] for c in (m7, m4))
    assert f"within {100 * worst:.1f}% of the counts" in README
    overheads = {(c["spec_after"]["runtime_sram_kb"], c["spec_after"]["runtime_flash_kb"]) for c in (m7, m4)}
    (sram, flash), = overheads
    assert f"({sram:g} KiB and {flash:g} KiB)" in README


def test_mcu_deploy_table_matches_the_example_bundles():
    for spec in ("stm32f746", "nrf52840"):
        m = json.loads((REPO / "benchmarks" / "example_bundle" / spec / "manifest.json").read_text())
        fw, budgets = m["firmware"], m["memory"]["budgets"]
        flash, ram, ins, estimate, model = _row(f"`{spec}`" + (" ($10 class)" if spec == "nrf52840" else ""), 6)[1:]
        assert flash == f"{fw['flash']['bytes'] / 1024:.1f} of {budgets['flash_kb']:g}"
        assert ram == f"{fw['ram']['bytes'] / 1024:.1f} of {budgets['peak_sram_kb']:g}"
        assert ins == f"{fw['instructions']['per_inference'] / 1e6:.2f}"
        assert estimate == f"{fw['instructions']['estimated_ms']:.1f} ms"
        assert model == f"{m['latency_ms']['predicted']:.1f} ms"
        assert m["verification"]["passed"] and m["accuracy"]["images"] == 2000
