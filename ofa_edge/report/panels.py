"""The dashboard's panels: one matplotlib figure and one small table per panel, each built from
a results JSON alone (so the dashboard can be rebuilt offline from committed results)."""
from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"ofa": "#1f77b4", "uniform": "#ff7f0e", "scratch": "#2ca02c", "random": "#7f7f7f"}


@dataclass
class Panel:
    key: str
    title: str
    figure: object
    caption: str
    command: str
    table: list[list[str]] = field(default_factory=list)  # the first row is the header


def _fig(w: float = 6.4, h: float = 4.2):
    fig, ax = plt.subplots(figsize=(w, h), dpi=110)
    ax.grid(alpha=0.3)
    return fig, ax


def fronts(results: list[dict]) -> Panel:
    """Accuracy vs measured latency, per device: OFA-searched, uniform, from scratch."""
    fig, axes = plt.subplots(1, len(results), figsize=(6.4 * len(results), 4.4), dpi=110, squeeze=False)
    table = [["device", "latency ratio at equal accuracy (max / median)", "accuracy gain at equal latency (max / median)"]]
    for ax, res in zip(axes[0], results):
        f = res["figures"]
        ax.grid(alpha=0.3)
        for name, marker in (("uniform", "s"), ("scratch", "^"), ("ofa", "o")):
            rows = [r for r in f["rows"] if r["set"] == name]
            if rows:
                ax.scatter([r["latency_ms"] for r in rows], [100 * r["top1_device"] for r in rows], marker=marker,
                           color=COLORS[name], label={"ofa": "OFA-searched", "uniform": "uniform (same supernet)",
                                                      "scratch": "trained from scratch"}[name], zorder=3)
        for key, name in (("ofa_front", "ofa"), ("uniform_front", "uniform")):
            pts = f["headline"][key]
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], color=COLORS[name], alpha=0.6)
        h = f["headline"]
        ratio, gain = h["latency_ratio_at_equal_accuracy"], h["accuracy_gain_at_equal_latency"]
        ax.set_xscale("log")
        ax.set_title(f"{f['spec']}: accuracy vs measured latency")
        ax.set_xlabel(f"latency on the device (ms, {f.get('statistic', 'p10')})")
        ax.set_ylabel("top-1 on the device, test split (%)")
        ax.legend(fontsize=8, loc="lower right")
        table.append([f["spec"], _pair(ratio, "{:.2f}x"), _pair(gain, "{:+.2%}")])
    fig.tight_layout()
    return Panel("fronts", "Accuracy vs latency: OFA-searched vs uniform vs from scratch", fig,
                 "Each point is one subnet converted to the device's format, evaluated on the device on the "
                 "untouched test split and timed there in one interleaved run. Headline against the uniform "
                 "front (OFA paper: 1.5-2.6x, up to +4%).", "python benchmarks/bench_fronts.py", table)


def _pair(d: dict, fmt: str) -> str:
    if d.get("max") is None:
        return "n/a (fronts do not overlap)"
    return f"{fmt.format(d['max'])} / {fmt.format(d['median'])} (n={d['n']})"


