"""A tiny ImageNet-style folder built from real images that installed packages ship (DESIGN §11):
matplotlib's sample photo of Grace Hopper (class "military uniform", n04350905), its sample
photo of a gift pack (an RGBA PNG: "packet", n03871628) and Fashion-MNIST's T-shirts (gray:
"jersey", n03595614). Each class gets seeded crops, flips and sizes of its source, saved as
JPEG with ImageNet's ``.JPEG`` suffix and non-square, ImageNet-like sizes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

WNIDS = Path(__file__).resolve().parents[1] / "ofa_edge" / "assets" / "imagenet" / "wnids.txt"
CLASSES = {"n04350905": "grace_hopper.jpg", "n03871628": "Minduka_Present_Blue_Pack.png", "n03595614": "fmnist"}


def _sources() -> dict[str, list]:
    import matplotlib
    from PIL import Image

    from conftest import FMNIST_DIR, require_fmnist
    from ofa_edge.data.idx import read_idx

    require_fmnist()
    sample = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    out = {}
    for wnid, name in CLASSES.items():
        if name == "fmnist":
            x = read_idx(FMNIST_DIR / "train-images-idx3-ubyte.gz")
            y = read_idx(FMNIST_DIR / "train-labels-idx1-ubyte.gz")
            out[wnid] = [Image.fromarray(x[i]) for i in np.flatnonzero(y == 0)[:40]]  # class 0: T-shirt/top
        else:
            with Image.open(sample / name) as im:
                out[wnid] = [im.convert("RGB")]
    return out


def make_imagenet_folder(root: Path, per_class: int, seed: int = 0) -> dict[str, list[str]]:
    """``root/<wnid>/<wnid>_<k>.JPEG`` for the three classes; returns {wnid: file names}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    made: dict[str, list[str]] = {}
    for wnid, images in _sources().items():
        (root / wnid).mkdir(parents=True, exist_ok=True)
        made[wnid] = []
        for k in range(per_class):
            im = images[k % len(images)]
            w, h = im.size
            cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            out = im.crop((left, top, left + cw, top + ch))
            if rng.random() < 0.5:
                out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            size = (int(rng.integers(160, 400)), int(rng.integers(140, 360)))
            out = out.resize(size, Image.Resampling.BICUBIC)
            name = f"{wnid}_{k}.JPEG"
            out.save(root / wnid / name, "JPEG", quality=int(rng.integers(75, 96)))
            made[wnid].append(name)
    return made


def flatten(folder: Path, flat: Path, label_of=lambda wnid: wnid) -> Path:
    """The class-folder layout as flat files plus ``labels.txt`` ('<file> <label>' lines)."""
    import shutil

    flat.mkdir(parents=True, exist_ok=True)
    lines = []
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(cls.iterdir()):
            shutil.copy2(f, flat / f.name)
            lines.append(f"{f.name} {label_of(cls.name)}")
    (flat / "labels.txt").write_text("\n".join(lines) + "\n")
    return flat / "labels.txt"
