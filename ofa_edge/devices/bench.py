"""``ofa-edge bench``: time every candidate block and whole subnets on the device.

The steps: plan what to measure (the coverage: resolutions, kernels, expands), connect, read
the device identity with ``runner info``, take the device lock, set the reference model's
baseline, then pass after pass over the shuffled set: in batches convert (or take from the
cache), push, time beside the reference model (``ofa_edge.devices.protocol``: a batch the
reference says drifted is measured again) and store every pass of every model in SQLite at
once. A dropped link or Ctrl-C loses nothing: run the same command again and it measures only
the passes that are missing. At the end ``blocks.json`` and ``subnets.json`` (each model's
p10/p50/p90 across passes, and the drift series) are written atomically under
``<out>/<spec name>/<space id>/`` and the remote work dir is cleaned.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shlex
import socket
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from converters import FORMATS, Format, format_for
from ofa_edge.devices.blocks import BlockKey, arch_blocks, candidate_blocks
from ofa_edge.devices.modelcache import ModelCache
from ofa_edge.devices.session import DeviceSession, runtime_args
from ofa_edge.devices.spec import DeviceSpec
from ofa_edge.devices.statistic import PASS_KEYS
from ofa_edge.devices.store import MeasurementStore
from ofa_edge.devices.transports import CommandTimeout, ConnectError, Transport, TransportError, remote_path_join
from ofa_edge.errors import OfaEdgeError
from ofa_edge.fileio import sha256_file, write_json_atomic
from ofa_edge.predictors.latency import BENCH_SCHEMA
from ofa_edge.space.arch import Arch
from ofa_edge.space.searchspace import SearchSpace

SCHEMA_VERSION = BENCH_SCHEMA
QUICK_MAX_RESOLUTIONS = 2
QUICK_SUBNETS = 60        # random whole subnets of --quick: 30 validate, 30 (+ largest, smallest) calibrate
DEFAULT_SUBNETS = 100
MIN_VALIDATION = 30
_ACTIVE_LOCKS: set[str] = set()  # lock tokens held by benches running in this process


class BenchError(OfaEdgeError):
    """A bench could not go on; what was measured so far is kept."""


@dataclass
class BenchOptions:
    quick: bool = False
    subnets: int | None = None           # random whole subnets (plus the largest and smallest)
    validation: int | None = None        # how many of them validate (default: 30%, at least 30)
    resolutions: list[int] | None = None
    kernels: list[int] | None = None     # restrict the coverage (default: all of the space)
    expands: list[int] | None = None
    supernet: str = "default"
    data: str | None = None              # int8-calibration images instead of the supernet's (--data)
    out: Path = Path("runs")
    cache: Path | None = None
    seed: int = 0
    batch: int = 16                      # models per runner call (interleaved with each other)
    break_lock: bool = False
    progress: bool = True
    log: Callable[[str], None] = print
    after_batch: Callable[[int], None] | None = None  # called with the count stored so far (tests)


@dataclass
class BenchResult:
    folder: Path
    identity: str
    blocks: int
    subnets: int
    measured_now: int
    converted_now: int
    from_cache: int
    seconds: dict = field(default_factory=dict)
    passes_now: int = 0       # model-passes timed in this run
    drift: dict = field(default_factory=dict)  # the drift report (without the series)


# ---------------------------------------------------------------- planning

def plan_resolutions(space: SearchSpace, trained: list[int] | None, spec: DeviceSpec,
                     requested: list[int] | None, quick: bool) -> list[int]:
    """The resolutions to measure: asked for, or those the supernet was trained at within the
    spec's budget range; ``--quick`` keeps at most two (the smallest and the largest)."""
    allowed = list(space.preset.resolutions)
    if requested:
        bad = [r for r in requested if r not in allowed]
        if bad:
            raise BenchError(f"resolutions {bad} are not in space {space.id} ({allowed})")
        chosen = sorted(set(requested))
    else:
        known = sorted(set(trained or allowed) & set(allowed))
        chosen = spec.in_resolution_range(known)
        if not chosen:
            raise BenchError(f"no resolution the supernet knows ({known}) is inside the spec's "
                             f"budgets.resolution {spec.budgets.resolution}; widen the range or pass --resolution")
    if quick and len(chosen) > QUICK_MAX_RESOLUTIONS:
        chosen = [chosen[0], chosen[-1]]
    return chosen


