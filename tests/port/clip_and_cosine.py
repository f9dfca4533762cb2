"""Gradient clipping by norm and by value, a cosine schedule, parameters_to_vector."""
import json

import numpy as np
import torch
import torch.nn as nn

rng = np.random.default_rng(1)
w0 = rng.standard_normal((4, 3)).astype(np.float32)
model = nn.Linear(3, 4, bias=False)
with torch.no_grad():
    model.weight.copy_(torch.from_numpy(w0))
opt = torch.optim.SGD(model.parameters(), lr=0.5)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
x = torch.from_numpy(rng.standard_normal((8, 3)).astype(np.float32))
norms = []
for step in range(10):
    opt.zero_grad()
    (model(x) ** 2).sum().backward()
    norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)))
    torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=0.2)
    opt.step()
    sched.step()
vec = torch.nn.utils.parameters_to_vector(model.parameters())
assert vec.shape == (12,)
print("RESULT", json.dumps({"norms": [round(n, 4) for n in norms], "vec": [round(v, 4) for v in vec.tolist()]}))
