"""RNN, LSTM, GRU and their cells, scaled_dot_product_attention, MultiheadAttention and
TransformerEncoderLayer: values and gradients (inputs, initial states, every parameter by name)
against torch in float64 with torch's weights loaded through ``load_state_dict`` (which checks
the key names), gradients against finite differences on every backend, init, and errors."""
import numpy as np
import pytest

import backprop_gpu as bg
import backprop_gpu.nn.functional as F
import recording_cupy
from backprop_gpu import nn, optim
from backprop_gpu.ops.recurrent import gru_sequence, lstm_sequence, rnn_sequence
from helpers import x64

rng = np.random.default_rng(0)
TOL = dict(rtol=1e-9, atol=1e-11)


def _torch():
    return pytest.importorskip("torch")


def _load(ours, theirs):
    """torch module ``theirs`` in float64, its state loaded strictly into ``ours``."""
    theirs = theirs.double()
    ours.double().load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())
    return theirs


def _flat(y):
    """The tensors of a nested (output, (h, c)) / (output, weights) result, Nones dropped."""
    if isinstance(y, (tuple, list)):
        return [t for part in y for t in _flat(part)]
    return [] if y is None else [y]


def _compare(ours, theirs, args, backend, tol=TOL, **kwargs):
    """Call both modules (or functions) on the float64 ``args`` (NumPy arrays; None passes through;
    a tuple is a tuple of tensors), compare every output, backpropagate one random cotangent per
    output and compare the gradients of the inputs and of every parameter by name."""
    torch = _torch()

    def conv(a, ts):
        if a is None:
            return None, None
        if isinstance(a, tuple):
            pairs = [conv(v, ts) for v in a]
            return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
        if a.dtype == bool:
            return bg.tensor(a, device=backend), torch.tensor(a)
        o, t = x64(backend, a), torch.tensor(a, requires_grad=True)
        ts.append((o, t))
        return o, t

    leaves = []
    pairs = [conv(a, leaves) for a in args]
    kw = {k: conv(v, leaves) if isinstance(v, np.ndarray) else (v, v) for k, v in kwargs.items()}
    ys = _flat(ours(*[p[0] for p in pairs], **{k: v[0] for k, v in kw.items()}))
    yts = _flat(theirs(*[p[1] for p in pairs], **{k: v[1] for k, v in kw.items()}))
    assert len(ys) == len(yts)
    loss, loss_t = 0, 0
    for y, yt in zip(ys, yts):
        assert y.shape == tuple(yt.shape)
        np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), **tol)
        g = rng.standard_normal(tuple(yt.shape))
        loss = loss + (y * bg.tensor(g, device=backend)).sum()
        loss_t = loss_t + (yt * torch.tensor(g)).sum()
    loss.backward()
    loss_t.backward()
    for o, t in leaves:
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), **tol)
    if isinstance(ours, nn.Module):
        grads = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), grads[name].grad.numpy(), err_msg=name, **tol)


# --- RNN, LSTM, GRU -------------------------------------------------------------------------------

RECURRENT = [("RNN", {}), ("RNN", dict(nonlinearity="relu", num_layers=2)), ("LSTM", {}), ("GRU", {}),
             ("LSTM", dict(num_layers=2)), ("GRU", dict(num_layers=2)), ("RNN", dict(bidirectional=True)),
             ("LSTM", dict(bidirectional=True)), ("GRU", dict(bidirectional=True, num_layers=2)),
             ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True)),
             ("GRU", dict(batch_first=True, bias=False)), ("LSTM", dict(bias=False, num_layers=2))]


