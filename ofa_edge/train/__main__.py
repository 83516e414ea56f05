"""Entry point for ``torchrun --nproc_per_node=N -m ofa_edge.train --recipe R --out DIR``."""
from __future__ import annotations

import argparse
import sys

from ofa_edge.errors import OfaEdgeError


def run(recipe_path: str, out: str | None, resume: str | None, progress: bool = True) -> dict:
    from ofa_edge.train import distributed as D
    from ofa_edge.train.engine import Trainer
    from ofa_edge.train.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    dist = D.init_from_env()
    try:
        trainer = Trainer(recipe, resume or out, resume=resume is not None, progress=progress, dist=dist)
        return trainer.run()
    finally:
        D.shutdown(dist)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ofa_edge.train")
    p.add_argument("--recipe", required=True)
    p.add_argument("--out")
    p.add_argument("--resume", metavar="RUN")
    args = p.parse_args(argv)
    if not args.out and not args.resume:
        p.error("give --out DIR (a new run) or --resume DIR")
    try:
        run(args.recipe, args.out, args.resume)
    except OfaEdgeError as exc:
        print(f"ofa-edge train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
