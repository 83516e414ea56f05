"""``ofa-edge predictor fit``: measure subnets on val, fit the MLP, report held-out RMSE and tau."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ofa_edge.ledger import Ledger, record
from ofa_edge.predictors.accuracy import fit, score
from ofa_edge.predictors.collect import choose_archs, measure
from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.source import open_supernet

PREDICTOR_NAME = "accuracy_predictor.json"
DATA_NAME = "accuracy_data.jsonl"
HOLDOUT_NAME = "accuracy_holdout.jsonl"


def fit_predictor(supernet: str, samples: int = 1000, holdout: int = 200, workers: int = 2,
                  out: str | None = None, seed: int = 0, progress: bool = True, data: str | None = None,
                  device: str = "auto") -> dict:
    """Score subnets on the val split of the supernet's recorded dataset (or ``data``), fit the
    accuracy predictor on them and report its held-out error."""
    import torch

    from ofa_edge.evaluate import open_supernet_data
    from ofa_edge.ledger import gpu_ids
    from ofa_edge.predictors.collect import worker_devices

    used = sorted(set(worker_devices(device, workers)))  # a bad --device fails before any work
    ledger = Ledger("predictor fit", gpus=[g for d in used for g in gpu_ids(torch.device(d))])
    src = open_supernet(supernet)
    if out is None and src.folder is None:
        raise OfaEdgeError(f"{supernet} is a raw reference OFA checkpoint, which has no run folder to keep the "
                           "predictor in: convert it once with ofa-edge import-reference, or pass --out DIR")
    rd, calib = open_supernet_data(src, data, log=print)
    folder = Path(out) if out else src.folder
    net = src.net
    resolutions = src.header.get("trained_resolutions") or list(net.space.preset.resolutions)
    train_archs, holdout_archs = choose_archs(net.space, samples, holdout, resolutions, seed)
    # scores are cached per arch: scores on other images (--data with another fingerprint) get their own file
    cache = folder / (DATA_NAME if rd.matches else f"accuracy_data.{rd.fingerprint.get('sha256', 'other')[:12]}.jsonl")
    scores = measure(supernet, train_archs + holdout_archs, cache, workers=workers, data=data,
                     calib_images=2000, device=device, progress=progress)
    y_train = np.array([scores[str(a)] for a in train_archs])
    y_hold = np.array([scores[str(a)] for a in holdout_archs])
    predictor = fit(net.space, train_archs, y_train, seed=seed)
    entry = ledger.stop()
    predictor.report = {"train": score(predictor, net.space, train_archs, y_train),
                        "holdout": score(predictor, net.space, holdout_archs, y_hold),
                        "resolutions": resolutions, "val_images": len(rd.val_y),
                        "bn_calibration_images": len(calib.bn_images(2000)),
                        "dataset": {"source": rd.source, "recorded": rd.matches,
                                    "fingerprint": rd.fingerprint},
                        "ledger": entry.to_json()}
    path = predictor.save(folder / PREDICTOR_NAME)
    with open(folder / HOLDOUT_NAME, "w") as f:
        for a, acc in zip(holdout_archs, y_hold):
            f.write(json.dumps({"arch": str(a), "val_top1": float(acc)}) + "\n")
    print(entry.line())
    record(entry, supernet=str(supernet), samples=samples)
    return {"predictor": str(path), **predictor.report}

