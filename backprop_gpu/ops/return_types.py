"""Named tuples returned by reductions along a dimension, as ``torch.return_types``."""
from typing import NamedTuple

from ..tape.tensor import Tensor


class max(NamedTuple):  # noqa: A001, N801 - PyTorch's names
    """``(values, indices)`` of ``max(x, dim)``."""
    values: Tensor
    indices: Tensor


class min(NamedTuple):  # noqa: A001, N801
    """``(values, indices)`` of ``min(x, dim)``."""
    values: Tensor
    indices: Tensor


class sort(NamedTuple):  # noqa: N801
    """``(values, indices)`` of ``sort(x, dim)``."""
    values: Tensor
    indices: Tensor


class topk(NamedTuple):  # noqa: N801
    """``(values, indices)`` of ``topk(x, k, dim)``."""
    values: Tensor
    indices: Tensor


class median(NamedTuple):  # noqa: N801
    """``(values, indices)`` of ``median(x, dim)``."""
    values: Tensor
    indices: Tensor


__all__ = ["max", "min", "sort", "topk", "median"]
