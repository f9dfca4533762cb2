"""Recurrent layers with PyTorch's API: RNN, LSTM, GRU and their cells.

Names, signatures, defaults, parameter names and shapes (``weight_ih_l{k}{_reverse}``, ...),
state_dict order, gate order and the init U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) of every
parameter are torch's, so a torch state_dict loads as is. Per layer and direction the input
projection of the whole sequence is one matrix product; the loop over time is one op
(:mod:`backprop_gpu.ops.recurrent`), so the tape holds one node per layer and direction.
"""
from __future__ import annotations

import math
import numbers
import warnings

from .. import ops
from ..ops.creation import empty, zeros
from ..ops.recurrent import gru_sequence, lstm_sequence, rnn_sequence
from . import functional as F
from . import init
from .module import Module, Parameter

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _check_hidden(what, t, expected):
    if tuple(t.shape) != tuple(expected):
        raise RuntimeError(f"{what}: expected hidden size {tuple(expected)}, got {list(t.shape)}")


def _check_dtypes(name, input, weight, states):  # noqa: A002
    """As torch: no silent promotion between the input, the parameters and the initial states."""
    if input.dtype != weight.dtype:
        raise TypeError(f"{name}: input and parameter tensors are not the same dtype, found input tensor with "
                        f"{input.dtype} and parameter tensor with {weight.dtype}")
    for t in states:
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"{name}: input and hidden tensors are not the same dtype, found input tensor with "
                            f"{input.dtype} and hidden tensor with {t.dtype}")


def _run(mode, gi, w_hh, b_hh, h0, c0, reverse):
    """One layer and direction over the projected input gi (T, B, G*H): (outputs (T, B, H), h_n, c_n)."""
    if mode == "LSTM":
        H = w_hh.shape[1]
        out = lstm_sequence(gi, w_hh, h0, c0, b_hh, reverse)
        seq = out[:, :, :H]
        last = 0 if reverse else -1
        return seq, seq[last], out[last, :, H:2 * H]
    if mode == "GRU":
        H = w_hh.shape[1]
        seq = gru_sequence(gi, w_hh, h0, b_hh, reverse)[:, :, :H]
    else:
        seq = rnn_sequence(gi, w_hh, h0, b_hh, reverse, relu=mode == "RNN_RELU")
    return seq, seq[0 if reverse else -1], None


class RNNBase(Module):
    """The shared body of :class:`RNN`, :class:`LSTM` and :class:`GRU` (torch's ``RNNBase``)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        if not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             f"element being zeroed, got {dropout!r}")
        for what, v, low in (("hidden_size", hidden_size, 1), ("num_layers", num_layers, 1),
                             ("input_size", input_size, 0)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name}: {what} must be an integer >= {low}, got {v!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                          UserWarning, stacklevel=3)
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size={proj_size} (LSTM projections) is not supported")
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional, self.proj_size = bool(bidirectional), 0
        gate = _GATES[mode] * self.hidden_size
        dirs = 2 if bidirectional else 1
        self._flat_weights_names = []
        for layer in range(self.num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                n_in = self.input_size if layer == 0 else self.hidden_size * dirs
                shapes = [("weight_ih", (gate, n_in)), ("weight_hh", (gate, self.hidden_size))]
                if bias:
                    shapes += [("bias_ih", (gate,)), ("bias_hh", (gate,))]
                for pname, shape in shapes:
                    setattr(self, pname + sfx, Parameter(empty(*shape, device=device, dtype=dtype)))
                    self._flat_weights_names.append(pname + sfx)
        self.reset_parameters()

    def reset_parameters(self):
        """Every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as torch."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def flatten_parameters(self):
        """Nothing to do: torch packs the weights for cuDNN here; these layers read them where they are
        (kept so that torch code calling it runs unchanged)."""

    @property
    def all_weights(self):
        """The parameters per layer and direction, ``[[weight_ih, weight_hh, bias_ih, bias_hh], ...]``."""
        n = 4 if self.bias else 2
        names = self._flat_weights_names
        return [[getattr(self, k) for k in names[i:i + n]] for i in range(0, len(names), n)]

    def _layer_params(self, layer, d):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        get = lambda n: getattr(self, n + sfx) if self.bias or n.startswith("weight") else None  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def forward(self, input, hx=None):  # noqa: A002 - torch's name
        name, lstm = type(self).__name__, self.mode == "LSTM"
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected input to be 2-D (L, H_in) or 3-D, got {input.ndim}-D tensor "
                             f"of shape {input.shape}")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.shape[-1]} (input of shape {input.shape})")
        batched = input.ndim == 3
        _check_dtypes(name, input, self.weight_ih_l0, (hx if isinstance(hx, (tuple, list)) else (hx,)))
        x = input if batched else ops.unsqueeze(input, 1)
        if batched and self.batch_first:
            x = ops.transpose(x, 0, 1)
        T, B = x.shape[0], x.shape[1]
        if T == 0:
            raise ValueError(f"{name}: the input sequence is empty (input of shape {input.shape})")
        dirs = 2 if self.bidirectional else 1
        expected = (self.num_layers * dirs, B, self.hidden_size)
        if hx is None:
            h0 = zeros(*expected, device=x.backend, dtype=x.dtype)
            c0 = zeros(*expected, device=x.backend, dtype=x.dtype) if lstm else None
        else:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
                h0, c0 = hx
            else:
                h0, c0 = hx, None
            want = 3 if batched else 2
            for what, t in (("h_0", h0), ("c_0", c0)):
                if t is not None and t.ndim != want:
                    raise RuntimeError(f"{name}: for {'batched' if batched else 'unbatched'} {input.ndim}-D "
                                       f"input, {what} should also be {want}-D but got {t.ndim}-D tensor "
                                       f"of shape {t.shape}")
            if not batched:
                h0 = ops.unsqueeze(h0, 1)
                c0 = ops.unsqueeze(c0, 1) if lstm else None
            _check_hidden(name, h0, expected)
            if lstm:
                _check_hidden(f"{name} (cell state)", c0, expected)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                w_ih, w_hh, b_ih, b_hh = self._layer_params(layer, d)
                k = layer * dirs + d
                gi = F.linear(x, w_ih, b_ih)  # the whole sequence's input projection, one product
                seq, h, c = _run(self.mode, gi, w_hh, b_hh, h0[k], c0[k] if lstm else None, reverse=d == 1)
                outs.append(seq)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if dirs == 1 else ops.cat(outs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        out, h_n = x, ops.stack(h_n, dim=0)
        c_n = ops.stack(c_n, dim=0) if lstm else None
        if batched and self.batch_first:
            out = ops.transpose(out, 0, 1)
        if not batched:
            out, h_n = ops.squeeze(out, 1), ops.squeeze(h_n, 1)
            c_n = ops.squeeze(c_n, 1) if lstm else None
        return (out, (h_n, c_n)) if lstm else (out, h_n)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN, ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or ReLU), as ``torch.nn.RNN``.

    ``forward(input, hx=None)`` takes (L, N, H_in) (``batch_first``: (N, L, H_in)) or unbatched
    (L, H_in) input and returns ``(output, h_n)``: output (L, N, D*H) with the last layer's states,
    h_n (D*num_layers, N, H) with every layer's final state (D = 2 if bidirectional).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self):
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class LSTM(RNNBase):
    """LSTM with torch's gate order (i, f, g, o), as ``torch.nn.LSTM``.

    ``forward(input, hx=None)`` with ``hx = (h_0, c_0)`` returns ``(output, (h_n, c_n))``; shapes
    as :class:`RNN`. ``proj_size`` other than 0 raises NotImplementedError.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device=device, dtype=dtype)


class GRU(RNNBase):
    """GRU with torch's gate order (r, z, n) and ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    as ``torch.nn.GRU``; ``forward(input, hx=None)`` returns ``(output, h_n)`` as :class:`RNN`."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, device=None,
                 dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)


