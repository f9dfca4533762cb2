"""Conv2d, MaxPool2d, Flatten in an nn.Sequential; Adam with StepLR; accuracy under no_grad."""
import json

import torch
from torch import nn, optim

from _data import digits

torch.manual_seed(0)
xn, yn = digits(500)
x = torch.tensor(xn).reshape(-1, 1, 8, 8)
y = torch.tensor(yn)
model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 10))
opt = optim.Adam(model.parameters(), lr=0.01)
sched = optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
for epoch in range(12):
    for i in range(0, len(y), 50):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[i:i + 50]), y[i:i + 50])
        loss.backward()
        opt.step()
    sched.step()
with torch.no_grad():
    acc = (model(x).argmax(dim=1) == y).float().mean().item()
assert acc > 0.9, acc
assert abs(sched.get_last_lr()[0] - 0.01 * 0.5 ** 2) < 1e-12
print("RESULT", json.dumps({"lr": sched.get_last_lr()[0], "accuracy_above_0.9": acc > 0.9}))
