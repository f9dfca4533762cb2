"""Optimizers with ``torch.optim``'s API, each step one fused launch per flat buffer.

``OPTIMIZERS`` maps each optimizer's lower-case name (``"sgd"``, ``"adam"``, ...) to its class.
"""
from . import lr_scheduler
from .clip import clip_grad_norm_
from .optimizer import Optimizer
from .optimizers import OPTIMIZERS, SGD, Adadelta, Adagrad, Adam, AdamW, RMSprop

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "OPTIMIZERS",
           "lr_scheduler", "clip_grad_norm_"]
