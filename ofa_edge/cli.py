"""The ``ofa-edge`` command line.

Every error is one line on stderr and exit code 2 (``--debug`` shows the traceback).
Heavy libraries (torch, tensorflow) are imported inside the subcommands that need them,
so ``ofa-edge --help`` and ``ofa-edge specs check`` start in a fraction of a second.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

# numpy's BLAS on one thread: the predictors multiply small matrices, which run about 4x faster
# without OpenBLAS's thread hand-offs (and torch sets its own threads). Before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import traceback
from typing import Sequence

from ofa_edge import __version__
from ofa_edge.errors import OfaEdgeError, SpecError

EXIT_ERROR = 2
SUPERNET_HELP = ("a run folder, a .safetensors checkpoint, a reference OFA checkpoint file (ofa_mbv3_d234_e346_k357_"
                 "w1.0 / _w1.2, any name), 'default' or a preset (default: default)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (plus a pointer to --help), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_ERROR)


def _sub(subparsers, name: str, help_: str, example: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# ---------------------------------------------------------------- specs


def _cmd_specs_list(args: argparse.Namespace) -> int:
    from ofa_edge.devices.spec import load_spec, shipped_specs, shipped_specs_dir

    paths = shipped_specs()
    if not paths:
        raise OfaEdgeError(f"no specs found in {shipped_specs_dir()} (set OFA_EDGE_SPECS to the folder)")
    bad = 0
    for path in paths:
        try:
            print(load_spec(path).one_line())
        except SpecError as exc:
            bad += 1
            print(f"{path.stem:<16} INVALID: {exc.problems[0]}")
    return EXIT_ERROR if bad else 0


def _cmd_specs_check(args: argparse.Namespace) -> int:
    from ofa_edge.devices.spec import check_specs

    report = check_specs(args.paths)
    if args.json:
        print(json.dumps({"ok": not any(report.values()), "specs": report}, indent=2))
    else:
        for path, problems in report.items():
            if problems:
                for problem in problems:
                    print(f"{path}: {problem}", file=sys.stderr)
            else:
                print(f"{path}: ok")
    return EXIT_ERROR if any(report.values()) else 0


# ---------------------------------------------------------------- data


def _cmd_data_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ofa_edge.data import array_summary, describe, load_dataset, make_splits, scan
    from ofa_edge.data.datasets import FMNIST_ALIASES

    folder = None
    if args.dataset.strip().lower() not in FMNIST_ALIASES:
        folder = next((c for c in (args.dataset, args.data) if c and Path(c).expanduser().is_dir()), None)
    if folder is not None:  # headers only: no decode, nothing cached
        info = scan(folder, skip_bad=args.skip_bad)
    else:
        ds = load_dataset(args.dataset, data=args.data)
        info = {**describe(ds, make_splits(ds, val_size=args.val_size, seed=args.seed)), **array_summary(ds)}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    counts, sizes = info["counts"], info["sizes"]
    how = (f"val carved out of train with seed {info['seed']}; test: {info['test_from']}" if folder is None
           else f"test: {info['test_from']}" + ("; val/ joins train, training carves val from train"
                                                 if counts["val"] else ""))
    print(f"dataset   {info['name']} ({info['kind']}, {info['layout']})")
    print(f"found at  {info['source']}")
    print(f"images    {' / '.join(f'{k} {v:,}' for k, v in counts.items())}   ({how})")
    if folder is None:
        print(f"shape     {tuple(info['image_shape'])} {info['dtype']} (H, W, C)")
    common = ", ".join(f"{s} x{n:,}" for s, n in sizes["common"][:4])
    span = "x".join(map(str, sizes["min"])) + (" .. " + "x".join(map(str, sizes["max"])) if sizes["distinct"] > 1 else "")
    print(f"sizes     {span} ({sizes['distinct']} distinct; {common})")
    print(f"modes     {', '.join(f'{m} {n:,}' for m, n in info['modes'].items())}"
          f" -> {info['channels']} channel{'s' if info['channels'] > 1 else ''}")
    if info["bad"]:
        shown = "; ".join(f"{b['file']} ({b['reason']})" for b in info["bad"][:3])
        print(f"bad files {len(info['bad']):,} skipped: {shown}{'; ...' if len(info['bad']) > 3 else ''}")
    print(f"files id  {info['fingerprint']['files']:,} files, sha256 {info['fingerprint']['sha256'][:16]}")
    print(f"classes   {info['num_classes']}")
    print(f"  {'#':>3}  {'class':<16} {'train':>8} {'val':>8} {'test':>8}")
    for c in info["classes"]:
        print(f"  {c['index']:>3}  {c['name']:<16} {c['train']:>8,} {c['val']:>8,} {c['test']:>8,}")
    return 0


# ---------------------------------------------------------------- train, eval, predictor


def _cmd_train(args: argparse.Namespace) -> int:
    if not args.out and not args.resume:
        raise OfaEdgeError("give --out DIR for a new run, or --resume DIR to continue one")
    if args.nproc > 1:  # hand over to torchrun: one process per core, gradients all-reduced
        import subprocess

        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "ofa_edge.train", "--recipe", args.recipe, "--device", args.device, "--amp", args.amp]
        cmd += ["--data", args.data] if args.data else []
        cmd += ["--resume", args.resume] if args.resume else ["--out", args.out]
        return 0 if subprocess.call(cmd) == 0 else EXIT_ERROR
    from ofa_edge.train.__main__ import run

    run(args.recipe, args.out, args.resume, device=args.device, amp=args.amp, data=args.data)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ofa_edge.evaluate import run_eval

    result = run_eval(args.supernet, args.arch or ["max"], args.split, args.images, args.seed, args.resolution,
                      data=args.data, device=args.device, log=None if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["archs"]:
            print(f"{row['top1'] * 100:6.2f}%  {row['arch']}")
        print(f"{result['split']} split, {result['images']:,} images, BN recalibrated on "
              f"{result['bn_calibration_images']:,} training images; median {result['median_top1'] * 100:.2f}%")
    return 0


def _cmd_import_reference(args: argparse.Namespace) -> int:
    from ofa_edge.space.reference import import_reference
    from ofa_edge.space.source import open_supernet

    out = import_reference(args.file, args.out, acc_predictor=args.acc_predictor, name=args.name)
    src = open_supernet(out)
    predictor = "with the accuracy predictor" if (out / "accuracy_predictor.json").is_file() else (
        "no accuracy predictor (pass --acc-predictor FILE for search and deploy)")
    print(f"imported {args.file} ({src.space_id}, {src.header['num_classes']:,} ImageNet classes, resolutions "
          f"{src.header['trained_resolutions'][0]}-{src.header['trained_resolutions'][-1]}) into {out}, "
          f"{predictor}; use --supernet {out}")
    return 0


def _cmd_import_latency_table(args: argparse.Namespace) -> int:
    from ofa_edge.devices.table_device import import_latency_table

    out = import_latency_table(args.files, args.name, args.out, args.space)
    print(f"wrote {out} and {out.with_name(out.stem + '.latency.json').name} beside it; use --spec {out} with "
          "search and deploy")
    return 0


def _cmd_predictor(args: argparse.Namespace) -> int:
    from ofa_edge.predictors.fit import fit_predictor

    report = fit_predictor(args.supernet, args.samples, args.holdout, args.workers, args.out, args.seed,
                           data=args.data, device=args.device)
    h = report["holdout"]
    print(f"accuracy predictor: {report['predictor']}; held-out {h['n']} subnets: RMSE {h['rmse'] * 100:.3f} "
          f"points, Kendall tau {h['kendall_tau']:.3f}")
    return 0


def _cmd_devices_check(args: argparse.Namespace) -> int:
    from ofa_edge.devices.check import check_device, format_report
    from ofa_edge.devices.spec import load_spec, resolve_spec_path

    report = check_device(load_spec(resolve_spec_path(args.spec)))
    print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report))
    if not report.ready:
        raise OfaEdgeError(f"device {report.spec} is not ready: {report.problems[0]}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ofa_edge.devices.bench import BenchOptions, run_bench
    from ofa_edge.devices.spec import load_spec, resolve_spec_path

    spec = load_spec(resolve_spec_path(args.spec))
    options = BenchOptions(quick=args.quick, subnets=args.subnets, resolutions=args.resolution,
                           kernels=args.kernels, expands=args.expands, supernet=args.supernet, data=args.data,
                           out=Path(args.out), cache=Path(args.cache) if args.cache else None, seed=args.seed,
                           break_lock=args.break_lock, progress=not args.no_progress and sys.stderr.isatty())
    result = run_bench(spec, options)
    print(f"measured {result.measured_now} models now ({result.converted_now} converted, {result.from_cache} "
          f"from the cache); {result.blocks} blocks and {result.subnets} whole subnets in {result.folder}")
    d = result.drift
    if d.get("calls"):
        print(f"drift monitor: {d['calls']} runner calls, {d['calls_over_limit']} drifted over "
              f"{d['limit']:.0%} (largest {d['max_abs_drift']:.1%}); {d['passes_remeasured']} model-passes "
              f"re-measured, {d['passes_flagged']} kept flagged")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    import time

    from ofa_edge.devices.spec import load_spec, resolve_spec_path
    from ofa_edge.fileio import write_json_atomic
    from ofa_edge.ledger import Ledger
    from ofa_edge.search.evolution import SearchSettings
    from ofa_edge.search.run import format_row, run_search, setup_search

    if args.population < 4 or args.generations < 1:
        raise OfaEdgeError("--population must be at least 4 and --generations at least 1")
    ledger = Ledger("search")
    spec = load_spec(resolve_spec_path(args.spec))
    setup = setup_search(spec, args.supernet, args.runs, {"latency_ms": args.latency_ms, "peak_sram_kb": args.sram_kb,
                                                          "flash_kb": args.flash_kb, "macs_m": args.macs_m})
    print(f"search {spec.name}: space {setup.space.id}, latency {setup.latency_source}; budgets "
          f"{setup.objective.budgets or 'none'}")
    start = time.perf_counter()
    result, rows = run_search(setup, SearchSettings(args.population, args.generations, seed=args.seed), args.pareto)
    took = time.perf_counter() - start
    if args.pareto:
        print(f"Pareto front: {len(rows)} subnets ({setup.objective.queries:,} archs scored in {took:.1f} s)")
        for row in rows:
            p = row["predicted"]
            print(f"  {p['top1']:.2%}  {p['latency_ms']:8.3f} ms  {row['arch']}")
    else:
        print(format_row(rows[0]))
        print(f"{setup.objective.queries:,} archs scored in {took:.1f} s")
    if args.json:
        write_json_atomic(args.json, rows if args.pareto else rows[0])
        print(f"wrote {args.json}")
    print(ledger.finish(spec=spec.name).line())
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ofa_edge.deploy import DeployOptions, deploy
    from ofa_edge.devices.spec import load_spec, resolve_spec_path

    if args.eval_images < 1:
        raise OfaEdgeError("--eval-images must be at least 1")
    if args.candidates < 1:
        raise OfaEdgeError("--candidates must be at least 1")
    if args.drop_warn > args.drop_fail:
        raise OfaEdgeError(f"--drop-warn {args.drop_warn} is above --drop-fail {args.drop_fail}")
    spec = load_spec(resolve_spec_path(args.spec))
    result = deploy(spec, DeployOptions(supernet=args.supernet, runs=Path(args.runs), out=Path(args.out),
                                        latency_ms=args.latency_ms, sram_kb=args.sram_kb, flash_kb=args.flash_kb,
                                        arch=args.arch, eval_images=args.eval_images, no_bench=args.no_bench,
                                        drop_warn=args.drop_warn, drop_fail=args.drop_fail, data=args.data,
                                        device=args.device, candidates=args.candidates,
                                        break_lock=args.break_lock, tflm_src=args.tflm_src,
                                        no_firmware=args.no_firmware))
    if result.passed:
        return 0
    failed = [f"{c['name']}: {c['figure']} against {c['threshold']}" + (f" ({c['note'][:300]})" if c.get("note") else "")
              for c in result.manifest["verification"]["checks"] if not c["passed"] and c["level"] == "fail"]
    print(f"ofa-edge: verification failed: {'; '.join(failed)} (see {result.bundle / 'report.md'})", file=sys.stderr)
    latency = result.manifest.get("latency_ms") or {}
    if (latency.get("measured") and latency.get("budget") and latency["measured"]["value"] > latency["budget"]
            and not spec.emulated):
        print(f"ofa-edge: {latency['choice']}; re-bench with ofa-edge bench --spec {spec.source or spec.name}, "
              "or raise the budget", file=sys.stderr)
    return 1


def _data_flags(p: argparse.ArgumentParser, device_for: str = "scoring") -> None:
    """--data and --device, shared by every command that reads images."""
    p.add_argument("--data", metavar="PATH",
                   help="the images to use instead of the supernet's recorded dataset: the same images at another "
                        "path, or your own held-out set (labels are matched by class name)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help=f"where {device_for} runs, always in fp32 (auto: CUDA when available)")


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ofa_edge.report.run import run_report

    if args.full and args.from_results:
        raise OfaEdgeError("--full and --from-results exclude each other")
    run_report(full=args.full, from_results=args.from_results, runs=Path(args.runs),
               out=Path(args.out) if args.out else None)
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ofa-edge",
        description="One once-for-all supernet, specialised for many edge devices without retraining.",
        epilog="example:\n  ofa-edge specs check device_specs/*.yaml\n"
               "  ofa-edge deploy --spec device_specs/local.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ofa-edge {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.add_argument("--grid-g-per-kwh", type=_positive_number, metavar="G",
                   help="grid carbon intensity for the ledger, gCO2e/kWh (default $OFA_EDGE_GRID_G_PER_KWH or 400)")
    p.set_defaults(help_parser=p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # specs
    specs = _sub(sub, "specs", "list and validate device specs", "ofa-edge specs check device_specs/*.yaml")
    specs.set_defaults(help_parser=specs)
    specs_sub = specs.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    s = _sub(specs_sub, "list", "the shipped specs, one line each", "ofa-edge specs list")
    s.set_defaults(func=_cmd_specs_list)
    s = _sub(specs_sub, "check", "validate specs; exit 0, or 2 with the reasons",
             "ofa-edge specs check device_specs/*.yaml")
    s.add_argument("paths", nargs="+", metavar="SPEC", help="spec files to validate")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=_cmd_specs_check)

    # data
    data = _sub(sub, "data", "inspect datasets", "ofa-edge data info fashion-mnist")
    data.set_defaults(help_parser=data)
    data_sub = data.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    d = _sub(data_sub, "info", "counts, sizes, modes, classes, bad files and where the data was found "
             "(image folders: headers only, nothing decoded)",
             "ofa-edge data info fashion-mnist\n  ofa-edge data info my_images/ --json\n"
             "  ofa-edge data info my_images/ --skip-bad")
    d.add_argument("dataset", help="fashion-mnist, an image folder (one sub-folder per class) or an .npz (x, y)")
    d.add_argument("--data", metavar="PATH", help="where the dataset's files are (default: Debian's path)")
    d.add_argument("--val-size", type=_positive_number, default=5000,
                   help="val images carved out of train (fashion-mnist and .npz; a folder shows its own layout)")
    d.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    d.add_argument("--skip-bad", action="store_true", help="list unreadable images instead of stopping at the first")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(func=_cmd_data_info)

    # commands that later issues fill in; their flags are the planned ones
    t = _sub(sub, "train", "train the supernet by progressive shrinking with distillation (resumable)",
             "ofa-edge train --recipe recipes/fmnist-small.yaml --out runs/fmnist --nproc 2\n"
             "  ofa-edge train --recipe recipes/fmnist-small.yaml --resume runs/fmnist --nproc 2\n"
             "  ofa-edge train --recipe recipes/fmnist-small.yaml --out runs/fmnist --device cuda --amp bf16\n"
             "  torchrun --nproc_per_node=2 -m ofa_edge.train --recipe recipes/fmnist-small.yaml --out runs/fmnist")
    t.add_argument("--recipe", required=True, help="recipe YAML (see recipes/)")
    t.add_argument("--out", help="a new run folder")
    t.add_argument("--resume", metavar="RUN", help="continue a run where it stopped")
    t.add_argument("--nproc", type=int, default=1,
                   help="processes (data parallel through torchrun: gloo on the CPU, NCCL with one GPU each)")
    from ofa_edge.train.__main__ import add_data_flag, add_device_flags

    add_device_flags(t)
    add_data_flag(t)
    t.set_defaults(func=_cmd_train)

    e = _sub(sub, "eval", "top-1 of subnets, BN recalibrated per subnet",
             'ofa-edge eval --supernet default --arch max --arch min --arch random:20 --split test --json')
    e.add_argument("--supernet", default="default", help=SUPERNET_HELP)
    e.add_argument("--arch", action="append", help='max | min | random:N | "<arch text>" (repeatable)')
    e.add_argument("--split", choices=["val", "test"], default="val")
    e.add_argument("--images", type=int, help="only the first N images of the split")
    e.add_argument("--resolution", type=int, help="evaluate every arch at this resolution")
    e.add_argument("--seed", type=int, default=0, help="seed for random:N")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _data_flags(e)
    e.set_defaults(func=_cmd_eval)

    ir = _sub(sub, "import-reference", "convert a published OFA checkpoint (and its accuracy predictor) once "
              "into a run folder",
              "ofa-edge import-reference ofa_mbv3_d234_e346_k357_w1.0 --acc-predictor acc_predictor.pth "
              "--out runs/ofa-w1.0")
    ir.add_argument("file", metavar="FILE", help="a reference OFA checkpoint (ofa_mbv3_d234_e346_k357_w1.0 or _w1.2; "
                    "torch zip or legacy serialisation, with or without {'state_dict': ...}; loaded weights-only)")
    ir.add_argument("--out", required=True, help="the run folder to create (must not exist, or be empty)")
    ir.add_argument("--acc-predictor", metavar="P", help="the reference accuracy predictor's state dict, imported as "
                    "accuracy_predictor.json so that search and deploy work at once")
    ir.add_argument("--name", help="a name recorded in the header (default: FILE's name)")
    ir.set_defaults(func=_cmd_import_reference)

    lt = _sub(sub, "import-latency-table", "turn a published latency lookup table (OFA's Note10 tables) into a "
              "device spec with no transport",
              "ofa-edge import-latency-table note10_*.yaml --name note10 --out device_specs/note10.yaml")
    lt.add_argument("files", metavar="FILE", nargs="+", help="the reference's lookup-table YAML files, one per "
                    "resolution (read with a safe loader; the resolution comes from each file's stem layer)")
    lt.add_argument("--name", required=True, help="the device's name (lower-case, e.g. note10)")
    lt.add_argument("--out", required=True, help="the spec to write; its table goes beside it as <stem>.latency.json")
    lt.add_argument("--space", default="ofa-mbv3-w1.2", help="the search space the table was measured for "
                    "(default ofa-mbv3-w1.2, as OFA's tutorial uses the Note10 tables)")
    lt.set_defaults(func=_cmd_import_latency_table)

    pr = _sub(sub, "predictor", "fit the accuracy predictor on subnets scored on val",
              "ofa-edge predictor fit --supernet runs/fmnist --samples 1000 --holdout 200")
    pr.add_argument("action", choices=["fit"])
    pr.add_argument("--supernet", default="default", help=SUPERNET_HELP)
    pr.add_argument("--samples", type=int, default=1000, help="subnets to fit on")
    pr.add_argument("--holdout", type=int, default=200, help="held-out subnets for RMSE and Kendall tau")
    pr.add_argument("--workers", type=int, default=2, help="scoring processes (1 thread each)")
    pr.add_argument("--out", help="folder for the predictor (default: the supernet's folder)")
    pr.add_argument("--seed", type=int, default=0)
    _data_flags(pr)
    pr.set_defaults(func=_cmd_predictor)

    dv = _sub(sub, "devices", "check that a device is reachable and ready",
              "ofa-edge devices check --spec device_specs/raspberry_pi4.yaml")
    dv.add_argument("action", choices=["check"])
    dv.add_argument("--spec", required=True, help="device spec (a path, or a shipped spec's name)")
    dv.add_argument("--json", action="store_true", help="print the report as JSON")
    dv.set_defaults(func=_cmd_devices_check)

    b = _sub(sub, "bench", "time candidate blocks and whole subnets on the device (resumable)",
             "ofa-edge bench --spec device_specs/jetson_nano.yaml --quick\n"
             "  ofa-edge bench --spec device_specs/local.yaml --subnets 100 --out runs")
    b.add_argument("--spec", required=True, help="device spec (a path, or a shipped spec's name)")
    b.add_argument("--quick", action="store_true",
                   help="at most 2 resolutions, at most 40 whole subnets, fewer repeats")
    b.add_argument("--supernet", default="default", help=SUPERNET_HELP)
    b.add_argument("--subnets", type=_non_negative_int, help="random whole subnets besides the largest and "
                   "smallest (default 100; 38 with --quick)")
    b.add_argument("--resolution", type=int, action="append", help="measure at this resolution (repeatable; "
                   "default: the supernet's trained resolutions inside the spec's budget range)")
    b.add_argument("--kernels", type=_int_list, help="restrict the coverage to these kernels, e.g. 3,5")
    b.add_argument("--expands", type=_int_list, help="restrict the coverage to these expand ratios, e.g. 3,6")
    b.add_argument("--out", default="runs", help="results go to OUT/<spec name>/<space id>/ (default runs)")
    b.add_argument("--cache", help="converted-model cache (default $OFA_EDGE_CACHE or ~/.cache/ofa-edge/models)")
    b.add_argument("--seed", type=int, default=0, help="seed of the random whole subnets")
    b.add_argument("--break-lock", action="store_true", help="take the device's bench lock even if held")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--data", metavar="PATH", help="int8-calibration images instead of those stored with the "
                                                  "supernet's run (or its recorded dataset)")
    b.set_defaults(func=_cmd_bench)

    se = _sub(sub, "search", "find the most accurate subnet within the device's budgets",
              "ofa-edge search --spec device_specs/raspberry_pi4.yaml --latency-ms 8\n"
              "  ofa-edge search --spec device_specs/stm32f746.yaml\n"
              "  ofa-edge search --spec device_specs/local.yaml --pareto --json front.json")
    se.add_argument("--spec", required=True, help="device spec (a path, or a shipped spec's name)")
    _budget_flags(se)
    se.add_argument("--macs-m", type=_positive_number, help="MACs budget in millions")
    se.add_argument("--pareto", action="store_true", help="the whole accuracy-latency front (NSGA-II)")
    se.add_argument("--json", metavar="FILE", help="also write the result (a list with --pareto) as JSON")
    se.add_argument("--supernet", default="default", help=SUPERNET_HELP)
    se.add_argument("--runs", default="runs", help="where bench wrote its tables (default runs)")
    se.add_argument("--population", type=int, default=100)
    se.add_argument("--generations", type=int, default=500)
    se.add_argument("--seed", type=int, default=0)
    se.set_defaults(func=_cmd_search)

    dp = _sub(sub, "deploy", "search, extract, convert, push, verify and bundle one subnet",
              "ofa-edge deploy --spec device_specs/local.yaml\n"
              "  ofa-edge deploy --spec device_specs/pixel.yaml --latency-ms 5 --out bundles/\n"
              "  ofa-edge deploy --spec device_specs/stm32f746.yaml\n"
              '  ofa-edge deploy --spec device_specs/local.yaml --arch "<arch text>"')
    dp.add_argument("--spec", required=True, help="device spec (a path, or a shipped spec's name)")
    _budget_flags(dp)
    dp.add_argument("--drop-warn", type=float, default=0.01, help="warn above this int8 top-1 drop (default 0.01)")
    dp.add_argument("--drop-fail", type=float, default=0.02, help="fail above this int8 top-1 drop (default 0.02)")
    dp.add_argument("--tflm-src", help="MCU specs: the TFLite Micro source tree the firmware is built from (a "
                    "tflite-micro checkout with its third-party downloads, or an unpacked tflm-cmsis-src folder; "
                    "default $OFA_EDGE_TFLM_SRC)")
    dp.add_argument("--no-firmware", action="store_true",
                    help="MCU specs: skip the Cortex-M firmware and check in TFLite Micro's x86 host build (flash and "
                         "SRAM then come from the spec's runtime overheads, marked as such in the manifest)")
    dp.add_argument("--arch", help="skip search, deploy this subnet")
    dp.add_argument("--supernet", default="default", help=SUPERNET_HELP)
    dp.add_argument("--runs", default="runs", help="bench tables (default runs); bench --quick runs first if missing")
    dp.add_argument("--no-bench", action="store_true", help="stop instead of benching when there is no predictor")
    dp.add_argument("--eval-images", type=int, default=2000, help="test images evaluated on the device")
    dp.add_argument("--candidates", type=int, default=3,
                    help="at most this many subnets converted and timed on the device; over the budget, deploy "
                         "searches again with the budget scaled by measured/predicted (default 3)")
    dp.add_argument("--break-lock", action="store_true", help="take the device's bench lock even if another "
                                                              "bench seems to hold it")
    dp.add_argument("--out", default="bundles", help="bundles go to OUT/<spec name>/ (default bundles)")
    _data_flags(dp, "BN recalibration")
    dp.set_defaults(func=_cmd_deploy)

    r = _sub(sub, "report", "run the benchmarks and write the dashboard (benchmarks/dashboard/index.html)",
             "ofa-edge report\n  ofa-edge report --full\n  ofa-edge report --from-results")
    r.add_argument("--full", action="store_true",
                   help="the full-scale runs, the training comparisons included (hours on 2 cores)")
    r.add_argument("--from-results", action="store_true",
                   help="only rebuild the dashboard from benchmarks/results/*.json")
    r.add_argument("--runs", default="runs", help="bench tables and bundles (default runs)")
    r.add_argument("--out", default=None, help="dashboard folder (default benchmarks/dashboard)")
    r.set_defaults(func=_cmd_report)
    return p


def _budget_flags(p: argparse.ArgumentParser) -> None:
    """--latency-ms, --sram-kb, --flash-kb: override the spec's budgets (search and deploy)."""
    p.add_argument("--latency-ms", type=_positive_number, help="latency budget (default: the spec's)")
    p.add_argument("--sram-kb", type=_positive_number, help="peak SRAM budget in KiB (default: the spec's)")
    p.add_argument("--flash-kb", type=_positive_number, help="flash budget in KiB (default: the spec's)")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return int(value) if value.is_integer() else value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:  # no command, or a command group with no action: show its help
        args.help_parser.print_help(sys.stderr)
        return EXIT_ERROR
    if args.grid_g_per_kwh is not None:
        os.environ["OFA_EDGE_GRID_G_PER_KWH"] = str(args.grid_g_per_kwh)
    try:
        return func(args)
    except KeyboardInterrupt:
        print("ofa-edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`ofa-edge ... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OfaEdgeError as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc)
        if isinstance(exc, SpecError):
            message = f"{exc.source}: {exc.problems[0]}"
            if len(exc.problems) > 1:
                message += f" (and {len(exc.problems) - 1} more; run ofa-edge specs check {exc.source})"
        print(f"ofa-edge: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
        if args.debug:
            traceback.print_exc()
        print(f"ofa-edge: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
