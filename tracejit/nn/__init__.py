"""tracejit.nn: Modules, layers, losses, initialisers and gradient clipping, with PyTorch's
names, defaults and semantics. Everything is written in tracejit ops so it traces."""

from __future__ import annotations

from . import functional, init, parallel, utils
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .attention import MultiheadAttention
from .batchnorm import BatchNorm1d, BatchNorm2d
from .container import ModuleDict, ModuleList, Sequential
from .conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from .layers import Bilinear, Dropout, Embedding, Flatten, Identity, LayerNorm, Linear, Unflatten
from .loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from .module import Module, RemovableHandle
from .parameter import Buffer, Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, Dropout2d, MaxPool2d
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell
from .transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "functional", "init", "parallel", "utils", "Module", "RemovableHandle", "Parameter", "Buffer",
    "Linear", "Bilinear", "Embedding", "Identity", "Flatten", "Unflatten", "LayerNorm", "Dropout",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "Softplus", "Softmax", "LogSoftmax",
    "Sequential", "ModuleList", "ModuleDict", "RNNCell", "LSTMCell", "GRUCell",
    "MSELoss", "L1Loss", "SmoothL1Loss", "CrossEntropyLoss", "NLLLoss", "BCELoss",
    "BCEWithLogitsLoss", "MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder",
    "RNNBase", "RNN", "LSTM", "GRU", "Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "Dropout2d",
]
