"""A bag-of-words classifier: nn.Embedding, mean over dim=1, a Linear head, AdamW."""
import json

import numpy as np
import torch
import torch.nn as nn

rng = np.random.default_rng(0)
vocab, n, length = 50, 400, 6
labels = rng.integers(0, 2, n)
# class 1 draws its words from the upper half of the vocabulary
words = np.where(labels[:, None] == 1, rng.integers(25, 50, (n, length)), rng.integers(0, 25, (n, length)))
x, y = torch.tensor(words), torch.tensor(labels)
torch.manual_seed(0)


class BoW(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, idx):
        return self.head(self.emb(idx).mean(dim=1))


model = BoW()
opt = torch.optim.AdamW(model.parameters(), lr=0.05)
for epoch in range(30):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
acc = (model(x).argmax(1) == y).float().mean().item()
assert acc > 0.95, acc
print("RESULT", json.dumps({"accuracy_above_0.95": acc > 0.95}))