def _ids(case):
    mode, kw = case
    return mode + "".join(f",{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("case", RECURRENT, ids=[_ids(c) for c in RECURRENT])
def test_recurrent_matches_torch(backend, case, with_h0):
    torch = _torch()
    mode, kw = case
    ours = getattr(nn, mode)(3, 4, device=backend, **kw)
    theirs = _load(ours, getattr(torch.nn, mode)(3, 4, **kw))
    T, B = 5, 2
    x = rng.standard_normal((B, T, 3) if kw.get("batch_first") else (T, B, 3))
    hx = None
    if with_h0:
        shape = ((2 if kw.get("bidirectional") else 1) * kw.get("num_layers", 1), B, 4)
        hx = (rng.standard_normal(shape), rng.standard_normal(shape)) if mode == "LSTM" else rng.standard_normal(shape)
    _compare(ours, theirs, (x, hx), backend)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
def test_recurrent_unbatched_matches_torch(backend, mode, with_h0):
    torch = _torch()
    ours = getattr(nn, mode)(3, 2, num_layers=2, bidirectional=True, device=backend)
    theirs = _load(ours, getattr(torch.nn, mode)(3, 2, num_layers=2, bidirectional=True))
    hx = None
    if with_h0:
        hx = (rng.standard_normal((4, 2)), rng.standard_normal((4, 2))) if mode == "LSTM" else \
            rng.standard_normal((4, 2))
    _compare(ours, theirs, (rng.standard_normal((4, 3)), hx), backend)


CELLS = ["RNNCell", "LSTMCell", "GRUCell"]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_h", [False, True], ids=["no_h", "h"])
@pytest.mark.parametrize("cell", CELLS)
def test_cells_match_torch(backend, cell, with_h, batched):
    torch = _torch()
    kw = dict(nonlinearity="relu") if cell == "RNNCell" and with_h else {}
    ours = getattr(nn, cell)(3, 4, device=backend, **kw)
    theirs = _load(ours, getattr(torch.nn, cell)(3, 4, **kw))
    lead = (2,) if batched else ()
    hx = None
    if with_h:
        hx = (rng.standard_normal(lead + (4,)), rng.standard_normal(lead + (4,))) if cell == "LSTMCell" else \
            rng.standard_normal(lead + (4,))
    _compare(ours, theirs, (rng.standard_normal(lead + (3,)), hx), backend)


@pytest.mark.parametrize("cell", CELLS)
def test_cells_without_bias_match_torch(backend, cell):
    torch = _torch()
    ours = getattr(nn, cell)(3, 2, bias=False, device=backend)
    theirs = _load(ours, getattr(torch.nn, cell)(3, 2, bias=False))
    assert list(ours.state_dict()) == ["weight_ih", "weight_hh"]
    _compare(ours, theirs, (rng.standard_normal((2, 3)), None), backend)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_recurrent_parameters_and_init_are_torchs(mode):
    torch = _torch()
    ours, theirs = getattr(nn, mode)(3, 5, num_layers=2, bidirectional=True), \
        getattr(torch.nn, mode)(3, 5, num_layers=2, bidirectional=True)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    bound = 1 / np.sqrt(5)
    values = np.concatenate([p.numpy().ravel() for p in ours.parameters()])
    assert np.abs(values).max() <= bound and values.std() > bound / 3  # U(-b, b) has std b/sqrt(3)
    assert [[tuple(p.shape) for p in layer] for layer in ours.all_weights] == \
        [[tuple(p.shape) for p in layer] for layer in theirs.all_weights]
    ours.flatten_parameters()  # a no-op here, called by much torch code
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        getattr(nn, mode)(3, 5, dropout=0.2)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_sequence_ops_gradcheck_first_and_second_order(backend, reverse):
    T, B, H = 3, 2, 2
    x = lambda *s: x64(backend, rng.standard_normal(s))  # noqa: E731
    gi, w, h0, c0, b = x(T, B, 4 * H), x(4 * H, H), x(B, H), x(B, H), x(4 * H)
    assert bg.gradcheck(lambda *a: lstm_sequence(*a[:4], a[4], reverse), [gi, w, h0, c0, b])
    gi3, w3, b3 = x(T, B, 3 * H), x(3 * H, H), x(3 * H)
    assert bg.gradcheck(lambda *a: gru_sequence(*a[:3], a[3], reverse), [gi3, w3, h0, b3])
    for relu in (False, True):
        gi1, w1, b1 = x(T, B, H), x(H, H), x(H)
        assert bg.gradcheck(lambda *a: rnn_sequence(*a[:3], a[3], reverse, relu), [gi1, w1, h0, b1])

    def second(fn, n_grad):  # the squared norm of the first gradients, through create_graph
        def f(*a):
            y = fn(*a)
            return sum((g * g).sum() for g in bg.grad((y * y).sum(), list(a[:n_grad]), create_graph=True))
        return f
    assert bg.gradcheck(second(lambda *a: lstm_sequence(*a[:4], a[4], reverse)[:, :, :2 * H], 4), [gi, w, h0, c0, b])
    assert bg.gradcheck(second(lambda *a: gru_sequence(*a[:3], a[3], reverse)[:, :, :H], 3), [gi3, w3, h0, b3])


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_recurrent_layer_gradcheck(backend, mode):
    m = getattr(nn, mode)(2, 2, num_layers=2, bidirectional=True, batch_first=True, device=backend, dtype="float64")
    x, h0 = x64(backend, rng.standard_normal((2, 3, 2))), x64(backend, rng.standard_normal((4, 2, 2)))
    if mode == "LSTM":
        c0 = x64(backend, rng.standard_normal((4, 2, 2)))
        def f(x, h, c):
            out, (h_n, c_n) = m(x, (h, c))
            return bg.cat([out.flatten(), h_n.flatten(), c_n.flatten()])
        assert bg.gradcheck(f, [x, h0, c0])
    else:
        assert bg.gradcheck(lambda x, h: bg.cat([t.flatten() for t in m(x, h)]), [x, h0])
    assert bg.gradcheck(lambda x: m(x)[0], [x])


def test_dropout_between_layers_only_in_training(backend):
    m = nn.LSTM(3, 4, num_layers=2, dropout=0.5, device=backend)
    x = bg.tensor(rng.standard_normal((5, 2, 3)).astype(np.float32), device=backend)
    m.eval()
    ev = m(x)[0].numpy()
    np.testing.assert_array_equal(m(x)[0].numpy(), ev)
    m.train()
    assert not np.allclose(m(x)[0].numpy(), ev)  # the first layer's output was dropped out
    single = nn.GRU(3, 4, dropout=0.0, device=backend)
    np.testing.assert_array_equal(single(x)[0].numpy(), single.eval()(x)[0].numpy())


def test_recurrent_errors():
    lstm = nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(RuntimeError, match=r"input.size\(-1\) must be equal to input_size. Expected 3, got 5"):
        lstm(bg.zeros(6, 2, 5))
    with pytest.raises(ValueError, match=r"expected input to be 2-D \(L, H_in\) or 3-D, got 4-D tensor of shape "
                                         r"\(1, 6, 2, 3\)"):
        lstm(bg.zeros(1, 6, 2, 3))
    with pytest.raises(RuntimeError, match=r"expected hidden size \(2, 2, 4\), got \[1, 2, 4\]"):
        lstm(bg.zeros(6, 2, 3), (bg.zeros(1, 2, 4), bg.zeros(2, 2, 4)))
    with pytest.raises(RuntimeError, match=r"LSTM \(cell state\): expected hidden size \(2, 2, 4\), got \[2, 2, 3\]"):
        lstm(bg.zeros(6, 2, 3), (bg.zeros(2, 2, 4), bg.zeros(2, 2, 3)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        lstm(bg.zeros(6, 2, 3), bg.zeros(2, 2, 4))
    with pytest.raises(RuntimeError, match="h_0 should also be 2-D but got 3-D"):
        nn.GRU(3, 4)(bg.zeros(6, 3), bg.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="the input sequence is empty"):
        nn.RNN(3, 4)(bg.zeros(0, 2, 3))
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout should be a number in range"):
        nn.GRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1, got 0"):
        nn.GRU(3, 0)
    with pytest.raises(NotImplementedError, match="proj_size=2"):
        nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(TypeError, match="input and parameter tensors are not the same dtype, found input tensor "
                                        "with float64 and parameter tensor with float32"):
        lstm(bg.zeros(6, 2, 3, dtype="float64"))
    with pytest.raises(TypeError, match="input and hidden tensors are not the same dtype, found input tensor with "
                                        "float32 and hidden tensor with float64"):
        nn.GRUCell(3, 4)(bg.zeros(2, 3), bg.zeros(2, 4, dtype="float64"))
    cell = nn.LSTMCell(3, 4)
    with pytest.raises(RuntimeError, match="input has inconsistent input_size: got 2, expected 3"):
        cell(bg.zeros(5, 2))
    with pytest.raises(RuntimeError, match=r"LSTMCell: expected hidden size \(5, 4\), got \[4, 4\]"):
        cell(bg.zeros(5, 3), (bg.zeros(4, 4), bg.zeros(4, 4)))


# --- scaled_dot_product_attention ---------------------------------------------------------------

SDPA_MASKS = ["none", "bool", "float", "causal", "bool_broadcast", "scale"]


@pytest.mark.parametrize("mask", SDPA_MASKS)
def test_sdpa_matches_torch(backend, mask):
    torch = _torch()
    q, k, v = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((2, 3, 6, 7))
    kw = {}
    if mask == "bool":
        m = rng.random((2, 3, 4, 6)) > 0.4
        m[..., 0] = True  # no row masked entirely
        kw["attn_mask"] = m
    elif mask == "bool_broadcast":
        m = rng.random((4, 6)) > 0.4
        m[:, 2] = True
        kw["attn_mask"] = m
    elif mask == "float":
        kw["attn_mask"] = rng.standard_normal((3, 4, 6))
    elif mask == "causal":
        kw["is_causal"] = True
    elif mask == "scale":
        kw["scale"] = 0.3
    _compare(F.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention, (q, k, v),
             backend, **kw)


def test_sdpa_gradcheck_and_dropout(backend):
    q, k, v = (x64(backend, rng.standard_normal(s)) for s in ((2, 3, 2), (2, 4, 2), (2, 4, 3)))
    m = bg.tensor(rng.standard_normal((3, 4)), device=backend)
    assert bg.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, m), [q, k, v])
    assert bg.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.7), [q, k, v])
    assert not F.scaled_dot_product_attention(q, k, v, dropout_p=1.0).numpy().any()
    assert not np.allclose(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy(),
                           F.scaled_dot_product_attention(q, k, v).numpy())


