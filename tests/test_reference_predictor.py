"""The reference accuracy predictors (both layouts) imported into ofa-edge's predictor format,
checked against the reference code's own encoding and forward pass (PyPI `ofa`)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ofa_edge.errors import OfaEdgeError
from ofa_edge.predictors.accuracy import AccuracyPredictor
from ofa_edge.predictors.reference_import import NAS, TUTORIAL, import_reference_predictor
from ofa_edge.space import SearchSpace
from reference_ofa import reference_imports

SPACE = SearchSpace("ofa-mbv3-w1.0")


@pytest.fixture(scope="module")
def ofa():
    """The reference modules; torchvision, gdown (and PIL if absent) stubbed around the import
    only, as in test_reference_oracle.py. Nothing is downloaded: the tutorial predictor is built
    with pretrained=False."""
    with reference_imports():
        from ofa.nas.accuracy_predictor import AccuracyPredictor as NasPredictor
        from ofa.nas.accuracy_predictor import MobileNetArchEncoder
        from ofa.tutorial.accuracy_predictor import AccuracyPredictor as TutorialPredictor
    return NasPredictor, MobileNetArchEncoder, TutorialPredictor


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * 0.1)


def _archs(space: SearchSpace, resolutions, per_resolution: int = 2) -> list:
    return ([space.largest(r) for r in resolutions] + [space.smallest(r) for r in resolutions]
            + [space.sample(1000 * i + r, resolution=r) for r in resolutions for i in range(per_resolution)])


def _nas_reference(ofa, image_sizes, seed=0):
    NasPredictor, Encoder, _ = ofa
    encoder = Encoder(image_size_list=list(image_sizes), ks_list=[3, 5, 7], expand_list=[3, 4, 6],
                      depth_list=[2, 3, 4])
    ref = NasPredictor(encoder, hidden_size=400, n_layers=3, device="cpu")
    _randomise(ref, seed)
    with torch.no_grad():
        ref.base_acc.fill_(0.72)
    return encoder, ref.eval()


def _nas_predict(encoder, ref, archs) -> np.ndarray:
    """The reference's predict_acc, in float64: its encoder's features through its forward."""
    feats = []
    for a in archs:
        lists = a.to_reference(SPACE.preset.max_depth)
        feats.append(encoder.arch2feature({"ks": lists["ks"], "e": lists["e"], "d": lists["d"],
                                           "image_size": a.resolution}))
    with torch.no_grad():
        return ref.double()(torch.tensor(np.array(feats), dtype=torch.float64)).numpy()


def _tutorial_predict(TutorialPredictor, model, archs) -> np.ndarray:
    feats = []
    for a in archs:
        lists = a.to_reference(SPACE.preset.max_depth)
        feats.append(TutorialPredictor.spec2feats(copy.deepcopy(lists["ks"]), copy.deepcopy(lists["e"]),
                                                  lists["d"], a.resolution))
    with torch.no_grad():
        return model.double()(torch.stack(feats).double())[:, 0].numpy()


def _changed_kernel(arch):
    """The same arch with stage 3 block 1's kernel changed."""
    stages = [list(s) for s in arch.stages]
    k, e = stages[2][0]
    stages[2][0] = (5 if k != 5 else 7, e)
    return type(arch)(arch.resolution, tuple(tuple(s) for s in stages))


@pytest.mark.parametrize("wrapped", [False, True])
def test_nas_layout_matches_the_reference(ofa, tmp_path, wrapped):
    resolutions = SPACE.preset.resolutions
    encoder, ref = _nas_reference(ofa, resolutions)
    path = tmp_path / "acc_predictor_nas.pth"
    torch.save({"state_dict": ref.state_dict()} if wrapped else ref.state_dict(), path)
    ours = import_reference_predictor(path, SPACE)
    assert ours.report["layout"] == NAS and ours.report["resolutions"] == list(resolutions)
    assert "restricted" not in ours.report
    archs = _archs(SPACE, resolutions)
    assert {a.resolution for a in archs} == set(resolutions)
    expected = _nas_predict(encoder, ref, archs)
    got = ours.predict(SPACE, archs)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # the float32 reference forward (as predict_acc runs it) agrees too, to float32 rounding
    with torch.no_grad():
        ref32 = copy.deepcopy(ref).float()
        lists = [a.to_reference(4) | {"image_size": a.resolution} for a in archs]
        f32 = ref32.predict_acc(lists).numpy()
    np.testing.assert_allclose(got, f32, rtol=0, atol=1e-5)
    # one block's kernel matters, the same way in both
    a = archs[-1]
    b = _changed_kernel(a)
    pa, pb = ours.predict(SPACE, [a, b])
    assert abs(pa - pb) > 1e-6
    np.testing.assert_allclose([pa, pb], _nas_predict(encoder, ref, [a, b]), rtol=0, atol=1e-6)


