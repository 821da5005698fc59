"""The dynamic autograd graph: nodes (grad_fn), the backward engine, grad modes, custom
Functions, hooks and in-place bookkeeping. VJPs come from the op registry and are run through
dispatch, so a backward pass inside @jit is traced like the forward."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import dispatch as _dispatch_mod
from .dispatch import STATE
from .ops.registry import OpDef, TensorType, VjpContext
from .tensor import Tensor, _raw

# ---- grad modes ---------------------------------------------------------------------------------


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.prev: list[bool] = []

    def __enter__(self) -> None:
        self.prev.append(STATE.grad_enabled)
        STATE.grad_enabled = self.enabled

    def __exit__(self, *exc: Any) -> None:
        STATE.grad_enabled = self.prev.pop()

    def __call__(self, fn: Any = None) -> Any:  # usable bare: @no_grad as well as @no_grad()
        return super().__call__(fn)


class no_grad(_GradMode):  # noqa: N801 - PyTorch's name
    """Disable gradient recording: ``with tracejit.no_grad(): w -= lr * w.grad``."""

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(_GradMode):  # noqa: N801
    def __init__(self) -> None:
        super().__init__(True)


class set_grad_enabled(_GradMode):  # noqa: N801
    def __init__(self, mode: bool) -> None:
        super().__init__(bool(mode))
        self._set_now = STATE.grad_enabled
        STATE.grad_enabled = bool(mode)  # also works as a plain call, like PyTorch

    def __enter__(self) -> None:
        self.prev.append(self._set_now)
        STATE.grad_enabled = self.enabled


class inference_mode(_GradMode):  # noqa: N801
    def __init__(self, mode: bool = True) -> None:
        super().__init__(not mode)


def is_grad_enabled() -> bool:
    return STATE.grad_enabled


# ---- nodes --------------------------------------------------------------------------------------


class Node:
    """A grad_fn. `next_functions` is ((node, output_nr), ...), one per input, as PyTorch."""

    next_functions: tuple[tuple[Node | None, int], ...] = ()

    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.name()} object at {id(self):#x}>"

    def apply(self, grads: list[Any], create_graph: bool) -> Sequence[Any]:
        raise NotImplementedError

    def release(self) -> None:
        """Free saved tensors (after a backward without retain_graph)."""

    def register_hook(self, fn: Callable) -> Any:
        hooks = self.__dict__.setdefault("_post_hooks", [])
        hooks.append(fn)
        return _Handle(hooks, fn)


class AccumulateGrad(Node):
    def __init__(self, variable: Tensor) -> None:
        self.variable = variable

    def apply(self, grads: list[Any], create_graph: bool) -> Sequence[Any]:
        accumulate(self.variable, grads[0], create_graph)
        return ()


class SavedTensor:
    """A tensor kept for backward, with the version it had (PyTorch's SavedVariable)."""

    __slots__ = ("t", "version", "is_out")

    def __init__(self, t: Tensor, is_out: bool = False) -> None:
        self.t = t
        self.version = t._version.v
        self.is_out = is_out

    def unpack(self, node: Node) -> Tensor:
        t = self.t
        if t._version.v != self.version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{t.dtype.name} {list(t.shape)}], which is "
                f"{'the output' if self.is_out else 'an input'} of {node.name()}, is at version "
                f"{t._version.v}; expected version {self.version} instead. Hint: replace the "
                "in-place operation (x += ..., x[...] = ..., x.add_(...)) with an out-of-place one"
            )
        return t


_FREED = RuntimeError(
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time."
)


