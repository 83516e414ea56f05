"""ofa-edge device runner: time and evaluate .tflite / .onnx models ON the device.

The runner package is pushed to the device (Raspberry Pi, Jetson, phone under Termux, or
the host itself) as one zipapp and run there as ``python3 ofa_edge_runner.pyz <command>
[args]``. It imports only the standard library, numpy and the inference runtime, all
lazily, so that ``info`` still answers on a device where numpy or a runtime is missing.
It runs on CPython 3.6 and newer.

Every answer is ONE JSON line on stdout::

    {"protocol": 1, "ok": true, "command": "...", ...}
    {"protocol": 1, "ok": false, "command": "...", "error": "<one clear line>"}   (exit code 2)

Anything the runtimes print (to stdout or stderr, from Python or C++) is redirected to
stderr while a command runs, so stdout carries only the answer. Details of a failure
(a traceback) go to stderr.

Commands
--------
``protocol`` (or ``--version``)
    The protocol version and the runner's own version.
``info``
    Python, numpy, importable runtimes and their versions (tensorflow is only looked up,
    never imported), onnxruntime providers, TFLite delegates, CPU model, core count and
    affinity, cpufreq governor and frequencies, temperatures, memory, platform.
``time --model A [--model B ...] [--threads N] [--affinity 0,1] [--warmup W]
      [--repeats R] [--runs M] [--provider P ...] [--seed S] [--tflite-runtime NAME]``
    Loads every model, feeds each a fixed seeded random input of its own dtype/shape,
    warms each up W runs, then for each repeat r in range(R) runs EACH model M times,
    interleaved (repeat 1 of all models, then repeat 2 of all ...) so that thermal drift
    hits every model alike. Each run is timed with ``time.perf_counter_ns`` around
    set-input + invoke + get-output; the garbage collector is off while timing.
    Statistics, per model:

    - ``per_repeat_ms``: mean ms per run within each repeat (R entries);
    - ``p10_ms`` / ``p50_ms`` / ``p90_ms``: percentiles (linear interpolation) of ALL R*M runs;
      ``median_ms`` is ``p50_ms`` (the median of every run, not of per-repeat means);
    - ``iqr_ms``: interquartile range (q75 - q25, linear interpolation) of ``per_repeat_ms``;
    - ``cov``: sample stdev / mean of ``per_repeat_ms`` (0 when R == 1);
    - ``trimmed_mean_ms``: mean of ALL R*M individual runs after dropping the top and
      bottom 10 % (floor(0.1 * R*M) runs from each end);
    - ``min_ms`` / ``max_ms``: fastest / slowest individual run.

    CPU affinity (``--affinity``, e.g. ``0,1`` or ``2-3``) is applied with
    ``os.sched_setaffinity`` to every thread of the process BEFORE the runtimes create
    their thread pools; ``affinity_applied`` says whether it worked.
    ONNX providers are tried in the order given; a missing one is dropped with a warning
    and ``CPUExecutionProvider`` is always the last fallback.
``eval --model M --data D.npz [--batch B] [--threads N] [--provider P ...]``
    ``D.npz`` holds ``x`` (uint8 NHWC images at the model's resolution) and ``y``
    (integer labels). Images are scaled to [0, 1] float32; an int8/uint8 quantized input
    is fed ``clip(round(x / scale) + zero_point)`` with the model's own parameters; an
    NCHW model input (3 channels at index 1) gets the images transposed. A model with a
    fixed batch runs in batches of that size (1 for most TFLite models); a dynamic batch
    runs in batches of ``--batch``. Answers ``top1``, ``n``, ``correct``, ``predicted``, and
    with ``--logits N`` the (dequantized) outputs of the first N images. ``--kernels
    reference`` runs TFLite's reference kernels (no delegate), which TFLite Micro matches.
    ``--tflite-runtime tflite_micro`` runs a .tflite in TFLite Micro's own interpreter on
    this host and adds ``arena``: the bytes its allocator really used (total, head, tail).

Every answer names the ``sha256`` of each model file it ran.
"""

import argparse
import json
import sys
import traceback

from . import PROTOCOL_VERSION
from .common import TFLITE_MICRO, TFLITE_RUNTIMES, RunnerError, one_line, exc_line, stdout_to_stderr
from .evaluate import command_eval
from .probe import command_info, command_protocol
from .timing import command_time
from .tflite import DELEGATES


