"""ONNX graph building for tracejit.onnx: fresh names, nodes, typed constants and casts, one
`Builder` per ONNX graph (the main graph, and each If branch or Loop body, which read the
enclosing graph's names directly, as ONNX subgraphs may).

Only this package imports `onnx`, and only when an export runs (see __init__.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..dtypes import DType

INT64_MIN = -(2**63)


def onnx_type(d: DType) -> int:
    """The ONNX element type (a TensorProto enum value) of a tracejit dtype."""
    from onnx import helper

    return int(helper.np_dtype_to_tensor_dtype(d.np))


class Builder:
    """The nodes of one ONNX graph under construction. Names come from a counter shared by
    every builder of one export, so a subgraph never shadows a name of its enclosing graph."""

    def __init__(self, counter: Iterator[int] | None = None,
                 taken: set[str] | None = None) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.counter = counter if counter is not None else itertools.count()
        self.taken = taken if taken is not None else set()  # the user's names: never fresh
        self.nodes: list[Any] = []

    def sub(self) -> Builder:
        """A builder for a subgraph (an If branch, a Loop body) of this one."""
        return Builder(self.counter, self.taken)

    def fresh(self, hint: str = "t") -> str:
        while True:
            name = f"{hint}_{next(self.counter)}"
            if name not in self.taken:
                return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        """Append one node; returns its output name (a list of names when n_out > 1)."""
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs,
                                                name=self.fresh("n"), **attrs))
        return outs if n_out > 1 else outs[0]

    def op_into(self, op_type: str, inputs: Sequence[str], outs: Sequence[str],
                **attrs: Any) -> None:
        """Append one node writing the given output names."""
        self.nodes.append(self.helper.make_node(op_type, list(inputs), list(outs),
                                                name=self.fresh("n"), **attrs))

    def const(self, value: Any, dtype: Any = None) -> str:
        """A Constant node holding `value` (an array, or a number of the NumPy `dtype`).
        Constant nodes, not initializers, so that they may live inside subgraphs too."""
        arr = np.asarray(value, dtype=dtype)
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        name = self.fresh("const")
        tensor = self.numpy_helper.from_array(arr, name + "_value")
        self.nodes.append(self.helper.make_node("Constant", [], [name], name=self.fresh("n"),
                                                value=tensor))
        return name

    def ints(self, values: Sequence[int]) -> str:
        """A 1-d int64 constant (shapes, axes, starts...)."""
        return self.const(np.array(list(values), np.int64).reshape(len(values)))

    def cast(self, name: str, frm: DType, to: DType) -> str:
        if frm is to:
            return name
        return self.op("Cast", [name], to=onnx_type(to))

    def value_info(self, name: str, shape: Sequence[int], d: DType) -> Any:
        return self.helper.make_tensor_value_info(name, onnx_type(d), list(shape))

    def graph(self, name: str, inputs: Sequence[Any], outputs: Sequence[Any],
              initializers: Sequence[Any] = ()) -> Any:
        return self.helper.make_graph(self.nodes, name, list(inputs), list(outputs),
                                      initializer=list(initializers))

