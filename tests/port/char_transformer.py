"""A tiny character transformer: token and position nn.Embedding, one pre-norm block with
nn.MultiheadAttention under a boolean causal mask and one with F.scaled_dot_product_attention
(is_causal=True) over hand-split heads, LayerNorm, a GELU MLP, a Linear head, AdamW. Weights are set
from NumPy, so both libraries compute the same numbers."""
import json

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

text = "to be or not to be, that is the question. " * 6
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
data = np.array([stoi[c] for c in text], dtype=np.int64)
T, B, E, H = 12, 6, 16, 2
rng = np.random.default_rng(1)
starts = rng.integers(0, len(data) - T - 1, B)
x = torch.from_numpy(np.stack([data[s:s + T] for s in starts]))
y = torch.from_numpy(np.stack([data[s + 1:s + T + 1] for s in starts]))


class SDPABlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(E, 3 * E)
        self.proj = nn.Linear(E, E)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(E, dim=-1)
        q, k, v = (z.view(b, t, H, E // H).transpose(1, 2) for z in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, t, E))


class TinyTransformer(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.tok = nn.Embedding(vocab, E)
        self.pos = nn.Embedding(T, E)
        self.ln1 = nn.LayerNorm(E)
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)
        self.ln2 = nn.LayerNorm(E)
        self.sdpa = SDPABlock()
        self.ln3 = nn.LayerNorm(E)
        self.mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E))
        self.ln_f = nn.LayerNorm(E)
        self.head = nn.Linear(E, vocab)

    def forward(self, idx):
        t = idx.shape[1]
        h = self.tok(idx) + self.pos(torch.arange(t))
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)  # True: may not attend
        a = self.ln1(h)
        h = h + self.attn(a, a, a, attn_mask=mask, need_weights=False)[0]
        h = h + self.sdpa(self.ln2(h))
        h = h + self.mlp(self.ln3(h))
        return self.head(self.ln_f(h))


model = TinyTransformer(len(chars))
keys = list(model.state_dict())
assert keys[4:8] == ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias"], keys
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.startswith("ln"):
            continue  # LayerNorm keeps its ones and zeros
        p.copy_(torch.from_numpy(rng.normal(0, 0.2, tuple(p.shape)).astype(np.float32)))
opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)
losses = []
for step in range(40):
    opt.zero_grad()
    loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
    loss.backward()
    opt.step()
    losses.append(loss.item())
assert losses[-1] < 0.5 * losses[0], losses
# causality: changing the last token changes no earlier prediction
with torch.no_grad():
    x2 = x.clone()
    x2[:, -1] = torch.from_numpy((x.numpy()[:, -1] + 1) % len(chars))
    diff = (model(x) - model(x2)).abs()
    assert diff[:, :-1].max().item() < 1e-5 and diff[:, -1].max().item() > 1e-4
print("RESULT", json.dumps({"first_loss": round(losses[0], 4), "loss_10": round(losses[10], 4),
                            "final_loss": round(losses[-1], 4)}))
