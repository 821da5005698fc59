"""Convolution fusion (CPU): each `conv` becomes `conv_im2col` (its input's windows as
columns) and `conv_gemm` (the GEMM), with what only the conv feeds folded into it: the bias add
and a ReLU as the GEMM's epilogue, and an eval-mode BatchNorm (x * scale + shift per channel)
into the weight and bias (w * scale, bias * scale + shift). A `conv_weight_grad` of the same
input and attributes (the conv's backward) reads the forward's columns through
`conv_weight_grad_cols` instead of building them again. The gradient of a max pooling after a
ReLU (a zero fill, a scatter_add of each window's gradient at its argmax, and `* (y > 0)`)
becomes one `max_pool2d_relu_bwd` pass per plane. Runs after autodiff (the ops it makes
have no VJP) and before elementwise fusion. The bias and ReLU epilogue keeps every bit (it
rounds as the separate add and relu do); a folded BatchNorm rounds differently (the scale
applied to the weight before the sum rather than after it), within float32 rounding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..ir.graph import Const, Graph, Node, Value, walk
from ..ops import REGISTRY as R
from ..ops.conv import conv_gemm_op, conv_im2col_op, conv_weight_grad_cols_op
from ..ops.pool import max_pool2d_relu_bwd_op
from ..ops.registry import TensorType
from ..ops.structural import CONSTANT
from .cse import rewrite

# The most column elements kept alive from a forward conv to its weight gradient (64 MiB of
# float32); larger ones are built again, as the unfused program does, to bound peak memory.
SHARE_LIMIT = 1 << 24


def _compiles(t: TensorType, *more: TensorType) -> bool:
    """Would the conv rules compile this (float, CPU, no empty dims)? Otherwise left alone."""
    return all(u.dtype in (dt.float32, dt.float64) and u.device.type == "cpu" and
               0 not in u.shape for u in (t,) + more)


def _per_channel(n: Node, v: Value, name: str, producer: dict[Value, Node]) -> Value | None:
    """The 1-d tensor c when `n` is `name`(v, c.reshape(...)) (either order) with c per
    channel of v: reshaped to (O, 1, ...) as nn.Conv2d's bias, or (1, O, 1, ...) as
    batch_norm's scale and shift."""
    t = v.type
    if n.name != name or len(n.inputs) != 2 or n.out.type != t:
        return None
    other = n.inputs[1] if n.inputs[0] is v else n.inputs[0]
    if other is v or not isinstance(other, Value):
        return None
    r = producer.get(other)
    o, rest = t.shape[1], (1,) * (t.ndim - 2)
    if r is None or r.name != "reshape" or other.type.shape not in ((o,) + rest, (1, o) + rest):
        return None
    c = r.inputs[0]
    if not isinstance(c, Value) or c.type.shape != (o,) or c.type.dtype is not t.dtype:
        return None
    return c


@dataclass
class _Epilogue:
    """What a conv absorbs: conv + bias, then * scale + shift (an eval BatchNorm), then ReLU."""

    absorbed: list[Node] = field(default_factory=list)  # in graph order, the last one's
    bias: Value | None = None                             # result is the fused conv's
    scale: Value | None = None
    shift: Value | None = None
    act: str = ""


def _epilogue(conv: Node, uses: dict[Value, int], readers: dict[Value, Node],
              producer: dict[Value, Node]) -> _Epilogue:
    e = _Epilogue()
    cur = conv.out

    def reader() -> Node | None:
        return readers.get(cur) if uses.get(cur, 0) == 1 else None

    n = reader()
    if n is not None and (b := _per_channel(n, cur, "add", producer)) is not None:
        e.bias, cur = b, n.out
        e.absorbed.append(n)
        n = reader()
    if n is not None and (s := _per_channel(n, cur, "mul", producer)) is not None:
        m = readers.get(n.out) if uses.get(n.out, 0) == 1 else None
        t = _per_channel(m, n.out, "add", producer) if m is not None else None
        if m is not None and t is not None:
            e.scale, e.shift, cur = s, t, m.out
            e.absorbed += [n, m]
            n = reader()
    if n is not None and n.name == "relu" and n.out.type == cur.type:
        e.act = "relu"
        e.absorbed.append(n)
    return e