class OpNode(Node):
    """The grad_fn of a registered op: runs the op's VJP on what attach() saved."""

    op: OpDef
    attrs: dict[str, Any]
    in_types: Sequence[Any]
    needs: tuple[bool, ...]
    saved: tuple[list[Any], SavedTensor | None] | None  # None once released

    def apply(self, grads: list[Any], create_graph: bool) -> Sequence[Any]:
        if self.saved is None:
            raise RuntimeError(_FREED.args[0])
        g = grads[0]
        inputs = [s.unpack(self) if isinstance(s, SavedTensor) else s for s in self.saved[0]]
        saved_out = self.saved[1]
        out = _unpack_out(saved_out, self) if saved_out is not None else None
        ctx = VjpContext(inputs, out, self.in_types, self.attrs, self.needs)
        assert self.op.vjp is not None
        return self.op.vjp(ctx, g)

    def release(self) -> None:
        self.saved = None


def _unpack_out(s: SavedTensor, node: OpNode) -> Tensor:
    s.unpack(node)  # version check
    t = _alias(s.t)  # a fresh alias: no reference cycle to the output
    t._version = s.t._version
    t._grad_fn, t._requires_grad = node, True
    return t


@functools.cache
def _node_class(name: str) -> type[OpNode]:
    camel = "".join(p.capitalize() for p in name.split("_"))
    return type(f"{camel}Backward0", (OpNode,), {})


def _edge(t: Any) -> tuple[Node | None, int]:
    if not isinstance(t, Tensor) or not t._requires_grad:
        return (None, 0)
    if t._grad_fn is not None:
        return (t._grad_fn, t._out_nr)
    acc = t._accumulator
    if acc is None:
        acc = t._accumulator = AccumulateGrad(t)
    return (acc, 0)


def attach(op: OpDef, args: Sequence[Any], attrs: dict[str, Any], types: Sequence[Any],
           out: Tensor) -> None:
    """Record the op in the autograd graph (called by dispatch when an input requires grad)."""
    node = _node_class(op.name)()
    node.op, node.attrs, node.in_types = op, attrs, types
    node.next_functions = tuple([_edge(a) for a in args])
    node.needs = tuple(e[0] is not None for e in node.next_functions)
    saves = op.saves
    all_inputs = "inputs" in saves
    saved_in = [
        (SavedTensor(a) if isinstance(a, Tensor) else a) if (all_inputs or i in saves) or
        not isinstance(a, Tensor) else None
        for i, a in enumerate(args)
    ]
    # the output is kept without its Tensor object (which owns this node): no reference cycle
    saved_out = SavedTensor(_alias(out), True) if "out" in saves else None
    if saved_out is not None:
        saved_out.t._version = out._version
        saved_out.version = out._version.v
    node.saved = (saved_in, saved_out)
    out._grad_fn = node
    out._requires_grad = True


_dispatch_mod._attach = attach


class _Handle:
    def __init__(self, hooks: list[Any], fn: Any) -> None:
        self.hooks, self.fn = hooks, fn

    def remove(self) -> None:
        if self.fn in self.hooks:
            self.hooks.remove(self.fn)


def register_hook(t: Tensor, hook: Callable) -> _Handle:
    if not t._requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    if t._hooks is None:
        t._hooks = []
    t._hooks.append(hook)
    if t._grad_fn is not None:
        hooks = t._grad_fn.__dict__.setdefault("_pre_hooks", {})
        hooks.setdefault(t._out_nr, t._hooks)
    return _Handle(t._hooks, hook)


def retain_grad(t: Tensor) -> None:
    if t._grad_fn is None:
        return
    if t._retains_grad:
        return
    t._retains_grad = True
    import weakref

    ref = weakref.ref(t)

    def keep(g: Tensor) -> None:
        tt = ref()
        if tt is not None:
            # (a copy: the gradient flowing on may also reach a leaf, or be the user's own)
            tt.grad = g.detach().clone() if tt.grad is None else tt.grad + g.detach()

    register_hook(t, keep)


# ---- in place and aliases -----------------------------------------------------------------------


def detach_alias(t: Tensor) -> Tensor:
    """A new tensor sharing `t`'s storage (same array object) and version counter."""
    out = Tensor._make(_raw(t), t._dtype, t._device)
    out._version = t._version
    out._base = t._base
    if STATE.tracer is not None:
        STATE.tracer.alias(t, out)
    return out


