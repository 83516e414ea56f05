"""Training comparisons, run at full scale once (results committed; ``ofa-edge report`` reuses
them unless ``--full``):

1. for three archs (small, middle, large: one kernel, expand and depth in every block), the
   subnet taken from a supernet without retraining against the same arch trained alone from
   scratch for 17 epochs (``recipes/scratch-*.yaml``): test top-1 (BN recalibrated) and
   CPU-seconds, side by side. The subnets come from two supernets: the sandwich run of the same
   17 epochs (run folder ``fmnist-sandwich-17``, like for like) and the shipped one. The large
   arch is also trained alone for 34 epochs (``recipes/scratch-large-34.yaml``), as a longer
   baseline (``scratch_long``; not counted as "one separate training" by the carbon ledger);
2. progressive shrinking (``recipes/fmnist-small.yaml``, run folder ``fmnist-ps``) against the
   sandwich rule (``recipes/fmnist-sandwich.yaml``, 12 epochs, ``fmnist-sandwich``) under the same
   wall-time budget: largest, smallest and 20 random subnets on the test split; beside them, the
   17-epoch sandwich run and the shipped supernet (``recipes/fmnist-shipped.yaml``).

    python benchmarks/bench_training.py            # evaluate the runs in --runs (train them with --train)
    python benchmarks/bench_training.py --train    # train what is missing first (hours on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import common
from common import write_results

REPO = Path(__file__).resolve().parents[1]
SCRATCH = {"small": (3, 3, 2), "middle": (5, 4, 3), "large": (7, 6, 4)}


def _train(recipe: Path, out: Path, processes: int) -> None:
    if (out / "run.json").is_file():
        return
    resume = ["--resume", str(out)] if (out / "checkpoint" / "state.json").is_file() else ["--out", str(out)]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "ofa_edge.train", "--recipe", str(recipe), *resume]
    else:
        cmd = [sys.executable, "-m", "ofa_edge.cli", "train", "--recipe", str(recipe), *resume]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _eval(supernet: str, archs: list[str], images: int | None) -> dict:
    cmd = [sys.executable, "-m", "ofa_edge.cli", "eval", "--supernet", supernet, "--split", "test", "--json"]
    for a in archs:
        cmd += ["--arch", a]
    if images:
        cmd += ["--images", str(images)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _run_ledger(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["ledger"]


def _run_epochs(run: Path) -> int:
    return sum(p["epochs"] for p in json.loads((run / "recipe.json").read_text())["phases"])


def _scratch_row(name: str, run: Path, arch: str, supernets: dict[str, str], images: int | None) -> dict:
    """One arch trained alone (``run``) against the same arch taken from each supernet."""
    row = {"name": name, "arch": arch, "epochs": _run_epochs(run),
           "scratch_top1": _eval(str(run), [arch], images)["archs"][0]["top1"], "scratch_ledger": _run_ledger(run)}
    for key, supernet in supernets.items():
        row[key] = _eval(supernet, [arch], images)["archs"][0]["top1"]
    print(f"{name}: alone for {row['epochs']} epochs {row['scratch_top1']:.2%}, "
          + ", ".join(f"{k} {row[k]:.2%}" for k in supernets))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(REPO / "runs"))
    ap.add_argument("--supernet", default="default", help="the shipped supernet")
    ap.add_argument("--train", action="store_true", help="train the missing runs first")
    ap.add_argument("--images", type=int, default=None, help="test images (default: all 10,000)")
    ap.add_argument("--only", choices=("scratch", "sandwich"), default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from ofa_edge.space.checkpoint import checkpoint_file, read_header, supernet_dir
    from ofa_edge.space.searchspace import SearchSpace

    runs, t0 = Path(args.runs), time.time()
    space = SearchSpace(read_header(checkpoint_file(args.supernet))["space_id"])
    figures: dict = {"scratch": [], "scratch_long": [], "sandwich": None}
    previous = Path(common.RESULTS) / "training.json"
    if args.only and previous.is_file():  # keep the part this run does not redo
        figures.update({k: v for k, v in json.loads(previous.read_text())["figures"].items()
                        if k in ("scratch", "scratch_long", "sandwich")})
        if args.only == "scratch":
            figures["scratch"], figures["scratch_long"] = [], []
        else:
            figures["sandwich"] = None
    sw17_run = runs / "fmnist-sandwich-17"  # the sandwich rule for the 17 epochs of the runs alone
    if args.train:  # both parts use it
        _train(REPO / "recipes" / "fmnist-sandwich-17.yaml", sw17_run, 2)
    supernets = {"ofa_top1": args.supernet}
    if (sw17_run / "run.json").is_file():
        supernets["ofa17_top1"] = str(sw17_run)
    if args.only in (None, "scratch"):
        for name, (k, e, d) in SCRATCH.items():
            run = runs / f"scratch-{name}"
            if args.train:
                _train(REPO / "recipes" / f"scratch-{name}.yaml", run, 2 if name == "large" else 1)
            if not (run / "run.json").is_file():
                print(f"skip scratch-{name}: no finished run in {run}")
                continue
            figures["scratch"].append(_scratch_row(name, run, str(space.uniform(k, e, d, 28)), supernets, args.images))
        long_run = runs / "scratch-large-34"
        if args.train:
            _train(REPO / "recipes" / "scratch-large-34.yaml", long_run, 2)
        if (long_run / "run.json").is_file():
            figures["scratch_long"] = [_scratch_row("large", long_run, str(space.uniform(*SCRATCH["large"], 28)),
                                                    supernets, args.images)]
    if args.only in (None, "sandwich"):
        ps_run, sw_run = runs / "fmnist-ps", runs / "fmnist-sandwich"
        if args.train:
            _train(REPO / "recipes" / "fmnist-small.yaml", ps_run, 2)
            _train(REPO / "recipes" / "fmnist-sandwich.yaml", sw_run, 2)
        if (ps_run / "run.json").is_file() and (sw_run / "run.json").is_file():
            specs = ["max", "min", "random:20"]
            figures["sandwich"] = {"progressive_shrinking": _eval(str(ps_run), specs, args.images),
                                   "sandwich": _eval(str(sw_run), specs, args.images),
                                   "progressive_shrinking_ledger": _run_ledger(ps_run),
                                   "sandwich_ledger": _run_ledger(sw_run)}
            if (sw17_run / "run.json").is_file():
                figures["sandwich"].update(sandwich17=_eval(str(sw17_run), specs, args.images),
                                           sandwich17_ledger=_run_ledger(sw17_run))
            report = supernet_dir(args.supernet) / "eval_report.json"
            if report.is_file():  # a shipped supernet: show it beside the two
                shipped = json.loads(report.read_text())
                figures["sandwich"].update(shipped=_eval(args.supernet, specs, args.images),
                                           shipped_ledger=shipped["ledger"], shipped_recipe=shipped["recipe"]["name"])
        else:
            print(f"skip the sandwich comparison: no finished runs in {ps_run} and {sw_run}")
    figures["wall_s"] = time.time() - t0
    path = write_results("training", figures, {"runs": str(runs), "supernet": args.supernet, "images": args.images})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
