"""rlscratch.nn: a small neural-network core with every backward pass written by hand.

Read module.py first (the contract every layer follows), then layers.py (Linear), activations.py,
losses.py and optim.py. docs/backprop.md derives the maths.
"""

from . import init, losses, optim
from .activations import ELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh, get_activation, log_softmax, softmax
from .conv import Conv2d, MaxPool2d, ResidualBlock
from .gradcheck import check_gradients, check_module, numerical_gradient, relative_error
from .layers import Concat, Dropout, Flatten, Linear, Reshape, Residual, Sequential, Split
from .losses import huber, mse, softmax_cross_entropy
from .module import Module
from .norm import BatchNorm, LayerNorm
from .norm_block import NORMS, LayerNorm2d, NormResidualBlock, map_norm
from .optim import SGD, Adam, AdamW, Momentum, RMSprop, clip_grad_norm
from .recurrent import GRUCell, LSTMCell, Recurrent, RecurrentCell, RNNCell
from .serialization import load, save

__all__ = [
    "init", "losses", "optim", "Module",
    "Linear", "Flatten", "Reshape", "Dropout", "Concat", "Split", "Sequential", "Residual",
    "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "softmax", "log_softmax",
    "get_activation", "mse", "huber", "softmax_cross_entropy",
    "SGD", "Momentum", "RMSprop", "Adam", "AdamW", "clip_grad_norm",
    "RecurrentCell", "RNNCell", "GRUCell", "LSTMCell", "Recurrent",
    "Conv2d", "MaxPool2d", "ResidualBlock", "LayerNorm", "BatchNorm",
    "NORMS", "LayerNorm2d", "NormResidualBlock", "map_norm",
    "save", "load", "check_gradients", "check_module", "numerical_gradient", "relative_error",
]
