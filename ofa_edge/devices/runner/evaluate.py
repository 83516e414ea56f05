"""``eval``: top-1 of a model on an .npz of uint8 images, fed as the model expects."""

import os
import time

from .common import RunnerError, check_model_path, exc_line, require_numpy, sha256_of
from .models import load_model, runtime_record

def _load_data(path):
    np = require_numpy()
    if not os.path.isfile(path):
        raise RunnerError("data file not found: %s" % path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("x", "y") if key not in data.files]
            if missing:
                raise RunnerError("data file %s lacks array(s) %s (has: %s)"
                                  % (path, ", ".join(missing), ", ".join(data.files)))
            x, y = data["x"], data["y"]
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError("cannot read data file %s: %s" % (path, exc_line(exc)))
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise RunnerError("data file %s: x must be uint8 NHWC images with 3 channels, got %s %s"
                          % (path, x.dtype, list(x.shape)))
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind not in "iu":
        raise RunnerError("data file %s: y must hold integer labels, got %s" % (path, y.dtype))
    if len(y) != len(x):
        raise RunnerError("data file %s: %d images but %d labels" % (path, len(x), len(y)))
    if len(x) == 0:
        raise RunnerError("data file %s holds no images" % path)
    return x, y.astype(np.int64)


def prepare_batch(images, spec, layout):
    """uint8 NHWC images -> the model input: [0,1] float32, quantized if the input is."""
    np = require_numpy()
    x = images.astype(np.float32) / np.float32(255.0)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    dtype = np.dtype(spec["dtype"])
    if dtype.kind in "iu":
        scale, zero_point = spec["scale"], spec["zero_point"]
        if scale > 0:
            info = np.iinfo(dtype)
            q = np.round(x / np.float32(scale)) + zero_point
            return np.clip(q, info.min, info.max).astype(dtype)
        if dtype == np.uint8:
            x = images if layout == "NHWC" else images.transpose(0, 3, 1, 2)
            return np.ascontiguousarray(x)  # an unquantized uint8 input takes raw pixels
        raise RunnerError("model input %s is %s without quantization parameters: cannot feed "
                          "images" % (spec["name"], dtype))
    return x.astype(dtype)


def command_eval(args):
    np = require_numpy()
    warnings = []
    model_path = check_model_path(args.model)
    if args.batch < 1:
        raise RunnerError("--batch must be >= 1, got %d" % args.batch)
    x, y = _load_data(args.data)
    model = load_model(model_path, args, warnings)
    specs = model.input_specs()
    if len(specs) != 1:
        raise RunnerError("%s has %d inputs: eval needs a model with one image input"
                          % (model_path, len(specs)))
    spec = specs[0]
    shape = spec["signature"]
    if len(shape) != 4:
        raise RunnerError("%s input %s has shape %s: eval needs a 4-d image input"
                          % (model_path, spec["name"], shape))
    if shape[1] == 3 and shape[3] != 3:
        layout, height, width = "NCHW", shape[2], shape[3]
    elif shape[3] == 3:
        layout, height, width = "NHWC", shape[1], shape[2]
    else:
        raise RunnerError("%s input shape %s has no 3-channel axis at index 1 or 3"
                          % (model_path, shape))
    if (height is not None and height != x.shape[1]) or (width is not None and width != x.shape[2]):
        raise RunnerError("data %s holds %dx%d images but %s expects %sx%s"
                          % (args.data, x.shape[1], x.shape[2], model_path, height, width))
    if shape[0] is None:
        batch = args.batch
    else:
        batch = shape[0]
        if args.batch not in (1, batch):
            warnings.append("--batch %d ignored: %s has a fixed batch of %d"
                            % (args.batch, os.path.basename(model_path), batch))
    try:
        model.set_batch(batch)
    except Exception as exc:
        raise RunnerError("cannot set batch %d on %s: %s" % (batch, model_path, exc_line(exc)))
    out_scale, out_zero = model.output_quantization()
    predicted, logits = [], []
    start = time.perf_counter()
    for first in range(0, len(x), batch):
        images = x[first:first + batch]
        count = len(images)
        if count < batch:  # pad the last batch of a fixed-batch model
            pad = np.zeros((batch - count,) + images.shape[1:], dtype=images.dtype)
            images = np.concatenate([images, pad])
        feed = prepare_batch(images, spec, layout)
        try:
            output = np.asarray(model.run([feed]))
        except Exception as exc:
            raise RunnerError("%s failed to run %s: %s" % (model.runtime, model_path, exc_line(exc)))
        output = output.reshape(output.shape[0], -1)[:count]
        if out_scale > 0:
            output = (output.astype(np.float32) - out_zero) * np.float32(out_scale)
        predicted.extend(int(v) for v in output.argmax(axis=1))
        if len(logits) < args.logits:
            logits.extend(output[:args.logits - len(logits)].astype(np.float64).tolist())
    seconds = time.perf_counter() - start
    correct = int(sum(1 for p, t in zip(predicted, y.tolist()) if p == t))
    answer = {
        "model": model_path,
        "sha256": sha256_of(model_path),
        "data": args.data,
        "runtime": runtime_record(model),
        "threads": args.threads,
        "layout": layout,
        "batch": batch,
        "input": {"name": spec["name"], "dtype": spec["dtype"],
                  "scale": spec["scale"], "zero_point": spec["zero_point"]},
        "output": {"scale": out_scale, "zero_point": out_zero},
        "n": len(predicted),
        "correct": correct,
        "top1": correct / float(len(predicted)),
        "predicted": predicted,
        "seconds": round(seconds, 4),
        "warnings": warnings,
    }
    if args.logits:
        answer["logits"] = logits
    if hasattr(model, "arena"):
        answer["arena"] = model.arena()
    return answer


# ----------------------------------------------------------------------------- CLI
