"""The elastic supernet: subnets run alone, extraction is exact, checkpoints are safe."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import randomize_supernet
from ofa_edge import load_supernet
from ofa_edge.space import PRESETS, Arch, ArchError, SearchSpace
from ofa_edge.space.bn import recalibrate_bn
from ofa_edge.space.checkpoint import CheckpointError, load_checkpoint, read_header, save_supernet
from ofa_edge.space.supernet import OFASupernet

ARCHS_PER_PRESET = {"ofa-mbv3-ci": 20, "ofa-mbv3-tiny": 20, "ofa-mbv3-w1.0": 6, "ofa-mbv3-w1.2": 6}


@pytest.fixture(scope="module", params=sorted(PRESETS))
def supernet(request):
    classes = 1000 if "w1." in request.param else 10
    torch.manual_seed(0)
    net = OFASupernet(request.param, classes, input_mean=(0.3, 0.4, 0.5), input_std=(0.2, 0.25, 0.3))
    randomize_supernet(net)
    return net.eval()


def _arches(space: SearchSpace, n: int) -> list[Arch]:
    small = min(space.preset.resolutions)  # keep the paper-size spaces quick
    return [space.largest(), space.smallest()] + [space.sample(seed, resolution=small if i % 2 else None)
                                                  for i, seed in enumerate(range(n - 2))]


def test_extracted_subnet_matches_the_supernet(supernet):
    """>= 50 random archs across the presets (20 + 20 + 6 + 6), largest and smallest included."""
    n = ARCHS_PER_PRESET[supernet.space.id]
    for arch in _arches(supernet.space, n):
        x = torch.rand(2, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            supernet.set_active(arch)
            y_super = supernet(x)
            sub = supernet.extract(arch)
            y_sub = sub(x)
        assert not any(isinstance(m, torch.nn.Module) and type(m).__module__.endswith(".ops")
                       for m in sub.modules()), "an extracted net must hold only plain layers"
        diff = (y_super - y_sub).abs().max().item()
        assert diff <= 1e-4 or diff <= 1e-5 * y_super.abs().max().item(), (str(arch), diff)
        assert sub.arch_text == str(arch)


def test_subnets_are_distinct_and_weights_are_copied(supernet):
    space = supernet.space
    big, small = supernet.extract(space.largest()), supernet.extract(space.smallest())
    n_big, n_small = (sum(p.numel() for p in m.parameters()) for m in (big, small))
    assert n_big > n_small
    before = supernet.stem.conv.weight.clone()
    with torch.no_grad():
        small.stem.conv.weight.add_(1.0)
    assert torch.equal(supernet.stem.conv.weight, before), "extract must copy, not share, weights"


def test_kernel_transform_is_applied(supernet):
    """With non-identity transforms a 3x3 kernel is not just the centre crop of the 7x7."""
    block = supernet.blocks[0]
    w7 = block.depthwise.weight[:8]
    w3 = block.depthwise.active_weight(8, 3)
    assert w3.shape == (8, 1, 3, 3)
    assert not torch.allclose(w3, w7[:, :, 2:5, 2:5])
    with torch.no_grad():
        for m in block.depthwise.transforms.values():
            m.copy_(torch.eye(m.shape[0]))
    assert torch.allclose(block.depthwise.active_weight(8, 3), w7[:, :, 2:5, 2:5])


def test_onnx_export_has_no_custom_ops(tmp_path):
    import onnx
    net = OFASupernet("ofa-mbv3-ci", 10).eval()
    arch = net.space.sample(3)
    sub = net.extract(arch).eval()
    path = tmp_path / "sub.onnx"
    torch.onnx.export(sub, (torch.rand(1, 3, arch.resolution, arch.resolution),), str(path),
                      input_names=["input"], output_names=["logits"], opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}
    standard = {s.name for s in onnx.defs.get_all_schemas()}
    assert {n.op_type for n in model.graph.node} <= standard

    import onnxruntime as ort
    x = np.random.default_rng(0).random((1, 3, arch.resolution, arch.resolution), dtype=np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        y_torch = sub(torch.from_numpy(x)).numpy()
    assert np.abs(y_ort - y_torch).max() < 1e-4


def test_sort_channels_keeps_the_largest_subnet_and_orders_importance():
    torch.manual_seed(0)
    net = OFASupernet("ofa-mbv3-ci", 10)
    randomize_supernet(net)
    net.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        net.set_active("max")
        before = net(x)
        net.sort_channels()
        after = net(x)
    assert (before - after).abs().max().item() < 1e-4
    for block in net.blocks:
        importance = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:])


def test_bn_recalibration_sets_the_subnets_statistics():
    torch.manual_seed(0)
    net = OFASupernet("ofa-mbv3-ci", 10).eval()
    arch = net.space.smallest()
    sub = net.extract(arch)
    data = [torch.rand(16, 3, 28, 28) * 0.5 + 0.25 for _ in range(4)]
    seen = recalibrate_bn(sub, data)
    assert seen == 64 and not sub.training
    stem_bn = sub.stem.bn
    # the stem BN's running mean is the mean of the stem conv's output over the data
    with torch.no_grad():
        conv_out = torch.cat([sub.stem.conv(sub.input_norm(x)) for x in data])
    assert torch.allclose(stem_bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert stem_bn.momentum == 0.1, "the original momentum is restored"
    # recalibrating the supernet at that arch gives the same statistics for the active part
    recalibrate_bn(_set(net, arch), data)
    assert torch.allclose(net.stem.bn.running_mean, stem_bn.running_mean, atol=1e-5)


def _set(net, arch):
    net.set_active(arch)
    return net


def test_count_and_arch_forms():
    space = SearchSpace("ofa-mbv3-w1.0")
    assert space.count() == 7371 ** 5
    assert space.count(include_resolution=True) == 7371 ** 5 * 25
    assert 2.17e19 < space.count() < 2.19e19
    for seed in range(20):
        arch = space.sample(seed)
        assert Arch.parse(str(arch)) == arch
        assert Arch.from_json(json.loads(json.dumps(arch.to_json()))) == arch
        ref = arch.to_reference(4)
        assert Arch.from_reference(**{"ks": ref["ks"], "e": ref["e"], "d": ref["d"], "r": ref["r"]}) == arch


def test_load_supernet_preset_and_checkpoint_round_trip(tmp_path):
    net = load_supernet("ofa-mbv3-ci", num_classes=10)
    randomize_supernet(net, seed=3)
    net.eval()
    path = save_supernet(net, tmp_path / "run")
    assert path.name == "supernet.safetensors" and not list(path.parent.glob(".tmp-*"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the user's usual mode, not mkstemp's 0600
    header = read_header(path)
    assert header["space_id"] == "ofa-mbv3-ci" and header["num_classes"] == 10
    assert header["input_mean"] == [0.0, 0.0, 0.0]
    loaded = load_supernet(str(tmp_path / "run"))
    arch = net.space.sample(5)
    x = torch.rand(1, 3, arch.resolution, arch.resolution)
    with torch.no_grad():
        assert torch.equal(_set(net, arch)(x), _set(loaded, arch)(x))
    assert b"pickle" not in path.read_bytes()[:200]


def test_checkpoint_errors_are_one_clear_line(tmp_path):
    net = load_supernet("ofa-mbv3-ci", num_classes=10)
    good = save_supernet(net, tmp_path / "good.safetensors")
    # corrupt: truncated file
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        load_checkpoint(bad)
    # garbage
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not an ofa-edge supernet checkpoint"):
        load_checkpoint(junk)
    # mismatch: weights of one space under another space's header
    from safetensors.torch import load_file, save_file
    other = load_supernet("ofa-mbv3-tiny", num_classes=10)
    tensors = load_file(str(good))
    header = json.loads(json.dumps(read_header(good)))
    header["preset"] = other.space.preset.to_json()
    mismatched = tmp_path / "mismatch.safetensors"
    save_file(tensors, str(mismatched), metadata={"ofa_edge": json.dumps(header)})
    with pytest.raises(CheckpointError, match="does not match the search space: .* mis-shaped"):
        load_checkpoint(mismatched)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_supernet(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="12 were asked for"):
        load_supernet(str(good), num_classes=12)


def test_bad_arch_is_a_clear_error():
    net = OFASupernet("ofa-mbv3-ci", 10)
    with pytest.raises(ArchError, match="kernel 4, allowed"):
        net.set_active(Arch.parse("r32|k4e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"))
    with pytest.raises(ArchError, match="resolution 100 is not in space"):
        net.set_active(Arch.parse("r100|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"))
    with pytest.raises(ArchError, match="stage 2 has depth 1"):
        net.set_active(Arch.parse("r32|k3e3,k3e3|k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"))
    with pytest.raises(ArchError, match="expected 'r<resolution>"):
        Arch.parse("k3e3")


def test_space_and_arch_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from ofa_edge.space.arch import Arch\n"
            "from ofa_edge.space import SearchSpace\n"
            "from ofa_edge.space.costs import arch_costs\n"
            "import ofa_edge\n"
            "s = SearchSpace('ofa-mbv3-w1.0'); a = s.sample(0)\n"
            "assert Arch.parse(str(a)) == a and s.count() == 7371 ** 5\n"
            "print(arch_costs(s.preset, a, 1000).macs)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 0


def _hook_count(model: torch.nn.Module, resolution: int) -> int:
    """MACs of every Conv2d and Linear, counted by forward hooks on the real network."""
    total = 0

    def conv_hook(m, inputs, output):
        nonlocal total
        total += output.numel() // output.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inputs, output):
        nonlocal total
        total += m.in_features * m.out_features

    handles = [m.register_forward_hook(conv_hook if isinstance(m, torch.nn.Conv2d) else linear_hook)
               for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.rand(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_cost_model_matches_the_built_network(preset):
    from ofa_edge.space.costs import arch_costs, layers

    classes = 1000 if "w1." in preset else 10
    net = OFASupernet(preset, classes).eval()
    space = net.space
    for arch in [space.largest(), space.smallest(), space.sample(11), space.sample(12)]:
        sub = net.extract(arch)
        costs = net.costs(arch)
        assert costs == arch_costs(space.preset, arch, classes)
        assert costs.params == sum(p.numel() for p in sub.parameters()), str(arch)
        assert costs.macs == _hook_count(sub, arch.resolution), str(arch)
        convs = [m for m in sub.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert len(convs) == len(layers(space.preset, arch, classes))


@pytest.mark.parametrize("kernel,stride", [(7, 1), (7, 2), (5, 1)])
def test_fast_depthwise_gradient_equals_native(kernel, stride):
    import torch.nn.functional as F

    from ofa_edge.space.ops import depthwise_conv2d

    gen = torch.Generator().manual_seed(kernel * 10 + stride)
    x = torch.randn(4, 12, 5, 5, generator=gen, requires_grad=True)  # kernel larger than the map
    w = torch.randn(12, 1, kernel, kernel, generator=gen, requires_grad=True)
    g = torch.randn(4, 12, (5 - 1) // stride + 1, (5 - 1) // stride + 1, generator=gen)
    grads = []
    for fn in (lambda: F.conv2d(x, w, None, stride, kernel // 2, 1, 12),
               lambda: depthwise_conv2d(x, w, stride, kernel // 2)):
        x.grad = w.grad = None
        out = fn()
        out.backward(g)
        grads.append((out.detach(), x.grad.clone(), w.grad.clone()))
    for native, fast in zip(*grads):
        assert (native - fast).abs().max() <= 1e-6 * native.abs().max() * 100  # float32 summation order
