"""Format converters: torch -> ONNX, ONNX -> TFLite (fp32 / int8), TFLite -> C array.

Filled in by the harness and deploy issues ([4/7], [6/7]). Kept free of heavy imports.
"""
