"""LogSoftmax + NLLLoss against CrossEntropyLoss, Adagrad, ignore_index, a OneCycle schedule."""
import json

import numpy as np
import torch
import torch.nn as nn

rng = np.random.default_rng(2)
logits = torch.tensor(rng.standard_normal((10, 4)), dtype=torch.float64, requires_grad=True)
target = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, -100, 1])
nll = nn.NLLLoss(ignore_index=-100)(nn.LogSoftmax(dim=1)(logits), target)
ce = nn.CrossEntropyLoss(ignore_index=-100)(logits, target)
assert torch.allclose(nll, ce)
ce.backward()
assert logits.grad[8].abs().sum().item() == 0  # the ignored row gets no gradient
w = torch.zeros(4, requires_grad=True)
opt = torch.optim.Adagrad([w], lr=0.5)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=20, cycle_momentum=False)
lrs = []
for step in range(20):
    opt.zero_grad()
    ((w - torch.tensor([1.0, -1.0, 2.0, 0.0])) ** 2).sum().backward()
    opt.step()
    lrs.append(sched.get_last_lr()[0])
    sched.step() if step < 19 else None
print("RESULT", json.dumps({"loss": round(ce.item(), 10), "lrs": [round(v, 8) for v in lrs],
                            "w": [round(v, 5) for v in w.tolist()]}))
