"""Recurrent layers' time loops as single ops: one node per layer and direction, not one per step.

Each op takes the input projection of the whole sequence, ``gi = x @ W_ih^T + b_ih`` of shape
(T, B, G*H) (computed beforehand as one matrix product), the recurrent weight ``w_hh`` (G*H, H),
the initial state and optionally ``b_hh``, and runs the loop over time in array code. The output
holds, per step, the hidden state followed by what the VJP needs (the cell state and the gate
activations), so backward through time reads them instead of recomputing the gates; the layers
slice the public values out of it (the VJP is that of the whole output, saved columns included,
so that higher-order gradients through them are right). Backward accumulates the recurrent weight's gradient as one
matrix product over all steps. Gate orders are PyTorch's: LSTM (i, f, g, o), GRU (r, z, n) with
``n = tanh(gi_n + r * (W_hn h + b_hn))``.

The VJPs use only slicing, arithmetic, ``tanh``, ``matmul``, ``concatenate`` and ``stack``, so
they run on the ops namespace as well (higher-order gradients). The LSTM's step is the namespace's
``lstm_cell_`` and its gradient ``lstm_cell_backward`` (compiled on the numba backend), the GRU's
``gru_cell_`` and ``gru_cell_backward``, all stated in :mod:`backprop_gpu.array.kernels.reference`.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..tape.op import Op, apply

_blas = []  # the threadpoolctl controller, made on first use ([None] without threadpoolctl)


def _one_blas_thread(a):
    """On the host, the time loop's products run on one BLAS thread: they are small and alternate
    with elementwise passes, which a multi-threaded OpenBLAS's threads spin against after each call
    (on a 2-core machine an LSTM(32, 128) forward over 32 steps, batch 32, ran 5x faster so). The
    weight gradient's one large product, outside the loop, keeps every thread."""
    if type(a) is not np.ndarray:
        return contextlib.nullcontext()
    if not _blas:
        try:
            from threadpoolctl import ThreadpoolController

            _blas.append(ThreadpoolController())
        except Exception:  # not installed, or no BLAS it can see
            _blas.append(None)
    return contextlib.nullcontext() if _blas[0] is None else _blas[0].limit(limits=1, user_api="blas")


def _order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _weight_grads(F, dgh, prev, needs_w, needs_b):
    """dW_hh = sum_t dgh_t^T h_{t-1} as one product over (T*B) rows, db_hh = column sums."""
    T, B, G = dgh.shape
    d2 = F.reshape(dgh, (T * B, G))
    gw = F.matmul(F.swapaxes(d2, 0, 1), F.reshape(prev, (T * B, prev.shape[-1]))) if needs_w else None
    gb = F.sum(d2, axis=0) if needs_b else None
    return gw, gb


def _previous(F, h_seq, h0, reverse):
    """h_{t-1} for every t, in the sequence's own time order (the step before, in processing order)."""
    if reverse:
        return F.concatenate([h_seq[1:], F.reshape(h0, (1,) + tuple(h0.shape))], axis=0)
    return F.concatenate([F.reshape(h0, (1,) + tuple(h0.shape)), h_seq[:-1]], axis=0)


class RNNSeq(Op):
    """Elman RNN over a sequence: h_t = act(gi_t + h_{t-1} W_hh^T + b_hh); output (T, B, H)."""
    name = "rnn"
    saves = ("w_hh", "h0", "out")

    @staticmethod
    def forward(F, gi, w_hh, h0, *b, reverse, relu):
        out = F.empty(gi.shape, dtype=gi.dtype)
        h, wt = h0, w_hh.T
        if b:  # b_hh once over the whole sequence, not once per step
            gi = gi + b[0]
        with _one_blas_thread(gi):
            for t in _order(gi.shape[0], reverse):
                a = gi[t] + h @ wt
                h = F.maximum(a, 0) if relu else F.tanh(a)
                out[t] = h
        return out

    @staticmethod
    def vjp(F, g, out, gi, w_hh, h0, *b, reverse, relu, needs):
        T = out.shape[0]
        da_steps = [None] * T
        dh_rec = None
        with _one_blas_thread(g):
            for t in (range(T) if reverse else range(T - 1, -1, -1)):
                dh = g[t] if dh_rec is None else g[t] + dh_rec
                h = out[t]
                da = dh * (h > 0) if relu else dh * (1 - h * h)
                da_steps[t] = da
                dh_rec = F.matmul(da, w_hh)
        dgi = F.stack(da_steps, axis=0)
        gw, gb = _weight_grads(F, dgi, _previous(F, out, h0, reverse), needs[1], bool(b) and needs[3])
        return (dgi, gw, dh_rec) + ((gb,) if b else ())


