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

import os
import re
import shutil
import tempfile
from pathlib import Path

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


def read_reference_state(path: str | os.PathLike) -> tuple[dict, dict]:
    """A reference checkpoint's state dict, loaded weights-only (``torch.load(weights_only=True)``,
    no code runs), and how it was stored: ``{"serialisation": "torch-zip" | "torch-legacy",
    "wrapped": bool}`` (``{"state_dict": ...}`` or not). Any name; the format is read from the
    file's first bytes. A file that is not one is a CheckpointError of one line."""
    from ofa_edge.space.checkpoint import detect_format

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    fmt = detect_format(path)
    if fmt == "safetensors":
        raise CheckpointError(f"{path}: a safetensors file, not a reference OFA checkpoint (torch zip or legacy "
                              "serialisation); pass it to --supernet as it is")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: cannot read it as a weights-only torch checkpoint ({fmt} serialisation, "
                              f"{path.stat().st_size:,} bytes): {_torch_load_reason(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found a {type(state).__name__}")
    wrapped = isinstance(state.get("state_dict"), dict)
    state = state["state_dict"] if wrapped else state
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict of tensors ({len(bad)} entries are not, e.g. {bad[0]!r})")
    return state, {"serialisation": fmt, "wrapped": wrapped}


def _torch_load_reason(exc: Exception) -> str:
    """torch.load's error in a few words (its weights-only message runs to a page)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    m = re.search(r"WeightsUnpickler error: (.*)", text)
    if m:
        g = re.search(r"Unsupported global: GLOBAL (\S+)", m.group(1))
        if g:
            return (f"it pickles Python objects ({g.group(1)}), which a weights-only load refuses; save the "
                    "model's state_dict() instead")
        text = m.group(1)
    line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if isinstance(exc, (EOFError, RuntimeError)) or "EOF" in line or "unpack requires" in line:
        line = f"the file looks truncated ({line})"
    return f"{type(exc).__name__}: {line[:200]}"


def load_reference_checkpoint(path: str | os.PathLike) -> OFASupernet:
    """Load a reference checkpoint file safely (weights-only, any name, zip or legacy serialisation)."""
    state, _ = read_reference_state(path)
    return from_reference_state_dict(state, str(path))


# ---------------------------------------------------------------- import-reference

#: The reference's resolutions (its elastic resolution range, 128-224 px in steps of 4).
REFERENCE_RESOLUTIONS = tuple(range(128, 225, 4))
#: The reference's evaluation: resize the shorter side to ceil(res / 0.875), centre-crop res x res.
REFERENCE_EVAL_PREPROCESSING = {"resize": "shorter-side", "resize_to": "ceil(resolution / crop_fraction)",
                                "crop": "center", "crop_fraction": 0.875, "interpolation": "bilinear"}
WNIDS_FILE = Path(__file__).resolve().parents[1] / "assets" / "imagenet" / "wnids.txt"


def imagenet_wnids() -> tuple[str, ...]:
    """ImageNet-1k's 1,000 WordNet ids in the standard sorted order (the reference's label order),
    vendored from timm (see ofa_edge/assets/imagenet/README.md)."""
    try:
        wnids = tuple(WNIDS_FILE.read_text().split())
    except OSError as exc:
        raise OfaEdgeError(f"the ImageNet class list is missing from this install ({WNIDS_FILE}: "
                           f"{exc.strerror}); reinstall ofa-edge") from None
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or list(wnids) != sorted(wnids):
        raise OfaEdgeError(f"{WNIDS_FILE} is damaged: expected 1,000 sorted unique WordNet ids; reinstall ofa-edge")
    return wnids


def reference_header(net: OFASupernet, source: str | os.PathLike, sha256: str, stored: dict,
                     name: str | None = None) -> dict:
    """The header fields of a supernet imported from a reference checkpoint (besides header_of's):
    ImageNet's classes, the reference's resolutions and evaluation preprocessing, the input
    contract (ImageNet normalisation inside the model), and where the weights came from."""
    from ofa_edge import __version__
    from ofa_edge.data.record import DatasetRecord, input_contract

    if net.num_classes != 1000:
        raise CheckpointError(f"{source}: a reference checkpoint with {net.num_classes} classes; the published "
                              "ImageNet supernets have 1,000")
    resolutions = list(REFERENCE_RESOLUTIONS)
    # ImageNet: the reference carves 10,000 training images as its val split; ImageNet val is the test split
    record = DatasetRecord(kind="imagenet", ref="imagenet", fingerprint={}, classes=imagenet_wnids(), channels=3,
                           resolutions=tuple(resolutions), val_size=10000, seed=0, test_from="val")
    source = Path(source)
    return {"name": name or source.name, "trained_resolutions": resolutions, "dataset": record.to_json(),
            "input": {**input_contract(3, net.input_mean, net.input_std), "layout": "NCHW"},
            "eval_preprocessing": dict(REFERENCE_EVAL_PREPROCESSING),
            "imported_from": {"kind": "ofa-reference", "file": source.name, "sha256": sha256,
                              "bytes": source.stat().st_size, **stored,
                              "converted_by": f"ofa-edge {__version__} import-reference"}}


def import_reference(path: str | os.PathLike, out: str | os.PathLike, acc_predictor: str | os.PathLike | None = None,
                     name: str | None = None) -> Path:
    """Convert a reference checkpoint once into an ofa-edge run folder ``out``: supernet.safetensors
    with the header of :func:`reference_header` (and accuracy_predictor.json from ``acc_predictor``).

    Written into a temporary folder beside ``out`` and renamed at the end: a failure leaves nothing.
    ``out`` must not exist, or be an empty folder."""
    from ofa_edge.fileio import sha256_file
    from ofa_edge.space.checkpoint import WEIGHTS_NAME, save_supernet

    path, out = Path(path), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OfaEdgeError(f"{out} already exists and is not an empty folder; pass another --out or remove it")
    state, stored = read_reference_state(path)
    net = from_reference_state_dict(state, str(path))
    header = reference_header(net, path, sha256_file(path), stored, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_supernet(net, tmp / WEIGHTS_NAME, extra=header)
        if acc_predictor is not None:
            _import_predictor(acc_predictor, net, tmp)
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _import_predictor(acc_predictor: str | os.PathLike, net: OFASupernet, folder: Path) -> Path:
    """The reference accuracy predictor in ofa-edge's format, saved as accuracy_predictor.json."""
    from ofa_edge.predictors.reference_import import import_reference_predictor

    predictor = import_reference_predictor(acc_predictor, net.space)
    return predictor.save(folder / "accuracy_predictor.json")
