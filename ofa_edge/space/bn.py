"""BatchNorm recalibration: re-estimate running statistics for one subnet.

All subnets share one set of BN statistics during training, so before evaluating or exporting
a subnet its statistics are re-estimated on a few thousand training images (OFA paper, §3.2).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm's running stats and re-estimate them as the plain average over
    ``batches`` (momentum None); the model comes back in eval mode. Returns images seen.

    On a supernet this overwrites the shared statistics of the active subnet's channels; on
    an extracted subnet it touches only that subnet.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += x.shape[0]
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()
    if seen == 0:
        raise ValueError("recalibrate_bn got no images")
    return seen