def _alias(t: Tensor) -> Tensor:
    """A tensor object sharing `t`'s array, for autograd's own bookkeeping (a saved output);
    a lazy replay is told, so the alias gets the value its segment computes."""
    out = Tensor._make(_raw(t), t._dtype, t._device)
    tracer = STATE.tracer
    if tracer is not None and tracer.lazy:
        tracer.alias(t, out)
    return out


def assign_inplace(target: Tensor, result: Tensor) -> Tensor:
    """Write `result` into `target`'s storage, as an in-place op does, keeping autograd honest."""
    if STATE.grad_enabled:
        if target._grad_fn is None and target._requires_grad:
            raise RuntimeError(
                "a leaf Variable that requires grad is being used in an in-place operation; "
                "wrap the update in `with tracejit.no_grad():`"
            )
        if target._base is not None and result._requires_grad and (
                target._base._requires_grad or target._requires_grad):
            raise RuntimeError(
                "in-place changes to a view of a tensor that requires grad are not supported by "
                "tracejit's autograd; use an out-of-place operation (for example torch.where or "
                "cat) instead"
            )
    if result.shape != target.shape:
        if result.ndim > target.ndim or any(
                a != b and a != 1 for a, b in zip(result.shape[::-1], target.shape[::-1])):
            raise RuntimeError(
                f"output with shape {list(target.shape)} doesn't match the broadcast shape "
                f"{list(result.shape)} of an in-place operation; use the out-of-place form"
            )
    if result.dtype is not target.dtype:
        if result.dtype.category > target.dtype.category:
            raise RuntimeError(
                f"result type {result.dtype.name} can't be cast to the desired output type "
                f"{target.dtype.name} of an in-place operation; use the out-of-place form"
            )
    if not _raw(target).flags.writeable:
        raise RuntimeError(
            "unsupported operation: more than one element of the written-to tensor refers to a "
            "single memory location (an expanded tensor); call .clone() before writing to it"
        )
    if STATE.grad_enabled and result._requires_grad:
        _keep_original(result._grad_fn, target)
    tracer = STATE.tracer
    if tracer is not None and tracer.lazy:
        tracer.assign(target, result)  # deferred, or written now after a flush
        target._version.v += 1
    else:
        if tracer is not None:
            tracer.before_write(target)  # (an inspection trace keeps the old value)
        if target.is_cuda:
            from .cuda.transfer import write_into

            write_into(target, result)
        else:
            np.copyto(target._data, result._data, casting="unsafe")
        target._version.v += 1
        if tracer is not None:
            tracer.mutate(target, result)
    if STATE.grad_enabled:
        if result._requires_grad:
            target._grad_fn, target._out_nr = result._grad_fn, result._out_nr
            target._requires_grad = True
        elif target._grad_fn is not None:
            # overwritten by a value without history (fill_, zero_, copy_ of a constant): the
            # old history no longer reaches the value, so its gradient is zero
            target._grad_fn, target._requires_grad = None, False
    return target


def _keep_original(node: Any, target: Tensor) -> None:
    """The in-place op's own node may have saved `target` (or a view of it) before the write,
    as `x.mul_(y)` saves x for y's gradient: keep a copy of the original, as PyTorch does."""
    saved = getattr(node, "saved", None)
    if saved is None:
        return
    for s in saved[0]:
        if isinstance(s, SavedTensor) and s.t._version is target._version:
            snap = Tensor._make(s.t._data.copy(), s.t._dtype, s.t._device)
            if STATE.tracer is not None:  # the copy holds the value from before the write
                STATE.tracer.snapshot(s.t, snap)
            snap._version.v = s.version
            snap._grad_fn, snap._out_nr = s.t._grad_fn, s.t._out_nr  # for create_graph
            snap._requires_grad = s.t._requires_grad
            s.t = snap


