"""Plain tensors and a hand-written update under no_grad: w -= lr * w.grad; w.grad.zero_()."""
import json

import torch

torch.manual_seed(0)
x = torch.linspace(-1, 1, 50).unsqueeze(1)
y = 3 * x - 1
w = torch.zeros(1, 1, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
for step in range(300):
    loss = ((x @ w + b - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
        b -= 0.1 * b.grad
        w.grad.zero_()
        b.grad.zero_()
assert abs(w.item() - 3) < 1e-3 and abs(b.item() + 1) < 1e-3
print("RESULT", json.dumps({"w": round(w.item(), 4), "b": round(b.item(), 4)}))
