"""Control flow with JAX's names and semantics: `cond`, `while_loop`, `fori_loop`, `scan`,
over pytree carries (tuples, lists, dicts, named tuples, nested; pytree.py).

Outside @jit they run in Python, so `fori_loop` (with int bounds) and `scan` differentiate
through ordinary autograd, and `while_loop` raises JAX's error when differentiated unless it
is bounded by `max_iterations=`. Inside @jit each call becomes one `cond`/`while`/`scan` node
whose regions the tracer records from the body (trace/regions.py), compiled to a real `if` or
loop: one compile serves every trip count.

>>> import tracejit as tj
>>> tj.fori_loop(0, 5, lambda i, x: x + i, tj.tensor(0.0))
tensor(10.)
>>> tj.while_loop(lambda c: c[0] < 100, lambda c: (c[0] * 2, c[1] + 1), (tj.tensor(1), 0))
(tensor(128), tensor(7))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import dtypes as dt
from .autograd import Function, FunctionCtx, is_grad_enabled, no_grad
from .creation import tensor
from .dispatch import STATE
from .errors import located
from .pytree import TreeDef, tree_flatten, tree_unflatten
from .tensor import Tensor


def as_leaf(x: Any, where: str, fn: str) -> Tensor:
    """A carry leaf as a tensor: Python numbers and NumPy arrays become tensors (JAX's carries
    are arrays too); anything else is an error naming where it was found."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, int, float, np.ndarray, np.generic)):
        return tensor(x)
    if type(x).__name__ == "TracedScalar":  # a traced int/float argument: its graph value
        return x.tensor.clone()
    raise TypeError(located(f"tracejit.{fn}: {where} must hold tensors or numbers, got a "
                            f"{type(x).__name__}; wrap it with tracejit.tensor(...) or pass it "
                            "to the function through a closure instead"))


def flatten_leaves(tree: Any, where: str, fn: str) -> tuple[list[Tensor], TreeDef]:
    leaves, t = tree_flatten(tree)
    return [as_leaf(x, f"{where}", fn) for x in leaves], t


def _type_str(t: Tensor) -> str:
    return f"{t.dtype.short}[{','.join(map(str, t.shape))}]"


def check_carry(fn: str, what: str, tree: TreeDef, leaves: list[Tensor], out: Any,
                got_what: str) -> list[Tensor]:
    """The leaves of `out`, which must have `tree`'s structure and the leaves' types (JAX:
    "body_fun output and input must have identical types")."""
    new, t = flatten_leaves(out, got_what, fn)
    if t != tree:
        raise TypeError(located(f"tracejit.{fn}: {got_what} must have the structure of "
                                f"{what}, {tree}, but it is {t}"))
    for k, (a, b) in enumerate(zip(leaves, new)):
        if a.shape != b.shape or a.dtype is not b.dtype:
            raise TypeError(located(
                f"tracejit.{fn}: {got_what} must have the types of {what}: leaf {k} is "
                f"{_type_str(a)} in {what} but {_type_str(b)} in {got_what}; cast it "
                "(.to(dtype)) or fix its shape so every iteration carries the same types"))
    return new


def check_pred(fn: str, p: Any, who: str) -> Any:
    """A boolean scalar (JAX: "cond_fun must return a boolean scalar")."""
    if isinstance(p, (bool, np.bool_)):
        return bool(p)
    if isinstance(p, Tensor) and p.shape == () and p.dtype is dt.bool_:
        return p
    shown = _type_str(p) if isinstance(p, Tensor) else type(p).__name__
    raise TypeError(located(f"tracejit.{fn}: {who} must return a boolean scalar (a 0-d bool "
                            f"tensor or a Python bool), got {shown}"))


def truth(p: Any) -> bool:
    """A checked predicate's value, read without `bool(tensor)` (a graph break when tracing:
    the loops read their own predicates, which the compiled program evaluates itself)."""
    return bool(p._data) if isinstance(p, Tensor) else bool(p)


