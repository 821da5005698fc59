"""The backward of control flow traced under @jit (trace/regions.py makes these nodes): a
differentiable `scan`'s is a `scan` in the other direction over the VJP of one step, a
`cond`'s a `cond` on the same predicate over the VJPs of its branches. Each recomputes its
step or branch with autograd from what the forward saved, so when `loss.backward()` runs
inside a trace it records one more region rather than an unrolled chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..autograd import Function, FunctionCtx
from ..control import split_step
from ..ops.registry import TensorType
from ..pytree import TreeDef, tree_flatten, tree_unflatten
from ..tensor import Tensor


class ScanSpec:
    """What a traced scan's backward needs besides the cotangents."""

    def __init__(self, f: Callable[[Any, Any], Any], tree: TreeDef, x_tree: TreeDef,
                 n_carry: int, n_x: int, n: int, reverse: bool, starts: list[Tensor],
                 xs: list[Tensor]) -> None:
        self.f, self.tree, self.x_tree = f, tree, x_tree
        self.n_carry, self.n_x, self.n, self.reverse = n_carry, n_x, n, reverse
        self.starts, self.xs = starts, xs
        self.n_params = 0


class ScanGrad(Function):
    """A differentiable scan inside @jit. Its backward is itself a scan, in the other
    direction, whose body recomputes one step from the carry it began with (saved by the
    forward node) and takes that step's VJP with autograd; traced, it is one more loop
    region, so a jitted training step through a scan compiles to two loops, not an unrolled
    chain."""

    @staticmethod
    def forward(ctx: FunctionCtx, spec: ScanSpec, *args: Tensor) -> tuple[Tensor, ...]:
        # args: carry, xs, params (what gets a gradient), then the results, returned as they
        # are (computed already): this node only gives them their backward
        ctx.set_materialize_grads(False)
        k = spec.n_carry + spec.n_x
        # saved as PyTorch saves (the jit's escape check knows them), the spec keeps no tensor
        ctx.save_for_backward(*spec.starts, *spec.xs, *args[k:k + spec.n_params])
        spec.starts, spec.xs = [], []
        ctx.spec = spec  # type: ignore[attr-defined]
        ctx.n_args = 1 + len(args)  # type: ignore[attr-defined]
        return tuple(args[k + spec.n_params:])

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Any) -> Any:
        spec: ScanSpec = ctx.spec  # type: ignore[attr-defined]
        saved = list(ctx.saved_tensors)
        nc, nx = spec.n_carry, spec.n_x
        out = scan_vjp(spec, saved[:nc], saved[nc:nc + nx], saved[nc + nx:], list(grads))
        return out + (None,) * (ctx.n_args - len(out))  # type: ignore[attr-defined]


def floating(t: Tensor) -> bool:
    return t.dtype.is_floating_point


def scan_vjp(spec: ScanSpec, starts: list[Tensor], xs: list[Tensor], params: list[Tensor],
              grads: list[Any]) -> tuple[Any, ...]:
    """The gradients of a scan's carry, xs and params, by a scan over the steps reversed."""
    from .. import autograd
    from ..creation import zeros_like

    nc = spec.n_carry
    g_c = [zeros_like(s[0]) if g is None else g for s, g in zip(starts, grads[:nc])]
    g_ys = [g for g in grads[nc:]]
    ys_live = [k for k, g in enumerate(g_ys) if g is not None]
    c_float = [k for k in range(nc) if floating(starts[k])]
    x_float = [k for k in range(len(xs)) if floating(xs[k])]

    def vjp_step(acc: Any, inp: Any) -> Any:
        gc, gp = acc
        c_t, x_t, gy_t = inp
        with autograd.enable_grad():
            cs = [c.detach().requires_grad_() if k in c_float else c.detach()
                  for k, c in enumerate(c_t)]
            xv = [x.detach().requires_grad_() if k in x_float else x.detach()
                  for k, x in enumerate(x_t)]
            new_c, y = split_step(spec.f(tree_unflatten(spec.tree, cs),
                                         tree_unflatten(spec.x_tree, xv)))
            c_leaves = tree_flatten(new_c)[0]
            y_leaves = tree_flatten(y)[0]
            outs: list[Tensor] = []
            cots: list[Tensor] = []
            for k in c_float:
                if isinstance(c_leaves[k], Tensor) and c_leaves[k].requires_grad:
                    outs.append(c_leaves[k])
                    cots.append(gc[c_float.index(k)])
            for j, k in enumerate(ys_live):
                if isinstance(y_leaves[k], Tensor) and y_leaves[k].requires_grad:
                    outs.append(y_leaves[k])
                    cots.append(gy_t[j])
            wrt = [cs[k] for k in c_float] + [xv[k] for k in x_float] + params
            raw = list(autograd.grad(outs, wrt, cots, allow_unused=True)) if outs else \
                [None] * len(wrt)
        got = [zeros_like(w) if g is None else g for g, w in zip(raw, wrt)]
        n1, n2 = len(c_float), len(c_float) + len(x_float)
        return (list(got[:n1]), [a + b for a, b in zip(gp, got[n2:])]), list(got[n1:n2])

    from ..control import scan

    init = ([g_c[k] for k in c_float], [zeros_like(p) for p in params])
    (gc, gp), g_x = scan(vjp_step, init, (starts, xs, [g_ys[k] for k in ys_live]),
                         reverse=not spec.reverse)
    out: list[Any] = [None] * nc + [None] * len(xs) + list(gp)
    for j, k in enumerate(c_float):
        out[k] = gc[j]
    for j, k in enumerate(x_float):
        out[nc + k] = g_x[j]
    return (None, *out)


