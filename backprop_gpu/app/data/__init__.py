"""The bundled and user-supplied datasets of the training app (the DataLoader is ``bg.utils.data``).

``DATASETS`` maps each name ``backprop-gpu train --dataset`` takes to its loader.
"""
from .datasets import (DATASETS, ArrayDataset, IDXError, digits, linear_regression, load, mnist, read_idx,
                       spirals)

__all__ = ["ArrayDataset", "DATASETS", "IDXError", "digits", "linear_regression", "load", "mnist",
           "read_idx", "spirals"]
