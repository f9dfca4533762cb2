"""The bundled and user-supplied datasets of the training app (the DataLoader is ``bg.utils.data``)."""
from .datasets import (DATASETS, ArrayDataset, IDXError, digits, linear_regression, load, mnist, read_idx,
                       spirals)

__all__ = ["ArrayDataset", "DATASETS", "IDXError", "digits", "linear_regression", "load", "mnist",
           "read_idx", "spirals"]
