"""Shared fixtures. Heavy, session-scoped artefacts (search space, bench, block cache) live here
so that tests never convert or measure from cold twice."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNDER_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, what: str, fix: str) -> None:
    """A missing system dependency fails the run under CI=true, and skips elsewhere."""
    if condition:
        return
    message = f"{what} is missing: {fix}"
    if UNDER_CI:
        pytest.fail(f"{message} (CI=true: a missing system dependency is a failure, never a skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def _cli_executable() -> list[str]:
    script = Path(sys.executable).with_name("ofa-edge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ofa_edge.cli"]


@pytest.fixture(scope="session")
def run_cli():
    """Run the installed ``ofa-edge`` console script as a user would, in a subprocess."""

    def run(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run([*_cli_executable(), *args], cwd=cwd or REPO, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(autouse=True, scope="session")
def _ledger_outside_the_repo(tmp_path_factory):
    """Commands append to the ledger file: the suite's go to a temporary one, never runs/."""
    os.environ["OFA_EDGE_LEDGER"] = str(tmp_path_factory.mktemp("ledger") / "ledger.jsonl")


@pytest.fixture(autouse=True, scope="session")
def _data_cache_outside_home(tmp_path_factory):
    """Decoded image folders are cached: the suite's go to a temporary folder, never ~/.cache."""
    os.environ.setdefault("OFA_EDGE_DATA_CACHE", str(tmp_path_factory.mktemp("data-cache")))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Two busy processes on two cores collapse throughput: tests use one torch thread."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def randomize_supernet(net, seed: int = 0) -> None:
    """Give every parameter and BN statistic non-trivial values (identity transforms and unit
    BN would hide indexing bugs)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.dim() == 1:
                p.copy_(torch.rand(p.shape, generator=gen) * 0.4 + (0.8 if name.endswith("weight") else -0.2))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)


FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def require_fmnist() -> None:
    require((FMNIST_DIR / "train-images-idx3-ubyte.gz").exists(), "Fashion-MNIST",
            "apt-get install -y dataset-fashion-mnist")


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    """One short training run of the CI recipe (ofa-mbv3-ci, 512 images), shared by tests."""
    require_fmnist()
    from ofa_edge.train.engine import Trainer
    from ofa_edge.train.recipe import load_recipe

    out = tmp_path_factory.mktemp("ci-run")
    summary = Trainer(load_recipe(REPO / "recipes" / "ci-tiny.yaml"), out, progress=False).run()
    return out, summary


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory):
    """One real sshd on loopback for the whole session (tests/sshd.py). Do not stop or re-key
    it: use sshd.start_sshd for a server of your own."""
    from sshd import require_sshd, start_sshd

    require_sshd()
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


COLD_CACHE = UNDER_CI or not os.environ.get("OFA_EDGE_TEST_CACHE")

# The one bench of the suite: the tiny CI space (one resolution, kernels {3, 7}, expands {3, 6}:
# 25 blocks) plus 12 whole subnets, int8 TFLite, over the real sshd. Its converted models fill the
# one block cache that every later bench in the suite reuses.
CI_BENCH = dict(resolutions=[28], kernels=[3, 7], expands=[3, 6], subnets=10, batch=8, progress=False)
# A work dir with a space and both quotes: every remote path must be quoted.
AWKWARD_DIR = "dev ice's \"work\" dir"


def bench_spec_yaml(path: Path, connection: dict, work_dir: str, name: str = "ci-device",
                    python: str | None = None) -> Path:
    """A device spec for this machine's runtimes (TFLite full-int8 on one thread)."""
    import yaml

    spec = {"schema_version": 1, "name": name, "kind": "cpu",
            "hardware": {"cores": os.cpu_count() or 1, "clock_mhz": 2445},
            "connection": connection,
            "runtime": {"name": "tflite", "version": "2.1.0", "delegate": "xnnpack", "threads": 1,
                        **({"cpu_affinity": [1]} if (os.cpu_count() or 1) > 1 else {})},
            "precision": "int8",
            "device": {"python": python or sys.executable, "work_dir": work_dir},
            "budgets": {"resolution": [28, 32]},
            "measure": {"warmup": 10, "repeats": 3, "runs_per_repeat": 40, "passes": 3, "pass_gap_s": 0.2}}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def block_cache(tmp_path_factory) -> Path:
    """The suite's one converted-model cache: cold in every run, unless a developer points
    OFA_EDGE_TEST_CACHE at a folder to keep it between runs (outside CI only; the first bench
    then converts nothing, and COLD_CACHE tells the tests so)."""
    kept = os.environ.get("OFA_EDGE_TEST_CACHE")
    if kept and not UNDER_CI:
        Path(kept).mkdir(parents=True, exist_ok=True)
        return Path(kept)
    return tmp_path_factory.mktemp("block-cache")


