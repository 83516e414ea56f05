"""ofa_edge.space.costs: MACs, params, flash and peak SRAM of a subnet, without torch."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

from ofa_edge.errors import OfaEdgeError
from ofa_edge.space import PRESETS, Arch, ArchError, SearchSpace, SpacePreset, StageSpec
from ofa_edge.space.costs import (
    LAYER_TYPES,
    RUNTIMES,
    Costs,
    arch_costs,
    layers,
    macs_by_type,
    peak_sram_profile,
)

# A frozen copy of an early ofa-mbv3-ci, so the hand-written tables below stay valid when the
# shipped presets change.
HAND = SpacePreset(
    id="hand-checked", stem_width=8, stem_stride=2, first_block_width=8,
    stages=(StageSpec(8, 1, "relu", False), StageSpec(16, 2, "relu", True), StageSpec(16, 2, "hswish", False),
            StageSpec(24, 1, "hswish", True), StageSpec(24, 2, "hswish", True)),
    final_expand_width=96, feature_mix_width=128, resolutions=(28, 32),
)

# ---------------------------------------------------------------------------------------------
# HAND (an early ofa-mbv3-ci), smallest arch (every block k3 e3, depth 2) at 28 px, 10 classes, written out by
# hand: stem 3->8 s2 (28 -> 14); first block 8 -> 8; stages (width, stride, SE) = (8,1,-),
# (16,2,SE), (16,2,-), (24,1,SE), (24,2,SE); mid = make_divisible(in_c * 3) = 24, 48 or 72;
# SE hidden = make_divisible(mid // 4) = 8 (24), 16 (48), 24 (72: 18 rounds to 16 < 0.9*18).
# Rows: name, in_c, out_c, kernel, groups, out_hw, bias, bn.
CI_SMALLEST_28 = [
    ("stem", 3, 8, 3, 1, 14, False, True),
    ("first_block.depthwise", 8, 8, 3, 8, 14, False, True),
    ("first_block.project", 8, 8, 1, 1, 14, False, True),
    # stage 1: 14 px, 8 ch, no SE
    ("stage1.block1.expand", 8, 24, 1, 1, 14, False, True),
    ("stage1.block1.depthwise", 24, 24, 3, 24, 14, False, True),
    ("stage1.block1.project", 24, 8, 1, 1, 14, False, True),
    ("stage1.block2.expand", 8, 24, 1, 1, 14, False, True),
    ("stage1.block2.depthwise", 24, 24, 3, 24, 14, False, True),
    ("stage1.block2.project", 24, 8, 1, 1, 14, False, True),
    # stage 2: 14 -> 7 px, 16 ch, SE
    ("stage2.block1.expand", 8, 24, 1, 1, 14, False, True),
    ("stage2.block1.depthwise", 24, 24, 3, 24, 7, False, True),
    ("stage2.block1.se_reduce", 24, 8, 1, 1, 1, True, False),
    ("stage2.block1.se_expand", 8, 24, 1, 1, 1, True, False),
    ("stage2.block1.project", 24, 16, 1, 1, 7, False, True),
    ("stage2.block2.expand", 16, 48, 1, 1, 7, False, True),
    ("stage2.block2.depthwise", 48, 48, 3, 48, 7, False, True),
    ("stage2.block2.se_reduce", 48, 16, 1, 1, 1, True, False),
    ("stage2.block2.se_expand", 16, 48, 1, 1, 1, True, False),
    ("stage2.block2.project", 48, 16, 1, 1, 7, False, True),
    # stage 3: 7 -> 4 px, 16 ch, no SE
    ("stage3.block1.expand", 16, 48, 1, 1, 7, False, True),
    ("stage3.block1.depthwise", 48, 48, 3, 48, 4, False, True),
    ("stage3.block1.project", 48, 16, 1, 1, 4, False, True),
    ("stage3.block2.expand", 16, 48, 1, 1, 4, False, True),
    ("stage3.block2.depthwise", 48, 48, 3, 48, 4, False, True),
    ("stage3.block2.project", 48, 16, 1, 1, 4, False, True),
    # stage 4: 4 px, 24 ch, SE
    ("stage4.block1.expand", 16, 48, 1, 1, 4, False, True),
    ("stage4.block1.depthwise", 48, 48, 3, 48, 4, False, True),
    ("stage4.block1.se_reduce", 48, 16, 1, 1, 1, True, False),
    ("stage4.block1.se_expand", 16, 48, 1, 1, 1, True, False),
    ("stage4.block1.project", 48, 24, 1, 1, 4, False, True),
    ("stage4.block2.expand", 24, 72, 1, 1, 4, False, True),
    ("stage4.block2.depthwise", 72, 72, 3, 72, 4, False, True),
    ("stage4.block2.se_reduce", 72, 24, 1, 1, 1, True, False),
    ("stage4.block2.se_expand", 24, 72, 1, 1, 1, True, False),
    ("stage4.block2.project", 72, 24, 1, 1, 4, False, True),
    # stage 5: 4 -> 2 px, 24 ch, SE
    ("stage5.block1.expand", 24, 72, 1, 1, 4, False, True),
    ("stage5.block1.depthwise", 72, 72, 3, 72, 2, False, True),
    ("stage5.block1.se_reduce", 72, 24, 1, 1, 1, True, False),
    ("stage5.block1.se_expand", 24, 72, 1, 1, 1, True, False),
    ("stage5.block1.project", 72, 24, 1, 1, 2, False, True),
    ("stage5.block2.expand", 24, 72, 1, 1, 2, False, True),
    ("stage5.block2.depthwise", 72, 72, 3, 72, 2, False, True),
    ("stage5.block2.se_reduce", 72, 24, 1, 1, 1, True, False),
    ("stage5.block2.se_expand", 24, 72, 1, 1, 1, True, False),
    ("stage5.block2.project", 72, 24, 1, 1, 2, False, True),
    # head
    ("final_expand", 24, 96, 1, 1, 2, False, True),
    ("feature_mix", 96, 128, 1, 1, 1, False, False),
    ("classifier", 128, 10, 1, 1, 1, True, False),
]


def _hand_totals(rows):
    macs = params = flash = 0
    for _, cin, cout, k, groups, hw, bias, bn in rows:
        weights = cout * (cin // groups) * k * k
        macs += hw * hw * weights
        params += weights + (cout if bias else 0) + (2 * cout if bn else 0)
        flash += weights + 4 * cout
    return macs, params, flash


def test_hand_computed_ci_smallest():
    space = SearchSpace(HAND)
    arch = space.smallest(28)
    assert arch == Arch.parse("r28|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3")
    macs, params, flash = _hand_totals(CI_SMALLEST_28)
    assert (macs, params, flash) == (749_448, 55_578, 59_976)  # the table's sums, as a guard on it

    costs = arch_costs(space, arch, num_classes=10)
    assert (costs.macs, costs.params, costs.flash_bytes) == (macs, params, flash)

    got = layers(space, arch, 10)
    assert [(l.name, l.in_c, l.out_c, l.kernel, l.groups, l.out_hw) for l in got] == \
        [row[:6] for row in CI_SMALLEST_28]
    assert [l.op for l in got][:3] == ["conv", "depthwise", "pointwise"]
    assert got[-1].op == "linear" and got[-2].op == got[-3].op == "pointwise"
    assert {l.op for l in got} == set(LAYER_TYPES)


def test_hand_computed_ci_peak_sram():
    arch = SearchSpace(HAND).smallest(28)
    # the peak is stage 1's first depthwise: block input 8x14x14 (kept for the residual add)
    # + in 24x14x14 + out 24x14x14 + CMSIS-NN scratch 24*3*3*2
    assert arch_costs(HAND, arch, 10).peak_sram_bytes == 1568 + 4704 + 4704 + 432
    # TinyEngine: depthwise in place; the peak moves to the project conv (input kept + in + out)
    assert arch_costs(HAND, arch, 10, "tinyengine").peak_sram_bytes == 1568 + 4704 + 1568


def test_residual_input_stays_alive():
    arch = SearchSpace(HAND).smallest(28)
    prof = dict(peak_sram_profile(HAND, arch, 10))
    x = 8 * 14 * 14  # stage 1 block 1 input (stride 1, 8 -> 8 channels: residual)
    mid = 24 * 14 * 14
    assert prof["stage1.block1.expand"] == x + mid  # x is the input itself: counted once
    assert prof["stage1.block1.depthwise"] == x + mid + mid + 24 * 9 * 2
    assert prof["stage1.block1.project"] == x + mid + x
    assert prof["stage1.block1.add"] == x + x + x
    # stage 2 block 1 strides: no residual, so nothing is held
    assert "stage2.block1.add" not in prof
    assert prof["stage2.block1.depthwise"] == mid + 24 * 7 * 7 + 24 * 9 * 2
    # SE holds the depthwise output until the multiply (stage 2 block 2: residual too)
    x2, d2 = 16 * 7 * 7, 48 * 7 * 7
    assert prof["stage2.block2.se_reduce"] == x2 + d2 + 48 + 16
    assert prof["stage2.block2.se_mul"] == x2 + (d2 + 48) + d2
    # hswish is a separate op on TFLite Micro and fused on TinyEngine
    assert prof["stage3.block1.expand.act"] == 2 * 48 * 7 * 7
    te = dict(peak_sram_profile(HAND, arch, 10, "tinyengine"))
    assert "stage3.block1.expand.act" not in te and "stem.act" not in te
    assert te["stage1.block1.depthwise"] == x + mid
    assert te["stage2.block2.se_mul"] == x2 + d2 + 48


def test_w10_largest_in_known_range():
    space = SearchSpace("ofa-mbv3-w1.0")
    costs = arch_costs(space, space.largest(224), num_classes=1000)
    print(f"\nofa-mbv3-w1.0 largest @224: {costs}  ({costs.macs:,} MACs, {costs.params:,} params)")
    assert 400e6 < costs.macs < 700e6
    assert 6e6 < costs.params < 10e6
    small = arch_costs(space, space.smallest(224), num_classes=1000)
    assert small.macs < costs.macs and small.params < costs.params


def test_views_agree():
    """layers, macs_by_type, peak_sram_profile and arch_costs all describe the same network."""
    for pid in PRESETS:
        space = SearchSpace(pid)
        for arch in space.sample_many(5, seed=1) + [space.largest(), space.smallest()]:
            ls = layers(space, arch, 7)
            by_type = macs_by_type(space, arch, 7)
            assert set(by_type) == set(LAYER_TYPES)
            for runtime in RUNTIMES:
                c = arch_costs(space, arch, 7, runtime)
                assert c.macs == sum(l.macs for l in ls) == sum(by_type.values())
                assert c.params == sum(l.params for l in ls)
                assert c.flash_bytes == sum(l.flash_bytes for l in ls)
                assert c.peak_sram_bytes == max(b for _, b in peak_sram_profile(space, arch, 7, runtime))


def test_accepts_preset_space_or_id():
    space = SearchSpace("ofa-mbv3-tiny")
    arch = space.sample(3)
    assert arch_costs(space, arch, 10) == arch_costs(space.preset, arch, 10) == arch_costs("ofa-mbv3-tiny", arch, 10)


def _bigger_variants(space: SearchSpace, arch: Arch, rng: random.Random):
    """Archs that differ from ``arch`` by one larger choice: (what changed, arch)."""
    p = space.preset
    stages = [list(s) for s in arch.stages]
    s = rng.randrange(len(stages))
    b = rng.randrange(len(stages[s]))
    k, e = stages[s][b]
    for what, choices, value, make in (
        ("kernel", p.kernel_choices, k, lambda v: (v, e)),
        ("expand", p.expand_choices, e, lambda v: (k, v)),
    ):
        larger = [c for c in choices if c > value]
        if larger:
            new = [list(x) for x in stages]
            new[s][b] = make(rng.choice(larger))
            yield what, Arch(arch.resolution, tuple(tuple(x) for x in new))
    if len(stages[s]) < p.max_depth:
        new = [list(x) for x in stages]
        new[s].append((rng.choice(p.kernel_choices), rng.choice(p.expand_choices)))
        yield "depth", Arch(arch.resolution, tuple(tuple(x) for x in new))
    larger = [r for r in p.resolutions if r > arch.resolution]
    if larger:
        yield "resolution", Arch(rng.choice(larger), arch.stages)


@pytest.mark.parametrize("pid", list(PRESETS))
def test_monotonic(pid):
    space, rng = SearchSpace(pid), random.Random(pid)
    checked = set()
    for arch in space.sample_many(40, seed=2):
        base = {rt: arch_costs(space, arch, 10, rt) for rt in RUNTIMES}
        assert base["tinyengine"].peak_sram_bytes <= base["tflite-micro"].peak_sram_bytes
        for what, bigger in _bigger_variants(space, arch, rng):
            checked.add(what)
            for rt in RUNTIMES:
                a, b = base[rt], arch_costs(space, bigger, 10, rt)
                assert b.macs >= a.macs, (what, arch, bigger)
                assert b.peak_sram_bytes >= a.peak_sram_bytes, (what, rt, arch, bigger)
                if what == "resolution":
                    assert (b.params, b.flash_bytes) == (a.params, a.flash_bytes)
                    assert b.macs > a.macs
                else:
                    assert b.params > a.params and b.flash_bytes > a.flash_bytes, (what, arch, bigger)
    assert checked == {"kernel", "expand", "depth", "resolution"}


def test_invalid_arch_is_an_arch_error():
    space = SearchSpace("ofa-mbv3-ci")
    good = space.smallest()
    bad_kernel = Arch(good.resolution, (((4, 3),) * 2,) + good.stages[1:])
    with pytest.raises(ArchError, match="kernel 4"):
        arch_costs(space, bad_kernel, 10)
    with pytest.raises(ArchError, match="resolution 30"):
        arch_costs(space, Arch(30, good.stages), 10)
    with pytest.raises(ArchError, match="stages"):
        layers(space, Arch(good.resolution, good.stages[:3]), 10)
    with pytest.raises(ArchError):
        peak_sram_profile(space, bad_kernel, 10)
    with pytest.raises(ArchError):
        macs_by_type(space, bad_kernel, 10)
    with pytest.raises(OfaEdgeError, match="num_classes"):
        arch_costs(space, good, 0)


def test_unknown_runtime():
    space = SearchSpace("ofa-mbv3-ci")
    for call in (arch_costs, peak_sram_profile):
        with pytest.raises(OfaEdgeError) as info:
            call(space, space.smallest(), 10, runtime="tvm")
        assert not isinstance(info.value, ArchError)
        assert all(rt in str(info.value) for rt in ("tvm", "tflite-micro", "tinyengine"))


def test_costs_json_round_trip_and_str():
    space = SearchSpace("ofa-mbv3-tiny")
    costs = arch_costs(space, space.largest(32), 10)
    data = json.loads(json.dumps(costs.to_json()))
    assert set(data) == {"macs", "params", "peak_sram_bytes", "flash_bytes", "runtime"}
    assert Costs.from_json(data) == costs
    with pytest.raises(OfaEdgeError):
        Costs.from_json({"macs": 1})
    assert re.fullmatch(r"macs \d+\.\dM  params \d+\.\d\dM  peak SRAM \d+\.\d KiB \(tflite-micro\)  "
                        r"flash \d+\.\d\d MiB", str(costs)), str(costs)


def test_import_is_torch_free():
    code = ("import sys; sys.modules['torch'] = None; import ofa_edge.space.costs as c; "
            "from ofa_edge.space import SearchSpace; s = SearchSpace('ofa-mbv3-ci'); "
            "print(c.arch_costs(s, s.largest(), 10))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "peak SRAM" in out.stdout
