"""Predictors: accuracy (MLP over the arch encoding) and latency (calibrated block table). Torch-free at predict time."""