def coverage_space(space: SearchSpace, resolutions: list[int], kernels: list[int] | None,
                   expands: list[int] | None) -> SearchSpace:
    """The part of ``space`` a bench covers (same id; search and deploy stay inside it)."""
    p = space.preset
    for name, values, allowed in (("kernel", kernels, p.kernel_choices), ("expand", expands, p.expand_choices)):
        if values and not set(values) <= set(allowed):
            raise BenchError(f"{name} choices {sorted(values)} are not all in space {space.id} {list(allowed)}")
    return SearchSpace(dataclasses.replace(
        p, resolutions=tuple(resolutions),
        kernel_choices=tuple(sorted(kernels)) if kernels else p.kernel_choices,
        expand_choices=tuple(sorted(expands)) if expands else p.expand_choices))


def arch_hash(arch: Arch) -> str:
    return hashlib.sha256(str(arch).encode()).hexdigest()


def plan_subnets(space: SearchSpace, n: int, seed: int, validation: int | None = None) -> list[dict]:
    """The largest and smallest archs plus ``n`` distinct random ones, each with its role.

    The validation share is chosen by arch hash before anything is measured: the random
    subnets with the smallest hashes, ``validation`` of them, by default 30% and at least 30
    when there are 38 or more, so that at least 8 random ones plus the largest and smallest
    remain for fitting (--quick: 30 validate, 32 calibrate). The latency calibration is fitted
    on the others only.
    """
    fixed = [space.largest(), space.smallest()]
    seen, random_archs = {str(a) for a in fixed}, []
    for arch in space.sample_many(n * 4 + 8, seed=seed):  # a few spares: duplicates are skipped
        if len(random_archs) == n:
            break
        if str(arch) not in seen:
            seen.add(str(arch))
            random_archs.append(arch)
    n = len(random_archs)
    if validation is None:
        n_val = min(max(min(MIN_VALIDATION, n - 8), math.ceil(0.3 * n)), max(n - 3, 0))
    else:
        n_val = min(validation, max(n - 3, 0))
    validation = {str(a) for a in sorted(random_archs, key=arch_hash)[:n_val]}
    rows = [{"arch": str(a), "role": "calibration", "kind": k} for a, k in zip(fixed, ("largest", "smallest"))]
    rows += [{"arch": str(a), "role": "validation" if str(a) in validation else "calibration", "kind": "random"}
             for a in random_archs]
    return rows


# ---------------------------------------------------------------- device identity and lock

def device_identity(spec: DeviceSpec, info: dict, fmt: Format) -> dict:
    """What a latency table is valid for (DESIGN.md §6)."""
    r = spec.runtime
    runtimes = info.get("runtimes", {})
    if r.name == "onnxruntime":
        module = "onnxruntime"
        version = runtimes.get("onnxruntime", {}).get("version")
        accel = {"execution_providers": r.execution_providers or ["CPUExecutionProvider"],
                 "available_providers": runtimes.get("onnxruntime", {}).get("providers")}
    else:
        module = info.get("tflite_interpreter")
        version = runtimes.get(module or "", {}).get("version")
        delegate = (info.get("requested") or {}).get("delegate") or {}
        accel = {"delegate": delegate.get("used", r.delegate), "delegate_requested": r.delegate}
    return {"spec": spec.name, "format": fmt.name, "runtime": r.name, "interpreter": module,
            "runtime_version": version, **accel, "threads": r.threads, "affinity": r.cpu_affinity,
            "governor": (info.get("cpufreq") or {}).get("governor"),
            "cpu": (info.get("cpu") or {}).get("model"), "cores": (info.get("cores") or {}).get("logical"),
            "machine": info.get("machine"), "hostname": info.get("hostname"),
            **({"emulated": True} if spec.emulated else {})}  # only then: other identities keep their ids


