"""Datasets for ofa-edge: loaders, splits and channel conversion (numpy + Pillow, no torch)."""
from __future__ import annotations

from ofa_edge.data.datasets import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    Dataset,
    DatasetNotFound,
    describe,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    load_npz,
    resize_dataset,
)
from ofa_edge.data.idx import read_idx, write_idx
from ofa_edge.data.splits import Splits, make_splits, to_channels, train_val_split

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "Dataset", "DatasetNotFound", "Splits",
    "describe", "load_dataset", "load_fashion_mnist", "load_image_folder", "load_npz",
    "make_splits", "read_idx", "resize_dataset", "to_channels", "train_val_split", "write_idx",
]
