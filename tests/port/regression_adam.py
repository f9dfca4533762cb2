"""Linear regression with MSELoss and Adam, weights set from NumPy: the same numbers in both libraries."""
import json

import numpy as np
import torch
import torch.nn as nn

rng = np.random.default_rng(0)
xn = rng.standard_normal((64, 3)).astype(np.float32)
yn = (xn @ np.array([[1.5], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)
x, y = torch.from_numpy(xn), torch.from_numpy(yn)
model = nn.Linear(3, 1)
with torch.no_grad():
    model.weight.copy_(torch.tensor([[0.1, 0.2, 0.3]]))
    model.bias.fill_(0.0)
opt = torch.optim.Adam(model.parameters(), lr=0.05)
loss_fn = nn.MSELoss()
losses = []
for step in range(200):
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    losses.append(loss.item())
assert x.size(0) == 64 and x.size() == (64, 3)
assert losses[-1] < 1e-3 * losses[0]
weight = [round(v, 3) for v in model.weight.detach().reshape(-1).tolist()]
print("RESULT", json.dumps({"final_loss": round(losses[-1], 6), "weight": weight}))