# ---- un-broadcasting, accumulation --------------------------------------------------------------


def sum_to(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum a broadcast gradient back to `shape` (done once, centrally, for every op)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    dims = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    out = g.sum(dim=dims, keepdim=True) if dims else g
    return out.reshape(shape) if out.shape != shape else out


def accumulate(var: Tensor, g: Tensor, create_graph: bool) -> None:
    if var._hooks:
        for h in var._hooks:
            r = h(g)
            if r is not None:
                if r is not g:
                    _protect(r)  # the user's hook may hand back a tensor it keeps
                g = r
    if not create_graph:
        g = g.detach()
    if var.grad is None:
        # .grad must own its memory, as PyTorch's does: a gradient may be the user's own (the
        # `gradient=` of backward, a hook's or a custom Function's result), may have been given
        # to another leaf already (add's VJP hands the same g to both inputs) or be a view
        # (expand gives a read-only one). Only a fresh, contiguous temporary nobody else was
        # given is kept as it is (torch "steals" such a buffer too); anything else is copied.
        d = _raw(g)  # (its layout and identity only)
        if not create_graph and (d.base is not None or not d.flags.writeable or
                                 not d.flags.c_contiguous or id(d) in _GIVEN):
            g = g.clone()
            d = _raw(g)
        _GIVEN[id(d)] = d
        var.grad = g
    elif create_graph or STATE.grad_enabled and var.grad._requires_grad:
        var.grad = var.grad + g
    else:
        var.grad.add_(g)


# The arrays a leaf's .grad must not take as its own during the current backward pass: those
# already handed to a leaf and those the user holds (root gradients, hook and custom-Function
# results). Keyed by id; the value keeps the array alive so an id is not reused meanwhile.
_GIVEN: dict[int, np.ndarray] = {}


def _protect(t: Any) -> None:
    if isinstance(t, Tensor):
        d = _raw(t)
        _GIVEN[id(d)] = d
        if d.base is not None:
            _GIVEN[id(d.base)] = d.base


# ---- the engine ---------------------------------------------------------------------------------


def _topo(roots: Sequence[Node]) -> dict[Node, int]:
    """Dependency counts: how many edges point at each node from nodes reachable from roots."""
    deps: dict[Node, int] = {}
    seen = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        for nxt, _ in n.next_functions:
            if nxt is not None:
                deps[nxt] = deps.get(nxt, 0) + 1
                stack.append(nxt)
    return deps


def run_backward(roots: Sequence[Tensor], grads: Sequence[Tensor], retain_graph: bool,
                 create_graph: bool, capture: dict[tuple[int, int], Any] | None = None) -> None:
    """Propagate `grads` from `roots`. With `capture` ({(id(node), output_nr): None}), gradients
    arriving at those slots are stored there instead of being accumulated into .grad."""
    root_nodes: list[Node] = []
    pending: dict[Node, list[Any]] = {}
    for t, g in zip(roots, grads):
        node, nr = _edge(t)
        if node is None:
            continue
        slot = pending.setdefault(node, [])
        _add_grad(slot, nr, g)
        root_nodes.append(node)
    deps = _topo(root_nodes)
    ready = [n for n in dict.fromkeys(root_nodes) if deps.get(n, 0) == 0]
    needed = _needed(root_nodes, capture) if capture is not None else None
    prev_mode = STATE.grad_enabled
    STATE.grad_enabled = create_graph
    outer = dict(_GIVEN)  # (a backward run from a hook inside another one)
    _GIVEN.clear()
    for g in grads:
        _protect(g)  # the caller's `gradient=`: never a leaf's .grad itself
    try:
        while ready:
            node = ready.pop()
            grads_in = pending.pop(node, [])
            _run_hooks(node, grads_in)
            if capture is not None:
                for nr, gi in enumerate(grads_in):
                    if (id(node), nr) in capture and gi is not None:
                        capture[(id(node), nr)] = gi
            if needed is None or id(node) in needed:
                if isinstance(node, AccumulateGrad):
                    if capture is None and grads_in and grads_in[0] is not None:
                        node.apply(grads_in, create_graph)
                    outs: Sequence[Any] = ()
                elif any(g is not None for g in grads_in):
                    outs = _apply(node, grads_in, create_graph)
                    if isinstance(node, BackwardCFunction):
                        for gi in outs:
                            _protect(gi)  # the user's backward may return a tensor it holds
                else:
                    outs = [None] * len(node.next_functions)
                if not retain_graph:
                    node.release()
            else:
                outs = [None] * len(node.next_functions)
            for (nxt, nr), gi in zip(node.next_functions, outs):
                if nxt is None:
                    continue
                if gi is not None:
                    _add_grad(pending.setdefault(nxt, []), nr, gi)
                deps[nxt] -= 1
                if deps[nxt] == 0:
                    ready.append(nxt)
            for nxt, _ in node.next_functions[len(outs):]:
                if nxt is not None:
                    deps[nxt] -= 1
                    if deps[nxt] == 0:
                        ready.append(nxt)
            for h in node.__dict__.get("_post_hooks", ()) if hasattr(node, "__dict__") else ():
                h(outs, grads_in)
    finally:
        STATE.grad_enabled = prev_mode
        _GIVEN.clear()
        _GIVEN.update(outer)


def _add_grad(slot: list[Any], nr: int, g: Any) -> None:
    while len(slot) <= nr:
        slot.append(None)
    slot[nr] = g if slot[nr] is None else slot[nr] + g


def _run_hooks(node: Node, grads_in: list[Any]) -> None:
    hooks = getattr(node, "__dict__", {}).get("_pre_hooks")
    if not hooks:
        return
    for nr, hs in hooks.items():
        if nr < len(grads_in) and grads_in[nr] is not None:
            for h in list(hs):
                r = h(grads_in[nr])
                if r is not None:
                    if r is not grads_in[nr]:
                        _protect(r)
                    grads_in[nr] = r


def _apply(node: Node, grads_in: list[Any], create_graph: bool) -> list[Any]:
    outs = list(node.apply(grads_in, create_graph))
    if len(outs) != len(node.next_functions):
        raise RuntimeError(
            f"function {node.name()} returned an incorrect number of gradients (expected "
            f"{len(node.next_functions)}, got {len(outs)})"
        )
    types = getattr(node, "in_types", None)
    for i, (gi, (nxt, _)) in enumerate(zip(outs, node.next_functions)):
        if gi is None or nxt is None:
            outs[i] = None
            continue
        if not isinstance(gi, Tensor):
            raise RuntimeError(f"function {node.name()} returned a gradient of type "
                               f"{type(gi).__name__} at position {i}; expected a Tensor or None")
        want = types[i] if types is not None else _input_type(nxt)
        if isinstance(want, TensorType):
            if _raw(gi).shape != want.shape:  # (layout only: no deferred value read)
                gi = sum_to(gi, want.shape)
            if gi.dtype is not want.dtype and want.dtype.is_floating_point:
                gi = gi.to(want.dtype)
        outs[i] = gi
    return outs


def _input_type(nxt: Node) -> Any:
    if isinstance(nxt, AccumulateGrad):
        return nxt.variable._type()
    return None


def _needed(roots: Sequence[Node], capture: dict[tuple[int, int], Any]) -> set[int]:
    """Nodes from which a captured slot can be reached (only those must run)."""
    targets = {k[0] for k in capture}
    memo: dict[int, bool] = {}

    def reaches(n: Node) -> bool:
        k = id(n)
        if k in memo:
            return memo[k]
        memo[k] = k in targets
        stack = [(n, iter(n.next_functions))]
        order = []
        while stack:
            cur, it = stack[-1]
            advanced = False
            for nxt, _ in it:
                if nxt is not None and id(nxt) not in memo:
                    memo[id(nxt)] = id(nxt) in targets
                    stack.append((nxt, iter(nxt.next_functions)))
                    advanced = True
                    break
            if not advanced:
                stack.pop()
                order.append(cur)
        for cur in order:
            if any(nxt is not None and memo[id(nxt)] for nxt, _ in cur.next_functions):
                memo[id(cur)] = True
        return memo[k]

    for r in roots:
        reaches(r)
    return {k for k, v in memo.items() if v}


def _make_grads(outputs: Sequence[Tensor], grad_outputs: Sequence[Any] | None) -> list[Tensor]:
    grads = []
    for i, t in enumerate(outputs):
        g = None if grad_outputs is None else grad_outputs[i]
        if g is None:
            if t.numel() != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs; output {i} has "
                    f"shape {list(t.shape)}: pass gradient= (or grad_outputs=) of that shape"
                )
            g = t.new_ones(t.shape)
        elif not isinstance(g, Tensor):
            g = t.new_tensor(g)
        elif g.shape != t.shape:
            raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of "
                               f"{list(g.shape)} and output[{i}] has a shape of {list(t.shape)}")
        grads.append(g)
    return grads


