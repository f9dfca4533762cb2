"""The recorded forms of the array-namespace kernels that VJPs call, for ``create_graph``.

Where a reference kernel (:mod:`backprop_gpu.array.kernels.reference`) is written
with operators and methods that tensors share with arrays, and no in-place
writes, its statement runs unchanged on tensors and so records itself: that is
the recorded form, not a second statement. Kernels with in-place passes have
recorded ops of their own (max pooling in :mod:`.conv`, batch normalisation in
:mod:`.normalization`).
"""
from __future__ import annotations

import importlib

from ..array.kernels.reference import Kernels


class RecordedKernels(Kernels):
    """Reference kernel statements over tensors and the ops namespace."""

    records = True

    @property
    def _xp(self):
        return importlib.import_module("backprop_gpu.ops")


_recorded = RecordedKernels()
relu_backward = _recorded.relu_backward
relu_backward_colsum = _recorded.relu_backward_colsum
lstm_cell_backward = _recorded.lstm_cell_backward
gru_cell_backward = _recorded.gru_cell_backward

__all__ = ["relu_backward", "relu_backward_colsum", "lstm_cell_backward", "gru_cell_backward"]
