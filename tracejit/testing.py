"""Test helpers for users and for tracejit's own op table, like jax.test_util: `check_op`
(values and the shape/dtype rule against a NumPy float64 reference) and `check_grad` (reverse
mode against central finite differences in float64), and `count_allocations` (the arrays
NumPy and Numba allocate inside a block). Imports the public API only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import dtypes as dt
from .autograd import grad as autograd_grad
from .dispatch import STATE
from .ops.registry import OpDef, TensorType
from .runtime.allocations import AllocationCount, count_allocations  # noqa: F401
from .tensor import Tensor

LAYOUTS = ("contiguous", "transposed", "strided")


def as_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as `a`, stored with the given memory layout: `contiguous` (C order),
    `transposed` (Fortran order, as x.t() of a contiguous tensor is) or `strided` (every other
    element of a buffer twice as long in the last dim, as x[..., ::2] is)."""
    if layout == "contiguous" or a.ndim == 0:
        return np.array(a, order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
    if layout == "transposed":
        return np.asfortranarray(a)
    if layout == "strided":
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        view = buf[..., ::2]
        view[...] = a
        return view
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def _to_tensor(a: Any, float_dtype: dt.DType, layout: str, requires_grad: bool = False) -> Any:
    if not isinstance(a, np.ndarray):
        return a  # Python numbers and other arguments pass through
    if a.dtype.kind == "f":
        a = a.astype(float_dtype.np)
    t = Tensor._make(as_layout(a, layout), dt.from_numpy_dtype(a.dtype))
    if requires_grad and a.dtype.kind == "f":
        t.requires_grad_(True)
    return t


def _flat(out: Any) -> list[Any]:
    """An op's result as a list of its tensors (tuples such as max(dim) or split flattened)."""
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out]


class _InferCheck:
    """A tracer that records nothing but checks, for every op dispatched, that the registry's
    shape/dtype rule agrees with the array eager execution produced."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def record(self, op: OpDef, args: Sequence[Any], attrs: dict[str, Any], out: Tensor) -> None:
        self.seen.append(op.name)
        types = [a._type() if isinstance(a, Tensor) else a for a in args]
        want = op.infer(types, **attrs)
        assert isinstance(want, TensorType), f"{op.name} has several results"
        shape_ok = op.dynamic_shape or tuple(want.shape) == tuple(out.shape)
        if not shape_ok or want.dtype is not out.dtype:
            raise AssertionError(
                f"{op.name}: the shape/dtype rule says {want} but eager returned "
                f"{out._type()} (attrs {attrs}, inputs {[str(t) for t in types]})"
            )

    def lift_scalar(self, container: Any, key: Any, value: Any) -> Any:
        return value

    lazy = False  # (not a lazy replay: hooks below are no-ops)

    def __getattr__(self, hook: str) -> Callable[..., None]:
        return lambda *a, **kw: None  # mutate, alias, constant, graph_break, read/write_grad...


def run_checked(fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn(*args)` with every dispatched op's shape/dtype rule checked against eager."""
    if STATE.tracer is not None:
        return fn(*args)  # inside @jit: the real tracer owns the hooks
    STATE.tracer = _InferCheck()
    try:
        return fn(*args)
    finally:
        STATE.tracer = None


