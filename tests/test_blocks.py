"""Candidate blocks: every arch's blocks are candidates, and the enumeration is exact."""
from __future__ import annotations

from ofa_edge.devices.blocks import arch_blocks, candidate_blocks
from ofa_edge.space import SearchSpace


def test_every_arch_uses_only_candidate_blocks():
    for space_id in ("ofa-mbv3-tiny", "ofa-mbv3-w1.0"):
        space = SearchSpace(space_id)
        res = list(space.preset.resolutions[:2])
        candidates = set(candidate_blocks(space.preset, res, 10))
        for seed in range(200):
            arch = space.sample(seed, resolution=res[seed % 2])
            blocks = arch_blocks(space.preset, arch, 10)
            assert set(blocks) <= candidates
            assert len(blocks) == 3 + sum(arch.depths)


def test_candidate_count_per_resolution():
    p = SearchSpace("ofa-mbv3-tiny").preset
    one = candidate_blocks(p, [28], 10)
    # stem + first block + head, and per stage 9 (kernel, expand) pairs for the striding first
    # block and 9 for the repeated blocks
    assert len(one) == 3 + len(p.stages) * 2 * 9
    assert len({b.id for b in one}) == len(one)
    both = candidate_blocks(p, [28, 32], 10)
    assert set(both) == set(one) | set(candidate_blocks(p, [32], 10))
    # deep stages reach the same 4x4 and 2x2 maps from 28 and 32 px: those blocks are shared
    assert len(one) < len(both) < 2 * len(one)


def test_block_ids_carry_what_changes_latency():
    p = SearchSpace("ofa-mbv3-tiny").preset
    arch = SearchSpace("ofa-mbv3-tiny").parse("r28|k3e4,k7e6|k5e3,k5e3|k3e3,k3e3|k7e6,k7e6|k3e3,k5e4")
    blocks = arch_blocks(p, arch, 10)
    assert blocks[0].id == "stem-s0-i3o16-k3e1-st2-hw28-hswish"
    assert blocks[2].id == "mbconv-s1-i16o16-k3e4-st2-hw14-relu"
    assert blocks[3].id == "mbconv-s1-i16o16-k7e6-st1-hw7-relu"
    assert blocks[4].se and blocks[4].stride == 2 and blocks[-1].role == "head"
