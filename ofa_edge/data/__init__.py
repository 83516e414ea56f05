"""Datasets for ofa-edge: loaders, splits and channel conversion (numpy + Pillow, no torch)."""
from __future__ import annotations

from ofa_edge.data.base import CARVED, TEST_HOLDOUT_FRACTION, TEST_HOLDOUT_SEED, Dataset, DatasetNotFound, describe
from ofa_edge.data.datasets import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    load_dataset,
    load_fashion_mnist,
    load_npz,
    resize_dataset,
)
from ofa_edge.data.folder import IMAGE_SUFFIXES, load_image_folder
from ofa_edge.data.idx import read_idx, write_idx
from ofa_edge.data.scan import array_summary, scan
from ofa_edge.data.splits import Splits, make_splits, to_channels, train_val_split

__all__ = [
    "CARVED", "DEFAULT_FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "IMAGE_SUFFIXES", "TEST_HOLDOUT_FRACTION",
    "TEST_HOLDOUT_SEED", "Dataset", "DatasetNotFound", "Splits", "array_summary", "describe", "load_dataset",
    "load_fashion_mnist", "load_image_folder", "load_npz", "make_splits", "read_idx", "resize_dataset", "scan",
    "to_channels", "train_val_split", "write_idx",
]