@pytest.fixture(scope="session")
def ci_supernet(tmp_path_factory) -> Path:
    """A supernet folder of the CI space (random weights, 'trained' at 28 and 32 px) with an
    accuracy predictor fitted on a synthetic accuracy that grows with log-MACs (so search has a
    trade-off to find). Not a trained network: bench and search only need its shapes."""
    import numpy as np
    import torch

    from ofa_edge.predictors.accuracy import fit
    from ofa_edge.space.checkpoint import save_supernet
    from ofa_edge.space.costs import arch_costs
    from ofa_edge.space.supernet import OFASupernet

    folder = tmp_path_factory.mktemp("ci-supernet")
    torch.manual_seed(0)
    net = OFASupernet("ofa-mbv3-ci", 10)
    randomize_supernet(net)
    save_supernet(net, folder, extra={"trained_resolutions": [28, 32]})
    archs = net.space.sample_many(300, seed=1)
    macs = np.array([arch_costs(net.space.preset, a, 10).macs for a in archs], float)
    accs = 0.80 + 0.03 * np.log(macs / macs.min())
    predictor = fit(net.space, archs, accs, hidden=32, layers=2, epochs=300)
    predictor.report = {"resolutions": [28, 32], "synthetic": True}
    predictor.save(folder / "accuracy_predictor.json")
    return folder


@pytest.fixture(scope="session")
def ci_local_bench(tmp_path_factory, ci_supernet, block_cache, ci_bench):
    """(spec, result) of a --quick bench of the CI space on this machine (local transport):
    60 random subnets, 30 of them held out, 32 (with the largest and smallest) to calibrate on."""
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec

    root = tmp_path_factory.mktemp("ci-local-bench")
    spec = load_spec(bench_spec_yaml(root / "ci-local.yaml", {"transport": "local"}, str(root / "work"),
                                     name="ci-local"))
    log: list[str] = []
    options = BenchOptions(**{**CI_BENCH, "subnets": None}, quick=True, supernet=str(ci_supernet),
                           out=root / "runs", cache=block_cache, log=log.append)
    return spec, run_bench(spec, options), log


@pytest.fixture(scope="session")
def ci_bench(tmp_path_factory, sshd_server, block_cache, ci_supernet):
    """(spec, options, result, log) of one bench over the real sshd, from a cold cache."""
    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec

    root = tmp_path_factory.mktemp("ci-bench")
    spec = load_spec(bench_spec_yaml(root / "ci-ssh.yaml", sshd_server.connection(),
                                     f"{sshd_server.home}/{AWKWARD_DIR}", name="ci-ssh"))
    log: list[str] = []
    options = BenchOptions(**CI_BENCH, supernet=str(ci_supernet), out=root / "runs", cache=block_cache,
                           log=log.append)
    result = run_bench(spec, options)
    return spec, options, result, log


#: The ImageNet-path tests' data: 37 real images per class, 3 classes; 11 recalibrate BN, 100 are scored.
IMAGENET_PER_CLASS = 37


@pytest.fixture(scope="session")
def imagenet_run(tmp_path_factory) -> Path:
    """A reference w1.0 supernet (random weights, through the reference implementation) and a
    tutorial-layout accuracy predictor, imported into a run folder as a user would."""
    import torch

    from reference_ofa import randomised, tutorial_predictor_file
    from ofa_edge.space.reference import import_reference

    folder = tmp_path_factory.mktemp("ofa-reference")
    checkpoint = folder / "ofa_mbv3_d234_e346_k357_w1.0"
    torch.save(randomised(1.0, 11).state_dict(), checkpoint, _use_new_zipfile_serialization=False)
    return import_reference(checkpoint, folder / "runs" / "ofa-w1.0",
                            acc_predictor=tutorial_predictor_file(folder / "acc_predictor.pth"))


@pytest.fixture(scope="session")
def imagenet_val(tmp_path_factory) -> Path:
    """ImageNet's val layout (val/<wnid>/*.JPEG) from real photos (tests/imagenet_folder.py)."""
    from imagenet_folder import make_imagenet_folder

    root = tmp_path_factory.mktemp("imagenet") / "val"
    make_imagenet_folder(root, per_class=IMAGENET_PER_CLASS)
    return root
