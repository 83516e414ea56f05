"""Published latency lookup tables as a latency model (OFA's Note10 tables and their like).

The reference publishes one YAML file per input resolution. Each key names one layer, e.g.
``expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0``,
and each value holds its ``mean``, ``std`` and ``count`` in ms. A subnet's latency is the sum of
the means of its layers: the stem ``Conv``, every block as ``expanded_conv``, ``Conv_1`` (final
expand), ``AvgPool2D``, ``Conv_2`` (feature mix) and ``Logits``. These are the keys and the sum of
the reference's ``predict_network_latency_given_spec`` (ofa/tutorial/latency_table.py); here they
are derived from the search space's preset. A layer missing from the table is refused, never
counted as 0 ms.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

from ofa_edge.errors import OfaEdgeError
from ofa_edge.fileio import sha256_file
from ofa_edge.space.arch import Arch
from ofa_edge.space.presets import SpacePreset

TABLE_KIND = "latency-lookup-table"
TABLE_SCHEMA = 1
_STEM = re.compile(r"^Conv-input:(\d+)x(\d+)x3-output:")


class TableError(OfaEdgeError):
    pass


def _shape(*dims: int) -> str:
    return "x".join(str(d) for d in dims)


def layer_keys(preset: SpacePreset, arch: Arch, num_classes: int = 1000) -> list[str]:
    """The table keys of ``arch``'s layers, in order (the reference's naming)."""
    r = arch.resolution
    f = (r + 1) // 2 if preset.stem_stride == 2 else r
    keys = [f"Conv-input:{_shape(r, r, 3)}-output:{_shape(f, f, preset.stem_width)}"]

    def block(size: int, cin: int, cout: int, mid: int, k: int, stride: int, skip: int, se: bool, act: str) -> int:
        out = int((size - 1) / stride + 1)
        keys.append(f"expanded_conv-input:{_shape(size, size, cin)}-output:{_shape(out, out, cout)}"
                     f"-expand:{mid}-kernel:{k}-stride:{stride}-idskip:{skip}-se:{int(se)}"
                     f"-hs:{int(act == 'hswish')}")
        return out

    f = block(f, preset.stem_width, preset.first_block_width, preset.stem_width, 3, 1,
              int(preset.stem_width == preset.first_block_width), False, preset.first_block_act)
    cin = preset.first_block_width
    for stage, choices in zip(preset.stages, arch.stages):
        for i, (k, e) in enumerate(choices):
            stride, skip = (stage.stride, 0) if i == 0 else (1, 1)
            f = block(f, cin, stage.width, round(cin * e), k, stride, skip, stage.se, stage.act)
            cin = stage.width
    keys += [f"Conv_1-input:{_shape(f, f, cin)}-output:{_shape(f, f, preset.final_expand_width)}",
             f"AvgPool2D-input:{_shape(f, f, preset.final_expand_width)}-output:"
             f"{_shape(1, 1, preset.final_expand_width)}",
             f"Conv_2-input:{_shape(1, 1, preset.final_expand_width)}-output:{_shape(1, 1, preset.feature_mix_width)}",
             f"Logits-input:{_shape(1, 1, preset.feature_mix_width)}-output:{num_classes}"]
    return keys


def read_reference_table(path: str | Path) -> tuple[int, dict[str, dict]]:
    """(resolution, {layer key: {"mean", "std", "count"}}) of one published YAML file, read with a
    safe loader. The resolution comes from the stem's key, never from the file name."""
    import yaml

    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError) as exc:
        raise TableError(f"cannot read the latency table {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise TableError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); pass OFA's "
                         "<resolution>_lookup_table.yaml files") from None
    if not isinstance(data, dict) or not data:
        raise TableError(f"{path} is not a latency lookup table (expected a mapping of layer keys to mean/std/count)")
    stems = {int(m.group(1)) for k in data if (m := _STEM.match(str(k)))}
    if len(stems) != 1:
        raise TableError(f"{path}: expected the stem layer of exactly one resolution ('Conv-input:RxRx3-...'), "
                         f"found {sorted(stems) or 'none'}")
    table = {}
    for key, value in data.items():
        if not isinstance(value, dict) or not isinstance(value.get("mean"), (int, float)):
            raise TableError(f"{path}: layer {key!r} has no numeric mean (expected mean, std and count in ms)")
        table[str(key)] = {"mean": float(value["mean"]), "std": float(value.get("std") or 0.0),
                           "count": int(value.get("count") or 0)}
    return stems.pop(), table


