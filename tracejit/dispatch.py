"""dispatch(op, args, attrs): infer the result type, run the eager kernel, record the node when
a trace is active, and attach the autograd node. The one road every op takes.
Imports ops and tensor; never codegen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import located, user_location
from .ops.registry import OpDef, OpError, TensorType

if TYPE_CHECKING:
    from .tensor import Tensor


class _State:
    """Process-wide switches read on every op (kept in one object for speed)."""

    __slots__ = ("grad_enabled", "tracer")

    def __init__(self) -> None:
        self.grad_enabled = True
        self.tracer: Any = None  # a trace.Tracer while a @jit function is being captured


STATE = _State()
_Tensor: Any = None  # tracejit.tensor.Tensor, bound at import time (avoids an import cycle)
_attach: Any = None  # autograd.attach
_Scalar: Any = None  # trace.scalars.TracedScalar (a Python number that is a traced input)


def user_error(e: Exception) -> Exception:
    """Add the user's file:line to an op error, so the message points at their code."""
    msg = str(e.args[0]) if e.args else str(e)
    e.args = (located(msg),) + tuple(e.args[1:])
    return e


def _operand(a: Any, op: OpDef) -> Any:
    if isinstance(a, (bool, int, float)):
        return a
    if isinstance(a, np.generic) and a.ndim == 0:
        return a.item()
    if isinstance(a, (list, tuple, np.ndarray)):
        return _Tensor._from_value(a)
    raise TypeError(
        f"{op.name}: expected a Tensor or a Python number, got {type(a).__name__} (at "
        f"{user_location()}); wrap it with tracejit.tensor(...)"
    )


def dispatch(op: OpDef, args: Sequence[Any], attrs: dict[str, Any] | None = None) -> Tensor:
    attrs = attrs or {}
    T = _Tensor
    types: list[Any] = []
    key: list[Any] = [op.name]  # the rule cache's key: operand types (a number by its type), attrs
    traced: list[Any] | None = None  # the operands as the tracer sees them, when they differ
    copied = False
    for i, a in enumerate(args):
        if type(a) is not T and not isinstance(a, T):
            b = a
            if type(a) is _Scalar:  # a traced Python number: typed and computed as the number
                if traced is None:
                    traced = list(args)
                a = a.value
            else:
                a = _operand(a, op)
            if a is not b:
                if not copied:
                    args, copied = list(args), True
                args[i] = a  # type: ignore[index]
                if traced is not None and type(b) is not _Scalar:
                    traced[i] = a
        if isinstance(a, T):
            # (a plain Tensor inlined; a subclass asked: a lazy replay's deferred tensor gives
            # its placeholder's shape without running the pending segment)
            t = _new_type(TensorType, (a._data.shape, a._dtype, a._device)) \
                if type(a) is T else a._type()
            types.append(t)
            key.append(t)
        else:
            types.append(a)
            key.append(type(a))
    if STATE.tracer is not None and attrs:
        attrs = STATE.tracer.concrete_attrs(op, attrs) or attrs  # (testing's no-op tracer)
    try:
        out_t, cd = _rules(op, types, attrs, key)
    except OpError as e:
        raise user_error(e) from None
    st = STATE
    if st.tracer is not None and st.tracer.lazy:  # a lazy replay: recorded, not computed
        out = st.tracer.defer(op, args, attrs, out_t, cd)
        if out is not None:
            if st.grad_enabled and op.differentiable:
                for a in args:
                    if isinstance(a, T) and a._requires_grad:
                        _attach(op, args, attrs, types, out)
                        break
            return out
        # (None: the replay ran what it had deferred, and this op runs eagerly on the values)
    if out_t.device.type == "cuda":
        return _on_cuda(op, args, attrs, types, out_t, cd, traced)
    arrays = _cast(args, cd) if cd is not None else [a._data if isinstance(a, T) else a
                                                     for a in args]
    data = op.eager(*arrays, **attrs)
    if type(data) is not np.ndarray:
        data = np.asarray(data)
    want = out_t.dtype.np
    if data.dtype is not want and data.dtype != want:
        data = data.astype(want)
    else:
        for a in arrays:
            if data is a:  # a new array object: identity keys a tensor's storage in the tracer
                data = data.view()
                break
    out = T._make(data, out_t.dtype)
    if op.view and args and isinstance(args[0], T) and np.may_share_memory(data, args[0]._data):
        src = args[0]
        out._version = src._version
        out._base = src._base if src._base is not None else src
    if st.tracer is not None:
        st.tracer.record(op, args if traced is None else traced, attrs, out)
    if st.grad_enabled and op.differentiable:
        for a in args:
            if isinstance(a, T) and a._requires_grad:
                _attach(op, args, attrs, types, out)
                break
    return out