def _plan(g: Graph) -> dict[Node, _Epilogue]:
    uses: dict[Value, int] = g.uses()
    top = set(g.nodes)
    for n in walk(g.nodes):  # reads inside regions count as well
        if n not in top:
            for v in n.values_in():
                uses[v] = uses.get(v, 0) + 1
    producer = {o: n for n in g.nodes for o in n.outs}
    readers = {v: n for n in g.nodes for v in n.values_in()}
    plan: dict[Node, _Epilogue] = {}
    for n in g.nodes:
        if n.name != "conv" or not all(isinstance(v, Value) for v in n.inputs):
            continue
        x, w = n.inputs
        assert isinstance(x, Value) and isinstance(w, Value)
        if _compiles(n.out.type, x.type, w.type):
            plan[n] = _epilogue(n, uses, readers, producer)
    return plan


def _node(name: str, ins: tuple[Value, ...], loc: str, **attrs: Any) -> Node:
    op = R[name]
    t = op.infer([v.type for v in ins], **attrs)
    assert isinstance(t, TensorType)
    return Node(op, ins, (Value(t),), attrs, loc)


def _folded(conv: Node, e: _Epilogue, nodes: list[Node]) -> tuple[Value, Value | None]:
    """The weight and bias with an eval BatchNorm folded in (w * scale per output channel,
    bias * scale + shift), appended as nodes: computed each call from the current
    parameters and running statistics, a few hundred elements."""
    w = conv.inputs[1]
    assert isinstance(w, Value)
    if e.scale is None or e.shift is None:
        return w, e.bias
    s4 = _node("reshape", (e.scale,), conv.loc, shape=(w.type.shape[0],) +
               (1,) * (w.type.ndim - 1))
    w2 = _node("mul", (w, s4.out), conv.loc)
    nodes += [s4, w2]
    if e.bias is None:
        return w2.out, e.shift
    bs = _node("mul", (e.bias, e.scale), conv.loc)
    b2 = _node("add", (bs.out, e.shift), conv.loc)
    nodes += [bs, b2]
    return w2.out, b2.out


def _positive_zeros(n: Node | None) -> bool:
    """Is n a tensor of +0.0 (a constant or a `full`)? Adding onto it gives the addend's
    bits, except -0.0 + +0.0 = +0.0, which the fused kernel's +0.0 start repeats."""
    if n is None:
        return False
    if n.name == "full":
        v = n.attrs["value"]
        return v == 0 and np.copysign(1.0, v) > 0
    if n.op is CONSTANT:
        a = np.asarray(n.attrs["value"])
        return a.dtype.kind == "f" and not np.any(a) and not np.any(np.signbit(a))
    return False


def _pool_relu_bwd(n: Node, uses: dict[Value, int],
                   producer: dict[Value, Node]) -> tuple[Value, Value, Value] | None:
    """(g, idx, y) when n is reshape(scatter_add(zeros, idx, g, dim=2)) * (y > 0) with idx
    a max-pooling's argmax: the backward of max_pool2d after a ReLU, as autograd writes it."""
    if n.name != "mul" or len(n.inputs) != 2 or not all(isinstance(v, Value) for v in n.inputs):
        return None
    for r, m in (n.inputs, n.inputs[::-1]):
        assert isinstance(r, Value) and isinstance(m, Value)
        rn, mn = producer.get(r), producer.get(m)
        if rn is None or mn is None or rn.name != "reshape" or mn.name != "gt":
            continue
        y, zero = mn.inputs
        if not isinstance(y, Value) or not isinstance(zero, Const) or zero.value != 0 or \
                y.type.ndim != 4 or r.type != y.type or n.out.type != y.type:
            continue
        sv = rn.inputs[0]
        if not isinstance(sv, Value):
            continue
        sn = producer.get(sv)
        if sn is None or sn.name != "scatter_add" or sn.attrs.get("dim") not in (2, -1):
            continue
        base, idx, gr = sn.inputs
        if not (isinstance(idx, Value) and isinstance(gr, Value) and isinstance(base, Value)):
            continue
        inode = producer.get(idx)
        while inode is not None and inode.name == "reshape":  # back to the argmax
            src = inode.inputs[0]
            inode = producer.get(src) if isinstance(src, Value) else None
        if inode is None or inode.name != "max_pool2d_indices" or \
                not _positive_zeros(producer.get(base)) or gr.type.ndim != 3 or \
                gr.type.shape[:2] != y.type.shape[:2] or \
                any(uses.get(v, 0) != 1 for v in (sv, r, m)):
            continue
        return gr, idx, y
    return None


