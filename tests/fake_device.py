"""A scripted device for MockTransport tests: answers the runner's commands as a device would."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


class FakeDevice:
    """Answers the runner's commands the way a device would, over a MockTransport.

    A model's timings depend on its bytes only: per-run times skewed so that p10, p50 and p90
    differ clearly (0.9x, 1x and 1.3x a base figure). ``factors`` scales every model of the n-th
    ``time`` call (1-based), for drift; ``eval`` runs the real runner on the pushed bytes.
    """

    def __init__(self, protocol: int | None = None, corrupt: bool = False, factors: dict[int, float] | None = None,
                 ms: Callable[[str], float] | None = None, throttled: dict[int, str] | None = None):
        from ofa_edge.devices.runner import PROTOCOL_VERSION

        self.protocol = PROTOCOL_VERSION if protocol is None else protocol
        self.corrupt, self.factors, self.ms = corrupt, factors or {}, ms or self.base_ms
        self.throttled = throttled or {}  # n-th time call -> why the device throttled during it
        self.transport = None
        self.time_calls = 0

    @staticmethod
    def base_ms(sha: str) -> float:
        return 1.0 + int(sha[:4], 16) / 65536

    def stats(self, sha: str, factor: float) -> dict:
        base = self.ms(sha) * factor
        return {"sha256": "0" * 64 if self.corrupt else sha, "p10_ms": round(0.9 * base, 6),
                "p50_ms": round(base, 6), "median_ms": round(base, 6), "p90_ms": round(1.3 * base, 6),
                "per_repeat_ms": [base] * 3, "cov": 0.01, "min_ms": 0.8 * base, "max_ms": 2 * base,
                "iqr_ms": 0.01, "runs_total": 120}

    def __call__(self, text: str, _input):
        import hashlib
        import shlex

        from ofa_edge.devices.runner_host import RUNNER_NAME

        if "mktemp -d" in text:  # the session's run folder
            return shlex.split(text.split("mktemp -d", 1)[1])[0].replace("XXXXXX", "abc123") + "\n"
        words = shlex.split(text) if "&&" not in text else []
        if RUNNER_NAME not in text or not words:
            return 0
        answer = {"protocol": self.protocol, "ok": True, "command": words[2]}
        if words[2] == "protocol":
            answer["runner_sha256"] = hashlib.sha256(self.transport.files[words[1]]).hexdigest()
        elif words[2] == "info":
            answer.update({"runtimes": {"ai_edge_litert": {"available": True, "version": "2.1.0"}},
                           "tflite_interpreter": "ai_edge_litert", "cpu": {"model": "fake"}, "cores": {"logical": 4},
                           "python": {"version": "3.11.2"}, "numpy": "1.26.4", "machine": "aarch64"})
        elif words[2] == "time":
            self.time_calls += 1
            factor = self.factors.get(self.time_calls, 1.0)
            models = [words[i + 1] for i, w in enumerate(words) if w == "--model"]
            answer["models"] = [{"model": m, **self.stats(hashlib.sha256(self.transport.files[m]).hexdigest(), factor)}
                                for m in models]
            answer["throttled"] = self.throttled.get(self.time_calls)
        elif words[2] == "eval":
            answer = self.eval(words)
        return json.dumps(answer) + "\n"

    def eval(self, words: list[str]) -> dict:
        """The real runner on the pushed bytes, on this machine."""
        import tempfile

        from ofa_edge.devices.runner_host import run_local

        args = ["eval", *words[3:]]
        with tempfile.TemporaryDirectory() as folder:
            for flag in ("--model", "--data"):
                i = args.index(flag) + 1
                local = Path(folder) / Path(args[i]).name
                local.write_bytes(self.transport.files[args[i]])
                args[i] = str(local)
            return run_local(*args)


class RankedTimes:
    """Base figures by order of first appearance: the first model ever timed is the reference
    (bench and deploy time it alone first) and takes ``reference_ms``; the n-th other model takes
    ``figures[n]`` (the last one repeats)."""

    def __init__(self, figures: list[float], reference_ms: float = 0.05):
        self.figures, self.reference_ms = figures, reference_ms
        self.reference: str | None = None
        self.order: list[str] = []

    def __call__(self, sha: str) -> float:
        if self.reference is None:
            self.reference = sha
        if sha == self.reference:
            return self.reference_ms
        if sha not in self.order:
            self.order.append(sha)
        return self.figures[min(self.order.index(sha), len(self.figures) - 1)]