def _tracing() -> bool:
    """A trace is recording (the loops become regions). A lazy replay's segment (a function
    split at its graph breaks, trace/lazy.py) is not one: there the loops run in Python, their
    ops deferred like any others and their predicates read as values, as eager mode does."""
    from .trace.tracer import Tracer

    return isinstance(STATE.tracer, Tracer)


# ---- cond -----------------------------------------------------------------------------------


def cond(pred: Any, true_fun: Callable[..., Any], false_fun: Callable[..., Any],
         *operands: Any) -> Any:
    """`true_fun(*operands)` if `pred` else `false_fun(*operands)` (JAX's lax.cond). `pred` is
    a Python bool or number, or a 0-d tensor (true when nonzero). Under @jit both branches
    are traced and the compiled program has a real `if`; they must return the same structure
    and types.

    >>> import tracejit as tj
    >>> tj.cond(tj.tensor(2.0) > 1, lambda x: x * 10, lambda x: x - 10, tj.tensor(3.0))
    tensor(30.)
    """
    if isinstance(pred, Tensor):
        if pred.shape != ():
            raise TypeError(located(f"tracejit.cond: the predicate must be a scalar (a 0-d "
                                    f"tensor), got shape {list(pred.shape)}; reduce it first "
                                    "(.any(), .all(), [i])"))
        if _tracing():
            from .trace.regions import trace_cond

            return trace_cond(pred, true_fun, false_fun, operands)
        return true_fun(*operands) if bool(pred) else false_fun(*operands)
    if type(pred).__name__ == "TracedScalar":
        return cond(pred.tensor != 0, true_fun, false_fun, *operands)
    if not isinstance(pred, (bool, int, float, np.bool_, np.integer, np.floating)):
        raise TypeError(located(f"tracejit.cond: the predicate must be a bool, a number or a "
                                f"0-d tensor, got a {type(pred).__name__}"))
    return true_fun(*operands) if pred else false_fun(*operands)


# ---- while_loop -----------------------------------------------------------------------------

_WHILE_GRAD = ("tracejit.while_loop is not reverse-differentiable (as JAX's lax.while_loop): "
               "its trip count is known only when it has run. Bound it with "
               "while_loop(..., max_iterations=N), which makes it differentiable, or use "
               "tracejit.scan, or fori_loop with Python int bounds")


class _NoBackward(Function):
    """Marks a while_loop's results: differentiating them raises JAX's error."""

    @staticmethod
    def forward(ctx: FunctionCtx, *leaves: Tensor) -> tuple[Tensor, ...]:
        return tuple(x.clone() for x in leaves)

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Any) -> Any:
        raise ValueError(_WHILE_GRAD)


def _max_iterations(m: Any) -> int | None:
    if m is None:
        return None
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
        raise ValueError(located(f"tracejit.while_loop: max_iterations must be None or an "
                                 f"int >= 0, got {m!r}"))
    return int(m)


def while_loop(cond_fun: Callable[[Any], Any], body_fun: Callable[[Any], Any], init_val: Any,
               *, max_iterations: int | None = None) -> Any:
    """Run `val = body_fun(val)` while `cond_fun(val)` (JAX's lax.while_loop), from `init_val`
    (a pytree of tensors and numbers; numbers become tensors). With `max_iterations` the loop
    also stops after that many trips: a bounded loop, which is reverse-differentiable; without
    it, differentiating the result raises JAX's error. Under @jit it compiles to one real loop
    for every trip count.

    >>> import tracejit as tj
    >>> tj.while_loop(lambda x: x < 10, lambda x: x + 3, tj.tensor(0))
    tensor(12)
    """
    cap = _max_iterations(max_iterations)
    leaves, tree = flatten_leaves(init_val, "init_val", "while_loop")
    if _tracing():
        from .trace.regions import trace_while

        return tree_unflatten(tree, trace_while(cond_fun, body_fun, leaves, tree, cap))
    return tree_unflatten(tree, run_while(cond_fun, body_fun, leaves, tree, cap))


