"""Reading image files with Pillow: headers (cheap), full decodes into a shared ``.npy``, in parallel.

Work is cut into chunks of file paths; a chunk runs in a worker process (``spawn``, so a parent
holding torch threads is safe) or, for small folders, in this process. A file that cannot be
read comes back as a one-line reason, never as an exception, so the caller decides whether to
stop or to skip it.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, Callable, Sequence

import numpy as np

from ofa_edge.errors import DataError

#: Pillow modes whose images are gray (alpha, if any, is dropped).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: 16-bit (or 32-bit integer) gray modes: scaled to 8 bits by value / 257, not clipped.
WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
WORKERS_ENV = "OFA_EDGE_DATA_WORKERS"
#: Fewer files than this are read in this process (starting workers costs more).
PARALLEL_MIN = 2000
CHUNK = 500

Probe = tuple[str, int, int, str]  # (mode, width, height, format) of a readable file


def pil():
    """The PIL.Image module, or a DataError saying how to get it."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow: pip install pillow") from None
    return Image


def worker_count() -> int:
    """``$OFA_EDGE_DATA_WORKERS``, else the usable cores (at most 8)."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise DataError(f"${WORKERS_ENV} must be a whole number of processes, got {env!r}.") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def reason(e: BaseException, path: str) -> str:
    """Why ``path`` could not be read, in a few words on one line."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(e, PermissionError):
        return "permission denied (the file is not readable)"
    if isinstance(e, IsADirectoryError):
        return "a directory named like an image, not an image file"
    if isinstance(e, FileNotFoundError):
        return "the file disappeared while reading"
    if isinstance(e, Image.DecompressionBombError):
        return "too many pixels (Pillow's decompression-bomb limit)"
    if isinstance(e, UnidentifiedImageError):
        try:
            empty = os.path.getsize(path) == 0
        except OSError:
            empty = False
        return "an empty file, 0 bytes" if empty else "not an image Pillow can read: corrupt, or another format"
    text = " ".join(str(e).split())
    return f"corrupt or truncated image ({type(e).__name__}{': ' + text if text else ''})"


