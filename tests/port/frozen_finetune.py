"""Fine-tuning with a frozen first layer: requires_grad_(False), weight decay and momentum on."""
import json

import torch
import torch.nn as nn

from _data import digits

torch.manual_seed(0)
xn, yn = digits(300)
x, y = torch.tensor(xn), torch.tensor(yn)
model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
for p in model[0].parameters():
    p.requires_grad_(False)
frozen = model[0].weight.detach().clone()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
for step in range(50):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
assert torch.equal(model[0].weight, frozen)
assert model[0].weight.grad is None
n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print("RESULT", json.dumps({"frozen_unchanged": True, "trainable": n_trainable}))