class DeviceLock:
    """A lock folder on the device (``mkdir`` is atomic), so two benches never measure at once.

    A lock left by a bench of this host whose process is gone (or that failed in this process)
    is stale and taken over; any other lock is an error unless ``--break-lock``.
    """

    def __init__(self, transport: Transport, work: str, break_lock: bool, log: Callable[[str], None]):
        self.transport, self.path, self.log = transport, remote_path_join(work, "bench.lock"), log
        self.break_lock, self.token, self.held = break_lock, uuid.uuid4().hex, False

    def acquire(self) -> None:
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                            "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "made_by": "ofa-edge"})
        q = shlex.quote(self.path)
        for _ in range(2):
            done = self.transport.run(f"mkdir -p {shlex.quote(posix_parent(self.path))} && mkdir {q} 2>/dev/null "
                                      f"&& printf '%s' {shlex.quote(owner)} > {q}/owner", timeout=30)
            if done.ok:
                self.held = True
                _ACTIVE_LOCKS.add(self.token)
                return
            current = self.transport.run(f"cat {q}/owner 2>/dev/null", timeout=30).stdout.strip()
            if not (self.break_lock or self._stale(current)):
                raise BenchError(f"another bench is measuring this device (lock {self.path}: {current or 'no owner'}); "
                                 "wait for it, or pass --break-lock if it is gone")
            if not _is_ours(current):
                raise BenchError(f"{self.path} on the device was not made by ofa-edge (no ofa-edge owner file): "
                                 "move it away; ofa-edge only removes what it made")
            self.log(f"taking over a stale bench lock ({current})")
            self._remove()
        raise BenchError(f"could not take the bench lock {self.path} on the device")

    def _stale(self, text: str) -> bool:
        try:
            owner = json.loads(text)
        except ValueError:
            return False
        if owner.get("host") != socket.gethostname():
            return False
        if owner.get("pid") == os.getpid():
            return owner.get("token") not in _ACTIVE_LOCKS
        try:
            os.kill(int(owner["pid"]), 0)
        except (ProcessLookupError, KeyError, ValueError, TypeError):
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        _ACTIVE_LOCKS.discard(self.token)
        if self.held:
            self.held = False
            current = self.transport.run(f"cat {shlex.quote(self.path)}/owner 2>/dev/null", timeout=30).stdout.strip()
            if _is_ours(current, self.token):  # removed by its owner only
                self._remove()

    def release_quietly(self) -> None:
        """``release``, ignoring a lost link (the stale lock is taken over next time)."""
        try:
            self.release()
        except TransportError:
            pass

    def _remove(self) -> None:
        """The owner file and the (then empty) lock folder; anything else in it stays."""
        q = shlex.quote(self.path)
        self.transport.run(f"rm -f {q}/owner && rmdir {q}", timeout=30)


def _is_ours(owner_text: str, token: str | None = None) -> bool:
    """An owner file that ofa-edge wrote (every version writes host and pid), and, with ``token``,
    this very lock's."""
    try:
        owner = json.loads(owner_text)
    except ValueError:
        return False
    return (isinstance(owner, dict) and "host" in owner and "pid" in owner
            and (token is None or owner.get("token") == token))


def posix_parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


# ---------------------------------------------------------------- the bench