def run_while(cond_fun: Callable[[Any], Any], body_fun: Callable[[Any], Any],
              leaves: list[Tensor], tree: TreeDef, cap: int | None) -> list[Tensor]:
    """The loop in Python (eager mode, and the real values of a traced call)."""
    trips = 0
    init = leaves
    while cap is None or trips < cap:
        go = check_pred("while_loop", cond_fun(tree_unflatten(tree, leaves)), "cond_fun")
        if not truth(go):
            break
        leaves = check_carry("while_loop", "init_val", tree, init,
                             body_fun(tree_unflatten(tree, leaves)), "body_fun's result")
        trips += 1
    if cap is None and is_grad_enabled() and any(x.requires_grad for x in leaves):
        leaves = list(_NoBackward.apply(*leaves))
    return leaves


# ---- fori_loop ------------------------------------------------------------------------------


def _static_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def fori_loop(lower: Any, upper: Any, body_fun: Callable[[Any, Any], Any],
              init_val: Any) -> Any:
    """`val = body_fun(i, val)` for i in range(lower, upper) (JAX's lax.fori_loop); `i` is a
    0-d int64 tensor. With Python int bounds it is a `scan` (reverse-differentiable); with
    tensor bounds (or an int argument a jitted function traces as a value) a `while_loop`,
    whose one compile serves every trip count.

    >>> import tracejit as tj
    >>> tj.fori_loop(1, 4, lambda i, x: x * i, tj.tensor(1.0))
    tensor(6.)
    """
    for name, v in (("lower", lower), ("upper", upper)):
        if not (_static_int(v) or isinstance(v, Tensor) or type(v).__name__ == "TracedScalar"):
            raise TypeError(located(f"tracejit.fori_loop: {name} must be an int or a 0-d "
                                    f"integer tensor, got {type(v).__name__}"))
        if isinstance(v, Tensor) and (v.shape != () or v.dtype.is_floating_point):
            raise TypeError(located(f"tracejit.fori_loop: {name} must be a 0-d integer tensor, "
                                    f"got {_type_str(v)}"))
    leaves, tree = flatten_leaves(init_val, "init_val", "fori_loop")

    def body(i: Tensor, val: Any) -> Any:
        out = body_fun(i, val)
        check_carry("fori_loop", "init_val", tree, leaves, out, "body_fun's result")
        return out

    if _static_int(lower) and _static_int(upper):
        n = max(int(upper) - int(lower), 0)

        def step(c: Any, _: Any) -> Any:
            i, val = c
            return (i + 1, body(i, val)), None

        (_, out), _ = scan(step, (tensor(int(lower)), init_val), None, length=n)
        return out

    def start(v: Any) -> Tensor:
        return v.to(dt.int64).clone() if isinstance(v, Tensor) else \
            tensor(0) + v  # (a traced scalar stays a graph value)

    hi = upper.to(dt.int64) if isinstance(upper, Tensor) else upper
    _, out = while_loop(lambda c: c[0] < hi, lambda c: (c[0] + 1, body(c[0], c[1])),
                        (start(lower), init_val))
    return out


# ---- scan -----------------------------------------------------------------------------------


