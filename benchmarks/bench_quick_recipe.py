"""recipes/quick.yaml on a folder of real images: training time and test top-1.

Builds a 10-class image folder from Fashion-MNIST (``train/`` 5,000 images from its train part,
``test/`` from its t10k part; PNG, JPEG, BMP and WEBP, gray and RGB, 28-32 px), then runs the
commands a user runs (``ofa-edge train --recipe recipes/quick.yaml --data FOLDER``, then
``ofa-edge eval --split test`` on the largest and smallest subnets) and writes
``benchmarks/results/quick_recipe.json`` (or ``$OFA_EDGE_RESULTS``). The goal: at most 10 minutes of training on this 2-core
machine, and the largest subnet at least 85% test top-1.

    python benchmarks/bench_quick_recipe.py [--train-images 5000] [--test-images 2000] [--tiny]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
from common import write_results  # noqa: E402
CLASSES = ["ankle boot", "bag", "coat", "dress", "pullover", "sandal", "shirt", "sneaker", "trouser", "tshirt"]


def build_folder(root: Path, train_per_class: int, test_per_class: int) -> None:
    from test_own_data import write_folder

    from ofa_edge.data import load_fashion_mnist

    fm = load_fashion_mnist()
    write_folder(root / "train", fm.train_x, fm.train_y, CLASSES, train_per_class)
    write_folder(root / "test", fm.test_x, fm.test_y, CLASSES, test_per_class)


def ofa_edge(*args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ofa_edge.cli", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed: {result.stderr[-1500:]}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--recipe", default=str(REPO / "recipes" / "quick.yaml"))
    p.add_argument("--tiny", action="store_true", help="200 images and a 1-epoch recipe (for tests)")
    args = p.parse_args(argv)
    recipe = Path(args.recipe)
    with tempfile.TemporaryDirectory(prefix="ofa-edge-quick-") as tmp:
        work = Path(tmp)
        if args.tiny:
            import yaml

            args.train_images, args.test_images = 200, 100
            data = yaml.safe_load(recipe.read_text())
            data["phases"][0]["epochs"] = 1
            data.update(eval_images=50, bn_calibration_images=100)
            recipe = work / "quick-tiny.yaml"
            recipe.write_text(yaml.safe_dump(data))
        folder = work / "fmnist-folder"
        build_folder(folder, args.train_images // len(CLASSES), args.test_images // len(CLASSES))
        env = {**os.environ, "OFA_EDGE_DATA_CACHE": str(work / "cache")}
        t0 = time.time()
        ofa_edge("train", "--recipe", str(recipe), "--data", str(folder), "--out", str(work / "run"), env=env)
        train_s = time.time() - t0
        evals = json.loads(ofa_edge("eval", "--supernet", str(work / "run"), "--arch", "max", "--arch", "min",
                                    "--split", "test", "--json", env=env).stdout)
        run = json.loads((work / "run" / "run.json").read_text())
    figures = {
        "train_wall_s": round(train_s, 1), "ledger": run["ledger"], "test_images": evals["images"],
        "test_top1": {"largest": evals["archs"][0]["top1"], "smallest": evals["archs"][1]["top1"]},
        "archs": evals["archs"], "goal": {"train_wall_s_max": 600, "largest_min": 0.85},
    }
    figures["goal_met"] = train_s <= 600 and figures["test_top1"]["largest"] >= 0.85
    settings = {"recipe": str(recipe.relative_to(REPO)) if recipe.is_relative_to(REPO) else recipe.name,
                "tiny": args.tiny, "train_folder_images": args.train_images, "test_folder_images": args.test_images,
                "source": "Fashion-MNIST as PNG/JPEG/BMP/WEBP, gray and RGB, 28-32 px"}
    path = write_results("quick_recipe", figures, settings)
    print(f"quick recipe: {train_s:.0f} s of training; test top-1 largest {figures['test_top1']['largest']:.2%}, "
          f"smallest {figures['test_top1']['smallest']:.2%} on {evals['images']:,} images -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
