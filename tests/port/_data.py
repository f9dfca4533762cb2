"""Shared data for the port scripts: scikit-learn's digits as NumPy arrays (no torch here)."""
import numpy as np
from sklearn.datasets import load_digits


def digits(n=600):
    x, y = load_digits(return_X_y=True)
    return (x[:n] / 16.0).astype(np.float32), y[:n].astype(np.int64)