def scan(f: Callable[[Any, Any], Any], init: Any, xs: Any = None, length: int | None = None,
         reverse: bool = False, unroll: int = 1) -> tuple[Any, Any]:
    """`carry, y = f(carry, x)` over the leading dimension of `xs` (JAX's lax.scan); returns
    the final carry and the ys stacked. `xs` is a pytree of tensors sharing their leading
    size (or None, with `length`); `reverse` scans from the end (the ys keep their order).
    Reverse-differentiable; under @jit one loop region. (`unroll` is accepted for JAX's
    signature; the compiled loop is not unrolled.)

    >>> import tracejit as tj
    >>> tj.scan(lambda c, x: (c + x, c * x), tj.tensor(0.0), tj.tensor([1.0, 2.0, 3.0]))
    (tensor(6.), tensor([0., 2., 9.]))
    """
    if not isinstance(unroll, (int, bool)) or unroll < 1:
        raise ValueError(located(f"tracejit.scan: unroll must be an int >= 1, got {unroll!r}"))
    x_leaves, x_tree = tree_flatten(xs)
    for k, x in enumerate(x_leaves):
        if not isinstance(x, Tensor):
            x_leaves[k] = x = as_leaf(x, "xs", "scan")
        if x.ndim == 0:
            raise ValueError(located(f"tracejit.scan: xs leaf {k} is 0-d; every leaf of xs "
                                     "needs a leading dimension to scan over"))
    sizes = sorted({x.shape[0] for x in x_leaves})
    if length is not None:
        if not _static_int(length) or length < 0:
            raise ValueError(located(f"tracejit.scan: length must be an int >= 0, got "
                                     f"{length!r}"))
        if sizes and sizes != [length]:
            raise ValueError(located(f"tracejit.scan: length={length} disagrees with the "
                                     f"leading sizes of xs, {sizes}"))
    elif not sizes:
        raise ValueError(located("tracejit.scan: no xs to scan over and no length given; pass "
                                 "length= (JAX's rule)"))
    elif len(sizes) > 1:
        raise ValueError(located(f"tracejit.scan: the leaves of xs have different leading "
                                 f"sizes, {sizes}; they must all be the same"))
    n = int(length) if length is not None else sizes[0]
    leaves, tree = flatten_leaves(init, "init", "scan")
    if _tracing():
        from .trace.regions import trace_scan

        carry, ys = trace_scan(f, leaves, tree, x_leaves, x_tree, n, bool(reverse))
    else:
        carry, ys = run_scan(f, leaves, tree, x_leaves, x_tree, n, bool(reverse))
    return carry, ys


def x_slice(x_leaves: list[Tensor], x_tree: TreeDef, t: int) -> Any:
    return tree_unflatten(x_tree, [x[t] for x in x_leaves])


def split_step(out: Any) -> tuple[Any, Any]:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(located("tracejit.scan: f must return a pair (carry, y), got "
                                f"{type(out).__name__}"))
    return out[0], out[1]


def run_scan(f: Callable[[Any, Any], Any], leaves: list[Tensor], tree: TreeDef,
             x_leaves: list[Tensor], x_tree: TreeDef, n: int,
             reverse: bool) -> tuple[Any, Any]:
    """The scan in Python (eager mode, and the real values of a traced call)."""
    from .functional import stack

    init = leaves
    ys: list[list[Tensor]] = []
    y_tree: TreeDef | None = None
    for t in (range(n - 1, -1, -1) if reverse else range(n)):
        c, y = split_step(f(tree_unflatten(tree, leaves), x_slice(x_leaves, x_tree, t)))
        leaves = check_carry("scan", "init", tree, init, c, "f's carry")
        y_leaves, yt = flatten_leaves(y, "f's y", "scan")
        if y_tree is None:
            y_tree = yt
        elif yt != y_tree or any(a.shape != b.shape or a.dtype is not b.dtype
                                 for a, b in zip(ys[0], y_leaves)):
            raise TypeError(located("tracejit.scan: f must return ys of the same structure "
                                    "and types on every iteration"))
        ys.append(y_leaves)
    if y_tree is None:  # no iteration: f's ys are typed by one call whose results are dropped
        zeros = [Tensor._make(np.zeros(x.shape[1:], x.dtype.np), x.dtype) for x in x_leaves]
        with no_grad():
            _, y = split_step(f(tree_unflatten(tree, leaves), tree_unflatten(x_tree, zeros)))
        y_leaves, y_tree = flatten_leaves(y, "f's y", "scan")
        stacked = [Tensor._make(np.zeros((0, *y.shape), y.dtype.np), y.dtype)
                   for y in y_leaves]
    else:
        if reverse:
            ys.reverse()
        stacked = [stack([step[k] for step in ys]) for k in range(len(ys[0]))]
    return tree_unflatten(tree, leaves), tree_unflatten(y_tree, stacked)


__all__ = ["cond", "while_loop", "fori_loop", "scan"]
