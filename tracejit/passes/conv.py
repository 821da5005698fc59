"""Convolution fusion (CPU): each `conv` becomes `conv_im2col` (its input's windows as
columns) and `conv_gemm` (the GEMM), with the bias add and a ReLU that only the conv feeds
folded into the GEMM's epilogue, and a `conv_weight_grad` of the same input and attributes (the
conv's backward) reads the forward's columns through `conv_weight_grad_cols` instead of building
them again. Runs after autodiff (the ops it makes have no VJP) and before elementwise fusion.
Every value keeps its bits: the epilogue rounds as the separate add and relu do."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtypes as dt
from ..ir.graph import Graph, Node, Value, walk
from ..ops.conv import conv_gemm_op, conv_im2col_op, conv_weight_grad_cols_op
from ..ops.registry import TensorType
from .cse import rewrite

# The most column elements kept alive from a forward conv to its weight gradient (64 MiB of
# float32); larger ones are built again, as the unfused program does, to bound peak memory.
SHARE_LIMIT = 1 << 24


def _compiles(t: TensorType, *more: TensorType) -> bool:
    """Would the conv rules compile this (float, CPU, no empty dims)? Otherwise left alone."""
    return all(u.dtype in (dt.float32, dt.float64) and u.device.type == "cpu" and
               0 not in u.shape for u in (t,) + more)


def _bias_of(add: Node, conv_out: Value, producer: dict[Value, Node]) -> Value | None:
    """The 1-d bias b when `add` is conv_out + b.reshape(O, 1, ...) (as nn.Conv2d adds it)."""
    t = conv_out.type
    if add.name != "add" or len(add.inputs) != 2 or add.out.type != t:
        return None
    other = add.inputs[1] if add.inputs[0] is conv_out else add.inputs[0]
    if other is conv_out or not isinstance(other, Value):
        return None
    r = producer.get(other)
    channels = t.shape[1]
    if r is None or r.name != "reshape" or \
            other.type.shape != (channels,) + (1,) * (t.ndim - 2):
        return None
    b = r.inputs[0]
    if not isinstance(b, Value) or b.type.shape != (channels,) or b.type.dtype is not t.dtype:
        return None
    return b


def _sole_reader(v: Value, uses: dict[Value, int], readers: dict[Value, Node]) -> Node | None:
    return readers.get(v) if uses.get(v, 0) == 1 else None


def _plan(g: Graph) -> dict[Node, Any]:
    """conv node -> (bias or None, the last node it absorbs, the value it then defines)."""
    uses: dict[Value, int] = g.uses()
    top = set(g.nodes)
    for n in walk(g.nodes):  # reads inside regions count as well
        if n not in top:
            for v in n.values_in():
                uses[v] = uses.get(v, 0) + 1
    producer = {o: n for n in g.nodes for o in n.outs}
    readers = {v: n for n in g.nodes for v in n.values_in()}
    plan: dict[Node, Any] = {}
    for n in g.nodes:
        if n.name != "conv" or not all(isinstance(v, Value) for v in n.inputs):
            continue
        x, w = n.inputs
        assert isinstance(x, Value) and isinstance(w, Value)
        if not _compiles(n.out.type, x.type, w.type):
            continue
        last, bias = n, None
        add = _sole_reader(n.out, uses, readers)
        if add is not None:
            bias = _bias_of(add, n.out, producer)
        act = ""
        if bias is not None:
            assert add is not None
            last = add
            relu = _sole_reader(add.out, uses, readers)
            if relu is not None and relu.name == "relu" and relu.out.type == add.out.type:
                last, act = relu, "relu"
        plan[n] = (bias, last, act)
    return plan


def conv_fuse(g: Graph) -> Graph:
    plan = _plan(g)
    if not plan:
        return g
    absorbed = {p[1]: c for c, p in plan.items() if p[1] is not c}
    absorbed.update({m: c for c, p in plan.items() for m in _between(g, c, p[1])})
    cols_of: dict[tuple, Value] = {}  # (input, attributes, kernel) -> its columns
    pending: dict[Node, Value] = {}  # conv -> its columns, until its last absorbed node
    nodes: list[Node] = []
    for n in g.nodes:
        if n in plan:
            x, w = n.inputs
            assert isinstance(x, Value) and isinstance(w, Value)
            at = {k: n.attrs[k] for k in ("stride", "padding", "dilation", "groups")}
            at["kernel_size"] = tuple(w.type.shape[2:])
            cols = Value(conv_im2col_op.infer([x.type], **at), f"{n.out.name}_cols")
            nodes.append(Node(conv_im2col_op, (x,), (cols,), at, n.loc))
            if int(np.prod(cols.type.shape)) <= SHARE_LIMIT:
                cols_of[_key(x, at)] = cols
            pending[n] = cols
        if n in plan or n in absorbed:
            conv = n if n in plan else absorbed[n]
            bias, last, act = plan[conv]
            if n is last:
                w = conv.inputs[1]
                ins = (pending.pop(conv), w) + ((bias,) if bias is not None else ())
                nodes.append(Node(conv_gemm_op, ins, last.outs,
                                  {"out_shape": tuple(conv.out.type.shape), "act": act},
                                  conv.loc))
            continue
        if n.name == "conv_weight_grad" and isinstance(n.inputs[0], Value):
            at = {k: n.attrs[k] for k in ("stride", "padding", "dilation", "groups",
                                          "kernel_size")}
            cols = cols_of.get(_key(n.inputs[0], at))
            if cols is not None and _compiles(n.out.type):
                nodes.append(Node(conv_weight_grad_cols_op, (cols, n.inputs[1]), n.outs,
                                  {"kernel_size": tuple(at["kernel_size"])}, n.loc))
                continue
        nodes.append(n)
    return rewrite(g, {}, nodes)


def _between(g: Graph, conv: Node, last: Node) -> list[Node]:
    """The add between a conv and the ReLU that ends its epilogue (absorbed as well)."""
    if last is conv or last.name != "relu":
        return []
    v = last.inputs[0]
    return [n for n in g.nodes if v in n.outs]


def _key(x: Value, at: dict[str, Any]) -> tuple:
    return (x.uid, tuple((k, repr(at[k])) for k in sorted(at)))


__all__ = ["conv_fuse", "SHARE_LIMIT"]