def latency(result: dict) -> Panel:
    devices = result["figures"]["devices"]
    fig, axes = plt.subplots(1, len(devices), figsize=(5.2 * len(devices), 4.4), dpi=110, squeeze=False)
    table = [["device", "held-out subnets", "within ±10%", "within ±5%", "RMSPE"]]
    for ax, d in zip(axes[0], devices):
        pred, meas = np.array(d["predicted_ms"]), np.array(d["measured_ms"])
        lim = [0, 1.08 * max(pred.max(), meas.max())]
        ax.fill_between(lim, [v * 0.9 for v in lim], [v * 1.1 for v in lim], color="#1f77b4", alpha=0.12,
                        label="±10%")
        ax.plot(lim, lim, color="k", lw=0.8)
        inside = np.abs(pred / meas - 1) <= 0.10
        ax.scatter(meas[inside], pred[inside], s=14, color="#1f77b4", label="inside")
        ax.scatter(meas[~inside], pred[~inside], s=14, color="#d62728", label="outside")
        ax.set_xlim(lim), ax.set_ylim(lim)
        ax.grid(alpha=0.3)
        ax.set_title(f"{d['spec']}: {inside.mean():.0%} within ±10%")
        ax.set_xlabel(f"measured (ms, {d.get('statistic', 'p10')})"), ax.set_ylabel("predicted (ms)")
        ax.legend(fontsize=8, loc="upper left")
        rel = pred / meas - 1
        table.append([d["spec"], str(len(pred)), f"{inside.mean():.0%}", f"{(np.abs(rel) <= 0.05).mean():.0%}",
                      f"{np.sqrt(np.mean(rel ** 2)):.1%}"])
    for d in result["figures"].get("summaries", []):
        table.append([d["spec"], str(d["n"]), f"{d['within_10pct']:.0%}", f"{d['within_5pct']:.0%}",
                      f"{d['rmspe']:.1%}"])
    fig.tight_layout()
    return Panel("latency", "Predicted vs measured latency", fig,
                 "Held-out whole subnets (chosen by arch hash before measuring), timed on the device, against "
                 "the calibrated block-table predictor. The last rows are benchmarks/bench_latency_predictor.py: "
                 "the old method (one pass, p10) against the new one (passes, drift monitor, median), on a quiet "
                 "machine and under a competing load on the other core.",
                 "ofa-edge bench --spec <spec>; python benchmarks/bench_latency_predictor.py", table)


