"""The broad workload suite of ``benchmarks/interleaved.py``: models and ops nobody tuned for.

Every workload is written once, over a library namespace (``backprop_gpu`` or
``torch``: the APIs are the same), so both sides run the same computation.
Our parameters are copied into torch's model before anything is timed, and
each workload is cross-checked at set-up: the loss before and after one
training step (or an op's output and input gradient) must agree within a
float32 tolerance, else the workload raises :class:`CheckError` and reports
no time. Training workloads use torch's default optimizer implementation
(what ``torch.optim.X(params)`` gives on the CPU); the optimizer group uses
``fused=True`` where torch has it, else ``foreach=True``.

Each group function returns ``{workload name: builder}``; a builder returns
``{"ours": step, "torch": step[, "floor": step]}``.
"""
from __future__ import annotations

import numpy as np

import backprop_gpu as bg
from common import TORCH, memory_triad

DEVICE = "numba"
_SYNC = bg.get_backend(DEVICE).synchronize


class CheckError(AssertionError):
    """Ours and torch disagree at set-up: the workload is broken and is not timed."""


def _np(t) -> np.ndarray:
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


def _close(name: str, ours, theirs, rtol: float, atol: float) -> None:
    a, b = np.asarray(_np(ours), np.float64), np.asarray(_np(theirs), np.float64)
    if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
        err = float(np.max(np.abs(a - b))) if a.shape == b.shape else f"shapes {a.shape} vs {b.shape}"
        raise CheckError(f"{name}: ours and torch differ (max abs difference {err}, rtol {rtol}, atol {atol})")


def copy_params(ours, theirs) -> None:
    """Copy our module's parameters into torch's module of the same structure, in registration order."""
    po, pt = list(ours.parameters()), list(theirs.parameters())
    if len(po) != len(pt):
        raise CheckError(f"{len(po)} parameters in ours, {len(pt)} in torch's model")
    with TORCH.no_grad():
        for a, b in zip(po, pt):
            if tuple(a.shape) != tuple(b.shape):
                raise CheckError(f"parameter shapes differ: ours {tuple(a.shape)}, torch {tuple(b.shape)}")
            b.copy_(TORCH.from_numpy(np.ascontiguousarray(_np(a))))