def _compare(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> None:
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {list(got.shape)}, expected {list(want.shape)}")
    g = got.astype(np.float64) if got.dtype.kind in "fc" else got
    w = want.astype(np.float64) if want.dtype.kind in "fc" else want
    if g.dtype.kind == "f" or w.dtype.kind == "f":
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        ok = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    else:
        ok = g == w
    if not np.all(ok):
        bad = np.argwhere(~ok)
        first = tuple(int(i) for i in bad[0]) if bad.size else ()
        err = np.abs(g - w) if g.dtype.kind == "f" else None
        worst = "" if err is None else f"; max abs error {np.nanmax(np.where(ok, 0, err)):.3g}"
        raise AssertionError(
            f"{name}: {len(bad)} of {ok.size} elements differ{worst}; first at {first}: got "
            f"{g[first]!r}, expected {w[first]!r} (atol={atol}, rtol={rtol})"
        )


def _expected_dtype(ref_out: np.ndarray, float_dtype: dt.DType) -> dt.DType:
    kind = ref_out.dtype.kind
    if kind == "b":
        return dt.bool_
    if kind in "iu":
        return dt.int64
    return float_dtype


def check_op(fn: Callable[..., Any], ref: Callable[..., Any], *inputs: Any,
             dtype: Any = dt.float32, atol: float = 1e-5, rtol: float = 1e-4,
             layout: str = "contiguous", out_dtypes: Sequence[Any] | None = None) -> None:
    """Check `fn` on tracejit tensors against `ref` on NumPy float64 arrays.

    Floating-point `inputs` (NumPy arrays) are given to `fn` as tensors of `dtype` stored in
    `layout`; integer and bool arrays keep their dtype; other arguments pass through. Checks
    values (to `atol`/`rtol`), shapes, result dtypes (`out_dtypes`, or: float results in `dtype`,
    integer results int64, bool results bool), that every dispatched op's shape/dtype rule
    agrees with what eager produced, and that the inputs were not modified.

    >>> import numpy as np
    >>> from tracejit.testing import check_op
    >>> x = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    >>> check_op(lambda t: t.exp().sum(0), lambda a: np.exp(a).sum(0), x, layout="transposed")
    """
    d = dt.as_dtype(dtype)
    tensors = [_to_tensor(a, d, layout) for a in inputs]
    before = [t._data.copy() if isinstance(t, Tensor) else None for t in tensors]
    got = _flat(run_checked(fn, *tensors))
    want = _flat(ref(*[a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                       else a for a in inputs]))
    if len(got) != len(want):
        raise AssertionError(f"fn returned {len(got)} results, ref returned {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if not isinstance(g, Tensor):
            raise AssertionError(f"result {i} is a {type(g).__name__}, expected a Tensor")
        w = np.asarray(w)
        expect = dt.as_dtype(out_dtypes[i]) if out_dtypes else _expected_dtype(w, d)
        if g.dtype is not expect:
            raise AssertionError(f"result {i}: dtype {g.dtype}, expected {expect}")
        _compare(f"result {i}", g._data, w, atol, rtol)
    for i, (t, b) in enumerate(zip(tensors, before)):
        if b is not None and not np.array_equal(t._data, b, equal_nan=True):
            raise AssertionError(f"input {i} was modified by the op")


def _scalarize(outs: list[Any], cots: list[np.ndarray]) -> float:
    return float(sum(np.sum(o._data.astype(np.float64) * c) for o, c in zip(outs, cots)))


def check_grad(fn: Callable[..., Any], *inputs: Any, eps: float = 1e-6, atol: float = 1e-6,
               rtol: float = 1e-5, layout: str = "contiguous", seed: int = 0) -> None:
    """Check reverse-mode gradients of `fn` against central finite differences, in float64.

    Every floating-point array in `inputs` becomes a float64 tensor requiring grad (stored in
    `layout`). The floating-point results of `fn` are contracted with random cotangents `v`;
    the gradient of sum(v * fn(x)) from `tracejit.autograd.grad` must match
    (f(x + eps e_i) - f(x - eps e_i)) / 2 eps for every element i of every input. An input the
    result does not depend on must get a zero (or no) gradient.

    >>> import numpy as np
    >>> from tracejit.testing import check_grad
    >>> x = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    >>> check_grad(lambda t: (t.tanh() * t).sum(1), x)
    """
    rng = np.random.default_rng(seed)
    tensors = [_to_tensor(a, dt.float64, layout, requires_grad=True) for a in inputs]
    diff = [t for t in tensors if isinstance(t, Tensor) and t.requires_grad]
    outs = [o for o in _flat(fn(*tensors)) if isinstance(o, Tensor) and o.dtype.is_floating_point]
    cots = [rng.standard_normal(o.shape) for o in outs]
    if not diff:
        return
    live = [(o, c) for o, c in zip(outs, cots) if o.requires_grad]
    if live:
        got = autograd_grad([o for o, _ in live], diff,
                            [Tensor._make(c.astype(o.dtype.np), o.dtype) for o, c in live],
                            allow_unused=True)
    else:
        got = (None,) * len(diff)

    def f() -> float:
        # (grad mode stays on: `fn` may itself differentiate, for higher-order checks)
        res = [o for o in _flat(fn(*tensors))
               if isinstance(o, Tensor) and o.dtype.is_floating_point]
        return _scalarize(res, cots)

    for k, (t, g) in enumerate(zip(diff, got)):
        data = t._data  # perturbed in place: the layout is kept
        num = np.zeros(data.shape)
        for i in np.ndindex(data.shape):
            old = data[i]
            data[i] = old + eps
            hi = f()
            data[i] = old - eps
            lo = f()
            data[i] = old
            num[i] = (hi - lo) / (2 * eps)
        mine = np.zeros(data.shape) if g is None else g._data
        if g is not None and g.shape != t.shape:
            raise AssertionError(f"gradient of input {k} has shape {list(g.shape)}, expected "
                                 f"{list(t.shape)}")
        _compare(f"gradient of input {k}", np.asarray(mine), num, atol, rtol)
