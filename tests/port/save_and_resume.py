"""torch.save / torch.load of model and optimizer state into a buffer, and a bit-identical resume."""
import io
import json

import torch
import torch.nn as nn

from _data import digits


def make():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    return m, torch.optim.Adam(m.parameters(), lr=0.01)


xn, yn = digits(200)
x, y = torch.tensor(xn), torch.tensor(yn)


def train(m, opt, steps):
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()


a, opt_a = make()
train(a, opt_a, 10)
buf = io.BytesIO()
torch.save({"model": a.state_dict(), "optim": opt_a.state_dict()}, buf)
train(a, opt_a, 10)
buf.seek(0)
ckpt = torch.load(buf)
b, opt_b = make()
b.load_state_dict(ckpt["model"])
opt_b.load_state_dict(ckpt["optim"])
train(b, opt_b, 10)
for p, q in zip(a.parameters(), b.parameters()):
    assert torch.equal(p, q)
print("RESULT", json.dumps({"resumed_identically": True}))