def _inputs(arrays, lib):
    if lib is TORCH:
        return [TORCH.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    return [bg.tensor(a, device=DEVICE) for a in arrays]


def train_workload(build, loss, arrays, opt_name, opt_kwargs, floor=None, rtol=2e-3, atol=1e-5):
    """A builder for one training step: zero_grad, ``loss(model, F, *inputs)``, backward, optimizer step.

    ``build(lib)`` makes the model from ``lib.nn``; ``arrays`` are the NumPy inputs both sides share."""
    def builder():
        bg.manual_seed(0)
        mo = build(bg).to(DEVICE)
        TORCH.manual_seed(0)
        mt = build(TORCH)
        copy_params(mo, mt)
        xo, xt = _inputs(arrays, bg), _inputs(arrays, TORCH)
        oo = getattr(bg.optim, opt_name)(mo.parameters(), **opt_kwargs)
        ot = getattr(TORCH.optim, opt_name)(mt.parameters(), **opt_kwargs)
        Fo, Ft = bg.nn.functional, TORCH.nn.functional

        def ours():
            oo.zero_grad()
            loss(mo, Fo, *xo).backward()
            oo.step()
            _SYNC()

        def theirs():
            ot.zero_grad()
            loss(mt, Ft, *xt).backward()
            ot.step()
        # the cross-check: same loss before a step and after one (forward, backward and update agree)
        _close("loss before a step", loss(mo, Fo, *xo).item(), loss(mt, Ft, *xt).item(), rtol, atol)
        ours()
        theirs()
        _close("loss after one step", loss(mo, Fo, *xo).item(), loss(mt, Ft, *xt).item(), rtol, atol)
        impls = {"ours": ours, "torch": theirs}
        if floor is not None:
            impls["floor"] = floor()
        return impls

    def one_side(side: str):
        """The step of one library only ("ours" or "torch"), nothing of the other's made (for memory)."""
        lib = bg if side == "ours" else TORCH
        (bg.manual_seed if side == "ours" else TORCH.manual_seed)(0)
        model = build(lib)
        model = model.to(DEVICE) if side == "ours" else model
        xs = _inputs(arrays, lib)
        opt = getattr(lib.optim, opt_name)(model.parameters(), **opt_kwargs)
        F = lib.nn.functional

        def step():
            opt.zero_grad()
            loss(model, F, *xs).backward()
            opt.step()
            if side == "ours":
                _SYNC()
        return step
    builder.one_side = one_side
    return builder


def op_workload(fn, arrays, grad_shape, rtol=1e-3, atol=1e-5):
    """A builder for forward + backward of ``fn(lib, F, *leaves)`` with a fixed upstream gradient."""
    def builder():
        rng = np.random.default_rng(1)
        g = rng.standard_normal(grad_shape, dtype=np.float32)
        lo = [bg.tensor(a, device=DEVICE, requires_grad=True) for a in arrays]
        lt = [TORCH.tensor(a, requires_grad=True) for a in arrays]
        go, gt = bg.tensor(g, device=DEVICE), TORCH.from_numpy(g)
        Fo, Ft = bg.nn.functional, TORCH.nn.functional

        def ours():
            for t in lo:
                t.grad = None
            fn(bg, Fo, *lo).backward(go)
            _SYNC()

        def theirs():
            for t in lt:
                t.grad = None
            fn(TORCH, Ft, *lt).backward(gt)
        _close("output", fn(bg, Fo, *lo), fn(TORCH, Ft, *lt).detach(), rtol, atol)
        ours()
        theirs()
        for i, (a, b) in enumerate(zip(lo, lt)):
            _close(f"gradient of input {i}", a.grad, b.grad, rtol, 10 * atol)
        return {"ours": ours, "torch": theirs}
    return builder


# --------------------------------------------------------------------------- MLPs

def _mlp(sizes):
    def build(lib):
        layers = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(lib.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(lib.nn.ReLU())
        return lib.nn.Sequential(*layers)
    return build


def matmul_floor(sizes, batch):
    """The matrix products of an MLP step (L forward, L weight-gradient, L-1 input-gradient) and nothing else."""
    def make():
        rng = np.random.default_rng(0)
        ws = [rng.random((i, o), dtype=np.float32) for i, o in zip(sizes, sizes[1:])]
        hs = [rng.random((batch, i), dtype=np.float32) for i in sizes[:-1]]
        gs = [rng.random((batch, o), dtype=np.float32) for o in sizes[1:]]

        def step():
            for h, w in zip(hs, ws):
                h @ w
            for h, g in zip(hs, gs):
                h.T @ g
            for i in range(1, len(ws)):
                gs[i] @ ws[i].T
        return step
    return make


def _ce(m, F, x, y):
    return F.cross_entropy(m(x), y)


def mlp_cases():
    cases = {}
    for sizes, batch, opt, kw in (((784, 256, 10), 32, "Adam", dict(lr=1e-3)),
                                  ((784, 256, 10), 256, "SGD", dict(lr=0.01)),
                                  ((784, 1024, 1024, 10), 32, "Adam", dict(lr=1e-3)),
                                  ((784, 1024, 1024, 10), 256, "SGD", dict(lr=0.01))):
        rng = np.random.default_rng(0)
        arrays = [rng.random((batch, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], batch)]
        name = f"MLP step {'-'.join(map(str, sizes))}, batch {batch}"
        name += "" if (sizes, batch, opt) == ((784, 1024, 1024, 10), 256, "SGD") else f", {opt}"
        cases[name] = train_workload(_mlp(sizes), _ce, arrays, opt, kw, floor=matmul_floor(sizes, batch))
    return cases


# --------------------------------------------------------------------------- CNNs

def _cnn(in_ch, side, channels, classes=10):
    c1, c2 = channels

    def build(lib):
        nn = lib.nn
        return nn.Sequential(nn.Conv2d(in_ch, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(c2 * (side // 4) ** 2, classes))
    return build


def cnn_cases():
    cases = {}
    for in_ch, side, channels, batch in ((1, 28, (8, 16), 64), (3, 32, (32, 64), 64), (3, 32, (32, 64), 128)):
        rng = np.random.default_rng(0)
        arrays = [rng.random((batch, in_ch, side, side), dtype=np.float32), rng.integers(0, 10, batch)]
        name = (f"CNN step ({channels[0]},{channels[1]} channels) {side}x{side}, batch {batch}" if in_ch == 1 else
                f"CIFAR CNN step ({channels[0]},{channels[1]} channels) {in_ch}x{side}x{side}, batch {batch}, Adam")
        cases[name] = train_workload(_cnn(in_ch, side, channels), _ce, arrays, "Adam", dict(lr=1e-3), rtol=5e-3)
    return cases


# --------------------------------------------------------------------------- transformer and GPT

D_MODEL, HEADS, SEQ, BATCH_T, VOCAB = 128, 4, 64, 16, 64


def attention(q, k, v, F, mask=None):
    """Softmax attention composed from matmul and softmax: (B, H, S, Dh) each."""
    s = (q @ k.transpose(-2, -1)) * (1.0 / np.sqrt(q.shape[-1]))
    if mask is not None:
        s = s + mask
    return F.softmax(s, dim=-1) @ v


def _block_class(lib):
    nn, F = lib.nn, lib.nn.functional

    class Block(nn.Module):
        """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

        def __init__(self, d=D_MODEL, heads=HEADS):
            super().__init__()
            self.heads = heads
            self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ln2, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x, mask=None):
            b, s, d = x.shape
            h = self.heads
            q, k, v = (t.reshape(b, s, h, d // h).transpose(1, 2) for t in self.qkv(self.ln1(x)).chunk(3, dim=-1))
            x = x + self.proj(attention(q, k, v, F, mask).transpose(1, 2).reshape(b, s, d))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
    return Block


def _gpt_class(lib):
    nn = lib.nn
    Block = _block_class(lib)

    class GPT(nn.Module):
        def __init__(self, layers=2):
            super().__init__()
            self.tok, self.pos = nn.Embedding(VOCAB, D_MODEL), nn.Embedding(SEQ, D_MODEL)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln, self.head = nn.LayerNorm(D_MODEL), nn.Linear(D_MODEL, VOCAB)

        def forward(self, tokens, positions, mask):
            x = self.tok(tokens) + self.pos(positions)
            for blk in self.blocks:
                x = blk(x, mask)
            return self.head(self.ln(x))
    return GPT


def _block_loss(m, F, x, target):
    return F.mse_loss(m(x), target)


def _gpt_loss(m, F, tokens, positions, mask, targets):
    logits = m(tokens, positions, mask)
    return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def transformer_cases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH_T, SEQ, D_MODEL), dtype=np.float32)
    target = rng.standard_normal((BATCH_T, SEQ, D_MODEL), dtype=np.float32)
    tokens = rng.integers(0, VOCAB, (BATCH_T, SEQ))
    mask = np.triu(np.full((SEQ, SEQ), -1e9, np.float32), 1)  # causal, additive
    return {
        f"transformer block (pre-LN, {HEADS} heads, d {D_MODEL}, seq {SEQ}), batch {BATCH_T}, AdamW":
            train_workload(lambda lib: _block_class(lib)(), _block_loss, [x, target], "AdamW", dict(lr=1e-3)),
        f"small GPT (2 blocks, vocab {VOCAB}, seq {SEQ}), batch {BATCH_T}, AdamW":
            train_workload(lambda lib: _gpt_class(lib)(), _gpt_loss,
                           [tokens, np.arange(SEQ), mask, np.roll(tokens, -1, axis=1)], "AdamW", dict(lr=1e-3)),
    }


# --------------------------------------------------------------------------- embedding, LSTM

def _bow(lib):
    nn = lib.nn

    class BagOfWords(nn.Module):
        def __init__(self, rows=20_000, dim=64, classes=10):
            super().__init__()
            self.emb, self.head = nn.Embedding(rows, dim), nn.Linear(dim, classes)

        def forward(self, tokens):
            return self.head(self.emb(tokens).mean(1))
    return BagOfWords()


def embedding_cases():
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 20_000, (128, 32)), rng.integers(0, 10, 128)]
    return {"embedding bag-of-words (20k x 64 table, 128 docs x 32 tokens), SGD":
            train_workload(_bow, _ce, arrays, "SGD", dict(lr=0.1))}


def _lstm(lib):
    nn = lib.nn

    class Classifier(nn.Module):
        def __init__(self, features=32, hidden=128, classes=10):
            super().__init__()
            self.lstm, self.head = nn.LSTM(features, hidden, batch_first=True), nn.Linear(hidden, classes)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])
    return Classifier()


def lstm_cases():
    if not hasattr(bg.nn, "LSTM"):
        return {}
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((32, 32, 32), dtype=np.float32), rng.integers(0, 10, 32)]
    return {"LSTM classifier (32 -> 128 hidden, seq 32), batch 32, Adam":
            train_workload(_lstm, _ce, arrays, "Adam", dict(lr=1e-3))}


# --------------------------------------------------------------------------- ops alone

def ops_cases():
    rng = np.random.default_rng(0)
    ln = [rng.standard_normal((4096, 512), dtype=np.float32), rng.standard_normal(512, dtype=np.float32),
          rng.standard_normal(512, dtype=np.float32)]
    sm = [rng.standard_normal((64, 128, 128), dtype=np.float32)]
    qkv = [rng.standard_normal((BATCH_T, HEADS, SEQ, D_MODEL // HEADS), dtype=np.float32) for _ in range(3)]
    shape_qkv = (BATCH_T, HEADS, SEQ, D_MODEL // HEADS)
    return {
        "LayerNorm (4096, 512) with affine, fwd+bwd":
            op_workload(lambda lib, F, x, w, b: F.layer_norm(x, (512,), w, b), ln, (4096, 512), rtol=2e-3, atol=1e-4),
        "softmax (64, 128, 128) over the last dim, fwd+bwd":
            op_workload(lambda lib, F, x: F.softmax(x, dim=-1), sm, (64, 128, 128)),
        f"attention composed (matmul, softmax) {shape_qkv}, fwd+bwd":
            op_workload(lambda lib, F, q, k, v: attention(q, k, v, F), qkv, shape_qkv, rtol=2e-3, atol=1e-4),
        f"scaled_dot_product_attention {shape_qkv}, fwd+bwd":
            op_workload(lambda lib, F, q, k, v: F.scaled_dot_product_attention(q, k, v), qkv, shape_qkv,
                        rtol=2e-3, atol=1e-4),
    }


# --------------------------------------------------------------------------- every optimizer

OPTIM_N = 10_000_000
OPTIM_LAYOUTS = {"1 tensor": [OPTIM_N], "200 tensors": [OPTIM_N // 200] * 200}
#: name -> (torch.optim class, kwargs); fused where torch 2.13 has a fused CPU kernel
OPTIM_SETTINGS = {
    "sgd": ("SGD", dict(lr=0.01), True),
    "sgd momentum": ("SGD", dict(lr=0.01, momentum=0.9), True),
    "sgd nesterov": ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True), True),
    "adagrad": ("Adagrad", dict(lr=0.01), True),
    "adadelta": ("Adadelta", dict(lr=1.0), False),
    "rmsprop": ("RMSprop", dict(lr=0.01), False),
    "adam": ("Adam", dict(lr=1e-3), True),
    "adamw": ("AdamW", dict(lr=1e-3), True),
}


def optim_workload(name, layout):
    cls, kwargs, fused = OPTIM_SETTINGS[name]

    def builder():
        rng = np.random.default_rng(0)
        sizes = OPTIM_LAYOUTS[layout]
        ps = [rng.standard_normal(n, dtype=np.float32) for n in sizes]
        gs = [rng.standard_normal(n, dtype=np.float32) * np.float32(0.01) for n in sizes]
        po = [bg.tensor(p, device=DEVICE, requires_grad=True) for p in ps]
        pt = [TORCH.tensor(p, requires_grad=True) for p in ps]
        for a, b, g in zip(po, pt, gs):
            a.grad = bg.tensor(g, device=DEVICE)
            b.grad = TORCH.from_numpy(g.copy())
        oo = getattr(bg.optim, cls)(po, **kwargs)
        ot = getattr(TORCH.optim, cls)(pt, **kwargs, **({"fused": True} if fused else {"foreach": True}))

        def ours():
            oo.step()
            _SYNC()
        for _ in range(2):  # two steps: the state-initialising one and a steady one
            ours()
            ot.step()
        for i in (0, len(po) - 1):
            _close(f"parameter {i} after two steps", po[i], pt[i], 1e-4, 1e-6)
        impls = {"ours": ours, "torch": ot.step}
        if name in ("adam", "adamw"):
            impls["floor"] = memory_triad(OPTIM_N)
        return impls
    return builder


def optim_cases():
    return {f"optim {name}, 10M float32 as {layout}, vs torch {'fused' if OPTIM_SETTINGS[name][2] else 'foreach'}":
            optim_workload(name, layout) for name in OPTIM_SETTINGS for layout in OPTIM_LAYOUTS}
