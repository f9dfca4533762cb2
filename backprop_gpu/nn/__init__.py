"""Neural-network building blocks with PyTorch's API: Module, Parameter, layers, init, functional."""
from . import functional, init
from .layers import (GELU, BatchNorm1d, Dropout, Embedding, Flatten, Identity, LayerNorm, LeakyReLU, Linear, ReLU,
                     Sigmoid, Softmax, Softplus, Tanh)
from .module import Module, ModuleList, Parameter, Sequential

__all__ = ["Module", "ModuleList", "Parameter", "Sequential", "Linear", "ReLU", "Tanh", "Sigmoid", "Softplus",
           "Identity", "GELU", "LeakyReLU", "Softmax", "Flatten", "Dropout", "LayerNorm", "BatchNorm1d", "Embedding",
           "functional", "init"]
