"""Attention layers with PyTorch's API: MultiheadAttention and TransformerEncoderLayer.

Parameter names, shapes, state_dict order and init are torch's (``in_proj_weight``,
``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``; ``q_proj_weight``, ... when ``kdim`` or
``vdim`` differ from ``embed_dim``), so a torch state_dict loads as is.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import ops
from ..ops.creation import empty
from ..tape.tensor import Tensor
from . import functional as F
from . import init
from .layers import Dropout, LayerNorm, Linear
from .module import Module, Parameter


def _apply_mask(scores, mask, what):
    """torch's MultiheadAttention masks: a boolean True is a position *not* attended to; a float
    mask is added."""
    if not isinstance(mask, Tensor):
        mask = Tensor._make(scores.backend.asarray(np.asarray(mask)), scores.backend)
    if mask.dtype.kind == "b":
        return ops.where(mask, -np.inf, scores)
    if mask.dtype.kind != "f":
        raise TypeError(f"MultiheadAttention: only bool and floating types of {what} are supported, got dtype "
                        f"{mask.dtype}")
    return scores + mask


class MultiheadAttention(Module):
    """Multi-head attention, as ``torch.nn.MultiheadAttention``.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` takes (L, N, E) query and (S, N, kdim) / (S, N,
    vdim) key and value ((N, L, E) ... with ``batch_first``; unbatched (L, E) too) and returns
    ``(attn_output, attn_weights)``: the output (L, N, E) and, when ``need_weights``, the weights
    (N, L, S) averaged over heads (``average_attn_weights``) or (N, num_heads, L, S), else None.
    ``attn_mask`` is (L, S) or (N*num_heads, L, S); ``key_padding_mask`` is (N, S). For both, a
    boolean True marks a position that is *not* attended to and a float mask is added to the scores.
    ``is_causal`` is a hint that ``attn_mask`` is the causal mask, which must be given, as in torch.
    Dropout applies to the attention weights in training mode.
    ``add_bias_kv`` and ``add_zero_attn`` raise NotImplementedError.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        if add_bias_kv:
            raise NotImplementedError("MultiheadAttention: add_bias_kv=True is not supported")
        if add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_zero_attn=True is not supported")
        if not isinstance(embed_dim, numbers.Integral) or not isinstance(num_heads, numbers.Integral) \
                or embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and "
                             f"num_heads={num_heads} instead")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim must be divisible by num_heads (embed_dim={embed_dim}, "
                             f"num_heads={num_heads})")
        F._check_p(dropout)
        self.embed_dim, self.num_heads, self.dropout = int(embed_dim), int(num_heads), float(dropout)
        self.kdim = int(kdim) if kdim is not None else self.embed_dim
        self.vdim = int(vdim) if vdim is not None else self.embed_dim
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        self.batch_first, self.head_dim = bool(batch_first), self.embed_dim // self.num_heads
        E = self.embed_dim
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(empty(E, E, device=device, dtype=dtype))
            self.k_proj_weight = Parameter(empty(E, self.kdim, device=device, dtype=dtype))
            self.v_proj_weight = Parameter(empty(E, self.vdim, device=device, dtype=dtype))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(empty(3 * E, E, device=device, dtype=dtype))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * E, device=device, dtype=dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(E, E, bias=bias, device=device, dtype=dtype)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self._reset_parameters()

    def _reset_parameters(self):
        """torch's: Xavier-uniform projections, zero biases (out_proj.weight keeps Linear's init)."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def _projections(self):
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            ws = (w[:E], w[E:2 * E], w[2 * E:])
        else:
            ws = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        b = self.in_proj_bias
        bs = (None,) * 3 if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        return ws, bs

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer "
                               "module method `generate_square_subsequent_mask` to create this mask.")
        if query.ndim not in (2, 3):
            raise ValueError(f"MultiheadAttention: query should be unbatched 2-D or batched 3-D, got "
                             f"{query.ndim}-D tensor of shape {query.shape}")
        batched = query.ndim == 3
        if key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: query {query.shape}, key {key.shape} and value {value.shape} "
                             "must all be 2-D (unbatched) or all 3-D")
        if batched and self.batch_first:
            query, key, value = (ops.transpose(t, 0, 1) for t in (query, key, value))
        if not batched:
            query, key, value = (ops.unsqueeze(t, 1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = ops.unsqueeze(key_padding_mask, 0)
        L, N, E = query.shape
        S = key.shape[0]
        order = "(N, L, E)" if self.batch_first and batched else "(L, N, E)"
        if E != self.embed_dim or key.shape[1] != N or value.shape[1] != N or value.shape[0] != S \
                or key.shape[2] != self.kdim or value.shape[2] != self.vdim:
            raise ValueError(f"MultiheadAttention(embed_dim={self.embed_dim}, kdim={self.kdim}, vdim={self.vdim}): "
                             f"query {tuple(query.shape)}, key {tuple(key.shape)} and value {tuple(value.shape)} "
                             f"(as (L, N, E), (S, N, kdim), (S, N, vdim)) do not fit; expected query {order}")
        h, hd = self.num_heads, self.head_dim
        (wq, wk, wv), (bq, bk, bv) = self._projections()

        def heads(x, w, b, n):  # (n, N, E) -> (N, h, n, hd)
            return ops.permute(ops.reshape(F.linear(x, w, b), (n, N, h, hd)), 1, 2, 0, 3)

        q, k, v = heads(query, wq, bq, L), heads(key, wk, bk, S), heads(value, wv, bv, S)
        scores = ops.matmul(q * (1.0 / float(np.sqrt(hd))), ops.swapaxes(k, -1, -2))  # (N, h, L, S)
        if attn_mask is not None:
            if attn_mask.ndim == 2:
                if tuple(attn_mask.shape) != (L, S):
                    raise RuntimeError(f"The shape of the 2D attn_mask is {tuple(attn_mask.shape)}, but should be "
                                       f"{(L, S)}.")
            elif attn_mask.ndim == 3:
                if tuple(attn_mask.shape) != (N * h, L, S):
                    raise RuntimeError(f"The shape of the 3D attn_mask is {tuple(attn_mask.shape)}, but should be "
                                       f"{(N * h, L, S)}.")
                attn_mask = ops.reshape(attn_mask, (N, h, L, S))
            else:
                raise RuntimeError(f"attn_mask's dimension {attn_mask.ndim} is not supported (2-D or 3-D)")
            scores = _apply_mask(scores, attn_mask, "attn_mask")
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (N, S):
                raise RuntimeError(f"expecting key_padding_mask shape of {(N, S)}, but got "
                                   f"{tuple(key_padding_mask.shape)}")
            scores = _apply_mask(scores, ops.reshape(key_padding_mask, (N, 1, 1, S)), "key_padding_mask")
        attn = ops.softmax(scores, dim=-1)
        if self.dropout > 0 and self.training:
            attn = F.dropout(attn, self.dropout, True)
        out = ops.reshape(ops.permute(ops.matmul(attn, v), 2, 0, 1, 3), (L, N, E))
        out = self.out_proj(out)
        if batched and self.batch_first:
            out = ops.transpose(out, 0, 1)
        weights = None
        if need_weights:
            weights = ops.mean(attn, dim=1) if average_attn_weights else attn
        if not batched:
            out = ops.squeeze(out, 1)
            weights = None if weights is None else ops.squeeze(weights, 0)
        return out, weights

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with a residual and LayerNorm, as
    ``torch.nn.TransformerEncoderLayer`` (post-norm by default, pre-norm with ``norm_first``).

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``; masks as
    :class:`MultiheadAttention`. ``activation`` is ``'relu'``, ``'gelu'`` or a callable.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        if isinstance(activation, str):
            if activation not in _ACTIVATIONS:
                raise RuntimeError(f"activation should be relu/gelu, not {activation}")
            activation = _ACTIVATIONS[activation]
        self.activation = activation

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))


__all__ = ["MultiheadAttention", "TransformerEncoderLayer"]