def test_sdpa_errors():
    q, k, v = bg.zeros(2, 4, 5), bg.zeros(2, 6, 5), bg.zeros(2, 6, 3)
    with pytest.raises(RuntimeError, match="Explicit attn_mask should not be set when is_causal=True"):
        F.scaled_dot_product_attention(q, k, v, bg.zeros(4, 6), is_causal=True)
    with pytest.raises(ValueError, match=r"query \(2, 4, 5\), key \(2, 6, 4\) and value \(2, 6, 3\) do not fit"):
        F.scaled_dot_product_attention(q, bg.zeros(2, 6, 4), v)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(4, 5\) does not broadcast to the attention scores' "
                                         r"shape \(2, 4, 6\)"):
        F.scaled_dot_product_attention(q, k, v, bg.zeros(4, 5))
    with pytest.raises(TypeError, match="attn_mask must be a bool or floating tensor, got dtype int64"):
        F.scaled_dot_product_attention(q, k, v, bg.zeros(4, 6, dtype="int64"))
    with pytest.raises(ValueError, match=r"key must have at least 2 dimensions"):
        F.scaled_dot_product_attention(q, bg.zeros(5), v)
    with pytest.raises(NotImplementedError, match="enable_gqa"):
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


# --- MultiheadAttention ---------------------------------------------------------------------------

