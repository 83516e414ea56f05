"""A cheap look at a dataset for ``ofa-edge data info``: image headers only, no full decode.

For an image folder: classes, images per split (train/, val/, test/ as the layout gives, or
the 1/6 carve of a flat layout), image sizes and Pillow modes, and bad files (unreadable,
not an image, or truncated by a check of the file's ends). Loading can still find a file whose
middle is corrupt; it reports that file the same way.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ofa_edge.data.base import Dataset
from ofa_edge.data.decode import GRAY_MODES, Runner, probe_all
from ofa_edge.data.folder import assign, bad_file_error, check_classes, folder_fingerprint, list_folder

#: Sizes listed in the histogram (most common first).
TOP_SIZES = 8


def _sizes(sizes: Counter) -> dict[str, Any]:
    if not sizes:
        return {"min": None, "max": None, "distinct": 0, "common": []}
    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    return {"min": list(by_area[0]), "max": list(by_area[-1]), "distinct": len(sizes),
            "common": [[f"{w}x{h}", n] for (w, h), n in sizes.most_common(TOP_SIZES)]}


def scan(path: str | Path, *, skip_bad: bool = False) -> dict[str, Any]:
    """Summarise an image folder from its headers (JSON-able); DataError on the first bad file
    unless ``skip_bad`` (then the bad files are listed under "bad")."""
    root = Path(os.path.abspath(Path(path).expanduser()))
    listing = list_folder(root)
    entries = listing.entries
    with Runner(len(entries)) as runner:
        probes = probe_all([str(root / e.rel) for e in entries], runner, check_tail=True)
    bad = [(e.rel, p) for e, p in zip(entries, probes) if isinstance(p, str)]
    if bad and not skip_bad:
        raise bad_file_error(root, *bad[0])
    good = [k for k, p in enumerate(probes) if not isinstance(p, str)]
    check_classes(listing, (entries[k] for k in good), len(bad))
    train, test, test_from, _ = assign(listing)
    if listing.layout == "split":
        part = {k: entries[k].part for k in range(len(entries))}
    else:
        part = {**{k: "train" for k in train}, **{k: "test" for k in test}}
    counts = {name: np.zeros(len(listing.classes), dtype=np.int64) for name in ("train", "val", "test")}
    for k in good:
        counts[part[k]][entries[k].label] += 1
    modes = Counter(probes[k][0] for k in good)
    return {
        "name": root.name or str(root),
        "kind": "folder",
        "source": str(root),
        "layout": "train/val/test folders" if listing.layout == "split" else "class folders",
        "counts": {name: int(c.sum()) for name, c in counts.items()},
        "test_from": test_from,
        "num_classes": len(listing.classes),
        "classes": [{"index": i, "name": c, **{name: int(counts[name][i]) for name in counts}}
                    for i, c in enumerate(listing.classes)],
        "sizes": _sizes(Counter((probes[k][1], probes[k][2]) for k in good)),
        "modes": dict(modes.most_common()),
        "formats": dict(Counter(probes[k][3] for k in good).most_common()),
        "channels": 1 if all(m in GRAY_MODES for m in modes) else 3,
        "bad": [{"file": rel, "reason": why} for rel, why in bad],
        "fingerprint": folder_fingerprint((entries[k].rel, listing.classes[entries[k].label]) for k in good),
    }


def array_summary(ds: Dataset) -> dict[str, Any]:
    """The same size/mode keys as :func:`scan` for a dataset that came as arrays."""
    h, w, c = ds.image_shape
    n = len(ds.train_y) + len(ds.test_y)
    return {"layout": {"fashion-mnist": "IDX files", "npz": ".npz arrays"}.get(ds.kind, "arrays"),
            "sizes": _sizes(Counter({(w, h): n})), "modes": {"L" if c == 1 else "RGB": n},
            "channels": c, "bad": []}