def test_nas_layout_with_fewer_resolutions_restricts_the_search(ofa, tmp_path):
    encoder, ref = _nas_reference(ofa, [128, 160, 192, 224], seed=3)
    path = tmp_path / "acc_predictor_4res.pth"
    torch.save(ref.state_dict(), path)
    ours = import_reference_predictor(path, SPACE)
    assert ours.report["resolutions"] == [128, 160, 192, 224]
    assert "132, 136" in ours.report["restricted"]
    archs = _archs(SPACE, [128, 160, 192, 224])
    np.testing.assert_allclose(ours.predict(SPACE, archs), _nas_predict(encoder, ref, archs), rtol=0, atol=1e-6)
    # an unknown column count needs the list; the given list must fit
    encoder, ref = _nas_reference(ofa, [160, 176, 192, 208, 224], seed=4)
    torch.save(ref.state_dict(), path)
    with pytest.raises(OfaEdgeError, match="5 resolution columns") as exc:
        import_reference_predictor(path, SPACE)
    assert "\n" not in str(exc.value)
    ours = import_reference_predictor(path, SPACE, resolutions=[160, 176, 192, 208, 224])
    archs = _archs(SPACE, [160, 176, 192, 208, 224], per_resolution=1)
    np.testing.assert_allclose(ours.predict(SPACE, archs), _nas_predict(encoder, ref, archs), rtol=0, atol=1e-6)


