"""Entry point for ``torchrun --nproc_per_node=N -m ofa_edge.train --recipe R --out DIR``
(one process per GPU with ``--device cuda``; many machines with ``--nnodes`` and a rendezvous
endpoint, see README "Training on GPUs and on several machines")."""
from __future__ import annotations

import argparse
import sys

from ofa_edge.errors import OfaEdgeError


def run(recipe_path: str, out: str | None, resume: str | None, progress: bool = True,
        device: str = "auto", amp: str = "auto", data: str | None = None) -> dict:
    """Train (or resume) a recipe on ``device`` (auto/cpu/cuda), joining torchrun's group if any.
    ``data`` (an image folder, an .npz or a registered name) replaces the recipe's dataset; a
    resumed run keeps the dataset it started with unless ``data`` is given."""
    from ofa_edge.train import distributed as D
    from ofa_edge.train.device import resolve_device
    from ofa_edge.train.engine import Trainer
    from ofa_edge.train.recipe import load_recipe

    recipe = with_dataset(load_recipe(recipe_path), data, resume)
    dist = D.init_from_env(resolve_device(device))
    try:
        trainer = Trainer(recipe, resume or out, resume=resume is not None, progress=progress, dist=dist,
                          device=dist.device, amp=amp)
        return trainer.run()
    finally:
        D.shutdown(dist)


def with_dataset(recipe, data: str | None, resume: str | None):
    """The recipe with ``--data`` as its dataset (an absolute path for files and folders); when
    resuming without ``--data``, with the dataset the run started with."""
    import json
    from pathlib import Path

    if data is None and resume and (Path(resume) / "recipe.json").is_file():
        data = json.loads((Path(resume) / "recipe.json").read_text()).get("dataset")
    if data is None:
        return recipe
    path = Path(data).expanduser()
    return recipe.model_copy(update={"dataset": str(path.resolve()) if path.exists() else data})


def add_data_flag(p: argparse.ArgumentParser) -> None:
    """--data, shared with ``ofa-edge train``."""
    p.add_argument("--data", metavar="PATH",
                   help="your images instead of the recipe's dataset: a folder of class folders (or "
                        "train/ val/ test/ of class folders), an .npz (x, y), or fashion-mnist")


def add_device_flags(p: argparse.ArgumentParser) -> None:
    """--device and --amp, shared with ``ofa-edge train`` (no torch import: ``--help`` stays fast)."""
    p.add_argument("--device", default="auto",
                   help="auto | cpu | cuda | cuda:N (auto: CUDA when available; under torchrun each rank "
                        "takes GPU LOCAL_RANK)")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="autocast of the training forward: auto = bf16 on CUDA, off (fp32) on the CPU; "
                        "fp16 adds a loss scaler. Eval and BN recalibration stay fp32")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ofa_edge.train")
    p.add_argument("--recipe", required=True)
    p.add_argument("--out")
    p.add_argument("--resume", metavar="RUN")
    add_device_flags(p)
    add_data_flag(p)
    args = p.parse_args(argv)
    if not args.out and not args.resume:
        p.error("give --out DIR (a new run) or --resume DIR")
    try:
        run(args.recipe, args.out, args.resume, device=args.device, amp=args.amp, data=args.data)
    except OfaEdgeError as exc:
        print(f"ofa-edge train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
