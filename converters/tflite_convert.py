"""ONNX -> TFLite (fp32, or full-int8 with int8 input and output) with onnx2tf, in-process.

onnx2tf downloads a sample image set on every conversion of an image model (for its output
checks and its default calibration), which crashes offline. We hand it our own data instead:
its downloader is replaced, for the duration of the call, by one that returns our calibration
images. int8 calibration data is float32 NHWC in [0, 1] from the train split; since the model
normalises its own input, the calibration mean/std passed to onnx2tf are 0 and 1.
"""
from __future__ import annotations

import contextlib
import gc
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from converters.errors import ConversionError

QUANTIZATION_MODES = {
    "fp32": "float32 weights and activations",
    "int8": "full-int8: int8 weights (per-channel), int8 activations, int8 input and output",
}


def onnx2tf_version() -> str:
    from importlib.metadata import version

    return version("onnx2tf")


def onnx_to_tflite(onnx_path: str | os.PathLike, out_path: str | os.PathLike, precision: str,
                   calibration: np.ndarray) -> Path:
    """Convert ``onnx_path`` to ``out_path`` (.tflite). ``calibration``: float32 NHWC data at the
    model's input shape: [0, 1] images for a whole model, activations for a block (used for int8
    calibration and onnx2tf's checks)."""
    if precision not in QUANTIZATION_MODES:
        raise ConversionError(f"unknown TFLite precision {precision!r} (use {', '.join(QUANTIZATION_MODES)})")
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    if calibration.ndim != 4:
        raise ConversionError(f"calibration data must be NHWC, got shape {calibration.shape}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=out_path.parent))
    try:
        produced = _run_onnx2tf(Path(onnx_path), work, precision, calibration)
        fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=".tmp-", suffix=".tflite")
        os.close(fd)
        shutil.copyfile(produced, tmp)
        os.replace(tmp, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_path


def _run_onnx2tf(onnx_path: Path, work: Path, precision: str, calibration: np.ndarray) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _native_stderr_to(work / "import.log"):  # TensorFlow's C++ start-up chatter
        import onnx2tf
        import onnx2tf.onnx2tf as core

    calib_file = work / "calibration.npy"
    np.save(calib_file, calibration)
    sample = calibration[:20]
    channels = calibration.shape[-1]
    kwargs = dict(input_onnx_file_path=str(onnx_path), output_folder_path=str(work / "out"),
                  non_verbose=True, verbosity="error")
    if precision == "int8":
        kwargs.update(output_integer_quantized_tflite=True, quant_type="per-channel",
                      input_quant_dtype="int8", output_quant_dtype="int8",
                      custom_input_op_name_np_data_path=[["input", str(calib_file),
                                                          np.zeros((1, 1, 1, channels), np.float32),
                                                          np.ones((1, 1, 1, channels), np.float32)]])
    original = core.download_test_image_data
    core.download_test_image_data = lambda: sample  # offline: never fetch onnx2tf's sample images
    # TFLite's converter calls gc.collect() several times per model; with TensorFlow's heap in
    # the process that costs ~0.3 s a call and grows with every model converted. Skip it meanwhile.
    collect, gc.collect = gc.collect, lambda *args, **kwargs: 0
    log = io.StringIO()
    try:
        with _native_stderr_to(work / "native.log"), contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log), _only_variant(precision):
            onnx2tf.convert(**kwargs)
    except SystemExit as exc:  # onnx2tf calls sys.exit(1) on some errors
        raise ConversionError(f"onnx2tf failed on {onnx_path.name} (exit {exc.code}): {_last_line(log)}") from None
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"onnx2tf failed on {onnx_path.name}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300] if str(exc) else _last_line(log)}") from None
    finally:
        core.download_test_image_data = original
        gc.collect = collect
        _clear_keras_session()
    name = f"{onnx_path.stem}_full_integer_quant.tflite" if precision == "int8" else f"{onnx_path.stem}_float32.tflite"
    produced = work / "out" / name
    if not produced.is_file():
        raise ConversionError(f"onnx2tf wrote no {name} for {onnx_path.name}: {_last_line(log)}")
    return produced


def _wanted(converter, precision: str) -> bool:
    """Is this TFLite converter configured for the one variant we keep?"""
    import tensorflow as tf

    if precision == "int8":
        return converter.inference_input_type == tf.int8 and converter.inference_output_type == tf.int8
    return not converter.optimizations and tf.float16 not in converter.target_spec.supported_types


@contextlib.contextmanager
def _only_variant(precision: str):
    """onnx2tf converts every variant (fp32, fp16, dynamic-range, int8 with float I/O, int16
    activations...) with one TFLite conversion each; we keep one. Meanwhile the converters it
    builds skip the others (their files come out empty and are never read), which makes a
    whole-subnet int8 conversion several times faster."""
    import tensorflow as tf

    cls = tf.lite.TFLiteConverter
    names = ("from_keras_model", "from_concrete_functions", "from_saved_model")
    originals = {name: getattr(cls, name) for name in names}

    def wrap(make):
        def factory(*args, **kwargs):
            converter = make(*args, **kwargs)
            real = converter.convert
            converter.convert = lambda: real() if _wanted(converter, precision) else b""
            return converter
        return factory

    for name in names:
        setattr(cls, name, wrap(originals[name]))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(cls, name, original)


def _clear_keras_session() -> None:
    """Drop the Keras graph state onnx2tf leaves behind, so that memory and time per model stay
    flat over hundreds of conversions in one process."""
    import sys

    for name in ("tf_keras", "keras"):
        module = sys.modules.get(name)
        backend = getattr(module, "backend", None)
        if backend is not None and hasattr(backend, "clear_session"):
            try:
                backend.clear_session()
            except Exception:  # noqa: BLE001 - best effort
                pass


@contextlib.contextmanager
def _native_stderr_to(path: Path):
    """Send file descriptor 2 to ``path`` meanwhile: TensorFlow's C++ side logs there directly."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _last_line(log: io.StringIO) -> str:
    lines = [line.strip() for line in log.getvalue().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