class RNNCellBase(Module):
    """The shared body of the cells: ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), ``bias_ih``,
    ``bias_hh`` (G*H,), all from U(-1/sqrt(H), 1/sqrt(H)), as torch."""

    def __init__(self, mode, input_size: int, hidden_size: int, bias: bool, device=None, dtype=None):
        super().__init__()
        self.mode, self.input_size, self.hidden_size, self.bias = mode, int(input_size), int(hidden_size), bool(bias)
        gate = _GATES[mode] * self.hidden_size
        self.weight_ih = Parameter(empty(gate, self.input_size, device=device, dtype=dtype))
        self.weight_hh = Parameter(empty(gate, self.hidden_size, device=device, dtype=dtype))
        if bias:
            self.bias_ih = Parameter(empty(gate, device=device, dtype=dtype))
            self.bias_hh = Parameter(empty(gate, device=device, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    reset_parameters = RNNBase.reset_parameters

    def _step(self, input, hx):  # noqa: A002
        name, lstm = type(self).__name__, self.mode == "LSTM"
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: expected input to be 1-D or 2-D, got {input.ndim}-D tensor of shape "
                             f"{input.shape}")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input has inconsistent input_size: got {input.shape[-1]}, expected "
                               f"{self.input_size} (input of shape {input.shape})")
        batched = input.ndim == 2
        _check_dtypes(name, input, self.weight_ih, (hx if isinstance(hx, (tuple, list)) else (hx,)))
        x = input if batched else ops.unsqueeze(input, 0)
        expected = (x.shape[0], self.hidden_size)
        if hx is None:
            h0 = zeros(*expected, device=x.backend, dtype=x.dtype)
            c0 = zeros(*expected, device=x.backend, dtype=x.dtype) if lstm else None
        else:
            h0, c0 = hx if lstm else (hx, None)
            states = (h0, c0) if lstm else (h0,)
            for t in states:
                if t.ndim != input.ndim:
                    raise RuntimeError(f"{name}: expected hidden state of {input.ndim}-D like the input of "
                                       f"shape {input.shape}, got shape {t.shape}")
            if not batched:
                h0 = ops.unsqueeze(h0, 0)
                c0 = ops.unsqueeze(c0, 0) if lstm else None
            _check_hidden(name, h0, expected)
            if lstm:
                _check_hidden(f"{name} (cell state)", c0, expected)
        gi = ops.unsqueeze(F.linear(x, self.weight_ih, self.bias_ih), 0)
        seq, h, c = _run(self.mode, gi, self.weight_hh, self.bias_hh, h0, c0, reverse=False)
        if not batched:
            h = ops.squeeze(h, 0)
            c = ops.squeeze(c, 0) if lstm else None
        return (h, c) if lstm else h

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s


class RNNCell(RNNCellBase):
    """One step of :class:`RNN`: ``forward(input, hx=None)`` with input (N, H_in) or (H_in,) returns h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, bias,
                         device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):  # noqa: A002
        return self._step(input, hx)


class LSTMCell(RNNCellBase):
    """One step of :class:`LSTM`: ``forward(input, hx=None)`` with ``hx = (h, c)`` returns (h', c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, bias, device=device, dtype=dtype)

    def forward(self, input, hx=None):  # noqa: A002
        return self._step(input, hx)


class GRUCell(RNNCellBase):
    """One step of :class:`GRU`: ``forward(input, hx=None)`` returns h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, bias, device=device, dtype=dtype)

    def forward(self, input, hx=None):  # noqa: A002
        return self._step(input, hx)


__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]
