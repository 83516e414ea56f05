"""The reference OFA implementation (PyPI `ofa`) as an oracle: same parameter counts and outputs."""
from __future__ import annotations

import pytest
import torch

from ofa_edge.space.reference import map_reference_key
from reference_ofa import randomised


@pytest.fixture(scope="module")
def reference_net():
    """The reference OFAMobileNetV3 w1.0, with random non-trivial weights (tests/reference_ofa.py)."""
    return randomised(1.0, 0)


@pytest.fixture(scope="module")
def ours(reference_net, tmp_path_factory):
    """Imported through a real .pth file loaded with torch.load(weights_only=True)."""
    from ofa_edge import load_supernet

    path = tmp_path_factory.mktemp("ref") / "ofa_mbv3_d234_e346_k357_w1.0.pth"
    torch.save({"state_dict": reference_net.state_dict()}, path)
    net = load_supernet(str(path))
    assert net.space.id == "ofa-mbv3-w1.0" and net.num_classes == 1000
    return net


def test_every_reference_key_is_mapped(reference_net, ours):
    mapped = {map_reference_key(k) for k in reference_net.state_dict()}
    assert mapped == set(ours.state_dict())


def _cases(space):
    return [space.largest(), space.smallest()] + [space.sample(seed, resolution=128 + 8 * seed) for seed in range(10)]


def test_subnets_match_the_reference(reference_net, ours):
    """Largest, smallest and 10 random archs: same parameter count, same outputs (1e-4)."""
    # the reference takes normalised images; ours takes [0, 1] and normalises inside
    mean = torch.tensor(ours.input_mean).view(1, 3, 1, 1)
    std = torch.tensor(ours.input_std).view(1, 3, 1, 1)
    for arch in _cases(ours.space):
        lists = arch.to_reference(ours.space.preset.max_depth)
        reference_net.set_active_subnet(ks=lists["ks"], e=lists["e"], d=lists["d"])
        ref_sub = reference_net.get_active_subnet(preserve_weight=True).eval()
        our_sub = ours.extract(arch).eval()
        assert sum(p.numel() for p in ref_sub.parameters()) == sum(p.numel() for p in our_sub.parameters())
        x = torch.rand(2, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            expected = ref_sub((x - mean) / std)
            assert (our_sub(x) - expected).abs().max().item() <= 1e-4, str(arch)
            assert (ours(x) - reference_net((x - mean) / std)).abs().max().item() <= 1e-4, str(arch)


def test_non_reference_checkpoint_is_a_clear_error(tmp_path):
    from ofa_edge import load_supernet
    from ofa_edge.space.checkpoint import CheckpointError

    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="has no ofa-edge counterpart"):
        load_supernet(str(path))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read it as a weights-only torch checkpoint"):
        load_supernet(str(junk))
