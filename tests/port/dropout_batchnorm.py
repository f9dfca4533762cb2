"""train()/eval() with Dropout and BatchNorm1d; evaluation is deterministic and uses running stats."""
import json

import torch
import torch.nn as nn

from _data import digits

torch.manual_seed(0)
xn, yn = digits(400)
x, y = torch.tensor(xn), torch.tensor(yn)
model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
opt = torch.optim.RMSprop(model.parameters(), lr=0.005)
model.train()
for epoch in range(20):
    for i in range(0, len(y), 40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 40]), y[i:i + 40]).backward()
        opt.step()
model.eval()
with torch.no_grad():
    a, b = model(x), model(x)
assert torch.equal(a, b)  # no dropout in eval
bn = model[1]
assert bn.running_mean.shape == (64,) and not bool((bn.running_var == 1).all())
acc = (a.argmax(1) == y).float().mean().item()
assert acc > 0.9, acc
print("RESULT", json.dumps({"eval_deterministic": True, "accuracy_above_0.9": acc > 0.9}))
