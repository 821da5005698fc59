"""Tensor: a NumPy array plus dtype, version counter and autograd metadata. Methods are one
line each: they call dispatch(op, ...) or a composite in functional.py."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, SupportsIndex, cast

import numpy as np

import tracejit.dispatch as _dispatch_module

from . import dtypes as dt
from .device import CPU, as_device, device
from .dispatch import STATE, dispatch
from .errors import located
from .ops import REGISTRY as R
from .ops.registry import ArgError, DTypeError, TensorType, norm_dim, norm_dims

_UNSET: Any = object()


class _Version:
    """Shared by a tensor and its views: bumped by every in-place change."""

    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v = 0


class ReturnTypes(NamedTuple):
    values: Tensor
    indices: Tensor


class Tensor:
    __slots__ = ("_data", "_dtype", "_device", "_version", "_base", "_requires_grad", "_grad",
                 "_grad_fn", "_out_nr", "_hooks", "_retains_grad", "_accumulator", "__weakref__",
                 "__dict__")
    __array_priority__ = 1000  # so ndarray * Tensor defers to Tensor.__rmul__

    def __init__(self, data: Any = None, *, dtype: Any = None, requires_grad: bool = False) -> None:
        t = _from_value(data if data is not None else [], dtype, copy=True)
        self._init(t._data, t._dtype)
        if requires_grad:
            self.requires_grad_(True)

    def _init(self, data: np.ndarray, d: dt.DType, dev: device = CPU) -> None:
        self._data = data
        self._dtype = d
        self._device = dev
        self._version = _Version()
        self._base: Tensor | None = None
        self._requires_grad = False
        self._grad: Tensor | None = None
        self._grad_fn: Any = None
        self._out_nr = 0
        self._hooks: list[Any] | None = None
        self._retains_grad = False
        self._accumulator: Any = None

    @classmethod
    def _make(cls, data: np.ndarray, d: dt.DType, dev: device = CPU) -> Tensor:
        t = cls.__new__(cls)
        t._init(data, d, dev)
        return t

    @staticmethod
    def _from_value(v: Any) -> Tensor:
        return _from_value(v, None, copy=False)

    def _type(self) -> TensorType:
        return TensorType(self._data.shape, self._dtype, self._device)

    if TYPE_CHECKING:  # bound from tables in functional.py (unary ops and composites)

        def exp(self) -> Tensor: ...
        def log(self) -> Tensor: ...
        def log1p(self) -> Tensor: ...
        def expm1(self) -> Tensor: ...
        def sqrt(self) -> Tensor: ...
        def rsqrt(self) -> Tensor: ...
        def abs(self) -> Tensor: ...
        def neg(self) -> Tensor: ...
        def sin(self) -> Tensor: ...
        def cos(self) -> Tensor: ...
        def tanh(self) -> Tensor: ...
        def sigmoid(self) -> Tensor: ...
        def relu(self) -> Tensor: ...
        def sign(self) -> Tensor: ...
        def floor(self) -> Tensor: ...
        def ceil(self) -> Tensor: ...
        def round(self) -> Tensor: ...
        def erf(self) -> Tensor: ...
        def mean(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor: ...
        def var(self, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *,
                correction: Any = None) -> Tensor: ...
        def std(self, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *,
                correction: Any = None) -> Tensor: ...
        def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor: ...
        def softmax(self, dim: int, dtype: Any = None) -> Tensor: ...
        def log_softmax(self, dim: int, dtype: Any = None) -> Tensor: ...
        def norm(self, p: Any = "fro", dim: Any = None, keepdim: bool = False,
                 dtype: Any = None) -> Tensor: ...
        def isnan(self) -> Tensor: ...
        def isinf(self) -> Tensor: ...
        def isfinite(self) -> Tensor: ...
        def square(self) -> Tensor: ...
        def nonzero(self, *, as_tuple: bool = False) -> Any: ...
        # tensor_ops.py
        def tril(self, diagonal: int = 0) -> Tensor: ...
        def triu(self, diagonal: int = 0) -> Tensor: ...
        def tril_(self, diagonal: int = 0) -> Tensor: ...
        def triu_(self, diagonal: int = 0) -> Tensor: ...
        def cumsum(self, dim: int, *, dtype: Any = None) -> Tensor: ...
        def _cumsum(self, dim: int, reverse: bool = False) -> Tensor: ...
        def argsort(self, dim: int = -1, descending: bool = False, *,
                    stable: bool = False) -> Tensor: ...
        def sort(self, dim: int = -1, descending: bool = False, *,
                 stable: bool = False) -> Any: ...
        def topk(self, k: int, dim: int = -1, largest: bool = True,
                 sorted: bool = True) -> Any: ...

    # ---- metadata ------------------------------------------------------------------------------
    @property
    def shape(self) -> Size:
        return Size(self._data.shape)

    def size(self, dim: int | None = None) -> Any:
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[norm_dim("size", dim, self.ndim)]

    @property
    def dtype(self) -> dt.DType:
        return self._dtype

    @property
    def device(self) -> device:
        return self._device

    @property
    def is_cuda(self) -> bool:
        return self._device.type == "cuda"

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    def numel(self) -> int:
        return int(self._data.size)

    nelement = numel

    def element_size(self) -> int:
        return self._dtype.itemsize

    def stride(self, dim: int | None = None) -> Any:
        s = tuple(x // self._dtype.itemsize for x in self._data.strides)
        return s if dim is None else s[norm_dim("stride", dim, self.ndim)]

    def is_contiguous(self) -> bool:
        return bool(self._data.flags.c_contiguous)

    def is_floating_point(self) -> bool:
        return self._dtype.is_floating_point

    @property
    def _version_value(self) -> int:
        return self._version.v

    # ---- autograd metadata ---------------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        self.requires_grad_(flag)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if self._grad_fn is not None and not requires_grad:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables; use .detach() to "
                "get a tensor that does not require grad"
            )
        if requires_grad and not self._dtype.is_floating_point:
            raise RuntimeError(
                f"only Tensors of floating point dtype can require gradients, got {self._dtype}; "
                "convert first with .float()"
            )
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def grad(self) -> Tensor | None:
        """The accumulated gradient (None until a backward reaches this leaf)."""
        if STATE.tracer is not None:
            STATE.tracer.read_grad(self)
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"assigned grad expected to be a Tensor or None but got "
                            f"{type(value).__name__}")
        if value is not None and value.shape != self.shape:
            raise RuntimeError(f"assigned grad has data of a different size: {list(value.shape)} "
                               f"vs the tensor's {list(self.shape)}")
        if STATE.tracer is not None:
            STATE.tracer.write_grad(self, value)
        self._grad = value

    @property
    def grad_fn(self) -> Any:
        return self._grad_fn

    @property
    def is_leaf(self) -> bool:
        return self._grad_fn is None

    @property
    def data(self) -> Tensor:
        return self.detach()

    @data.setter
    def data(self, value: Tensor) -> None:
        self._data = value._data
        self._dtype = value._dtype
        self._device = value._device

    def detach(self) -> Tensor:
        from .autograd import detach_alias

        return detach_alias(self)

    def detach_(self) -> Tensor:
        self._grad_fn = None
        self._requires_grad = False
        return self

    def retain_grad(self) -> None:
        from .autograd import retain_grad

        retain_grad(self)

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    def register_hook(self, hook: Any) -> Any:
        from .autograd import register_hook

        return register_hook(self, hook)

    def backward(self, gradient: Tensor | None = None, retain_graph: bool | None = None,
                 create_graph: bool = False, inputs: Any = None) -> None:
        from .autograd import backward

        backward([self], None if gradient is None else [gradient], retain_graph, create_graph,
                 inputs)

    # ---- conversion ----------------------------------------------------------------------------
    def _graph_break(self, what: str) -> None:
        if STATE.tracer is not None:
            STATE.tracer.graph_break(what)

    def numpy(self, *, force: bool = False) -> np.ndarray:
        if self._requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use "
                               "tensor.detach().numpy() instead.")
        self._graph_break(".numpy()")
        if self.is_cuda:
            raise TypeError(f"can't convert {self._device} device type tensor to numpy; use "
                            "Tensor.cpu() to copy the tensor to host memory first")
        return self._data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self._graph_break("conversion to a NumPy array")
        if self.is_cuda:
            raise TypeError(f"can't convert {self._device} device type tensor to numpy; use "
                            "Tensor.cpu() to copy the tensor to host memory first")
        return self._data if dtype is None else self._data.astype(dtype)

    def item(self) -> Any:
        if self.numel() != 1:
            raise RuntimeError(f"a Tensor with {self.numel()} elements cannot be converted to "
                               "a Python scalar (item() needs exactly one element)")
        self._graph_break(".item()")
        if self.is_cuda:
            return self._data.item()
        return self._data.reshape(()).item()

    def tolist(self) -> Any:
        self._graph_break(".tolist()")
        return self._data.tolist()

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self._data.size} elements is "
                               "ambiguous; use .any() or .all()")
        taken = bool(self._data.item() if self.is_cuda else self._data.reshape(()))
        if STATE.tracer is not None:  # a branch: the trace is guarded on its predicate
            STATE.tracer.branch(self, taken)
        return taken

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._dtype.category != 1:
            raise TypeError("only integer tensors of a single element can be converted to an "
                            "index")
        return int(self.item())

    def __len__(self) -> int:
        if not self._data.ndim:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if not self._data.ndim:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __hash__(self) -> int:
        return id(self)

    def __dlpack__(self, stream: Any = None, **kw: Any) -> Any:
        return self._data.__dlpack__(**{k: v for k, v in kw.items() if v is not None})

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._data.__dlpack_device__()

    def __repr__(self) -> str:
        from .printing import tensor_repr

        return tensor_repr(self)

    def __format__(self, spec: str) -> str:
        if self.ndim == 0 and spec:
            self._graph_break("formatting a tensor's value")
            return format(self._data.item(), spec)
        return repr(self)

    def __reduce_ex__(self, proto: SupportsIndex) -> Any:
        if self.is_cuda:  # pickled through the host, restored on the CPU (no map_location)
            host = cast(Any, self._data).host()
            return (_rebuild, (host, self._dtype.name, self._requires_grad))
        return (_rebuild, (self._data.copy(), self._dtype.name, self._requires_grad))

    def __deepcopy__(self, memo: dict) -> Tensor:
        t = Tensor._make(self._data.copy(), self._dtype, self._device)
        t._requires_grad = self._requires_grad
        if self.grad is not None:
            t.grad = self.grad.__deepcopy__(memo)
        memo[id(self)] = t
        return t

    # ---- dtype / device ------------------------------------------------------------------------
    def to(self, *args: Any, dtype: Any = None, device: Any = None, copy: bool = False,
           non_blocking: bool = False) -> Tensor:
        for a in args:
            if isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            elif (isinstance(a, (str, globals()["device"])) and not _is_dtype_name(a)) or \
                    type(a).__name__ == "device":  # also torch.device
                device = a
            else:
                dtype = a
        t = self
        if device is not None:
            dev = as_device(device)
            if dev != self._device:
                from .cuda.transfer import to_device

                t, copy = to_device(self, dev), False
        if dtype is None:
            return t.clone() if copy else t
        d = dt.as_dtype(dtype)
        if d is t._dtype and not copy:
            return t
        return dispatch(R["cast"], (t,), {"dtype": d})

    def type(self, dtype: Any = None, non_blocking: bool = False) -> Any:
        if dtype is None:
            return f"tracejit.{self._dtype.name.capitalize()}Tensor"
        return self.to(dtype)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def cpu(self) -> Tensor:
        return self.to("cpu") if self.is_cuda else self

    def cuda(self, device: Any = None, non_blocking: bool = False) -> Tensor:
        return self.to("cuda" if device is None else
                       device if isinstance(device, (str, globals()["device"])) else
                       f"cuda:{device}")

    # ---- creation helpers ----------------------------------------------------------------------
    def new_full(self, size: Sequence[int], fill_value: Any, *, dtype: Any = None,
                 device: Any = None, requires_grad: bool = False) -> Tensor:
        from .creation import full

        return full(size, fill_value, dtype=dtype or self._dtype, device=device or self._device,
                    requires_grad=requires_grad)

    def new_zeros(self, *size: Any, dtype: Any = None, **kw: Any) -> Tensor:
        return self.new_full(_sizes(size), 0, dtype=dtype, **kw)

    def new_ones(self, *size: Any, dtype: Any = None, **kw: Any) -> Tensor:
        return self.new_full(_sizes(size), 1, dtype=dtype, **kw)

    def new_empty(self, *size: Any, dtype: Any = None, **kw: Any) -> Tensor:
        return self.new_full(_sizes(size), 0, dtype=dtype, **kw)

    def new_tensor(self, data: Any, dtype: Any = None, **kw: Any) -> Tensor:
        from .creation import tensor

        return tensor(data, dtype=dtype or self._dtype, **kw)

    # ---- elementwise ---------------------------------------------------------------------------
    def add(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return dispatch(R["add"], (self, other if alpha == 1 else other * alpha))

    def sub(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return dispatch(R["sub"], (self, other if alpha == 1 else other * alpha))

    def mul(self, other: Any) -> Tensor:
        return dispatch(R["mul"], (self, other))

    def div(self, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        if rounding_mode is None:
            return dispatch(R["div"], (self, other))
        if rounding_mode not in ("floor", "trunc"):
            raise ArgError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' "
                           f"but found {rounding_mode!r}")
        d = _result_type(self, other)
        if d.category == 0:
            raise DTypeError(located(f"div with rounding_mode={rounding_mode!r} is not "
                                     "implemented for bool tensors; convert with .long()"))
        if d.category == 1:
            return _int_div(self, other, rounding_mode).to(d)
        q = dispatch(R["div"], (self, other))
        return q.floor() if rounding_mode == "floor" else q.trunc()

    def floor_divide(self, other: Any) -> Tensor:
        return self.div(other, rounding_mode="floor")

    def trunc(self) -> Tensor:
        # toward zero, keeping the sign of zero (trunc(-0.5) and trunc(-0.0) are -0.0)
        return self.ceil().where(self < 0, self.floor())

    true_divide = div
    multiply = mul
    subtract = sub
    divide = div

    def pow(self, exponent: Any) -> Tensor:
        return dispatch(R["pow"], (self, exponent))

    def __add__(self, o: Any) -> Tensor:
        return dispatch(R["add"], (self, o))

    def __radd__(self, o: Any) -> Tensor:
        return dispatch(R["add"], (o, self))

    def __sub__(self, o: Any) -> Tensor:
        return dispatch(R["sub"], (self, o))

    def __rsub__(self, o: Any) -> Tensor:
        return dispatch(R["sub"], (o, self))

    def __mul__(self, o: Any) -> Tensor:
        return dispatch(R["mul"], (self, o))

    def __rmul__(self, o: Any) -> Tensor:
        return dispatch(R["mul"], (o, self))

    def __truediv__(self, o: Any) -> Tensor:
        return dispatch(R["div"], (self, o))

    def __rtruediv__(self, o: Any) -> Tensor:
        return dispatch(R["div"], (o, self))

    def __floordiv__(self, o: Any) -> Tensor:
        return self.div(o, rounding_mode="floor")

    def __rfloordiv__(self, o: Any) -> Tensor:
        return _from_value(o, None, copy=False).div(self, rounding_mode="floor")

    def __pow__(self, o: Any) -> Tensor:
        return dispatch(R["pow"], (self, o))

    def __rpow__(self, o: Any) -> Tensor:
        return dispatch(R["pow"], (o, self))

    def __matmul__(self, o: Any) -> Tensor:
        return self.matmul(o)

    def __rmatmul__(self, o: Any) -> Tensor:
        return _from_value(o, None, copy=False).matmul(self)

    def __neg__(self) -> Tensor:
        return dispatch(R["neg"], (self,))

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return dispatch(R["abs"], (self,))

    def __invert__(self) -> Tensor:
        if self._dtype is not dt.bool_:
            raise TypeError(located("~ is only supported on bool tensors here; use logical_not"))
        return dispatch(R["logical_not"], (self,))

    def __and__(self, o: Any) -> Tensor:
        return dispatch(R["logical_and"], (self, o))

    def __or__(self, o: Any) -> Tensor:
        return dispatch(R["logical_or"], (self, o))

    __rand__ = __and__
    __ror__ = __or__

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return dispatch(R["eq"], (self, other))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return dispatch(R["ne"], (self, other))

    def __lt__(self, other: Any) -> Tensor:
        return dispatch(R["lt"], (self, other))

    def __le__(self, other: Any) -> Tensor:
        return dispatch(R["le"], (self, other))

    def __gt__(self, other: Any) -> Tensor:
        return dispatch(R["gt"], (self, other))

    def __ge__(self, other: Any) -> Tensor:
        return dispatch(R["ge"], (self, other))

    eq = __eq__
    ne = __ne__
    lt = __lt__
    le = __le__
    gt = __gt__
    ge = __ge__

    def logical_and(self, other: Any) -> Tensor:
        return dispatch(R["logical_and"], (self, other))

    def logical_or(self, other: Any) -> Tensor:
        return dispatch(R["logical_or"], (self, other))

    def logical_not(self) -> Tensor:
        return dispatch(R["logical_not"], (self,))

    def maximum(self, other: Any) -> Tensor:
        return dispatch(R["maximum"], (self, other))

    def minimum(self, other: Any) -> Tensor:
        return dispatch(R["minimum"], (self, other))

    def where(self, condition: Any, other: Any) -> Tensor:
        return dispatch(R["where"], (condition, self, other))

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            out = self if min is None else self.maximum(min)
            return out if max is None else out.minimum(max)
        if min is None and max is None:
            raise RuntimeError(located("clamp: at least one of 'min' or 'max' must not be None"))
        return dispatch(R["clamp"], (self,), {"min": min, "max": max})

    clip = clamp

    def clamp_min(self, min: Any) -> Tensor:
        return self.clamp(min=min)

    def clamp_max(self, max: Any) -> Tensor:
        return self.clamp(max=max)

    def masked_fill(self, mask: Tensor, value: Any) -> Tensor:
        return self.where(mask.logical_not(), value).to(self._dtype)

    # ---- reductions ----------------------------------------------------------------------------
    def sum(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
        x = self if dtype is None else self.to(dtype)
        return dispatch(R["sum"], (x,), {"dims": norm_dims("sum", dim, x.ndim),
                                         "keepdim": keepdim})

    def prod(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
        x = self if dtype is None else self.to(dtype)
        return dispatch(R["prod"], (x,), {"dims": norm_dims("prod", dim, x.ndim),
                                          "keepdim": keepdim})

    def amax(self, dim: Any = (), keepdim: bool = False) -> Tensor:
        return dispatch(R["amax"], (self,), {"dims": norm_dims("amax", None if dim == () else dim,
                                                              self.ndim),
                                             "keepdim": keepdim})

    def amin(self, dim: Any = (), keepdim: bool = False) -> Tensor:
        return dispatch(R["amin"], (self,), {"dims": norm_dims("amin", None if dim == () else dim,
                                                              self.ndim),
                                             "keepdim": keepdim})

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        d = None if dim is None else norm_dim("argmax", dim, self.ndim)
        return dispatch(R["argmax"], (self,), {"dim": d, "keepdim": keepdim})

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        d = None if dim is None else norm_dim("argmin", dim, self.ndim)
        return dispatch(R["argmin"], (self,), {"dim": d, "keepdim": keepdim})

    def _extreme(self, which: str, dim: Any, keepdim: bool, other: Any) -> Any:
        if isinstance(other, Tensor):
            return self.maximum(other) if which == "max" else self.minimum(other)
        if dim is None:
            return self.amax() if which == "max" else self.amin()
        idx = self.argmax(dim, True) if which == "max" else self.argmin(dim, True)
        d = norm_dim(which, dim, self.ndim)
        if self.ndim == 0:
            return ReturnTypes(self, idx)
        values = self.gather(d, idx)  # gradient goes to the chosen index, as torch's max(dim)
        if not keepdim:
            values, idx = values.squeeze(d), idx.squeeze(d)
        return ReturnTypes(values, idx)

    def max(self, dim: Any = None, keepdim: bool = False, *, other: Any = None) -> Any:
        """max(), max(dim, keepdim) -> (values, indices), or max(other): the elementwise max."""
        if isinstance(dim, Tensor):
            return self._extreme("max", None, keepdim, dim)
        return self._extreme("max", dim, keepdim, other)

    def min(self, dim: Any = None, keepdim: bool = False, *, other: Any = None) -> Any:
        if isinstance(dim, Tensor):
            return self._extreme("min", None, keepdim, dim)
        return self._extreme("min", dim, keepdim, other)

    def all(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return dispatch(R["all"], (self,), {"dims": norm_dims("all", dim, self.ndim),
                                            "keepdim": keepdim})

    def any(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return dispatch(R["any"], (self,), {"dims": norm_dims("any", dim, self.ndim),
                                            "keepdim": keepdim})

    def sum_to_size(self, *size: Any) -> Tensor:
        from .autograd import sum_to

        return sum_to(self, tuple(_sizes(size)))

    # ---- shape ---------------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        return dispatch(R["reshape"], (self,), {"shape": tuple(_sizes(shape))})

    def view(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and not isinstance(shape[0], (int, Sequence)):
            return self.to(shape[0])
        from .ops.movement import resolve_shape

        s = resolve_shape("view", _sizes(shape), self.numel(), _raw(self).shape)
        try:
            if self.is_cuda:
                if _raw(self).reshape_view(s) is None:
                    raise AttributeError
            else:
                probe = _raw(self).view()
                probe.shape = s
        except AttributeError:
            raise RuntimeError(located(
                f"view size is not compatible with input tensor's size and stride (shape "
                f"{list(self.shape)}, strides {list(self.stride())}); use .reshape(...) instead"
            )) from None
        return dispatch(R["reshape"], (self,), {"shape": s})

    def view_as(self, other: Tensor) -> Tensor:
        return self.view(other.shape)

    def reshape_as(self, other: Tensor) -> Tensor:
        return self.reshape(other.shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        a = norm_dim("flatten", start_dim, self.ndim)
        b = norm_dim("flatten", end_dim, self.ndim)
        s = _raw(self).shape
        return self.reshape(s[:a] + (math.prod(s[a:b + 1]),) + s[b + 1:])

    def unflatten(self, dim: int, sizes: Sequence[int]) -> Tensor:
        d = norm_dim("unflatten", dim, self.ndim)
        from .ops.movement import resolve_shape

        sizes = resolve_shape("unflatten", sizes, _raw(self).shape[d], (_raw(self).shape[d],))
        s = _raw(self).shape
        return self.reshape(s[:d] + tuple(sizes) + s[d + 1:])

    def squeeze(self, dim: Any = None) -> Tensor:
        s = _raw(self).shape
        dims = norm_dims("squeeze", dim, self.ndim)
        return self.reshape(tuple(n for i, n in enumerate(s) if not (i in dims and n == 1)))

    def unsqueeze(self, dim: int) -> Tensor:
        d = norm_dim("unsqueeze", dim, self.ndim + 1)
        s = _raw(self).shape
        return self.reshape(s[:d] + (1,) + s[d:])

    def permute(self, *dims: Any) -> Tensor:
        ds = tuple(norm_dim("permute", d, self.ndim) for d in _sizes(dims))
        return dispatch(R["permute"], (self,), {"dims": ds})

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        if self.ndim < 2 and self.ndim == 0:
            return self
        a, b = norm_dim("transpose", dim0, self.ndim), norm_dim("transpose", dim1, self.ndim)
        p = list(range(self.ndim))
        p[a], p[b] = p[b], p[a]
        return dispatch(R["permute"], (self,), {"dims": tuple(p)})

    def swapaxes(self, axis0: int, axis1: int) -> Tensor:
        return self.transpose(axis0, axis1)

    swapdims = transpose

    def t(self) -> Tensor:
        if self.ndim > 2:
            raise RuntimeError(located(f"t() expects a tensor with <= 2 dimensions, but self is "
                               f"{self.ndim}D; use .mT or .transpose(-2, -1)"))
        return self if self.ndim < 2 else self.transpose(0, 1)

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim))) if self.ndim > 1 else self

    @property
    def mT(self) -> Tensor:
        if self.ndim < 2:
            raise RuntimeError(located("tensor.mT is only supported on matrices or batches of "
                                       "matrices; "
                               f"got {self.ndim}-D tensor"))
        return self.transpose(-2, -1)

    def expand(self, *size: Any) -> Tensor:
        return dispatch(R["expand"], (self,), {"shape": tuple(_sizes(size))})

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def broadcast_to(self, size: Sequence[int]) -> Tensor:
        return self.expand(tuple(size))

    def repeat(self, *sizes: Any) -> Tensor:
        reps = tuple(_sizes(sizes))
        if len(reps) < self.ndim:
            raise RuntimeError(located("repeat: number of repeat dims can not be smaller than "
                                       "number of "
                               "dimensions of tensor"))
        x = self.reshape((1,) * (len(reps) - self.ndim) + _raw(self).shape)
        inter: list[int] = []
        final: list[int] = []
        for r, n in zip(reps, x.shape):
            inter += [r, n]
            final.append(r * n)
        x = x.reshape(tuple(v for n in x.shape for v in (1, n)))
        return x.expand(tuple(inter)).reshape(tuple(final))

    def narrow(self, dim: int, start: int, length: int) -> Tensor:
        d = norm_dim("narrow", dim, self.ndim)
        n = _raw(self).shape[d]
        if start < 0:
            start += n
        if not (0 <= start and length >= 0 and start + length <= n):
            raise ArgError(f"narrow: start ({start}) + length ({length}) exceeds dimension size "
                           f"({n})")
        starts, stops, steps = _full_slices(_raw(self).shape)
        starts[d], stops[d] = start, start + length
        return self._slice(starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))

    def split(self, split_size: Any, dim: int = 0) -> tuple[Tensor, ...]:
        split_size_or_sections = split_size
        d = norm_dim("split", dim, self.ndim)
        n = _raw(self).shape[d]
        if isinstance(split_size_or_sections, int):
            k = split_size_or_sections
            if k <= 0:
                raise ArgError(f"split: split_size must be positive, got {k}")
            sizes = [min(k, n - i) for i in range(0, n, k)] or [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ArgError(f"split: split sizes {sizes} do not sum to the size {n} of "
                               f"dim {dim}")
        out, at = [], 0
        for s in sizes:
            out.append(self.narrow(d, at, s))
            at += s
        return tuple(out)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        n = _raw(self).shape[norm_dim("chunk", dim, self.ndim)]
        return self.split(max(1, -(-n // chunks)), dim)

    def unbind(self, dim: int = 0) -> tuple[Tensor, ...]:
        d = norm_dim("unbind", dim, self.ndim)
        return tuple(t.squeeze(d) for t in self.split(1, d))

    def contiguous(self) -> Tensor:
        return self if _raw(self).flags.c_contiguous else self.clone()

    def clone(self) -> Tensor:
        return dispatch(R["clone"], (self,))

    def _slice(self, *, starts: tuple, stops: tuple, steps: tuple) -> Tensor:
        return dispatch(R["slice"], (self,), {"starts": starts, "stops": stops, "steps": steps})

    def _slice_scatter(self, src: Any, *, starts: tuple, stops: tuple, steps: tuple) -> Tensor:
        return dispatch(R["slice_scatter"], (self, src),
                        {"starts": starts, "stops": stops, "steps": steps})

    def _index(self, *idx: Tensor, dims: tuple[int, ...]) -> Tensor:
        return dispatch(R["index"], (self, *idx), {"dims": dims})

    def _check_index(self, size: int, *, op: str, style: str, dim: int = 0,
                     ignore: int | None = None) -> Tensor:
        """This index tensor, checked against [0, size) (`ignore` also allowed): an
        IndexBoundsError naming `op` otherwise, eagerly and in compiled code (check_index)."""
        return dispatch(R["check_index"], (self,), {"size": size, "negative": False,
                                                    "ignore": ignore, "op": op, "style": style,
                                                    "dim": dim})

    def _index_put(self, values: Any, *idx: Tensor, dims: tuple[int, ...],
                   accumulate: bool) -> Tensor:
        if not isinstance(values, Tensor):
            values = self.new_full((), values)
        return dispatch(R["index_put"], (self, values, *idx),
                        {"dims": dims, "accumulate": accumulate})

    # ---- contraction, indexing -----------------------------------------------------------------
    def matmul(self, other: Any) -> Tensor:
        from .functional import matmul

        return matmul(self, other)

    def mm(self, mat2: Tensor) -> Tensor:
        if self.ndim != 2 or getattr(mat2, "ndim", 0) != 2:
            raise RuntimeError(located(f"mm: expected 2-D tensors, got {self.ndim}-D and "
                               f"{getattr(mat2, 'ndim', '?')}-D; use matmul for other ranks"))
        return dispatch(R["matmul"], (self, mat2))

    def bmm(self, mat2: Tensor) -> Tensor:
        if self.ndim != 3 or mat2.ndim != 3:
            raise RuntimeError(located(f"bmm: expected 3-D tensors, got {self.ndim}-D and "
                                       f"{mat2.ndim}-D"))
        return dispatch(R["matmul"], (self, mat2))

    def gather(self, dim: int, index: Tensor, *, sparse_grad: bool = False) -> Tensor:
        if sparse_grad:
            raise RuntimeError(located("gather: sparse_grad=True asks for a sparse gradient, and "
                                       "tracejit has only dense tensors; drop sparse_grad="))
        return dispatch(R["gather"], (self, index), {"dim": norm_dim("gather", dim, self.ndim)})

    def scatter_add(self, dim: int, index: Tensor, src: Tensor) -> Tensor:
        return dispatch(R["scatter_add"], (self, index, src),
                        {"dim": norm_dim("scatter_add", dim, self.ndim)})

    def index_select(self, dim: int, index: Tensor) -> Tensor:
        d = norm_dim("index_select", dim, self.ndim)
        if index.ndim > 1:
            raise ArgError("index_select: index must be 0-d or 1-d")
        # torch: no negative indices here (x[idx] accepts them); see ops/index.py check_index
        idx = index.reshape(-1)._check_index(self.shape[d], op="index_select", style="range",
                                             dim=d)
        return self._index(idx, dims=(d,))

    def __getitem__(self, key: Any) -> Tensor:
        from .indexing import getitem

        return getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        from .indexing import setitem

        setitem(self, key, value)

    # ---- in place ------------------------------------------------------------------------------
    def _inplace(self, result: Tensor) -> Tensor:
        from .autograd import assign_inplace

        return assign_inplace(self, result)

    def _direct_inplace(self, other: Any, ufunc: Any) -> bool:
        """`self op= other` computed straight into self's array, where that is what the op
        computed out of place and then copied would give bit for bit: eagerly, nothing to
        record for autograd, a float32/float64 target and an operand of its dtype (a tensor
        of its shape or 0-d, not overlapping it) or a Python number (which enters the op in
        the target's dtype). Saves the result's allocation and the copy: `w -= lr * w.grad`
        on the tutorial's (1000, 100) weight writes 400 KB once instead of twice."""
        st = STATE
        if st.tracer is not None or st.grad_enabled and self._requires_grad:
            return False
        d = self._data
        if type(d) is not np.ndarray:  # a CUDA tensor: the op path runs its kernel
            return False
        if self._dtype is not dt.float32 and self._dtype is not dt.float64 or \
                not d.flags.writeable:
            return False
        if isinstance(other, Tensor):
            o = other._data
            if other._dtype is not self._dtype or st.grad_enabled and other._requires_grad or \
                    (o.shape != d.shape and o.ndim != 0) or np.may_share_memory(o, d):
                return False
        elif type(other) is float or type(other) is int:
            o = d.dtype.type(other)
        else:
            return False
        ufunc(d, o, out=d)
        self._version.v += 1
        return True

    def add_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        if alpha == 1 and self._direct_inplace(other, np.add):
            return self
        return self._inplace(self.add(other, alpha=alpha))

    def sub_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        if alpha == 1 and self._direct_inplace(other, np.subtract):
            return self
        return self._inplace(self.sub(other, alpha=alpha))

    def mul_(self, other: Any) -> Tensor:
        if self._direct_inplace(other, np.multiply):
            return self
        return self._inplace(self.mul(other))

    def div_(self, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        return self._inplace(self.div(other, rounding_mode=rounding_mode))

    def pow_(self, exponent: Any) -> Tensor:
        return self._inplace(self.pow(exponent))

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:
        return self._inplace(self.clamp(min, max))

    clip_ = clamp_

    def neg_(self) -> Tensor:
        return self._inplace(-self)

    def relu_(self) -> Tensor:
        return self._inplace(self.relu())

    def sqrt_(self) -> Tensor:
        return self._inplace(self.sqrt())

    def exp_(self) -> Tensor:
        return self._inplace(self.exp())

    def masked_fill_(self, mask: Tensor, value: Any) -> Tensor:
        return self._inplace(self.masked_fill(mask, value))

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def fill_(self, value: Any) -> Tensor:
        return self._inplace(self.new_full(self.shape, value) if not isinstance(value, Tensor)
                             else value.expand(self.shape))

    def copy_(self, other: Any = None, non_blocking: bool = False, *, src: Any = None) -> Tensor:
        # torch 2.13 lists both copy_(other) and copy_(src): one of the two, by either name
        if (other is None) == (src is None):
            raise TypeError(located("copy_: give the source tensor once, as copy_(src) (or "
                                    "copy_(other=...) / copy_(src=...))"))
        v = other if src is None else src
        v = v if isinstance(v, Tensor) else _from_value(v, None, copy=False)
        return self._inplace(v.to(self._dtype).expand(self.shape))

    def uniform_(self, a: float = 0.0, b: float = 1.0, *, generator: Any = None) -> Tensor:
        from .creation import rand

        return self.copy_(rand(*self.shape, dtype=self._dtype, generator=generator) * (b - a) + a)

    def normal_(self, mean: float = 0.0, std: float = 1.0, *, generator: Any = None) -> Tensor:
        from .creation import randn

        return self.copy_(randn(*self.shape, dtype=self._dtype, generator=generator) * std + mean)

    def __iadd__(self, o: Any) -> Tensor:
        return self.add_(o)

    def __isub__(self, o: Any) -> Tensor:
        return self.sub_(o)

    def __imul__(self, o: Any) -> Tensor:
        return self.mul_(o)

    def __itruediv__(self, o: Any) -> Tensor:
        return self.div_(o)

    # ---- dtype conversions (last: their names shadow the builtins in annotations below them)
    def float(self) -> Tensor:
        return self.to(dt.float32)

    def double(self) -> Tensor:
        return self.to(dt.float64)

    def half(self) -> Tensor:
        return self.to(dt.float16)

    def long(self) -> Tensor:
        return self.to(dt.int64)

    def int(self) -> Tensor:
        return self.to(dt.int32)

    def bool(self) -> Tensor:
        return self.to(dt.bool_)


# The array in a tensor's slot, read past any subclass property: a deferred tensor of a lazy
# replay (trace/lazy.py) overrides `_data` to compute its value first, and code that needs only
# the metadata (shape, strides, contiguity) reads the slot itself.
_raw: Any = Tensor.__dict__["_data"].__get__


def _result_type(a: Tensor, b: Any) -> dt.DType:
    """torch.result_type(a, b) for a tensor and a tensor or Python number."""
    ops = [a] + ([b] if isinstance(b, Tensor) else [])
    return dt.promote([t._dtype for t in ops if t.ndim], [t._dtype for t in ops if not t.ndim],
                      [] if isinstance(b, Tensor) else [dt.scalar_dtype(b)])


def _int_div(a: Tensor, b: Any, mode: str) -> Tensor:
    """Integer a // b (mode 'floor') or trunc(a / b), exact over int64, in int64, written with
    primitive ops so it fuses and compiles. A zero divisor raises (RuntimeError, as torch's
    "ZeroDivisionError"), eagerly and in compiled code: the check is a check_index on b == 0
    whose output feeds the result, so it always runs first."""
    x = a.to(dt.int64)
    y = b.to(dt.int64) if isinstance(b, Tensor) else x.new_full((), b)
    zero = y.eq(0).to(dt.int64)._check_index(1, op="div", style="zero")
    y = y + zero  # zero is all 0 once the check passed
    yf = y.double()
    # float64 quotient, then one correction from the exact int64 remainder: a float64 estimate
    # alone is off by up to 2**10 for |x| near 2**63 (the remainder is then small, and exact)
    q = (x.double() / yf).floor().to(dt.int64)
    q = q + ((x - q * y).double() / yf).floor().to(dt.int64)
    r = x - q * y
    neg_r, neg_y = r.lt(0), y.lt(0)
    q = q - (r.ne(0) & neg_r.ne(neg_y)).to(dt.int64) \
        + (r.ne(0) & neg_r.eq(neg_y) & r.abs().ge(y.abs())).to(dt.int64)
    if mode == "trunc":  # floor, plus one where the exact quotient was negative and not whole
        q = q + ((x - q * y).ne(0) & x.lt(0).ne(neg_y)).to(dt.int64)
    return q


def _rebuild(data: np.ndarray, dname: str, requires_grad: bool) -> Tensor:
    t = Tensor._make(data, dt.as_dtype(dname))
    t._requires_grad = requires_grad
    return t


def _is_dtype_name(a: Any) -> bool:
    if not isinstance(a, str):
        return False
    try:
        dt.as_dtype(a)
        return True
    except TypeError:
        return False


def _full_slices(shape: tuple[int, ...]) -> tuple[list[int], list[int], list[int]]:
    return [0] * len(shape), list(shape), [1] * len(shape)


class Size(tuple):
    """torch.Size: a tuple of ints with a readable repr."""

    def __repr__(self) -> str:
        return f"tracejit.Size({list(self)})"

    def numel(self) -> int:
        return math.prod(self)


def _sizes(args: Sequence[Any]) -> tuple[int, ...]:
    """Accept f(2, 3), f((2, 3)), f([2, 3]) and f(Size)."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, Size)):
        args = args[0]
    out = []
    for a in args:
        if isinstance(a, Tensor):
            a = int(a.item())
        elif not isinstance(a, (int, np.integer, bool)) and hasattr(type(a), "__index__"):
            a = operator.index(a)  # (as torch: anything with __index__, a traced int too)
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(located(f"expected a sequence of ints for a size, got "
                                    f"{type(a).__name__} "
                            f"in {tuple(args)}"))
        out.append(int(a))
    return tuple(out)


def _from_value(v: Any, dtype: Any, copy: bool) -> Tensor:
    """Build a tensor from a Tensor, NumPy array, number or nested sequence (PyTorch's dtype
    inference: floats -> default float, ints -> int64, bools -> bool; arrays keep theirs)."""
    d = None if dtype is None else dt.as_dtype(dtype)
    if isinstance(v, Tensor):
        arr = v._data
        src_d = v._dtype
    elif isinstance(v, np.ndarray):
        arr, src_d = v, dt.from_numpy_dtype(v.dtype)
    elif hasattr(v, "__dlpack__") and not isinstance(v, (list, tuple)):
        arr = np.from_dlpack(v)
        src_d = dt.from_numpy_dtype(arr.dtype)
    else:
        arr = _nested_to_array(v, d)
        src_d = dt.from_numpy_dtype(arr.dtype)
        copy = False  # already fresh
    target = d or src_d
    if arr.dtype != target.np:
        arr = arr.astype(target.np)
    elif copy:
        arr = arr.copy()
    return Tensor._make(arr, target)


def _nested_to_array(v: Any, d: dt.DType | None = None) -> np.ndarray:
    if d is not None and isinstance(v, (bool, int, float, np.number, np.bool_)):
        return np.array(v, d.np)  # straight to the asked dtype: 0.7 as float64 stays exact
    if isinstance(v, (bool, np.bool_)):
        return np.array(v, np.bool_)
    if isinstance(v, (int, np.integer)):
        return np.array(v, np.int64)
    if isinstance(v, (float, np.floating)):
        return np.array(v, dt.get_default_dtype().np)
    if isinstance(v, (list, tuple)):
        if any(isinstance(x, Tensor) for x in v):
            v = [x._data if isinstance(x, Tensor) else x for x in v]
        try:
            arr = np.array(v)
        except ValueError:  # NumPy 2: "inhomogeneous shape"
            arr = np.array(v, dtype=object)
        if arr.dtype == object:
            raise TypeError(located("tensor(): could not build a tensor from a ragged or mixed "
                                    "sequence; every row must have the same length"))
        if d is not None and arr.dtype.kind in "biuf":
            return arr.astype(d.np)
        if arr.dtype == np.float64 and not _has_float64_array(v):
            arr = arr.astype(dt.get_default_dtype().np)
        if arr.dtype.kind in "U S":
            raise TypeError(located("tensor(): strings are not supported"))
        if arr.dtype == np.int32 or arr.dtype.kind == "u":
            arr = arr.astype(np.int64)
        return arr
    raise TypeError(located(f"tensor(): could not convert {type(v).__name__} to a tensor; "
                            "expected a "
                    "number, a (nested) list or tuple, a NumPy array or a Tensor"))


def _has_float64_array(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return v.dtype == np.float64
    if isinstance(v, (list, tuple)):
        return any(_has_float64_array(x) for x in v)
    return False


_dispatch_module._Tensor = Tensor
