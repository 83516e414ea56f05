"""``ofa-edge import-latency-table``: a published latency lookup table as a device spec.

The spec has no transport: search reads the table for latency, bench has nothing to time, and
deploy stops after search and extraction. The table is stored beside the spec as
``<spec stem>.latency.json`` (every layer's mean, std and count, and the source files' sha256).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from ofa_edge.errors import OfaEdgeError
from ofa_edge.predictors.latency_table import TableLatency, table_document
from ofa_edge.space.presets import PRESETS, SpacePreset

SPEC_TEMPLATE = """\
# {name}: a published latency lookup table, not a device ofa-edge can reach. Written by
#   ofa-edge import-latency-table {files}
# Latency is the sum of the table's per-layer means ({table}); search reads it, bench has nothing
# to time, and deploy stops after search and extraction.
schema_version: 1
name: {name}
kind: cpu
description: {name}'s published latency lookup tables ({space}, {resolutions} px)
connection:
  transport: none
runtime:
  name: tflite                  # not used: the latency comes from the table
precision: fp32                 # not used: the latency comes from the table
latency_table: {table}
budgets:
  resolution: [{lo}, {hi}]
"""


def missing_layers(preset: SpacePreset, model: TableLatency, resolution: int) -> list[str]:
    """The layers some arch of ``preset`` at ``resolution`` needs that the table lacks."""
    from ofa_edge.predictors.latency_table import layer_keys
    from ofa_edge.space.arch import Arch

    table = model.means[resolution]
    needed: set[str] = set()
    depth = preset.max_depth
    for k in preset.kernel_choices:
        for e in preset.expand_choices:
            stages = tuple(((k, e),) * depth for _ in preset.stages)
            needed.update(layer_keys(preset, Arch(resolution, stages), model.num_classes))
    return sorted(needed - set(table))


def import_latency_table(files: Sequence[str | os.PathLike], name: str, out: str | os.PathLike,
                         space_id: str = "ofa-mbv3-w1.2", log: Callable[[str], None] = print) -> Path:
    """Write the spec ``out`` and its table ``<out stem>.latency.json``; both or neither."""
    from ofa_edge.devices.spec import load_spec
    from ofa_edge.fileio import write_json_atomic, write_text_atomic

    out = Path(out)
    table_path = out.with_name(f"{out.stem}.latency.json")
    for path in (out, table_path):
        if path.exists():
            raise OfaEdgeError(f"{path} already exists; pass another --out or remove it")
    if space_id not in PRESETS:
        raise OfaEdgeError(f"unknown space {space_id!r}; use one of {', '.join(PRESETS)}")
    if not files:
        raise OfaEdgeError("no table files given; pass OFA's <resolution>_lookup_table.yaml files, one per resolution")
    doc = table_document(name, space_id, files)
    preset = PRESETS[space_id]
    model = TableLatency(name, preset, {int(r): t for r, t in doc["tables"].items()})
    for r in model.resolutions:
        gaps = missing_layers(preset, model, r)
        note = f"; {len(gaps)} layers of {space_id} missing (archs using them are refused), e.g. {gaps[0]}" if gaps else ""
        log(f"{r} px: {len(doc['tables'][str(r)])} layers{note}")
    out.parent.mkdir(parents=True, exist_ok=True)
    spec_text = SPEC_TEMPLATE.format(name=name, files=" ".join(Path(f).name for f in files), table=table_path.name,
                                     space=space_id, resolutions=", ".join(map(str, model.resolutions)),
                                     lo=model.resolutions[0], hi=model.resolutions[-1])
    write_json_atomic(table_path, doc)
    try:
        write_text_atomic(out, spec_text)
        load_spec(out)  # the spec it writes must validate (its name, the table beside it)
    except BaseException:
        for path in (out, table_path):  # both or neither; neither existed before (checked above)
            path.unlink(missing_ok=True)
        raise
    return out