MHA = [dict(), dict(batch_first=True), dict(kdim=3, vdim=5), dict(bias=False)]
MHA_MASKS = ["none", "bool_attn_and_padding", "float_3d_attn_per_head", "float_padding", "causal_hint",
             "no_weights"]


def _mha_masks(kind, N, L, S, heads):
    if kind == "bool_attn_and_padding":
        am = rng.random((L, S)) > 0.6
        am[:, 0] = False  # True = not attended; keep one key per row
        kpm = np.zeros((N, S), bool)
        kpm[:, -1] = True
        kpm[0, -2] = True
        return dict(attn_mask=am, key_padding_mask=kpm)
    if kind == "float_3d_attn_per_head":
        return dict(attn_mask=rng.standard_normal((N * heads, L, S)), average_attn_weights=False)
    if kind == "float_padding":
        return dict(key_padding_mask=rng.standard_normal((N, S)))
    if kind == "causal_hint":
        return dict(attn_mask=np.triu(np.ones((L, S), bool), 1), is_causal=True)
    if kind == "no_weights":
        return dict(need_weights=False)
    return {}


@pytest.mark.parametrize("masks", MHA_MASKS)
@pytest.mark.parametrize("kw", MHA, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_multihead_attention_matches_torch(backend, kw, masks):
    torch = _torch()
    E, heads, L, S, N = 8, 2, 4, 6 if masks != "causal_hint" else 4, 3
    ours = nn.MultiheadAttention(E, heads, device=backend, **kw)
    theirs = _load(ours, torch.nn.MultiheadAttention(E, heads, **kw))
    lead_q, lead_k = ((N, L), (N, S)) if kw.get("batch_first") else ((L, N), (S, N))
    q, k, v = rng.standard_normal(lead_q + (E,)), rng.standard_normal(lead_k + (kw.get("kdim", E),)), \
        rng.standard_normal(lead_k + (kw.get("vdim", E),))
    _compare(ours, theirs, (q, k, v), backend, **_mha_masks(masks, N, L, S, heads))


def test_multihead_attention_unbatched_and_self_attention(backend):
    torch = _torch()
    ours = nn.MultiheadAttention(6, 3, device=backend)
    theirs = _load(ours, torch.nn.MultiheadAttention(6, 3))
    x = rng.standard_normal((5, 6))
    kpm = np.zeros(5, bool)
    kpm[3] = True
    _compare(ours, theirs, (x, x, x), backend, key_padding_mask=kpm)


def test_multihead_attention_gradcheck_init_and_weights(backend):
    m = nn.MultiheadAttention(4, 2, device=backend, dtype="float64")
    q, kv = x64(backend, rng.standard_normal((3, 2, 4))), x64(backend, rng.standard_normal((2, 2, 4)))
    mask = bg.tensor(np.array([[False, True], [False, False], [True, False]]), device=backend)
    assert bg.gradcheck(lambda q, kv: m(q, kv, kv, attn_mask=mask)[0], [q, kv])
    assert not m.in_proj_bias.numpy().any() and not m.out_proj.bias.numpy().any()
    assert np.abs(m.in_proj_weight.numpy()).max() <= np.sqrt(6 / (4 + 12))  # xavier_uniform_ of (12, 4)
    out, w = m(q, kv, kv)
    np.testing.assert_allclose(w.numpy().sum(-1), 1.0)
    assert out.shape == (3, 2, 4) and w.shape == (2, 3, 2)
    assert m(q, kv, kv, need_weights=False)[1] is None


def test_multihead_attention_dropout_in_training_only(backend):
    m = nn.MultiheadAttention(4, 2, dropout=0.5, device=backend)
    x = bg.tensor(rng.standard_normal((5, 2, 4)).astype(np.float32), device=backend)
    ev = m.eval()(x, x, x)[0].numpy()
    assert not np.allclose(m.train()(x, x, x)[0].numpy(), ev)


def test_multihead_attention_errors():
    with pytest.raises(ValueError, match=r"embed_dim must be divisible by num_heads \(embed_dim=6, num_heads=4\)"):
        nn.MultiheadAttention(6, 4)
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        nn.MultiheadAttention(4, 2, add_bias_kv=True)
    m = nn.MultiheadAttention(4, 2)
    x = bg.zeros(3, 2, 4)
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        m(x, x, x, is_causal=True)
    with pytest.raises(RuntimeError, match=r"The shape of the 2D attn_mask is \(3, 2\), but should be \(3, 3\)"):
        m(x, x, x, attn_mask=bg.zeros(3, 2))
    with pytest.raises(RuntimeError, match=r"The shape of the 3D attn_mask is \(2, 3, 3\), but should be \(4, 3, 3\)"):
        m(x, x, x, attn_mask=bg.zeros(2, 3, 3))
    with pytest.raises(RuntimeError, match=r"expecting key_padding_mask shape of \(2, 3\), but got \(3, 2\)"):
        m(x, x, x, key_padding_mask=bg.zeros(3, 2))
    with pytest.raises(ValueError, match=r"query \(3, 2, 5\), key \(3, 2, 5\) and value \(3, 2, 5\)"):
        y = bg.zeros(3, 2, 5)
        m(y, y, y)
    with pytest.raises(TypeError, match="only bool and floating types of attn_mask are supported"):
        m(x, x, x, attn_mask=bg.zeros(3, 3, dtype="int64"))


# --- TransformerEncoderLayer ----------------------------------------------------------------------

TEL = [dict(), dict(norm_first=True, activation="gelu", batch_first=True)]


@pytest.mark.parametrize("kw", TEL, ids=["post_norm", "pre_norm_gelu_batch_first"])
def test_transformer_encoder_layer_matches_torch(backend, kw):
    torch = _torch()
    ours = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, device=backend, **kw)
    theirs = _load(ours, torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, **kw))
    assert list(ours.state_dict())[:4] == ["self_attn.in_proj_weight", "self_attn.in_proj_bias",
                                          "self_attn.out_proj.weight", "self_attn.out_proj.bias"]
    L = 4
    causal = np.triu(np.full((L, L), -np.inf), 1)
    kpm = np.zeros((3, L))  # float, as the mask (torch deprecates mixing the two kinds)
    kpm[1, -1] = -np.inf
    _compare(ours, theirs, (rng.standard_normal((3, L, 8) if kw else (L, 3, 8)),), backend,
             src_mask=causal, src_key_padding_mask=kpm, is_causal=True)