def backward(tensors: Sequence[Tensor], grad_tensors: Sequence[Any] | None = None,
             retain_graph: bool | None = None, create_graph: bool = False,
             inputs: Any = None) -> None:
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    for t in tensors:
        if not t._requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a "
                               "grad_fn; did you forget requires_grad=True on a leaf, or run "
                               "the forward pass under no_grad()?")
    if isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors]
    grads = _make_grads(tensors, grad_tensors)
    retain = create_graph if retain_graph is None else retain_graph
    if inputs is not None:
        inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        got = grad(tensors, inputs, grads, retain_graph=retain, create_graph=create_graph,
                   allow_unused=True)
        outer = dict(_GIVEN)
        _GIVEN.clear()
        for g in grads:
            _protect(g)
        try:
            for t, gi in zip(inputs, got):
                if gi is not None:
                    accumulate(t, gi, create_graph)
        finally:
            _GIVEN.clear()
            _GIVEN.update(outer)
        return
    run_backward(tensors, grads, retain, create_graph)


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool | None = None,
         materialize_grads: bool = False) -> tuple[Tensor | None, ...]:
    """Gradients of `outputs` with respect to `inputs`, without touching any .grad."""
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    for t in outputs:
        if not t._requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a "
                               "grad_fn")
    for i, t in enumerate(inputs):
        if not t._requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors (input {i}) does not require "
                               "grad")
    grads = _make_grads(outputs, grad_outputs)
    capture: dict[tuple[int, int], Any] = {}
    slots = []
    for t in inputs:
        node, nr = _edge(t)
        assert node is not None
        capture[(id(node), nr)] = None
        slots.append((id(node), nr))
    retain = create_graph if retain_graph is None else retain_graph
    run_backward(outputs, grads, retain, create_graph, capture)
    result = []
    for i, s in enumerate(slots):
        g = capture[s]
        if g is None:
            if materialize_grads:
                g = inputs[i].new_zeros(inputs[i].shape)
            elif not allow_unused:
                raise RuntimeError(
                    f"One of the differentiated Tensors (input {i}) appears to not have been "
                    "used in the graph. Set allow_unused=True if this is the desired behavior."
                )
        elif not create_graph:
            g = g.detach()
        result.append(g)
    return tuple(result)