def conv_fuse(g: Graph) -> Graph:
    g = _fuse_pool_relu_bwd(g)
    plan = _plan(g)
    if not plan:
        return g
    owner = {m: c for c, e in plan.items() for m in e.absorbed}
    cols_of: dict[tuple, Value] = {}  # (input, attributes, kernel) -> its columns
    pending: dict[Node, Value] = {}  # conv -> its columns, until its last absorbed node
    nodes: list[Node] = []
    for n in g.nodes:
        if n in plan:
            x, w = n.inputs
            assert isinstance(x, Value) and isinstance(w, Value)
            at = {k: n.attrs[k] for k in ("stride", "padding", "dilation", "groups")}
            at["kernel_size"] = tuple(w.type.shape[2:])
            ct = conv_im2col_op.infer([x.type], **at)
            assert isinstance(ct, TensorType)
            cols = Value(ct, f"{n.out.name}_cols")
            nodes.append(Node(conv_im2col_op, (x,), (cols,), at, n.loc))
            if int(np.prod(cols.type.shape)) <= SHARE_LIMIT:
                cols_of[_key(x, at)] = cols
            pending[n] = cols
        if n in plan or n in owner:
            conv = n if n in plan else owner[n]
            e = plan[conv]
            last = e.absorbed[-1] if e.absorbed else conv
            if n is last:
                w2, b2 = _folded(conv, e, nodes)
                ins = (pending.pop(conv), w2) + ((b2,) if b2 is not None else ())
                nodes.append(Node(conv_gemm_op, ins, last.outs,
                                  {"out_shape": tuple(conv.out.type.shape), "act": e.act},
                                  conv.loc))
            continue
        if n.name == "conv_weight_grad" and isinstance(n.inputs[0], Value):
            at = {k: n.attrs[k] for k in ("stride", "padding", "dilation", "groups",
                                          "kernel_size")}
            shared = cols_of.get(_key(n.inputs[0], at))
            if shared is not None and _compiles(n.out.type):
                nodes.append(Node(conv_weight_grad_cols_op, (shared, n.inputs[1]), n.outs,
                                  {"kernel_size": tuple(at["kernel_size"])}, n.loc))
                continue
        nodes.append(n)
    return rewrite(g, {}, nodes)


def _fuse_pool_relu_bwd(g: Graph) -> Graph:
    """Each max-pool-after-ReLU gradient (zeros, scatter_add, reshape, gt, mul: a dense zero
    fill, a scatter and a masked pass) becomes one max_pool2d_relu_bwd (CPU floats)."""
    uses = g.uses()
    producer = {o: n for n in g.nodes for o in n.outs}
    nodes: list[Node] = []
    changed = False
    for n in g.nodes:
        found = _pool_relu_bwd(n, uses, producer)
        if found is not None and _compiles(n.out.type, found[0].type):
            nodes.append(Node(max_pool2d_relu_bwd_op, found, n.outs, {}, n.loc))
            changed = True
            continue
        nodes.append(n)
    return rewrite(g, {}, nodes) if changed else g


def _key(x: Value, at: dict[str, Any]) -> tuple:
    return (x.uid, tuple((k, repr(at[k])) for k in sorted(at)))


__all__ = ["conv_fuse", "SHARE_LIMIT"]
