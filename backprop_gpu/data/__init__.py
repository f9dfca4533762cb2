"""Datasets and the DataLoader."""
from .datasets import (DATASETS, ArrayDataset, IDXError, digits, linear_regression, load, mnist, read_idx,
                       spirals)
from .loader import DataLoader

__all__ = ["ArrayDataset", "DataLoader", "DATASETS", "IDXError", "digits", "linear_regression", "load", "mnist",
           "read_idx", "spirals"]
