"""The carbon ledger's headline: N deployment scenarios with ofa-edge (one training of the
supernet, its accuracy predictor, then per device a quick bench, a search and a deploy) against N
separate trainings of one model each (what one from-scratch run measured). The paper's count is 40
(OFA, Cai et al., ICLR 2020, Table 1: 40 deployment scenarios)."""
from __future__ import annotations

KEYS = ("cpu_s", "energy_j", "co2e_g", "wall_s")


def _sum(entries: list[dict]) -> dict:
    return {k: float(sum(e[k] for e in entries)) for k in KEYS}


def scenarios(once: list[dict], per_device: list[dict], per_training: list[dict], n_max: int = 40) -> dict:
    """Cumulative costs for N = 1..n_max.

    ``once``: the ledger entries paid once (train, predictor fit); ``per_device``: the entries of
    one specialisation (bench, search, deploy); ``per_training``: the entries of one or more
    from-scratch trainings, whose mean is the cost of one separate training.
    """
    if not once or not per_device or not per_training:
        raise ValueError("the carbon ledger needs the one-off, per-device and per-training entries")
    fixed, device = _sum(once), _sum(per_device)
    training = {k: v / len(per_training) for k, v in _sum(per_training).items()}
    ns = list(range(1, n_max + 1))
    ofa = {k: [fixed[k] + n * device[k] for n in ns] for k in KEYS}
    separate = {k: [n * training[k] for n in ns] for k in KEYS}
    # where N separate trainings start to cost more than the supernet route
    crossover = next((n for n, a, b in zip(ns, ofa["energy_j"], separate["energy_j"]) if b > a), None)
    return {"n": ns, "ofa": ofa, "separate": separate, "once": fixed, "per_device": device,
            "per_training": training, "crossover_n": crossover,
            "ratio_at_max": separate["energy_j"][-1] / ofa["energy_j"][-1]}
