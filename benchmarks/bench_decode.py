"""Decoding an image folder: cold (every file decoded into the cache) and warm (the cache hit).

Builds a folder of 32-px PNGs from real Fashion-MNIST images (28 -> 32 bilinear; every fourth
tinted to RGB, so the folder decodes as 3 channels) in ``<tmp>/<class>/``, then times
``load_dataset(folder)`` with an empty cache, again (cache hit), and ``scan`` (what
``ofa-edge data info`` reads: headers only). The files were just written, so they sit in the OS
page cache in every timing (the disk is not measured).

Writes benchmarks/results/decode.json.  Run: python benchmarks/bench_decode.py [--tiny]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402

import numpy as np  # noqa: E402

GOAL_S = 60.0  # 50,000 PNGs of 32 px must decode in under a minute on a 2-core machine


def _write_chunk(job: tuple[str, int, np.ndarray, np.ndarray, int]) -> int:
    """Write images ``x`` (28x28 gray) with labels ``y`` as PNGs numbered from ``start``."""
    from PIL import Image

    from ofa_edge.data import FASHION_MNIST_CLASSES

    root, start, x, y, size = job
    for k, (img, label) in enumerate(zip(x, y)):
        i = start + k
        im = Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)
        if i % 4 == 0:  # a real RGB image: the gray pixels tinted per channel
            a = np.asarray(im, dtype=np.float32)[..., None] * np.array([1.0, 0.8, 0.6], np.float32)
            im = Image.fromarray(a.astype(np.uint8))
        folder = Path(root) / FASHION_MNIST_CLASSES[int(label)].replace("/", "-")
        im.save(folder / f"{i:06d}.png")
    return len(y)


def build(root: Path, n: int, size: int, workers: int) -> float:
    """Write ``n`` PNGs into ``root/<class>/``; returns the seconds it took."""
    from ofa_edge.data import FASHION_MNIST_CLASSES, load_fashion_mnist

    ds = load_fashion_mnist()
    x = np.concatenate([ds.train_x, ds.test_x])[..., 0][:n]
    y = np.concatenate([ds.train_y, ds.test_y])[:n]
    for name in FASHION_MNIST_CLASSES:
        (root / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
    step = 1000
    jobs = [(str(root), s, x[s:s + step], y[s:s + step], size) for s in range(0, n, step)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        written = sum(pool.map(_write_chunk, jobs))
    assert written == n
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000, help="PNGs in the folder")
    parser.add_argument("--size", type=int, default=32, help="their side in pixels")
    parser.add_argument("--tiny", action="store_true", help="500 images (the tests)")
    args = parser.parse_args()
    n = 500 if args.tiny else args.images

    from ofa_edge.data import load_dataset, scan
    from ofa_edge.data.decode import PARALLEL_MIN, worker_count

    tmp = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    try:
        root, cache = tmp / "images", tmp / "cache"
        build_s = build(root, n, args.size, worker_count())
        files_bytes = sum(p.stat().st_size for p in root.rglob("*.png"))

        start = time.perf_counter()
        cold = load_dataset(str(root), cache_dir=cache)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = load_dataset(str(root), cache_dir=cache)
        warm_s = time.perf_counter() - start
        assert np.array_equal(cold.test_x, warm.test_x) and cold.fingerprint == warm.fingerprint
        start = time.perf_counter()
        info = scan(root)
        scan_s = time.perf_counter() - start
        cache_bytes = sum(p.stat().st_size for p in cache.iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    total = len(cold.train_y) + len(cold.test_y)
    workers = worker_count() if total >= PARALLEL_MIN else 1
    figures = {
        "images": total, "train": len(cold.train_y), "test": len(cold.test_y),
        "image_shape": list(cold.image_shape), "modes": info["modes"],
        "build_s": round(build_s, 3), "cold_s": round(cold_s, 3), "warm_s": round(warm_s, 4),
        "scan_s": round(scan_s, 3), "cold_images_per_s": round(total / cold_s),
        "png_bytes": files_bytes, "cache_bytes": cache_bytes, "decode_workers": workers,
        "goal_s": GOAL_S if not args.tiny else None, "meets_goal": cold_s < GOAL_S,
    }
    import PIL

    settings = {"pillow": PIL.__version__, "images": n, "size": args.size, "tiny": args.tiny, "rgb_every": 4, "source": "Fashion-MNIST",
                "page_cache": "warm (files just written)", "cpu_affinity": len(os.sched_getaffinity(0))}
    path = write_results("decode", figures, settings)
    print(f"{total:,} PNGs of {args.size} px: cold {cold_s:.2f} s ({total / cold_s:,.0f} img/s, {workers} "
          f"worker(s)), warm {warm_s * 1000:.1f} ms, scan {scan_s:.2f} s -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