class CondSpec:
    def __init__(self, true_fun: Callable[..., Any], false_fun: Callable[..., Any],
                 op_tree: TreeDef, n_leaves: int, n_params: int,
                 out_types: list[TensorType]) -> None:
        self.fns = (true_fun, false_fun)
        self.op_tree, self.n_leaves, self.n_params = op_tree, n_leaves, n_params
        self.out_types = out_types


class CondGrad(Function):
    """A differentiable cond inside @jit: its backward is a cond on the same predicate whose
    branches recompute their side with autograd and take its VJP, so the compiled backward
    follows the predicate of each call (as JAX's transposed cond does)."""

    @staticmethod
    def forward(ctx: FunctionCtx, spec: CondSpec, pred: Tensor,
                *args: Tensor) -> tuple[Tensor, ...]:
        ctx.set_materialize_grads(False)
        k = spec.n_leaves + spec.n_params
        ctx.save_for_backward(pred, *args[:k])
        ctx.spec = spec  # type: ignore[attr-defined]
        ctx.n_args = 2 + len(args)  # type: ignore[attr-defined]
        return tuple(args[k:])

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Any) -> Any:
        from .. import autograd
        from ..control import cond
        from ..creation import zeros, zeros_like

        spec: CondSpec = ctx.spec  # type: ignore[attr-defined]
        pred, *rest = ctx.saved_tensors
        nl = spec.n_leaves
        leaves, params = rest[:nl], rest[nl:]
        cots = [zeros(t.shape, dtype=t.dtype) if g is None else g
                for g, t in zip(grads, spec.out_types)]
        floats = [k for k, t in enumerate(leaves) if floating(t)]

        def vjp(fn: Callable[..., Any]) -> Callable[..., Any]:
            def run(*a: Tensor) -> tuple[Tensor, ...]:
                ls, cs = a[:nl], a[nl:]
                with autograd.enable_grad():
                    xs = [x.detach().requires_grad_() if k in floats else x.detach()
                          for k, x in enumerate(ls)]
                    out = tree_flatten(fn(*tree_unflatten(spec.op_tree, xs)))[0]
                    pairs = [(o, c) for o, c in zip(out, cs)
                             if isinstance(o, Tensor) and o.requires_grad]
                    wrt = [xs[k] for k in floats] + list(params)
                    raw = list(autograd.grad([o for o, _ in pairs], wrt, [c for _, c in pairs],
                                             allow_unused=True)) if pairs else [None] * len(wrt)
                return tuple(zeros_like(w) if g is None else g for g, w in zip(raw, wrt))

            return run

        got = cond(pred, vjp(spec.fns[0]), vjp(spec.fns[1]), *leaves, *cots)
        out: list[Any] = [None] * nl + list(got[len(floats):])
        for j, k in enumerate(floats):
            out[k] = got[j]
        res = (None, None, *out)
        return res + (None,) * (ctx.n_args - len(res))  # type: ignore[attr-defined]
