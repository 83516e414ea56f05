"""Predictors: accuracy (MLP over the arch encoding) and, later, latency. Torch-free at predict time."""
