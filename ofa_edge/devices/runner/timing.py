"""``time``: several models timed interleaved, by repeat."""

import gc
import time

from .common import RunnerError, check_model_path, clock_ns, exc_line, require_numpy, sha256_of
from .models import load_model, random_feeds, runtime_record
from .pinning import apply_affinity, current_affinity, parse_cpus
from .state import device_state, throttling_between
from .stats import summarize

def command_time(args):
    require_numpy()  # fail early and clearly when numpy is missing
    warnings = []
    for name, value, minimum in (("--warmup", args.warmup, 0), ("--repeats", args.repeats, 1),
                                 ("--runs", args.runs, 1), ("--threads", args.threads, 1)):
        if value < minimum:
            raise RunnerError("%s must be >= %d, got %d" % (name, minimum, value))
    for path in args.model:
        check_model_path(path)
    cpus = parse_cpus(args.affinity) if args.affinity else None
    # Pin BEFORE the runtimes spawn their thread pools: new threads inherit the mask.
    applied = apply_affinity(cpus, warnings)
    models, feeds, records = [], [], []
    for path in args.model:
        start = clock_ns()
        model = load_model(path, args, warnings)
        load_ms = (clock_ns() - start) / 1e6
        models.append(model)
        feeds.append(random_feeds(model, args.seed))
        records.append({"model": path, "sha256": sha256_of(path),
                        "runtime": runtime_record(model),
                        "inputs": [{"name": s["name"], "shape": s["shape"], "dtype": s["dtype"]}
                                   for s in model.input_specs()],
                        "threads": args.threads, "affinity_applied": applied,
                        "load_ms": round(load_ms, 3)})
    if applied:
        apply_affinity(cpus, [])  # catch threads spawned while loading, too
    for model, feed in zip(models, feeds):
        try:
            for _ in range(args.warmup):
                model.run(feed)
            if args.warmup == 0:
                model.run(feed)  # one run anyway: a model that cannot run fails here, clearly
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError("%s failed to run %s: %s" % (model.runtime, model.path, exc_line(exc)))
    runs_ms = [[] for _ in models]
    clock = clock_ns
    before = device_state(cpus)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start_all = time.perf_counter()
    try:
        for _ in range(args.repeats):
            for index, model in enumerate(models):
                run, feed = model.run, feeds[index]
                times = []
                for _ in range(args.runs):
                    t0 = clock()
                    run(feed)
                    times.append(clock() - t0)
                runs_ms[index].append([t / 1e6 for t in times])
    finally:
        if gc_was_enabled:
            gc.enable()
    after = device_state(cpus)
    for record, model_runs in zip(records, runs_ms):
        record.update(summarize(model_runs))
    return {
        "models": records,
        "threads": args.threads,
        "affinity_requested": cpus,
        "affinity_applied": applied,
        "affinity": current_affinity(),
        "method": {"warmup": args.warmup, "repeats": args.repeats, "runs": args.runs,
                   "seed": args.seed, "order": "interleaved by repeat",
                   "clock": "perf_counter_ns around set-input + invoke + get-output",
                   "percentiles": "p10/p50/p90 (median) over all runs",
                   "iqr_cov": "over per-repeat means",
                   "trimmed_mean": "over all runs, 10% dropped from each end"},
        "seconds": round(time.perf_counter() - start_all, 3),
        "state": {"before": before, "after": after},
        "throttled": throttling_between(before, after),
        "warnings": warnings,
    }