def _on_cuda(op: OpDef, args: Sequence[Any], attrs: dict[str, Any], types: list[Any],
             out_t: TensorType, cd: Any, traced: Any) -> Tensor:
    """dispatch's eager step for CUDA operands: tracejit/cuda/eager.py runs the kernel."""
    from .cuda.array import DeviceArray
    from .cuda.eager import run
    from .ops.registry import Kind, ShapeError

    T = _Tensor
    arrays: list[Any] = []
    for a in args:
        if not isinstance(a, T):
            arrays.append(a)
        elif a._device == out_t.device:
            arrays.append(a._data)
        elif a._device.type == "cpu" and a._data.ndim == 0:  # torch: a 0-d CPU tensor joins in
            arrays.append(a._data.item() if op.kind is Kind.ELEMENTWISE else
                          DeviceArray.from_host(a._data))
        else:
            raise ShapeError(
                f"{op.name}: expected all tensors to be on the same device, but found at least "
                f"two devices, {out_t.device} and {a._device}; move them with .to(device)")
    data = run(op, arrays, attrs, out_t.shape, out_t.dtype, cd)
    out = T._make(data, out_t.dtype, out_t.device)
    if op.view and args and isinstance(args[0], T) and data.buf is args[0]._data.buf:
        src = args[0]
        out._version = src._version
        out._base = src._base if src._base is not None else src
    if STATE.tracer is not None:  # under @jit: recorded as on the CPU (jit.py compiles it
        # with the CUDA renderer, codegen/cuda.py, when the graph's tensors are on CUDA)
        STATE.tracer.record(op, args if traced is None else traced, attrs, out)
    if STATE.grad_enabled and op.differentiable:
        for a in args:
            if isinstance(a, T) and a._requires_grad:
                _attach(op, args, attrs, types, out)
                break
    return out


_new_type = tuple.__new__  # TensorType(shape, dtype, device) without NamedTuple's Python __new__
_RULES: dict[Any, tuple[TensorType, Any]] = {}


def _rules(op: OpDef, types: list[Any], attrs: dict[str, Any],
           key: list[Any]) -> tuple[TensorType, Any]:
    """op.infer and op.compute_dtype, memoised. Both depend on the operand types and attrs only
    (a Python number by its type, never its value), so a hit skips re-deriving the rule on
    every eager call; the cache is keyed exactly and only bounded in size. `key`: the op and
    each operand's type (dispatch builds it while it reads the operands)."""
    if attrs:
        key.extend((k, type(v), v) for k, v in attrs.items())
    k: tuple[Any, ...] | None = tuple(key)
    try:
        hit = _RULES.get(k)
    except TypeError:  # an unhashable attribute: derive the rule every time
        k, hit = None, None
    if hit is None:
        t = op.infer(types, **attrs)
        assert isinstance(t, TensorType), f"{op.name}: dispatch runs single-result ops only"
        hit = (t, op.compute_dtype(types) if op.compute_dtype is not None else None)
        if k is not None:
            if len(_RULES) >= 4096:
                _RULES.clear()
            _RULES[k] = hit
    return hit


def _cast(args: Sequence[Any], cd: Any) -> list[Any]:
    """The operands as arrays in the dtype(s) the eager kernel computes in."""
    T = _Tensor
    out = []
    for i, a in enumerate(args):
        d = cd if cd is None or not isinstance(cd, tuple) else cd[i]
        if isinstance(a, T):
            x = a._data
            out.append(x if d is None or x.dtype == d.np else x.astype(d.np))
        else:
            out.append(a if d is None else d.np.type(a))
    return out


def read_value(container: Any, key: Any) -> Any:
    """Read a number that is a *value* of a compiled program, not a guard (an optimizer's
    learning rate): under @jit it becomes a lifted scalar input read anew on every call, so
    changing it does not recompile. Use the result only in tensor arithmetic."""
    v = container[key]
    if STATE.tracer is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
        return STATE.tracer.lift_scalar(container, key, v)
    return v


def read_static(container: Any, key: Any) -> Any:
    """Read a Python value that shapes the computation (momentum != 0, amsgrad): under @jit the
    compiled program is guarded on it, so changing it retraces instead of being ignored."""
    v = container[key]
    if STATE.tracer is not None:
        STATE.tracer.guard_value(container, key, v)
    return v


def check_type(out: Tensor, t: TensorType) -> None:
    assert out.shape == t.shape and out.dtype is t.dtype, (out.shape, t)