def tail_problem(path: str, fmt: str) -> str | None:
    """A cheap truncation check from the file's ends (no decode); None when it looks whole."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(14)
        f.seek(max(0, size - 4096))
        tail = f.read()
    if fmt == "PNG" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk at its end)"
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if fmt == "BMP" and len(head) == 14:
        declared, offset = int.from_bytes(head[2:6], "little"), int.from_bytes(head[10:14], "little")
        if size < offset or (declared and size < declared):
            return f"truncated BMP ({size} of {max(declared, offset)} bytes)"
    if fmt == "WEBP" and len(head) >= 8 and size < int.from_bytes(head[4:8], "little") + 8:
        return "truncated WEBP (shorter than its RIFF header says)"
    return None


def probe_chunk(job: tuple[Sequence[str], bool]) -> list[Probe | str]:
    """For each path, (mode, width, height, format) from its header, or why it is unreadable.

    With ``check_tail`` a file's ends are checked for truncation too (still no decode).
    """
    paths, check_tail = job
    Image = pil()
    out: list[Probe | str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            try:
                with Image.open(path) as im:
                    row = (im.mode, int(im.size[0]), int(im.size[1]), str(im.format))
                problem = tail_problem(path, row[3]) if check_tail else None
                out.append(problem or row)
            except Exception as e:  # Pillow raises many types for a bad file
                out.append(reason(e, path))
    return out


def _to_8bit(im: Any) -> Any:
    """A 16-bit gray image as 8-bit L (value / 257, rounded), not clipped at 255."""
    a = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
    return pil().fromarray(((a * 255 + 32767) // 65535).astype(np.uint8))


def center_crop_box(width: int, height: int, size: int, crop: float) -> tuple[tuple[int, int], tuple[int, ...]]:
    """The resize and crop of the reference evaluation (OFA's ImageNet val transform): the shorter
    side becomes ceil(size / crop), the longer keeps the aspect ratio (truncated), then the centre
    size x size (offsets rounded half to even). Returns ((new_w, new_h), (left, top, right, bottom))."""
    short = math.ceil(size / crop)
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return (new_w, new_h), (left, top, left + size, top + size)


def decode_image(path: str, color: str, size: int, crop: float | None = None) -> np.ndarray:
    """One file as uint8 (size, size, 1 or 3): ``color`` "L" or "RGB" (alpha dropped), bilinear.
    Without ``crop`` the image is stretched to size x size; with it, resized and centre-cropped
    as :func:`center_crop_box` says (the aspect ratio is kept)."""
    Image = pil()
    with Image.open(path) as im:
        im.load()
        if im.mode in WIDE_MODES:
            im = _to_8bit(im)
        if im.mode != color:
            im = im.convert(color)
        if crop is not None:
            new_size, box = center_crop_box(im.size[0], im.size[1], size, crop)
            if im.size != new_size:
                im = im.resize(new_size, Image.Resampling.BILINEAR)
            im = im.crop(box)
        elif im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        return np.asarray(im, dtype=np.uint8).reshape(size, size, -1)


def decode_chunk(job: tuple) -> list[tuple[int, str]]:
    """Decode (index, path) pairs into rows of the ``.npy`` at ``npy``; returns (index, reason) failures.
    ``job``: (npy, items, color, size) or (npy, items, color, size, crop)."""
    npy, items, color, size = job[:4]
    crop = job[4] if len(job) > 4 else None
    out = np.load(npy, mmap_mode="r+")
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, path in items:
            try:
                out[i] = decode_image(path, color, size, crop)
            except Exception as e:  # a bad file is reported, not raised
                failed.append((i, reason(e, path)))
    out.flush()
    del out
    return failed


class _Progress:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.bar = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.bar.start()

    def task(self, label: str, total: int) -> Callable[[int], None]:
        if self.bar is None:
            return lambda n: None
        task = self.bar.add_task(label, total=total)
        return lambda n: self.bar.advance(task, n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class Runner:
    """Runs chunked jobs, in a process pool for large folders; use as a context manager."""

    def __init__(self, n_files: int) -> None:
        workers = worker_count()
        self.workers = workers if n_files >= PARALLEL_MIN and workers > 1 else 1
        self.pool: Executor | None = None
        self.progress: _Progress | None = None  # started by the first map: a cache hit shows nothing

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map(self, fn: Callable[[Any], list], jobs: list[Any], sizes: list[int], label: str) -> list[list]:
        """``fn`` over ``jobs`` (``sizes`` files each); results in job order."""
        self.progress = self.progress or _Progress()
        advance = self.progress.task(label, sum(sizes))
        if self.workers == 1 or len(jobs) < 2:
            results = []
            for job, n in zip(jobs, sizes):
                results.append(fn(job))
                advance(n)
            return results
        if self.pool is None:
            self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"))
        futures = {self.pool.submit(fn, job): k for k, job in enumerate(jobs)}
        out: list[list] = [[] for _ in jobs]
        for fut in as_completed(futures):
            k = futures[fut]
            out[k] = fut.result()
            advance(sizes[k])
        return out


def chunks(n: int, size: int | None = None) -> list[range]:
    """``range(n)`` cut into consecutive ranges of at most ``size`` (default :data:`CHUNK`)."""
    size = size or CHUNK
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def probe_all(paths: Sequence[str], runner: Runner, check_tail: bool = False) -> list[Probe | str]:
    """:func:`probe_chunk` over every path (headers only), in order."""
    parts = chunks(len(paths))
    jobs = [([paths[i] for i in r], check_tail) for r in parts]
    return [row for res in runner.map(probe_chunk, jobs, [len(r) for r in parts], "reading headers") for row in res]


def decode_all(npy: str, items: Sequence[tuple[int, str]], color: str, size: int,
               runner: Runner, crop: float | None = None) -> dict[int, str]:
    """Decode every (index, path) into the ``.npy`` at ``npy``; returns {index: reason} failures.
    ``crop``: the reference's resize-then-centre-crop (see :func:`decode_image`)."""
    parts = chunks(len(items))
    jobs = [(npy, [items[i] for i in r], color, size, crop) for r in parts]
    failed = runner.map(decode_chunk, jobs, [len(r) for r in parts], "decoding images")
    return {i: why for res in failed for i, why in res}