class Bench:
    """One bench of one device. ``run()`` does the work; see the module docstring."""

    def __init__(self, spec: DeviceSpec, options: BenchOptions, transport: Transport | None = None,
                 **transport_overrides):
        if spec.latency_table is not None:
            raise BenchError(f"device {spec.name} is a published latency table ({spec.latency_table}): there is "
                             "nothing to time; ofa-edge search and deploy read the table directly")
        if spec.connection.transport == "none":
            raise BenchError(f"device {spec.name} has no transport (an MCU): there is nothing to time; its "
                             "latency, SRAM and flash come from the spec's cost_model (ofa-edge search uses it)")
        self.spec, self.options, self.overrides = spec, options, transport_overrides
        self.given_transport = transport  # e.g. a MockTransport in unit tests
        self.fmt = format_for(spec.runtime.name, spec.precision)
        self.log = options.log

    # -------------------------------------------------------- setup
    def _load(self) -> None:
        from ofa_edge.space.source import open_supernet

        o = self.options
        src = open_supernet(o.supernet)  # a preset, a run folder, a checkpoint or a reference OFA file
        self.net = src.net.eval()
        header = src.header
        self.weights_id = src.weights_id
        self.space = self.net.space
        self.resolutions = plan_resolutions(self.space, header.get("trained_resolutions"), self.spec,
                                            o.resolutions, o.quick)
        self.coverage = coverage_space(self.space, self.resolutions, o.kernels, o.expands)
        n = o.subnets if o.subnets is not None else (QUICK_SUBNETS if o.quick else DEFAULT_SUBNETS)
        self.blocks = candidate_blocks(self.coverage.preset, self.resolutions, self.net.num_classes)
        self.subnets = plan_subnets(self.coverage, n, o.seed, o.validation)
        self.reference = reference_arch(self.coverage)
        self.folder = Path(o.out) / self.spec.name / self.space.id
        self.cache = ModelCache(o.cache)
        self.run_id = time.strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]
        self.files: dict[tuple[str, str], Path] = {}
        self.throttled: list[str] = []  # why timing calls of this run were throttled

    def run(self) -> BenchResult:
        from ofa_edge.ledger import Ledger

        ledger = Ledger("bench")
        self._load()
        m = self.spec.measure
        # --quick takes fewer repeats, never fewer runs per repeat: a repeat must stay long
        # enough to average out scheduler noise.
        self.repeats = max(3, m.repeats // 2) if self.options.quick else m.repeats
        self.runs, self.warmup, self.passes = m.runs_per_repeat, m.warmup, m.passes
        self.log(f"bench {self.spec.name}: space {self.space.id}, {self.fmt.name}, resolutions "
                 f"{self.resolutions}, {len(self.blocks)} blocks + {len(self.subnets)} whole subnets, "
                 f"{self.passes} passes each, statistic {m.statistic}")
        timings = {"convert_s": 0.0, "measure_s": 0.0}
        self.reached = False
        with ExitStack() as stack:
            try:
                session = stack.enter_context(DeviceSession(self.spec, "bench", self.given_transport, **self.overrides))
                self.session, self.transport = session, session.transport
                self.reached = True
                lock = DeviceLock(session.transport, session.root, self.options.break_lock, self.log)
                lock.acquire()
                stack.callback(lock.release_quietly)
                info = session.ready(self.log)  # before anything is converted: one line when not ready
                self.identity_info = device_identity(self.spec, info, self.fmt)
                self.folder.mkdir(parents=True, exist_ok=True)
                with MeasurementStore(self.folder / "measurements.sqlite") as store:
                    self.identity = store.register(self.identity_info)
                    measured_now = self._measure_all(store, timings)
                    level = store.reference_level(self.identity) if self.spec.measure.drift_correction else None
                    block_rows = store.get(self.identity, "block", self.passes, level)
                    subnet_rows = store.get(self.identity, "subnet", self.passes, level)
                    drift = drift_report(store.drift_series(self.identity), store.pass_counts(self.identity),
                                         self.spec.measure)
                self.drift = drift
                self._write_outputs(block_rows, subnet_rows, timings, ledger, drift)
            except ConnectError:
                if not self.reached:
                    raise  # never reached: the connect error says what to fix
                raise BenchError(f"lost the device during the bench and could not reconnect: {sys.exc_info()[1]}; "
                                 f"everything measured so far is stored in {self.folder / 'measurements.sqlite'}: "
                                 "run the same command again to measure only what is missing") from None
            except CommandTimeout as exc:
                raise BenchError(f"{exc}; raise connection.command_timeout_s in the spec if the device is "
                                 f"that slow. Everything measured so far is stored in "
                                 f"{self.folder / 'measurements.sqlite'}: run the same command again to go on") from None
            except TransportError as exc:
                raise BenchError(f"lost the device during the bench: {exc}; everything measured so far is "
                                 f"stored in {self.folder / 'measurements.sqlite'}: run the same command "
                                 "again to measure only what is missing") from None
        self.predictor = self._fit_predictor()
        entry = ledger.finish(spec=self.spec.name, quick=self.options.quick, measured=measured_now,
                              converted=self.cache.misses)
        self.log(entry.line())
        drift = {k: v for k, v in self.drift.items() if k != "series"}
        return BenchResult(self.folder, self.identity, len(self.blocks), len(self.subnets), measured_now,
                           self.cache.misses, self.cache.hits, timings, self.passes_now, drift)

    # -------------------------------------------------------- measuring
    def _measure_all(self, store: MeasurementStore, timings: dict) -> int:
        """Every missing pass of every model; returns how many models got a pass now."""
        from ofa_edge.devices.protocol import TimingProtocol

        items = [("block", b.id, b) for b in self.blocks] + [("subnet", s["arch"], s) for s in self.subnets]
        done = {kind: store.passes(self.identity, kind) for kind in ("block", "subnet")}
        missing = [[(kind, key, item) for kind, key, item in items if p not in done[kind].get(key, {})]
                   for p in range(self.passes)]
        todo = sum(len(m) for m in missing)
        complete = sum(1 for kind, key, _ in items if len(done[kind].get(key, {})) >= self.passes)
        if todo < len(items) * self.passes:
            self.log(f"resuming: {complete} of {len(items)} models fully measured on this device identity, "
                     f"{todo} passes to go")
        self.passes_now = todo
        if not todo:
            return 0
        reference = self._file_once("subnet", str(self.reference), {"arch": str(self.reference)})

        def time_models(files):
            t1 = time.perf_counter()
            try:
                return self._time(files)
            finally:
                timings["measure_s"] += time.perf_counter() - t1

        protocol = TimingProtocol(time_models, reference, self.spec.measure, self.log)
        first = next(m for m in missing if m)[:self.options.batch]
        protocol.warm_up([self._file_once(kind, key, item) for kind, key, item in first])
        store.add_drift(self.identity, self.run_id, protocol.series)
        touched: set[tuple[str, str]] = set()
        progress = _progress(self.options.progress)
        stored = 0
        with progress:
            task = progress.add_task("measuring", total=todo)
            for p, batch_items in enumerate(missing):
                if not batch_items:
                    continue
                pass_started = time.monotonic()
                # Blocks and whole subnets share batches in a shuffled order, new in every pass, so
                # that drift over the run (clock, temperature, other load) hits table and calibration alike.
                random.Random(self.options.seed * 1000 + p).shuffle(batch_items)
                for start in range(0, len(batch_items), self.options.batch):
                    batch = batch_items[start:start + self.options.batch]
                    t0 = time.perf_counter()
                    files = [self._file_once(kind, key, item) for kind, key, item in batch]
                    timings["convert_s"] += time.perf_counter() - t0
                    mark = len(protocol.series)
                    results = protocol.time_batch(files, stage=p)
                    for (kind, key, _), stats in zip(batch, results):
                        store.put_pass(self.identity, kind, key, p, stats)
                        touched.add((kind, key))
                    store.add_drift(self.identity, self.run_id, protocol.series[mark:])
                    stored += len(batch)
                    progress.advance(task, len(batch))
                    if self.options.after_batch:
                        self.options.after_batch(stored)
                if p + 1 < self.passes:  # passes are separated in time, never back to back
                    _sleep(self.spec.measure.pass_gap_s - (time.monotonic() - pass_started))
        s = protocol.summary()
        self.log(f"drift monitor: reference baseline {s['reference_baseline_p50_ms']:.4f} ms (p50), "
                 f"{s['batches']} batches, {s['remeasured_calls']} re-measured, {s['flagged_batches']} kept flagged, "
                 f"largest drift {s['max_abs_drift']:.1%}")
        return len(touched)

    def _file_once(self, kind: str, key: str, item) -> Path:
        """The model file of one item, looked up (or converted) once per bench run."""
        if (kind, key) not in self.files:
            self.files[kind, key] = self._model_file(kind, item)
        return self.files[kind, key]

    def _model_file(self, kind: str, item) -> Path:
        from converters.convert import convert_module

        if kind == "block":
            from ofa_edge.devices.blockmodels import block_input_shape, block_module

            name, shape = item.id, block_input_shape(item)
            build = lambda: block_module(self.net, item)  # noqa: E731
            calibration = lambda: _block_calibration(item, shape)  # noqa: E731
        else:
            arch = self.space.parse(item["arch"])
            name, shape = "subnet-" + item["arch"], (1, 3, arch.resolution, arch.resolution)
            build = lambda: self.net.extract(arch).eval()  # noqa: E731
            calibration = lambda: _image_calibration(
                str(self.options.supernet), self.options.data, arch.resolution)  # noqa: E731

        def make(path: Path) -> None:
            convert_module(build(), shape, self.fmt, path, calibration(), self.spec.runtime.max_opset)

        return self.cache.get(self.space.id, self.weights_id, name, self.fmt, self._converter_key(), make)

    def _converter_key(self) -> str:
        """The converter version, plus the ONNX opset the device reads: a device with an older
        onnxruntime (max_opset 15) must never be handed a cached opset-17 file."""
        from converters.convert import converter_version

        if self.fmt.tflite or self.fmt.runtime != "onnxruntime":
            return converter_version()
        from converters.onnx_export import choose_opset

        return f"{converter_version()}-opset{choose_opset(self.spec.runtime.max_opset)}"

    def _time(self, files: list[Path]) -> list[dict]:
        args = ["--warmup", str(self.warmup), "--repeats", str(self.repeats), "--runs", str(self.runs),
                *runtime_args(self.spec, trt_cache=self.session.trt_cache)]
        results = push_and_time(self.transport, self.session.run, self.session.work, files, args)
        if results and results[0].get("throttled"):
            self.throttled.append(results[0]["throttled"])
            self.log(f"warning: the device throttled during a timing call ({results[0]['throttled']}); "
                     "recorded with those measurements")
        return results

    def _fit_predictor(self):
        """Fit the calibrated latency predictor ([5/7]) on the tables just written, save it
        beside them, and print its held-out summary."""
        from ofa_edge.predictors.latency import LatencyPredictorError, fit_latency_predictor, format_summary

        try:
            predictor = fit_latency_predictor(self.folder, self.spec.measure.statistic)
        except LatencyPredictorError as exc:
            self.log(f"no latency predictor: {exc}")
            return None
        predictor.save(self.folder)
        self.log(format_summary(predictor))
        return predictor

    # -------------------------------------------------------- outputs
    def _write_outputs(self, block_rows: dict, subnet_rows: dict, timings: dict, ledger, drift: dict) -> None:
        from converters.convert import converter_version
        from ofa_edge.devices.statistic import describe

        m = self.spec.measure
        method = {"warmup": self.warmup, "repeats": self.repeats, "runs_per_repeat": self.runs,
                  "passes": self.passes, "pass_gap_s": m.pass_gap_s, "quick": self.options.quick,
                  "interleaved": f"within batches of {self.options.batch} models, reshuffled every pass",
                  "reference_model": str(self.reference), "drift_limit": m.drift_limit,
                  "drift_retries": m.drift_retries, "statistic": m.statistic,
                  "statistics": "p10_ms/p50_ms/p90_ms: the percentile of all runs within each pass, drift-corrected "
                                "by the reference model of its runner call, then the median over passes; median_ms = "
                                "p50_ms; raw_p50_ms uncorrected; blocks_sum_ms and the latency predictor use "
                                f"{m.statistic_key} ({describe(m.statistic)})",
                  "drift_corrected": m.drift_correction}
        common = {"schema_version": SCHEMA_VERSION, "space_id": self.space.id, "spec": self.spec.name,
                  "identity_id": self.identity, "identity": self.identity_info, "format": self.fmt.name,
                  "converter": converter_version(), "supernet": self.options.supernet,
                  "weights_id": self.weights_id, "method": method,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        coverage = {"resolutions": self.resolutions, "kernels": list(self.coverage.preset.kernel_choices),
                    "expands": list(self.coverage.preset.expand_choices),
                    "depths": list(self.coverage.preset.depth_choices), "blocks": len(self.blocks)}
        blocks = [{**b.to_json(), **_stats(block_rows[b.id])} for b in self.blocks]
        write_json_atomic(self.folder / "blocks.json", {**common, "coverage": coverage, "blocks": blocks})
        table = {b["id"]: b for b in blocks}
        rows = []
        for s in self.subnets:
            arch = self.space.parse(s["arch"])
            keys = arch_blocks(self.space.preset, arch, self.net.num_classes)
            sums = {k: round(sum(table[x.id][k] for x in keys), 6) for k in PASS_KEYS}
            rows.append({**s, "resolution": arch.resolution, "blocks_sum_ms": sums[m.statistic_key],
                         "blocks_sum": sums, **_stats(subnet_rows[s["arch"]])})
        write_json_atomic(self.folder / "subnets.json", {**common, "coverage": coverage, "subnets": rows,
                                                         "drift": drift, "throttled_calls": self.throttled,
                                                         "ledger": ledger.stop().to_json(),
                                                         "seconds_this_run": {k: round(v, 2) for k, v in timings.items()}})


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def drift_report(series: list[dict], counts: dict, measure) -> dict:
    """The reference model's series over every bench run, and how much was measured again."""
    baselines = [r["reference_ms"] for r in series if r["stage"] == "baseline"]
    drifts = [abs(r["drift"]) for r in series if r.get("drift") is not None]
    return {"limit": measure.drift_limit, "retries": measure.drift_retries,
            "baselines_p50_ms": baselines, "calls": len(drifts),
            "calls_over_limit": sum(1 for d in drifts if d > measure.drift_limit),
            "max_abs_drift": round(max(drifts), 5) if drifts else None,
            "passes_stored": counts["passes"], "passes_remeasured": counts["remeasured"],
            "passes_flagged": counts["flagged"], "series": series}


def push_and_time(transport: Transport, runner: Callable[..., dict], remote_dir: str, files: list[Path],
                  time_args: list[str]) -> list[dict]:
    """Push ``files`` (named by digest), time them in one ``runner time`` call, check that the
    device ran what was pushed, and remove them again; the runner's stats, one per file."""
    remote_files, digests = [], []
    for f in files:
        digest = sha256_file(f)
        remote = remote_path_join(remote_dir, digest[:20] + f.suffix)
        transport.put(str(f), remote)
        remote_files.append(remote)
        digests.append(digest)
    args = ["time", *time_args]
    for remote in remote_files:
        args += ["--model", remote]
    answer = runner(*args)
    results = []
    for remote, digest, stats in zip(remote_files, digests, answer["models"]):
        if stats.get("sha256") != digest:
            raise BenchError(f"the device ran {remote} with sha256 {stats.get('sha256')}, but the host "
                             f"pushed {digest}: the copy is corrupt or stale; run the bench again")
        results.append({**stats, "warnings": answer.get("warnings", []), "throttled": answer.get("throttled"),
                        "device_state": answer.get("state")})
    transport.run(["rm", "-f", *sorted(set(remote_files))], timeout=60)
    return results


def reference_arch(coverage: SearchSpace) -> Arch:
    """The drift monitor's reference model: the smallest subnet at the largest covered resolution
    (small enough to cost little, large enough to time steadily)."""
    return coverage.smallest(max(coverage.preset.resolutions))


def _stats(stats: dict) -> dict:
    keep = ("median_ms", "p10_ms", "p50_ms", "p90_ms", "passes", "pass_p50_ms", "flagged_passes", "raw_p50_ms", "iqr_ms", "cov",
            "min_ms", "max_ms", "per_repeat_ms", "runs_total", "sha256", "load_ms")
    out = {k: stats[k] for k in keep if k in stats} | {"runtime": stats.get("runtime")}
    out["median_ms"] = out["p50_ms"]  # one definition: the median of all runs
    return out


def _block_calibration(key: BlockKey, shape: tuple[int, ...]):
    """Stand-in activations for a block's int8 calibration: latency does not depend on them.
    The stem sees images in [0, 1]; later blocks see roughly unit-scale activations."""
    import numpy as np

    rng = np.random.RandomState(0)
    n = (16,) + tuple(shape[1:])
    if key.role == "stem":
        return rng.uniform(0, 1, n).astype(np.float32)
    return rng.normal(0, 1, n).astype(np.float32)


@lru_cache(maxsize=4)
def _train_images(supernet: str, data: str | None = None):
    """32 training images (uint8 NHWC) of the supernet's dataset, from the calibration images its run
    stored (or its recorded dataset); None when neither is available."""
    from ofa_edge.evaluate import stored_calibration

    try:
        return stored_calibration(supernet, data).quant_x[:32]
    except OfaEdgeError:
        return None


@lru_cache(maxsize=None)
def _image_calibration(supernet: str, data: str | None, resolution: int):
    """32 training images at ``resolution`` (NCHW, [0, 1]) for int8 calibration; random images
    when the dataset is not available (the latency does not depend on them)."""
    import numpy as np

    images = _train_images(supernet, data)
    if images is None:
        return np.random.RandomState(0).uniform(0, 1, (32, 3, resolution, resolution)).astype(np.float32)
    from ofa_edge.data.tensors import to_model_input

    return to_model_input(images, resolution).contiguous().numpy()


class _Quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def advance(self, *a, **k):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _Quiet()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), transient=False)


def run_bench(spec: DeviceSpec, options: BenchOptions | None = None, transport: Transport | None = None,
              **transport_overrides) -> BenchResult:
    """Bench ``spec``'s device; ``transport`` replaces the spec's (tests), ``transport_overrides``
    go to the spec's transport (e.g. ``reconnect_delays=``)."""
    return Bench(spec, options or BenchOptions(), transport, **transport_overrides).run()


__all__ = ["Bench", "BenchError", "BenchOptions", "BenchResult", "FORMATS", "run_bench"]
