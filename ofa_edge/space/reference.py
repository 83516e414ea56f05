"""Load checkpoints in the layout of the reference OFA implementation (mit-han-lab/once-for-all).

Covered: ``ofa_mbv3_d234_e346_k357_w1.0`` and ``..._w1.2`` state dicts (optionally wrapped in
``{"state_dict": ...}``), every key of them:

=====================================================  ==========================================
reference key                                          ofa-edge key
=====================================================  ==========================================
first_conv.conv.weight, first_conv.bn.*                stem.conv.weight, stem.bn.*
blocks.0.conv.depth_conv.{conv,bn}.*                   first_block.depthwise.{conv,bn}.*
blocks.0.conv.point_linear.{conv,bn}.*                 first_block.project.{conv,bn}.*
blocks.N.conv.inverted_bottleneck.conv.conv.weight     blocks.N-1.expand_conv.weight
blocks.N.conv.inverted_bottleneck.bn.bn.*              blocks.N-1.expand_bn.*
blocks.N.conv.depth_conv.conv.conv.weight              blocks.N-1.depthwise.weight
blocks.N.conv.depth_conv.conv.7to5_matrix / 5to3_...   blocks.N-1.depthwise.transforms.7to5 / 5to3
blocks.N.conv.depth_conv.bn.bn.*                       blocks.N-1.depthwise_bn.*
blocks.N.conv.depth_conv.se.fc.{reduce,expand}.*       blocks.N-1.se.{reduce,expand}.*
blocks.N.conv.point_linear.conv.conv.weight            blocks.N-1.project_conv.weight
blocks.N.conv.point_linear.bn.bn.*                     blocks.N-1.project_bn.*
final_expand_layer.{conv,bn}.*                         head.final_expand.{conv,bn}.*
feature_mix_layer.conv.weight                          head.feature_mix.conv.weight
classifier.linear.{weight,bias}                        head.classifier.{weight,bias}
=====================================================  ==========================================

The reference feeds ImageNet-normalised images; the imported supernet carries that
normalisation as its first op, so it takes [0, 1] images like every ofa-edge model.
"""
from __future__ import annotations

import re

import torch

from ofa_edge.errors import OfaEdgeError
from ofa_edge.space.checkpoint import CheckpointError, load_state
from ofa_edge.space.presets import PRESETS
from ofa_edge.space.supernet import OFASupernet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FIXED = [  # (reference prefix, ofa-edge prefix), longest first
    ("blocks.0.conv.depth_conv.", "first_block.depthwise."),
    ("blocks.0.conv.point_linear.", "first_block.project."),
    ("first_conv.", "stem."),
    ("final_expand_layer.", "head.final_expand."),
    ("feature_mix_layer.", "head.feature_mix."),
    ("classifier.linear.", "head.classifier."),
]
_BLOCK_PARTS = [  # (reference suffix pattern, ofa-edge suffix)
    (r"conv\.inverted_bottleneck\.conv\.conv\.weight", "expand_conv.weight"),
    (r"conv\.inverted_bottleneck\.bn\.bn\.(\w+)", r"expand_bn.\1"),
    (r"conv\.depth_conv\.conv\.conv\.weight", "depthwise.weight"),
    (r"conv\.depth_conv\.conv\.(\d+to\d+)_matrix", r"depthwise.transforms.\1"),
    (r"conv\.depth_conv\.bn\.bn\.(\w+)", r"depthwise_bn.\1"),
    (r"conv\.depth_conv\.se\.fc\.(reduce|expand)\.(weight|bias)", r"se.\1.\2"),
    (r"conv\.point_linear\.conv\.conv\.weight", "project_conv.weight"),
    (r"conv\.point_linear\.bn\.bn\.(\w+)", r"project_bn.\1"),
]


def map_reference_key(key: str) -> str:
    """The ofa-edge key for one reference key; OfaEdgeError for a key we do not know."""
    key = key.removeprefix("module.")
    for ref, ours in _FIXED:
        if key.startswith(ref):
            return ours + key[len(ref):]
    m = re.match(r"blocks\.(\d+)\.(.+)$", key)
    if m and int(m.group(1)) > 0:
        for pattern, replacement in _BLOCK_PARTS:
            if re.fullmatch(pattern, m.group(2)):
                return f"blocks.{int(m.group(1)) - 1}." + re.sub(pattern, replacement, m.group(2))
    raise OfaEdgeError(f"reference checkpoint key {key!r} has no ofa-edge counterpart")


def convert_reference_state_dict(state: dict) -> dict:
    state = state.get("state_dict", state)
    return {map_reference_key(k): v for k, v in state.items()}


def _detect_preset(tensors: dict) -> str:
    stem_width = tensors["stem.conv.weight"].shape[0]
    for preset_id in ("ofa-mbv3-w1.0", "ofa-mbv3-w1.2"):
        p = PRESETS[preset_id]
        if p.stem_width == stem_width and tensors["head.final_expand.conv.weight"].shape[0] == p.final_expand_width:
            return preset_id
    raise CheckpointError(f"reference checkpoint with stem width {stem_width} matches neither ofa-mbv3-w1.0 "
                          "nor ofa-mbv3-w1.2")


def from_reference_state_dict(state: dict, source: str = "reference state dict",
                              input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD) -> OFASupernet:
    """Build our supernet from a reference OFAMobileNetV3 state dict (w1.0 or w1.2, k357 e346 d234)."""
    try:
        tensors = convert_reference_state_dict(state)
        preset_id = _detect_preset(tensors)
    except (KeyError, AttributeError) as exc:
        raise CheckpointError(f"{source}: not a reference OFA-MobileNetV3 checkpoint (missing {exc})") from None
    except OfaEdgeError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    num_classes = tensors["head.classifier.weight"].shape[0]
    net = OFASupernet(preset_id, num_classes, input_mean, input_std)
    load_state(net, tensors, source)
    return net.eval()


def load_reference_checkpoint(path: str) -> OFASupernet:
    """Load a reference ``.pth`` safely (``torch.load(weights_only=True)``, no code execution)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: cannot read it as a weights-only torch checkpoint "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found a {type(state).__name__}")
    return from_reference_state_dict(state, path)