# ---- custom Functions ---------------------------------------------------------------------------


class FunctionCtx:
    def __init__(self) -> None:
        self._saved: list[Any] = []
        self.needs_input_grad: tuple[bool, ...] = ()
        self._non_diff: set[int] = set()
        self.materialize_grads = True
        self._freed = False
        self._node: Node | None = None

    def save_for_backward(self, *tensors: Any) -> None:
        self._saved = [SavedTensor(t) if isinstance(t, Tensor) else t for t in tensors]

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        if self._freed:
            raise RuntimeError(_FREED.args[0])
        node = self._node  # None when forward ran without recording a node
        return tuple((s.unpack(node) if node is not None else s.t)
                     if isinstance(s, SavedTensor) else s for s in self._saved)

    def mark_non_differentiable(self, *tensors: Tensor) -> None:
        self._non_diff.update(id(t) for t in tensors)

    def mark_dirty(self, *tensors: Tensor) -> None:
        pass  # in-place outputs keep their storage; version counters already moved

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = value


class BackwardCFunction(Node):
    def __init__(self, cls: Any, ctx: FunctionCtx, n_out: int,
                 out_types: list[TensorType]) -> None:
        self.cls, self.ctx, self.n_out, self.out_types = cls, ctx, n_out, out_types

    def apply(self, grads: list[Any], create_graph: bool) -> Sequence[Any]:
        grads = list(grads) + [None] * (self.n_out - len(grads))
        if self.ctx.materialize_grads:
            grads = [
                Tensor._make(np.zeros(t.shape, t.dtype.np), t.dtype) if g is None else g
                for g, t in zip(grads, self.out_types)
            ]
        out = self.cls.backward(self.ctx, *grads)
        out = out if isinstance(out, tuple) else (out,)
        n = len(self.next_functions)
        if len(out) > n and all(o is None for o in out[n:]):
            out = out[:n]
        return out

    def release(self) -> None:
        self.ctx._freed = True
        self.ctx._saved = []


