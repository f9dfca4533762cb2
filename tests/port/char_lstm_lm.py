"""A character-level language model: nn.Embedding, a 2-layer batch-first nn.LSTM, a Linear head, Adam
with gradient clipping, then greedy sampling that carries the (h, c) state. Weights are set from NumPy,
so both libraries compute the same numbers."""
import json

import numpy as np
import torch
import torch.nn as nn

text = "the quick brown fox jumps over the lazy dog. " * 8
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
data = np.array([stoi[c] for c in text], dtype=np.int64)
seq, batch = 16, 8
rng = np.random.default_rng(0)
starts = rng.integers(0, len(data) - seq - 1, batch)
x = torch.from_numpy(np.stack([data[s:s + seq] for s in starts]))
y = torch.from_numpy(np.stack([data[s + 1:s + seq + 1] for s in starts]))


class CharLSTM(nn.Module):
    def __init__(self, vocab, emb=16, hidden=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, idx, state=None):
        out, state = self.lstm(self.emb(idx), state)
        return self.head(out), state


model = CharLSTM(len(chars))
names = [name for name, _ in model.named_parameters()]
assert names[1:9] == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
                       "lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm.bias_ih_l1", "lstm.bias_hh_l1"], names
with torch.no_grad():
    for p in model.parameters():
        p.copy_(torch.from_numpy(rng.uniform(-0.3, 0.3, tuple(p.shape)).astype(np.float32)))
opt = torch.optim.Adam(model.parameters(), lr=0.02)
losses = []
for step in range(40):
    opt.zero_grad()
    logits, (h, c) = model(x)
    assert logits.shape == (batch, seq, len(chars)) and h.shape == c.shape == (2, batch, 32)
    loss = nn.functional.cross_entropy(logits.reshape(-1, len(chars)), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    losses.append(loss.item())
assert losses[-1] < 0.5 * losses[0], losses
model.eval()
sample = "the "
with torch.no_grad():
    logits, state = model(torch.tensor([[stoi[ch] for ch in sample]]))
    for _ in range(12):
        nxt = logits[0, -1].argmax().item()
        sample += chars[nxt]
        logits, state = model(torch.tensor([[nxt]]), state)
print("RESULT", json.dumps({"first_loss": round(losses[0], 4), "loss_10": round(losses[10], 4),
                            "final_loss": round(losses[-1], 4), "sample": sample}))
