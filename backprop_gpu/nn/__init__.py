"""Neural-network building blocks with PyTorch's API: Module, Parameter, layers, init, functional."""
from . import functional, init
from .layers import (GELU, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, MaxPool2d, Dropout, Embedding, Flatten, Identity, LayerNorm, LeakyReLU, Linear, ReLU,
                     Sigmoid, Softmax, Softplus, Tanh)
from .module import Module, ModuleList, Parameter, Sequential

__all__ = ["Module", "ModuleList", "Parameter", "Sequential", "Linear", "ReLU", "Tanh", "Sigmoid", "Softplus",
           "Identity", "GELU", "Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "LeakyReLU", "Softmax", "Flatten", "Dropout", "LayerNorm", "BatchNorm1d", "Embedding",
           "functional", "init"]
