"""tracejit: PyTorch-style eager tensors and autograd, with a tracing JIT to native code.

>>> import tracejit as torch
>>> x = torch.ones(2, 3, requires_grad=True)
>>> (x * 2).sum().backward()
>>> x.grad
tensor([[2., 2., 2.],
        [2., 2., 2.]])
"""

# ruff: noqa: F401 - this module is the public API: its imports are re-exports

from __future__ import annotations

import builtins as _builtins  # `bool`, `int` and `float` are dtypes below, as in torch

from . import (  # noqa: F401  # noqa: E402, F401 - after Tensor and the factories they build on
    _vector_width,  # first: it must run before anything imports Numba
    accelerator,
    autograd,
    cuda,
    functional,
    nn,
    onnx,  # export to ONNX (imports the onnx package only when an export runs)
    ops,
    optim,
    return_types,
    utils,
)
from .autograd import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .contractions import einsum
from .control import cond, fori_loop, scan, while_loop
from .creation import (
    Generator,
    arange,
    as_tensor,
    bernoulli,
    default_generator,
    empty,
    empty_like,
    eye,
    from_dlpack,
    from_numpy,
    full,
    full_like,
    get_rng_state,
    initial_seed,
    linspace,
    manual_seed,
    multinomial,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    seed,
    set_rng_state,
    tensor,
    zeros,
    zeros_like,
)
from .device import device, get_default_device, set_default_device
from .dtypes import (
    DType as dtype,  # noqa: N813 - PyTorch's name
)
from .dtypes import (
    bool_ as bool,  # noqa: A004 - PyTorch's name
)
from .dtypes import (
    float16,
    float32,
    float64,
    get_default_dtype,
    int32,
    int64,
    set_default_dtype,
)
from .flags import flags
from .functional import *  # noqa: F403
from .functional import (  # noqa: F401
    addmm,
    allclose,
    bmm,
    cat,
    clamp,
    clip,
    concat,
    dot,
    equal,
    matmul,
    mm,
    nonzero,
    stack,
    where,
)
from .serialization import load, save  # noqa: E402, F401
from .tensor import Size, Tensor
from .tensor_ops import argsort, cumsum, sort, topk, tril, triu

half, float, double = float16, float32, float64  # noqa: A001
long, int = int64, int32  # noqa: A001
__version__ = "0.1.0"


def is_tensor(obj: object) -> _builtins.bool:
    return isinstance(obj, Tensor)


def numel(input: Tensor) -> _builtins.int:
    return input.numel()
from . import nn as _nn  # noqa: E402
from .exporting import Exported, ExportError, export, load_exported  # noqa: E402
from .jit import JitFunction, disable_jit, jit  # noqa: E402
from .options import (  # noqa: E402, F401
    channels_last,
    contiguous_format,
    layout,
    memory_format,
    preserve_format,
    strided,
)
from .options import install as _install_options  # noqa: E402

_install_options(globals(), _nn.functional, Tensor)
