"""Reference OFA supernets and accuracy predictors with random weights, made through the
reference implementation (PyPI ``ofa``), for tests of the published-checkpoint path. Nothing is
downloaded: the files the tests need are written here."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch

#: Modules ``ofa`` imports that cannot load here: torchvision does not work beside our torch, and
#: ofa.tutorial's model zoo imports gdown. They are stubbed around the import only.
STUBBED = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional",
           "torchvision.datasets", "torchvision.models", "torchvision.utils", "gdown"]


@contextmanager
def reference_imports():
    """Import from ``ofa`` inside this block. Pillow and its format plugins are loaded before it:
    leaving the block, patch.dict drops every module imported inside, which would otherwise break
    Pillow's format registry for the rest of the session."""
    stubs = {name: mock.MagicMock() for name in STUBBED if name not in sys.modules}
    try:
        from PIL import Image

        Image.init()
    except ImportError:
        stubs["PIL"] = stubs["PIL.Image"] = mock.MagicMock()
    with mock.patch.dict(sys.modules, stubs):
        yield


def reference_class():
    """OFAMobileNetV3 of the reference implementation."""
    with reference_imports():
        from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
    return OFAMobileNetV3


def randomised(width: float, seed: int):
    """A reference supernet with random non-trivial weights and BN statistics, in eval mode."""
    torch.manual_seed(seed)
    ref = reference_class()(n_classes=1000, dropout_rate=0, width_mult=width, ks_list=[3, 5, 7],
                            expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "matrix" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.dim() == 1:
                p.copy_(torch.rand(p.shape, generator=gen) * 0.4 + (0.8 if "bn" in name and name.endswith("weight") else -0.2))
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
    return ref.eval()


def tutorial_predictor_file(path: Path, seed: int = 0) -> Path:
    """An accuracy predictor in the layout of the tutorial's published acc_predictor.pth (a plain
    Sequential 128-400-400-400-1), random weights, saved to ``path``."""
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(128, 400), torch.nn.ReLU(), torch.nn.Linear(400, 400),
                                torch.nn.ReLU(), torch.nn.Linear(400, 400), torch.nn.ReLU(), torch.nn.Linear(400, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    torch.save(model.state_dict(), path)
    return path