class _HelpRequested(Exception):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting (stdout carries JSON only)."""

    def error(self, message):
        raise RunnerError("%s: %s" % (self.prog, message))

    def print_help(self, file=None):
        raise _HelpRequested(self.format_help())

    def print_usage(self, file=None):
        raise _HelpRequested(self.format_usage())

    def exit(self, status=0, message=None):
        if status:
            raise RunnerError(message.strip() if message else "%s: exit %d" % (self.prog, status))
        raise _HelpRequested(message or "")


def build_parser():
    parser = _Parser(prog="ofa_edge_runner.pyz", description="ofa-edge device runner (protocol %d)"
                     % PROTOCOL_VERSION)
    parser.add_argument("--version", action="store_true", help="print the protocol version")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("protocol", help="print the protocol version")
    info = sub.add_parser("info", help="describe this device and its runtimes; with the options below, "
                                       "also try them out (readiness)")

    def common(p):
        p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
        p.add_argument("--provider", action="append", default=None,
                       help="onnxruntime execution provider, in preference order (repeatable)")
        p.add_argument("--tflite-runtime", choices=TFLITE_RUNTIMES + (TFLITE_MICRO,), default=None,
                       help="force one TFLite interpreter (default: first importable)")
        p.add_argument("--delegate", default=None,
                       help="TFLite delegate: %s, or external:<path to .so>" % ", ".join(DELEGATES))
        p.add_argument("--trt-cache", default=None, help="TensorRT engine cache folder (onnxruntime)")
        p.add_argument("--trt-fp16", action="store_true", help="TensorRT builds FP16 engines")

    info.add_argument("--affinity", default=None, help="CPU list to try pinning to, e.g. 0,1 or 2-3")
    common(info)

    timing = sub.add_parser("time", help="time one or more models, interleaved")
    timing.add_argument("--model", action="append", required=True, help="model file (repeatable)")
    timing.add_argument("--affinity", default=None, help="CPU list, e.g. 0,1 or 2-3")
    timing.add_argument("--warmup", type=int, default=10)
    timing.add_argument("--repeats", type=int, default=5)
    timing.add_argument("--runs", type=int, default=20)
    timing.add_argument("--seed", type=int, default=0)
    common(timing)

    evaluate = sub.add_parser("eval", help="top-1 accuracy of a model on an .npz of images")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--batch", type=int, default=1)
    evaluate.add_argument("--logits", type=int, default=0, help="also answer the outputs of the first N images")
    evaluate.add_argument("--kernels", choices=("default", "reference"), default="default",
                          help="TFLite kernels: default (optimized, XNNPACK) or reference (what TFLite Micro matches)")
    common(evaluate)
    return parser


COMMANDS = {"protocol": command_protocol, "info": command_info, "time": command_time,
            "eval": command_eval}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    answer = {"protocol": PROTOCOL_VERSION, "ok": False, "command": None}
    code = 2
    with stdout_to_stderr():
        try:
            args = build_parser().parse_args(argv)
            command = "protocol" if args.version else args.command
            if command is None:
                raise RunnerError("no command given: choose one of %s" % ", ".join(COMMANDS))
            answer["command"] = command
            result = COMMANDS[command](args)
            answer["ok"] = True
            answer.update(result)
            code = 0
        except _HelpRequested as shown:
            answer.update({"ok": True, "command": "help", "help": shown.text})
            code = 0
        except RunnerError as exc:
            answer["error"] = one_line(exc)
        except KeyboardInterrupt:
            answer["error"] = "interrupted"
            code = 130
        except BaseException as exc:  # never a traceback on stdout
            traceback.print_exc(file=sys.stderr)
            answer["error"] = "runner crashed: %s" % exc_line(exc)
    try:
        line = json.dumps(answer, default=_json_default, allow_nan=False)
    except ValueError:
        line = json.dumps(_finite(answer), default=_json_default)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return code


def _json_default(value):
    """numpy scalars and arrays -> plain Python; anything else -> its str."""
    for method in ("tolist", "item"):
        if hasattr(value, method):
            try:
                return getattr(value, method)()
            except Exception:
                pass
    return str(value)


def _finite(value):
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return dict((k, _finite(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
