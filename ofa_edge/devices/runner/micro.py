"""TFLite Micro's own interpreter, run on a host (pip tflite-micro)."""

import os
import sys

from .common import TFLITE_MICRO, RunnerError, dist_version, exc_line, require_numpy

class TFLiteMicroModel:
    """A .tflite run by TFLite Micro's interpreter (batch 1, one input, one output)."""

    kind = "tflite"

    def __init__(self, path):
        try:
            from tflite_micro.python.tflite_micro import runtime as tflm
        except Exception as exc:
            raise RunnerError("TFLite Micro is not importable (%s): pip install tflite-micro" % exc_line(exc))
        self.path, self.runtime = path, TFLITE_MICRO
        self.version = dist_version(TFLITE_MICRO)
        try:
            self.interpreter = tflm.Interpreter.from_file(path)
        except Exception as exc:
            raise RunnerError("TFLite Micro could not load %s: %s (an op it has no kernel for is named "
                              "on stderr)" % (path, exc_line(exc)))
        self.input = self.interpreter.get_input_details(0)
        self.output = self.interpreter.get_output_details(0)

    @staticmethod
    def _quantization(detail):
        q = detail.get("quantization_parameters") or {}
        scales, zeros = list(q.get("scales", [])), list(q.get("zero_points", []))
        return (float(scales[0]), int(zeros[0])) if scales else (0.0, 0)

    def input_specs(self):
        np = require_numpy()
        shape = [int(v) for v in self.input["shape"]]
        scale, zero_point = self._quantization(self.input)
        return [{"name": "input", "shape": shape, "signature": shape, "dtype": np.dtype(self.input["dtype"]).name,
                 "scale": scale, "zero_point": zero_point}]

    def output_quantization(self):
        return self._quantization(self.output)

    def set_batch(self, batch):
        if batch != 1:
            raise RunnerError("TFLite Micro runs batch 1 only, not %d" % batch)

    def run(self, feeds):
        self.interpreter.set_input(feeds[0], 0)
        self.interpreter.invoke()
        return self.interpreter.get_output(0)

    def arena(self):
        """The allocator's record, parsed from what print_allocations writes (C++, to fd 2)."""
        import re
        import tempfile

        with tempfile.TemporaryFile(mode="w+") as capture:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(capture.fileno(), 2)
            try:
                self.interpreter.print_allocations()
                import ctypes

                ctypes.CDLL(None).fflush(None)  # C stdio may buffer what C++ printed
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            text = capture.read()
        found = dict((m.group(1), int(m.group(2)))
                     for m in re.finditer(r"Arena allocation (total|head|tail) (\d+) bytes", text))
        if "total" not in found:
            raise RunnerError("TFLite Micro printed no arena allocation total for %s" % self.path)
        return {"total_bytes": found["total"], "head_bytes": found.get("head"), "tail_bytes": found.get("tail")}