class _FunctionMeta(type):
    def __init__(cls, name: str, bases: tuple, ns: dict) -> None:
        super().__init__(name, bases, ns)
        cls._backward_cls = type(f"{name}Backward", (BackwardCFunction,), {})


class Function(metaclass=_FunctionMeta):
    """A graph node with its own forward and backward (PyTorch's autograd.Function)."""

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("subclasses of Function must implement forward")

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Any) -> Any:
        raise NotImplementedError("subclasses of Function must implement backward")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        ctx = FunctionCtx()
        edges = tuple(_edge(a) for a in args)
        ctx.needs_input_grad = tuple(e[0] is not None for e in edges)
        with no_grad():
            out = cls.forward(ctx, *args, **kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        if not (STATE.grad_enabled and any(ctx.needs_input_grad)):
            return out
        tensors = [o for o in outs if isinstance(o, Tensor)]
        node = cls._backward_cls(cls, ctx, len(tensors), [t._type() for t in tensors])
        node.next_functions = edges
        ctx._node = node
        nr = 0
        for o in outs:
            if not isinstance(o, Tensor):
                continue
            if id(o) in ctx._non_diff:
                nr += 1
                continue
            if o._grad_fn is not None or any(o is a for a in args):
                pass  # an input returned as-is keeps its own history in PyTorch only as a view
            o._grad_fn, o._out_nr, o._requires_grad = node, nr, True
            nr += 1
        return out


# ---- the legacy Variable ----------------------------------------------------------------------


class _VariableMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, Tensor)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return isinstance(sub, type) and issubclass(sub, Tensor)


class Variable(metaclass=_VariableMeta):
    """torch.autograd.Variable, merged into Tensor since PyTorch 0.4: `Variable(t)` returns a
    new leaf tensor sharing `t`'s data (as torch does), and every tensor is a Variable."""

    def __new__(cls, data: Any = None, requires_grad: bool = False,  # type: ignore[misc]
                volatile: bool = False) -> Tensor:
        from .tensor import _from_value

        if data is None:
            data = []
        t = data if isinstance(data, Tensor) else _from_value(data, None, copy=False)
        out = detach_alias(t)  # a leaf whatever t was, as torch's Variable(t)
        return out.requires_grad_(True) if requires_grad else out
