"""Model builders: an MLP and a small CNN, both plain ``nn.Sequential`` models."""
from __future__ import annotations

import math

from .. import nn
from ..ops import reshape


class ImageView(nn.Module):
    """Reshape flat (N, C*H*W) rows into (N, C, H, W) images."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.shape = (channels, height, width)

    def forward(self, x):
        return reshape(x, (x.shape[0],) + self.shape)

    def extra_repr(self):
        return f"{self.shape}"


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def mlp(in_features: int, out_features: int, hidden=(64,), activation: str = "relu", dropout: float = 0.0):
    """Linear layers of widths ``hidden`` with ``activation`` between them.

    ``mlp(784, 10, hidden=(16, 16))`` is the classic 784-16-16-10 network with 13,002 parameters.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(_ACTIVATIONS)}")
    layers, width = [], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def small_cnn(in_features: int, out_features: int, channels=(8, 16), in_channels: int = 1):
    """conv-BN-ReLU-maxpool twice, then a linear head, for square single-channel images given as flat rows."""
    side = int(round(math.sqrt(in_features / in_channels)))
    if side * side * in_channels != in_features or side < 4:
        raise ValueError(f"small_cnn needs square images: {in_features} features is not {in_channels} x n x n, n >= 4")
    c1, c2 = channels
    after = side // 2 // 2
    return nn.Sequential(
        ImageView(in_channels, side, side),
        nn.Conv2d(in_channels, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * after * after, out_features))


MODELS = {"mlp": mlp, "cnn": small_cnn}


def _layer(m) -> str:
    """One layer in a few characters, in the spelling of its constructor: ``Linear(64, 10)``."""
    name = type(m).__name__
    if isinstance(m, nn.Linear):
        return f"{name}({m.in_features}, {m.out_features})"
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size if isinstance(m.kernel_size, int) else "x".join(map(str, m.kernel_size))
        return f"{name}({m.in_channels}, {m.out_channels}, {k})"
    if isinstance(m, nn.BatchNorm2d):
        return f"{name}({m.num_features})"
    if isinstance(m, nn.MaxPool2d):
        return f"{name}({m.kernel_size})"
    if isinstance(m, ImageView):
        return "View(" + ", ".join(map(str, m.shape)) + ")"
    return name


def summary(model) -> str:
    """``"4,810 parameters: Linear(64, 64) > ReLU > Linear(64, 10)"``: the parameter count and the layers in
    order (a Sequential's children; another module by its class name), for the training header."""
    n = sum(p.numel() for p in model.parameters())
    layers = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    return f"{n:,} parameters: " + " > ".join(_layer(m) for m in layers)


def build(name: str, in_features: int, out_features: int, hidden=(64,)):
    """A model by name (``mlp`` uses ``hidden``)."""
    if name == "mlp":
        return mlp(in_features, out_features, hidden)
    if name == "cnn":
        return small_cnn(in_features, out_features)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