class TableLatency:
    """Latency (ms) of archs of one space, summed from a lookup table per resolution. Each layer is
    looked up once per (resolution, position, kernel, expand), and each stage's sum memoised, so
    search adds six floats per arch instead of formatting its keys."""

    def __init__(self, device: str, preset: SpacePreset, tables: dict[int, dict[str, dict]], num_classes: int = 1000):
        self.device, self.preset, self.num_classes = device, preset, num_classes
        self.means = {int(r): {k: float(v["mean"]) for k, v in t.items()} for r, t in tables.items()}
        self._layers: dict[tuple, float] = {}   # per block, per stage and the rest (stage -1), in ms

    @property
    def resolutions(self) -> list[int]:
        return sorted(self.means)

    def _mean(self, resolution: int, key: str) -> float:
        table = self.means.get(resolution)
        if table is None:
            raise TableError(f"the latency table of {self.device} has no resolution {resolution} "
                             f"(it has {self.resolutions}): search within those")
        if key not in table:
            raise TableError(f"the latency table of {self.device} at {resolution} px has no layer {key}; "
                             "it was not measured, and is never counted as 0 ms: use a table that covers "
                             "this space, or narrow the search")
        return table[key]

    def _fill(self, arch: Arch) -> None:
        """Memoise ``arch``'s layers from its table keys: the fixed ones (stem, first block, head)
        as one sum, each block by (resolution, stage, position, kernel, expand), each stage's sum."""
        keys = layer_keys(self.preset, arch, self.num_classes)
        r, fixed, blocks = arch.resolution, keys[:2] + keys[-4:], iter(keys[2:-4])
        self._layers[(r, -1, ())] = sum(self._mean(r, k) for k in fixed)
        for s, stage in enumerate(arch.stages):
            for i, (k, e) in enumerate(stage):
                self._layers[(r, s, i, k, e)] = self._mean(r, next(blocks))
            self._layers[(r, s, stage)] = sum(self._layers[(r, s, i, k, e)] for i, (k, e) in enumerate(stage))

    def latency_ms(self, arch: Arch) -> float:
        r, layers = arch.resolution, self._layers
        try:
            total = layers[(r, -1, ())]
            for s, stage in enumerate(arch.stages):
                total += layers[(r, s, stage)]
            return total
        except KeyError:
            pass
        try:
            for s, stage in enumerate(arch.stages):
                layers[(r, s, stage)] = sum(layers[(r, s, i, k, e)] for i, (k, e) in enumerate(stage))
        except KeyError:
            self._fill(arch)
        return self.latency_ms(arch)

    def predict(self, archs: Iterable[Arch]) -> list[float]:
        return [self.latency_ms(a) for a in archs]

    def coverage(self) -> dict:
        return {"resolutions": self.resolutions, "kernels": list(self.preset.kernel_choices),
                "expands": list(self.preset.expand_choices)}


def table_document(device: str, space_id: str, files: Sequence[str | Path]) -> dict:
    """The JSON document ``import-latency-table`` writes: every table, with its source files."""
    tables, sources = {}, []
    for path in files:
        r, table = read_reference_table(path)
        if r in tables:
            raise TableError(f"two tables for {r} px ({Path(path).name} and another); pass one file per resolution")
        tables[r] = table
        sources.append({"file": Path(path).name, "resolution": r,
                        "sha256": sha256_file(path)})
    return {"kind": TABLE_KIND, "schema_version": TABLE_SCHEMA, "device": device, "space_id": space_id,
            "unit": "ms", "statistic": "mean", "sources": sources,
            "tables": {str(r): tables[r] for r in sorted(tables)}}


def load_table_latency(path: str | Path, preset: SpacePreset, num_classes: int = 1000) -> TableLatency:
    """The latency model of a table document written by ``import-latency-table``."""
    import json

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TableError(f"cannot read the latency table {path} ({exc}); run ofa-edge import-latency-table again") from None
    if doc.get("kind") != TABLE_KIND:
        raise TableError(f"{path} is not a latency table written by ofa-edge import-latency-table")
    if doc.get("space_id") != preset.id:
        raise TableError(f"the latency table {path} is for {doc.get('space_id')}, not {preset.id}: use a supernet "
                         f"of {doc.get('space_id')}")
    return TableLatency(doc.get("device", path.stem), preset, {int(r): t for r, t in doc["tables"].items()}, num_classes)
