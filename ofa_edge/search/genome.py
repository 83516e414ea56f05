"""Archs as integer genomes, so that evolution breeds a whole generation with a few numpy calls.

A genome is the reference's representation (ofa/tutorial/evolution_finder.py): one gene for the
resolution, one depth per stage, and a kernel and an expand for every block slot, active or not.
Each gene is an index into its choices. A slot beyond its stage's depth keeps its genes, so a
mutation that deepens a stage brings them back, as in the reference. Mutation resamples each
gene with probability p; crossover takes each gene from either parent. Decoding gives the
``Arch`` (active blocks only), which everything else scores.
"""
from __future__ import annotations

import numpy as np

from ofa_edge.space.arch import Arch
from ofa_edge.space.searchspace import SearchSpace


class Genomes:
    """Encoding, breeding and decoding for one search space."""

    def __init__(self, space: SearchSpace, rng: np.random.Generator):
        p = space.preset
        self.space, self.rng = space, rng
        self.stages, self.slots = len(p.stages), p.max_depth
        n = self.stages * self.slots
        self.sizes = np.array([len(p.resolutions)] + [len(p.depth_choices)] * self.stages
                              + [len(p.kernel_choices)] * n + [len(p.expand_choices)] * n)
        self._blocks = [[(k, e) for e in p.expand_choices] for k in p.kernel_choices]
        self._seen: dict[bytes, Arch] = {}

    @property
    def width(self) -> int:
        return len(self.sizes)

    def sample(self, n: int) -> np.ndarray:
        return (self.rng.random((n, self.width)) * self.sizes).astype(np.int64)

    def mutate(self, parents: np.ndarray, prob: float) -> np.ndarray:
        flip = self.rng.random(parents.shape) < prob
        return np.where(flip, self.sample(len(parents)), parents)

    def crossover(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(self.rng.random(a.shape) < 0.5, a, b)

    def encode(self, arch: Arch) -> np.ndarray:
        """One genome of ``arch`` (the genes of its skipped slots are the first choices)."""
        p = self.space.preset
        row = np.zeros(self.width, dtype=np.int64)
        row[0] = p.resolutions.index(arch.resolution)
        k0, e0 = 1 + self.stages, 1 + self.stages + self.stages * self.slots
        for s, stage in enumerate(arch.stages):
            row[1 + s] = p.depth_choices.index(len(stage))
            for j, (k, e) in enumerate(stage):
                row[k0 + s * self.slots + j] = p.kernel_choices.index(k)
                row[e0 + s * self.slots + j] = p.expand_choices.index(e)
        return row

    def decode(self, genomes: np.ndarray) -> list[Arch]:
        """The archs of ``genomes``. Genomes that differ only in skipped slots are one arch, and
        each arch is built once per ``Genomes``: a generation is mostly archs seen before."""
        p, n, d = self.space.preset, self.stages, self.slots
        depths = np.asarray(p.depth_choices)[genomes[:, 1:1 + n]]
        active = np.tile((np.arange(d)[None, None, :] < depths[:, :, None]).reshape(len(genomes), n * d), 2)
        canonical = genomes.astype(np.int8)
        canonical[:, 1 + n:] *= active
        out = []
        for row, key in zip(genomes, map(bytes, canonical)):
            arch = self._seen.get(key)
            if arch is None:
                arch = self._seen[key] = self._build(row.tolist())
            out.append(arch)
        return out

    def _build(self, row: list[int]) -> Arch:
        p, n, d = self.space.preset, self.stages, self.slots
        kernels, expands = row[1 + n:1 + n + n * d], row[1 + n + n * d:]
        blocks = self._blocks
        stages = tuple(tuple(blocks[kernels[s * d + j]][expands[s * d + j]] for j in range(p.depth_choices[row[1 + s]]))
                       for s in range(n))
        return Arch(p.resolutions[row[0]], stages)