def test_transformer_encoder_layer_dropout_and_errors(backend):
    m = nn.TransformerEncoderLayer(4, 2, 8, device=backend)
    x = bg.tensor(rng.standard_normal((3, 2, 4)).astype(np.float32), device=backend)
    ev = m.eval()(x).numpy()
    assert not np.allclose(m.train()(x).numpy(), ev)
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        nn.TransformerEncoderLayer(4, 2, activation="tanh")


# --- the GPU rules, on the recording CuPy stand-in ------------------------------------------------

class _SeqModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.lstm = nn.LSTM(8, 8, num_layers=2, dropout=0.1, bidirectional=True)
        self.gru = nn.GRUCell(16, 8)
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.1)
        self.head = nn.Linear(8, 10)

    def forward(self, idx):
        x, _ = self.lstm(self.emb(idx))
        h = self.gru(x[-1])
        y = h.unsqueeze(0).expand(idx.shape[0], -1, -1)
        a, _ = self.attn(y, y, y, attn_mask=bg.triu(bg.ones(idx.shape[0], idx.shape[0], dtype="bool",
                                                                 device=y.backend), 1))
        z = F.scaled_dot_product_attention(a, a, a, is_causal=True)
        return self.head(z)


def test_recurrent_and_attention_step_on_the_cupy_path_makes_no_sync(monkeypatch, tmp_path_factory):
    """After a warm-up step, a training step through LSTM, GRUCell, MultiheadAttention and SDPA makes
    no device-to-host sync and copies to the device only the batch (and 0-d Python scalar
    constants), and ends where the numpy backend's step ends."""
    rec, cupy = recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("rawkernels"))
    data = np.random.default_rng(0)
    batches = [(data.integers(0, 10, (5, 3)), data.integers(0, 10, (5, 3))) for _ in range(2)]
    runs = []

    def step(model, opt, x, y, device):
        out = model(bg.tensor(x, device=device))
        loss = F.cross_entropy(out.reshape(-1, 10), bg.tensor(y.reshape(-1), device=device))
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    for device in ("numpy", cupy):
        bg.manual_seed(0)
        model = _SeqModel().to(device)
        bg.manual_seed(1)  # the same dropout stream on both devices (init drew from the host's only)
        # SGD, not Adam: Adam would blow the rounding noise of the key bias's zero gradient up to lr
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses = [float(step(model, opt, *batches[0], device))]
        with rec.count() as c:
            loss = step(model, opt, *batches[1], device)
        runs.append((losses + [float(loss)], [t.numpy() for t in model.state_dict().values()], c))
    (ref_losses, ref_state, _), (losses, state, c) = runs
    assert c.syncs == 0, c.table(kinds=("sync",))
    copies = [(site, what) for (kind, site, what), n in c.events.items() if kind == "h2d"]
    batch = [s for s, _ in copies if s.endswith("(tensor)")]
    others = [(s, w) for s, w in copies if not s.endswith("(tensor)")
              and not ("(constant_like)" in s and w.startswith("asarray () "))]
    assert len(batch) == 2 and not others, c.table(kinds=("h2d",))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for k, (a, b) in enumerate(zip(state, ref_state)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"state entry {k}")


def test_the_time_loop_gives_the_blas_threads_back():
    """The loops run their small products on one BLAS thread (host arrays only); afterwards, and after
    an error inside a loop, the process has its BLAS thread counts back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    counts = lambda: {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}  # noqa: E731
    before = counts()
    m = nn.LSTM(3, 4, bidirectional=True)
    out, (h, c) = m(bg.tensor(rng.standard_normal((5, 2, 3)).astype(np.float32)))
    (out.sum() + c.sum()).backward()
    with pytest.raises(ValueError):
        lstm_sequence(bg.zeros(2, 2, 8), bg.zeros(8, 2), bg.zeros(2, 2), bg.zeros(3, 2))  # c0 of the wrong batch
    after = counts()
    assert before and {k: after[k] for k in before} == before
