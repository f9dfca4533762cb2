"""A Module subclass, CrossEntropyLoss, SGD with momentum, a DataLoader over a TensorDataset."""
import json

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from _data import digits

torch.manual_seed(0)
x, y = digits()
train = TensorDataset(torch.tensor(x), torch.tensor(y))
loader = DataLoader(train, batch_size=32, shuffle=True)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


model = Net()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for epoch in range(5):
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
model.eval()
with torch.no_grad():
    out = model(torch.tensor(x))
    _, pred = out.max(1)
    acc = (pred == torch.tensor(y)).sum().item() / len(y)
assert acc > 0.9, acc
print("RESULT", json.dumps({"accuracy_above_0.9": acc > 0.9}))
