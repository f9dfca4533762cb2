"""Neural-network building blocks with PyTorch's API: Module, Parameter, layers, init, functional.

``import backprop_gpu.nn.functional as F`` gives the functional forms and the losses.
"""
from . import functional, init, utils
from .adaptive_pooling import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool1d, AdaptiveMaxPool2d
from .attention import MultiheadAttention, TransformerEncoderLayer
from .layers import (ELU, GELU, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d, Dropout,
                     Dropout1d, Dropout2d, Embedding, Flatten, Hardtanh, Identity, LayerNorm, LeakyReLU, Linear,
                     LogSoftmax, MaxPool2d, Mish, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh, Unflatten)
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss,
                   SmoothL1Loss)
from .module import IncompatibleKeys, Module, ModuleDict, ModuleList, Parameter, Sequential
from .normalization_layers import GroupNorm, InstanceNorm1d, InstanceNorm2d
from .parameter_containers import ParameterDict, ParameterList
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase
from .upsampling import Upsample

__all__ = ["Module", "ModuleList", "Parameter", "Sequential", "IncompatibleKeys", "Linear", "ReLU", "Tanh",
           "Sigmoid", "Softplus", "Identity", "GELU", "LeakyReLU", "Softmax", "Flatten", "Dropout", "LayerNorm",
           "BatchNorm1d", "BatchNorm2d", "Embedding", "Conv2d", "MaxPool2d", "AvgPool2d", "LogSoftmax", "ModuleDict",
           "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss", "SmoothL1Loss",
           "HuberLoss", "SiLU", "Mish", "ELU", "Hardtanh", "functional", "init", "utils", "Conv1d", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d",
           "AdaptiveMaxPool2d", "ParameterList", "ParameterDict", "KLDivLoss", "Upsample"]
__all__ += ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]
__all__ += ["MultiheadAttention", "TransformerEncoderLayer"]
__all__ += ["ConvTranspose2d", "Unflatten", "Dropout1d", "Dropout2d"]