def test_tutorial_layout_matches_the_reference(ofa, tmp_path):
    _, _, TutorialPredictor = ofa
    tut = TutorialPredictor(pretrained=False, device="cpu")
    _randomise(tut.model, 5)
    path = tmp_path / "acc_predictor.pth"
    torch.save(tut.model.state_dict(), path)
    for space in (SPACE, SearchSpace("ofa-mbv3-w1.2")):
        ours = import_reference_predictor(path, space)
        assert ours.report["layout"] == TUTORIAL and ours.report["resolutions"] == list(space.preset.resolutions)
        archs = _archs(space, space.preset.resolutions)
        got = ours.predict(space, archs)
        np.testing.assert_allclose(got, _tutorial_predict(TutorialPredictor, tut.model, archs), rtol=0, atol=1e-6)
    # the tutorial's own predict_accuracy (float32)
    tut.model.float()
    population = [{**{k: v for k, v in a.to_reference(4).items() if k != "r"}, "r": [a.resolution]} for a in archs]
    np.testing.assert_allclose(got, tut.predict_accuracy(population)[:, 0].numpy(), rtol=0, atol=1e-5)
    # every resolution bucket is used, and one block's kernel matters
    assert len({(r - 112) // 16 for r in space.preset.resolutions}) == 7
    a = archs[-1]
    pa, pb = ours.predict(space, [a, _changed_kernel(a)])
    assert abs(pa - pb) > 1e-6


def test_tutorial_layout_as_a_plain_sequential(tmp_path, ofa):
    """The published file is a plain Sequential's state dict (keys 0., 2., 4., 6.)."""
    _, _, TutorialPredictor = ofa
    model = torch.nn.Sequential(torch.nn.Linear(128, 400), torch.nn.ReLU(), torch.nn.Linear(400, 400), torch.nn.ReLU(),
                                torch.nn.Linear(400, 400), torch.nn.ReLU(), torch.nn.Linear(400, 1))
    _randomise(model, 6)
    path = tmp_path / "acc_predictor.pth"
    torch.save(model.state_dict(), path)
    ours = import_reference_predictor(path, "ofa-mbv3-w1.0")
    archs = _archs(SPACE, SPACE.preset.resolutions, per_resolution=1)
    np.testing.assert_allclose(ours.predict(SPACE, archs), _tutorial_predict(TutorialPredictor, model, archs),
                               rtol=0, atol=1e-6)


def test_import_round_trips_through_accuracy_predictor_json(ofa, tmp_path):
    encoder, ref = _nas_reference(ofa, SPACE.preset.resolutions, seed=7)
    torch.save(ref.state_dict(), tmp_path / "p.pth")
    ours = import_reference_predictor(tmp_path / "p.pth", SPACE)
    loaded = AccuracyPredictor.load(ours.save(tmp_path / "run" / "accuracy_predictor.json"))
    archs = _archs(SPACE, (128, 176, 224), per_resolution=1)
    np.testing.assert_array_equal(loaded.predict(SPACE, archs), ours.predict(SPACE, archs))
    assert loaded.report["layout"] == NAS and loaded.report["sha256"] == ours.report["sha256"]


def test_wrong_files_give_one_line(tmp_path, ofa):
    def refused(obj_or_bytes, space=SPACE, match=None):
        path = tmp_path / "bad.pth"
        if isinstance(obj_or_bytes, bytes):
            path.write_bytes(obj_or_bytes)
        else:
            torch.save(obj_or_bytes, path)
        with pytest.raises(OfaEdgeError, match=match) as exc:
            import_reference_predictor(path, space)
        assert "\n" not in str(exc.value)
        return str(exc.value)

    # a foreign state dict: says which shapes it found and which two layouts are accepted
    msg = refused({"conv.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)})
    assert "conv.weight 8x3x3x3" in msg and "ofa.nas.accuracy_predictor" in msg and "tutorial" in msg
    # the tutorial's shapes with a wrong input width
    wrong = torch.nn.Sequential(torch.nn.Linear(130, 400), torch.nn.ReLU(), torch.nn.Linear(400, 1))
    assert "0.weight 400x130" in refused(wrong.state_dict())
    # the nas layout without its base_acc
    _, ref = _nas_reference(ofa, [224])
    state = {k: v for k, v in ref.state_dict().items() if k != "base_acc"}
    refused(state, match="not a reference accuracy predictor")
    # truncated, not torch at all, not a dict
    good = tmp_path / "good.pth"
    torch.save(ref.state_dict(), good)
    refused(good.read_bytes()[:300], match="cannot read it")
    refused(b"hello", match="cannot read it")
    refused([torch.zeros(3)], match="found a list")
    # a space the reference encoding cannot cover: the tiny space's 24-64 px
    torch.save(ref.state_dict(), good)
    with pytest.raises(OfaEdgeError, match="cover none") as exc:
        import_reference_predictor(good, "ofa-mbv3-tiny")
    assert "\n" not in str(exc.value)
    with pytest.raises(OfaEdgeError, match="no such file"):
        import_reference_predictor(tmp_path / "missing.pth", SPACE)


def test_the_published_predictor_imports_exactly(ofa):
    """OFA's published acc_predictor.pth (../shared/ofa-reference): ofa-edge's import predicts what the
    reference's ofa.tutorial.AccuracyPredictor, loaded with the same file, predicts, on random archs
    at every resolution of both full-size spaces."""
    from conftest import REPO, require

    published = REPO.parent / "shared" / "ofa-reference" / "acc_predictor.pth"
    require(published.is_file(), "OFA's published accuracy predictor", f"put ../shared beside the checkout ({published})")
    _, _, TutorialPredictor = ofa
    tut = TutorialPredictor(pretrained=False, device="cpu")
    tut.model.load_state_dict(torch.load(published, map_location="cpu", weights_only=True))
    for space in (SPACE, SearchSpace("ofa-mbv3-w1.2")):
        ours = import_reference_predictor(published, space)
        archs = _archs(space, space.preset.resolutions, per_resolution=4)
        got = ours.predict(space, archs)
        np.testing.assert_allclose(got, _tutorial_predict(TutorialPredictor, tut.model, archs), rtol=0, atol=1e-6)
        assert 0.6 < float(np.min(got)) < float(np.max(got)) < 0.9  # ImageNet top-1 fractions, as published
