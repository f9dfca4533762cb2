"""A custom autograd.Function, checked against the built-in op it re-implements."""
import json

import torch


class Swish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        s = torch.sigmoid(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        return grad * (s + x * s * (1 - s))


x = torch.linspace(-3, 3, 13, dtype=torch.float64, requires_grad=True)
Swish.apply(x).sum().backward()
g_custom = x.grad.clone()
x.grad = None
(x * torch.sigmoid(x)).sum().backward()
assert torch.allclose(g_custom, x.grad)
print("RESULT", json.dumps({"grad": [round(v, 10) for v in g_custom.tolist()]}))