def accuracy(result: dict) -> Panel:
    bundles = result["figures"]["bundles"]
    fig, ax = _fig(max(6.4, 2.2 * len(bundles)), 4.2)
    width, x = 0.26, np.arange(len(bundles))
    for i, (key, label) in enumerate((("host_fp32", "host fp32 (torch)"), ("host_int8", "host int8"),
                                      ("device", "on the device"))):
        vals = [100 * (b["accuracy"].get(key) or 0) for b in bundles]
        ax.bar(x + (i - 1) * width, vals, width, label=label)
    ax.set_xticks(x, [b["spec"] for b in bundles])
    lo = min(100 * min(b["accuracy"]["device"], b["accuracy"]["host_fp32"]) for b in bundles)
    ax.set_ylim(max(0, lo - 3), 100 * max(b["accuracy"]["host_fp32"] for b in bundles) + 1.5)
    ax.set_ylabel("top-1, test split (%)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("fp32 vs int8 vs on-device accuracy")
    fig.tight_layout()
    table = [["bundle", "arch", "fp32", "int8 (host)", "device", "agreement", "verification"]]
    for b in bundles:
        a = b["accuracy"]
        table.append([b["spec"], b["arch"][:38] + "...", f"{a['host_fp32']:.2%}", f"{a['host_int8']:.2%}",
                      f"{a['device']:.2%}", f"{b['agreement']:.2%}", "passed" if b["passed"] else "FAILED"])
    return Panel("accuracy", "Deployed subnets: fp32, int8 and on-device accuracy", fig,
                 "From each bundle's manifest (deploy's own checks: int8 drop <= 2 points, agreement >= 99.5%).",
                 "ofa-edge deploy --spec <spec>", table)


def search(result: dict) -> Panel:
    f = result["figures"]
    fig, ax = _fig()
    for i, run in enumerate(f["runs"]):
        for key, name in (("evolution_best_at", "ofa"), ("random_best_at", "random")):
            pts = sorted((int(n), v) for n, v in run[key].items())
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=3, color=COLORS[name],
                    alpha=0.8, label=("evolution" if name == "ofa" else "random search") if i == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("archs scored"), ax.set_ylabel("best predicted top-1 within the budget (%)")
    ax.set_title(f"search convergence, latency budget {f['latency_budget_ms']:.3f} ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    table = [["seed", "evolution best", "random best (same queries)", "wall s"]]
    for run in f["runs"]:
        last = max(run["random_best_at"], key=int)
        table.append([str(run["seed"]), f"{run['best_top1']:.2%}", f"{run['random_best_at'][last]:.2%}",
                      f"{run['wall_s']:.1f}"])
    return Panel("search", "Search convergence vs random search", fig,
                 "Evolution (population 100, 500 generations) against random sampling with the same predictor "
                 "and budget, per seed.", "python benchmarks/bench_search.py", table)


def noise(result: dict) -> Panel:
    f = result["figures"]
    covs = 100 * np.array(f["block_cov"])
    fig, ax = _fig()
    ax.hist(covs, bins=30, color="#1f77b4", alpha=0.8)
    med = float(np.median(covs))
    ax.axvline(med, color="k", lw=1, label=f"median {med:.1f}%")
    ax.axvline(100 * f["goal"], color="#d62728", ls="--", lw=1, label=f"goal {100 * f['goal']:.0f}%")
    ax.set_xlabel("CoV of per-repeat means (%)"), ax.set_ylabel("blocks")
    ax.set_title(f"{f['spec']}: harness noise, {len(covs)} blocks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    table = [["device", "blocks", "median CoV", "p90 CoV", "goal"],
             [f["spec"], str(len(covs)), f"{med:.1f}%", f"{np.percentile(covs, 90):.1f}%", f"{100 * f['goal']:.0f}%"]]
    return Panel("noise", "Harness noise per block", fig,
                 "Coefficient of variation over repeats of each block's timing, from the latest bench.",
                 "ofa-edge bench --spec <spec>", table)


def carbon(result: dict, imagenet: dict | None = None) -> Panel:
    """The tiny space's N scenarios; with ``imagenet`` (bench_uniform's ledger), the ImageNet case
    too: one published supernet, per device a bench and a search."""
    f = result["figures"]
    s = f["scenarios"]
    fig, ax = _fig()
    wh = lambda v: [x / 3600 for x in v]  # noqa: E731
    ax.plot(s["n"], wh(s["ofa"]["energy_j"]), color=COLORS["ofa"], label="ofa-edge: 1 training + N specialisations")
    ax.plot(s["n"], wh(s["separate"]["energy_j"]), color=COLORS["scratch"], label="N separate trainings")
    ax.set_xlabel("deployment scenarios N"), ax.set_ylabel("energy (Wh)")
    ax2 = ax.twinx()
    g = f["grid_g_per_kwh"]
    lo, hi = ax.get_ylim()
    ax2.set_ylim(lo / 1000 * g, hi / 1000 * g)
    ax2.set_ylabel(f"gCO2e at {g:g} g/kWh")
    ax.set_title(f"cost of N deployments: {s['ratio_at_max']:.1f}x less at N={s['n'][-1]}")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    table = [["item", "CPU-s", "energy (Wh)", "gCO2e", "source"]]
    for name, key, src in (("once: train + predictor fit", "once", f["sources"]["once"]),
                           ("per device: bench + search + deploy", "per_device", f["sources"]["per_device"]),
                           ("one separate training", "per_training", f["sources"]["per_training"])):
        v = s[key]
        table.append([name, f"{v['cpu_s']:.0f}", f"{v['energy_j'] / 3600:.2f}", f"{v['co2e_g']:.2f}", src])
    table.append([f"N = {s['n'][-1]}: ofa-edge vs separate", f"{s['ofa']['cpu_s'][-1]:.0f} vs {s['separate']['cpu_s'][-1]:.0f}",
                  f"{s['ofa']['energy_j'][-1] / 3600:.1f} vs {s['separate']['energy_j'][-1] / 3600:.1f}",
                  f"{s['ofa']['co2e_g'][-1]:.1f} vs {s['separate']['co2e_g'][-1]:.1f}",
                  f"crossover at N = {s['crossover_n']}"])
    if imagenet:
        g_per_wh = f["grid_g_per_kwh"] / 1000
        for device, row in imagenet["per_device"].items():
            table.append([f"ImageNet w1.2, per device: {device} (bench + search)", f"{row['cpu_s']:.0f}",
                          f"{row['energy_wh']:.3f}", f"{row['energy_wh'] * g_per_wh:.3f}",
                          f"bench {row['bench_cpu_s']:.0f} CPU-s + search {row['search_cpu_s']:.1f} CPU-s"])
        table.append([f"ImageNet w1.2, N = {imagenet['n']} devices", f"{imagenet['n_devices_cpu_s']:.0f}",
                      f"{imagenet['n_devices_energy_wh']:.2f}", f"{imagenet['n_devices_energy_wh'] * g_per_wh:.2f}",
                      imagenet["supernet_training"]])
    return Panel("carbon", "Carbon and energy ledger", fig,
                 f"Energy from {f['energy_source']}; carbon at {g:g} gCO2e/kWh (set with --grid-g-per-kwh).",
                 "ofa-edge report", table)


def training(result: dict) -> Panel:
    """The same archs from the supernet (no retraining) vs trained alone from scratch; and
    progressive shrinking vs the sandwich rule."""
    f = result["figures"]
    rows = f["scratch"]
    sw = f.get("sandwich")
    fig, axes = plt.subplots(1, 2 if sw else 1, figsize=(11 if sw else 6.4, 4.2), dpi=110, squeeze=False)
    ax = axes[0][0]
    groups = rows + f.get("scratch_long", [])
    labels = [f"{r['name']}\n(alone {r['epochs']} ep)" for r in groups]
    bars = [("ofa_top1", "from the shipped supernet", COLORS["ofa"]),
            ("ofa17_top1", "from the 17-epoch supernet", "#9ecae1"),
            ("scratch_top1", "trained alone", COLORS["scratch"])]
    bars = [b for b in bars if all(b[0] in r for r in groups)]
    x, width = np.arange(len(groups)), 0.8 / len(bars)
    for i, (key, label, color) in enumerate(bars):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, [100 * r[key] for r in groups], width, label=label, color=color)
    ax.set_xticks(x, labels, fontsize=8)
    values = [100 * r[key] for r in groups for key, _, _ in bars]
    ax.set_ylim(min(values) - 2, max(values) + 2.5)
    ax.set_ylabel("top-1, test split (%)"), ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.set_title("same arch: supernet (no retraining) vs from scratch")
    table = [["arch", "epochs alone"] + [label for _, label, _ in bars] + ["CPU-s alone"]]
    for r in groups:
        table.append([r["name"], str(r["epochs"])] + [f"{r[key]:.2%}" for key, _, _ in bars]
                     + [f"{r['scratch_ledger']['cpu_s']:.0f}"])
    if sw:
        ax = axes[0][1]
        columns = [("progressive shrinking", sw["progressive_shrinking"]), ("sandwich, 12 epochs", sw["sandwich"])]
        if sw.get("sandwich17"):
            columns.append(("sandwich, 17 epochs", sw["sandwich17"]))
        if sw.get("shipped"):
            columns.append((f"shipped ({sw.get('shipped_recipe', 'default')})", sw["shipped"]))
        for k, (name, res) in enumerate(columns):
            accs = [100 * a["top1"] for a in res["archs"]]
            ax.scatter([k] * (len(accs) - 2), accs[2:], color="#999", s=12)
            ax.scatter([k], [accs[0]], marker="^", color=COLORS["ofa"], s=50, label="largest" if k == 0 else None)
            ax.scatter([k], [accs[1]], marker="v", color=COLORS["uniform"], s=50, label="smallest" if k == 0 else None)
            table.append([name, f"largest {accs[0]:.2f}%", f"smallest {accs[1]:.2f}%",
                          f"median of 20 random {np.median(accs[2:]):.2f}%"])
        ax.set_xticks(range(len(columns)), [name.replace(" (", "\n(") for name, _ in columns], fontsize=8)
        ax.set_ylabel("top-1, test split (%)"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
        ax.set_title("progressive shrinking vs sandwich")
    fig.tight_layout()
    return Panel("training", "Training comparisons", fig,
                 "Each arch uses one kernel, expand and depth in every block; the from-scratch runs use the "
                 "recipes' optimiser, schedule and augmentation, for the epochs shown.",
                 "python benchmarks/bench_training.py --train", table)


def uniform_imagenet(result: dict) -> Panel:
    """Searched vs uniform on the ImageNet space, per device, accuracy from OFA's published predictor."""
    f = result["figures"]
    devices = f["devices"]
    fig, axes = plt.subplots(1, len(devices), figsize=(6.4 * len(devices), 4.4), dpi=110, squeeze=False)
    table = [["device", "resolutions", "latency ratio at equal accuracy (min-max, median)",
              "accuracy gain at equal latency (min-max, median)", "bench CPU-s", "CPU-s per search"]]
    for ax, d in zip(axes[0], devices):
        ax.grid(alpha=0.3)
        ax.scatter([p["latency_ms"] for p in d["uniform"]], [100 * p["top1"] for p in d["uniform"]], s=12,
                   marker="s", color=COLORS["uniform"], alpha=0.35, label="uniform (one k, e, d everywhere)")
        for key, name, label in (("uniform_front", "uniform", "uniform front"), ("searched_front", "ofa", "ofa-edge search")):
            pts = d[key]
            ax.plot([p["latency_ms"] for p in pts], [100 * p["top1"] for p in pts], marker="o", ms=3,
                    color=COLORS[name], label=label)
        r, g = d["latency_ratio"], d["accuracy_gain"]
        ax.set_xscale("log")
        ax.set_title(f"{d['device']}: {r['median']:.2f}x faster at equal accuracy (median)")
        ax.set_xlabel("latency (ms)" + (", published Note10 tables" if d["device"] == "note10" else ", this CPU, predicted"))
        ax.set_ylabel(f"{f['accuracy_axis']} (%)")
        ax.legend(fontsize=8, loc="lower right")
        table.append([d["device"], ", ".join(str(x) for x in d["resolutions"]),
                      f"{r['min']:.2f}-{r['max']:.2f}x, {r['median']:.2f}x",
                      f"{g['min']:+.2%} to {g['max']:+.2%}, {g['median']:+.2%}",
                      f"{d['bench_cost']['cpu_s']:.0f}", f"{d['search_cpu_s']['median']:.1f}"])
    fig.tight_layout()
    lo, hi = f["paper_latency_ratio"]
    return Panel("uniform", "ImageNet space: searched vs uniformly scaled subnets", fig,
                 f"Accuracy is {f['accuracy_axis']}; latency from OFA's Note10 tables and from this CPU's "
                 f"measured predictor (w1.2 bench, TFLite int8, one core). The paper reports {lo}-{hi}x "
                 "against MobileNetV3 at equal accuracy. One published supernet, each device: the bench and "
                 "the searches in the table, no training.", "python benchmarks/bench_uniform.py", table)


def search_reference(result: dict) -> Panel:
    """ofa-edge's search against the reference's EvolutionFinder on one objective."""
    f = result["figures"]
    rows = f["budgets"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    budgets = [r["budget_ms"] for r in rows]
    for who, name, dx in (("reference", "reference (EvolutionFinder)", -0.6), ("ofa_edge", "ofa-edge", 0.6)):
        color = COLORS["random"] if who == "reference" else COLORS["ofa"]
        for r in rows:
            ax.scatter([r["budget_ms"] + dx] * len(r["runs"]), [100 * run[who]["top1"] for run in r["runs"]],
                       color=color, s=10, alpha=0.5)
        ax.plot([b + dx for b in budgets], [100 * r["median"][who]["top1"] for r in rows], marker="o", color=color,
                label=f"{name}, median of {len(rows[0]['runs'])} seeds")
        ax2.bar([b + dx for b in budgets], [r["median"][who]["wall_s"] for r in rows], width=1.2, color=color, label=name)
    ax.grid(alpha=0.3), ax2.grid(alpha=0.3, axis="y")
    ax.set_xlabel("latency budget (ms, Note10 tables)"), ax.set_ylabel(f"{f['accuracy_axis']} (%)")
    ax2.set_xlabel("latency budget (ms)"), ax2.set_ylabel("wall time per search (s, one core)")
    ax.legend(fontsize=8, loc="lower right"), ax2.legend(fontsize=8)
    ax.set_title("best predicted top-1 within the budget"), ax2.set_title("search time")
    fig.tight_layout()
    table = [["budget (ms)", "ofa-edge top-1", "reference top-1", "gain (points)", "wall ratio"]]
    for r in rows:
        m = r["median"]
        table.append([f"{r['budget_ms']:g}", f"{m['ofa_edge']['top1']:.2%}", f"{m['reference']['top1']:.2%}",
                      f"{100 * r['top1_gain']:+.2f}", f"{r['wall_ratio']:.2f}"])
    return Panel("search_reference", "Search against the reference's EvolutionFinder", fig,
                 f"Both on OFA's published predictor and Note10 tables (w1.2, 160-224 px), population 100, 500 "
                 f"generations, run side by side. Goal: at least the reference's top-1 at every budget, in at most "
                 f"{f['wall_ratio_goal']:g} of its time.", "python benchmarks/bench_search_reference.py", table)


def firmware(result: dict) -> Panel:
    """The MCU cost model against Cortex-M firmware: instructions and arena, before and after
    the calibration (benchmarks/calibrate_firmware.py)."""
    f = result["figures"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    markers = {"cortex-m7": "o", "cortex-m4": "s"}
    table = [["core", "subnets", "instructions: cost model before (median ratio)", "after (max error)",
              "arena model before (max over / under)", "after, with margin (max over / under)"]]
    for core, rows in f["rows"].items():
        fit = f["fit"][core]
        counted = np.array([r["instructions"] for r in rows]) / 1e6
        before = np.array([r["cost_model_cycles"] for r in rows]) / 1e6
        rates = fit["instructions"]["per_feature"]
        after = np.array([sum(r[k] * v for k, v in rates.items()) for r in rows]) / 1e6
        m = markers.get(core, "^")
        ax.scatter(counted, before, marker=m, facecolors="none", edgecolors=COLORS["random"],
                   label=f"{core}: cycles-per-MAC model before")
        ax.scatter(counted, after, marker=m, color=COLORS["ofa"], label=f"{core}: recalibrated")
        arena = np.array([r["arena_bytes"] for r in rows]) / 1024
        a = fit["arena"]
        arena_after = np.array([r["head_estimate_bytes"] + a["tail_per_channel"] * r["channels"] + a["tail_per_layer"]
                                * r["layers"] + a["tail_fixed"] + a["margin_bytes"] for r in rows]) / 1024
        ax2.scatter(arena, np.array([r["arena_before_model"] for r in rows]) / 1024, marker=m, facecolors="none",
                    edgecolors=COLORS["random"], label=f"{core}: model before (x86-64 host fit)")
        ax2.scatter(arena, arena_after, marker=m, color=COLORS["ofa"], label=f"{core}: recalibrated + margin")
        eb, ea = a["error_before"], a["error_after"]
        table.append([core, str(len(rows)), f"{fit['instructions']['cost_model_before']['median_ratio']:.2f}x",
                      f"{fit['instructions']['error_after']['max_abs']:.1%}",
                      f"+{eb['max_over']:.1%} / -{eb['max_under']:.1%}", f"+{ea['max_over']:.1%} / -{ea['max_under']:.1%}"])
    for axis, label in ((ax, "M instructions per inference"), (ax2, "arena (KiB)")):
        lo, hi = axis.get_xlim()
        axis.plot([0, hi], [0, hi], color="k", lw=0.8, alpha=0.5)
        axis.grid(alpha=0.3)
        axis.set_xlabel(f"counted on the firmware: {label}"), axis.set_ylabel(f"predicted: {label}")
        axis.legend(fontsize=7)
    ax.set_title("instructions (QEMU -icount): the latency proxy at CPI 1"), ax2.set_title("TFLite Micro arena")
    fig.tight_layout()
    return Panel("firmware", "MCU cost model against the Cortex-M firmware", fig,
                 "Each point is one subnet's firmware (TFLite Micro + CMSIS-NN) built and run under QEMU. "
                 "Instructions are counted, not cycles: a latency is an estimate at a stated CPI until a board is "
                 "measured.", "python benchmarks/calibrate_firmware.py", table)