class LSTMSeq(Op):
    """LSTM over a sequence; output (T, B, 6H) = per step [h | c | i f g o] (activations)."""
    name = "lstm"
    saves = ("w_hh", "h0", "c0", "out")

    @staticmethod
    def forward(F, gi, w_hh, h0, c0, *b, reverse):
        T, B, G = gi.shape
        H = G // 4
        out = F.empty((T, B, 6 * H), dtype=gi.dtype)
        h, c, wt = h0, c0, w_hh.T
        if b:  # b_hh once over the whole sequence, not once per step
            gi = gi + b[0]
        with _one_blas_thread(gi):
            for t in _order(T, reverse):
                a = gi[t] + h @ wt
                F.lstm_cell_(a, c, out[t])  # one compiled pass where the backend has one
                h, c = out[t, :, :H], out[t, :, H:2 * H]
        return out

    @staticmethod
    def vjp(F, g, out, gi, w_hh, h0, c0, *b, reverse, needs):
        T, H = out.shape[0], out.shape[-1] // 6
        steps = [None] * T
        dh_rec = dc_rec = None
        first = T - 1 if reverse else 0
        with _one_blas_thread(g):
            for t in (range(T) if reverse else range(T - 1, -1, -1)):
                c_prev = c0 if t == first else out[t + 1 if reverse else t - 1, :, H:2 * H]
                da, dc_rec = F.lstm_cell_backward(g[t], dh_rec, dc_rec, out[t], c_prev)
                steps[t] = da
                dh_rec = F.matmul(da, w_hh)
        dgi = F.stack(steps, axis=0)
        gw, gb = _weight_grads(F, dgi, _previous(F, out[:, :, :H], h0, reverse), needs[1], bool(b) and needs[4])
        return (dgi, gw, dh_rec, dc_rec) + ((gb,) if b else ())


class GRUSeq(Op):
    """GRU over a sequence; output (T, B, 5H) = per step [h | r z n | W_hn h_{t-1} + b_hn]."""
    name = "gru"
    saves = ("w_hh", "h0", "out")

    @staticmethod
    def forward(F, gi, w_hh, h0, *b, reverse):
        T, B, G = gi.shape
        H = G // 3
        out = F.empty((T, B, 5 * H), dtype=gi.dtype)
        h, wt = h0, w_hh.T
        with _one_blas_thread(gi):
            for t in _order(T, reverse):
                gh = h @ wt
                if b:
                    gh += b[0]
                F.gru_cell_(gi[t], gh, h, out[t])  # one compiled pass where the backend has one
                h = out[t, :, :H]
        return out

    @staticmethod
    def vjp(F, g, out, gi, w_hh, h0, *b, reverse, needs):
        T, H = out.shape[0], out.shape[-1] // 5
        dgi_steps, dgh_steps = [None] * T, [None] * T
        dh_rec = None
        first = T - 1 if reverse else 0
        with _one_blas_thread(g):
            for t in (range(T) if reverse else range(T - 1, -1, -1)):
                h_prev = h0 if t == first else out[t + 1 if reverse else t - 1, :, :H]
                dgi_steps[t], dgh, dh_direct = F.gru_cell_backward(g[t], dh_rec, out[t], h_prev)
                dgh_steps[t] = dgh
                dh_rec = dh_direct + F.matmul(dgh, w_hh)
        dgh = F.stack(dgh_steps, axis=0)
        gw, gb = _weight_grads(F, dgh, _previous(F, out[:, :, :H], h0, reverse), needs[1], bool(b) and needs[3])
        return (F.stack(dgi_steps, axis=0), gw, dh_rec) + ((gb,) if b else ())


def rnn_sequence(gi, w_hh, h0, b_hh=None, reverse=False, relu=False):
    """The Elman RNN's loop over ``gi`` (T, B, H): hidden states (T, B, H)."""
    return apply(RNNSeq, gi, w_hh, h0, *(() if b_hh is None else (b_hh,)), reverse=bool(reverse), relu=bool(relu))


def lstm_sequence(gi, w_hh, h0, c0, b_hh=None, reverse=False):
    """The LSTM's loop over ``gi`` (T, B, 4H): (T, B, 6H), per step [h | c | gate activations]."""
    return apply(LSTMSeq, gi, w_hh, h0, c0, *(() if b_hh is None else (b_hh,)), reverse=bool(reverse))


def gru_sequence(gi, w_hh, h0, b_hh=None, reverse=False):
    """The GRU's loop over ``gi`` (T, B, 3H): (T, B, 5H), per step [h | r z n | W_hn h + b_hn]."""
    return apply(GRUSeq, gi, w_hh, h0, *(() if b_hh is None else (b_hh,)), reverse=bool(reverse))
