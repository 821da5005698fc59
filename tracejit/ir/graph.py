"""Stage 2: the typed SSA IR. Values carry shape, dtype and device; nodes carry their op (an
OpDef from the registry, structural ones such as `constant` and `fused` included), attributes
and the user's file:line. Graphs are immutable: passes build new ones (see passes/)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ops.registry import OpDef, TensorType

_ids = itertools.count()


@dataclass(frozen=True, eq=False)
class Value:
    """An SSA value. Identity is the object; `name` is only a printing hint."""

    type: TensorType
    name: str = ""
    uid: int = field(default_factory=lambda: next(_ids))

    def __repr__(self) -> str:
        return f"%{self.name or self.uid}:{self.type}"


@dataclass(frozen=True)
class Const:
    """A literal operand (a Python number in user code), printed `2.0:f32`."""

    value: bool | int | float
    dtype: Any  # the DType it is computed in

    def __str__(self) -> str:
        return f"{self.value!r}:{self.dtype.short}"


Operand = Value | Const


@dataclass(frozen=True, eq=False)
class Node:
    """`outs = op(inputs, **attrs)`. `op` is an OpDef from the registry, the structural ones
    too (ops/structural.py: CONSTANT, attrs value, an ndarray; FUSED, attrs body, a Region)."""

    op: OpDef
    inputs: tuple[Operand, ...]
    outs: tuple[Value, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    loc: str = ""

    @property
    def out(self) -> Value:
        return self.outs[0]

    @property
    def name(self) -> str:
        return self.op.name

    def values_in(self) -> Iterator[Value]:
        return (v for v in self.inputs if isinstance(v, Value))

    def regions(self) -> Iterator[Region]:
        """The regions this node holds (its op's `regions` attributes), in order."""
        return (self.attrs[k] for k in self.op.regions)


@dataclass(frozen=True, eq=False)
class Region:
    """A nested body (the members of a fused node; later the branches of cond and loops):
    params are bound to the enclosing node's inputs, results to its outputs."""

    params: tuple[Value, ...]
    nodes: tuple[Node, ...]
    results: tuple[Value, ...]


@dataclass(frozen=True, eq=False)
class Effect:
    """An in-place write the program must perform: `target` (an input or lifted value) gets
    the contents of `source` when the program finishes, exactly once."""

    target: Value
    source: Value


@dataclass(frozen=True)
class Check:
    """A branch the trace took: graph output `output` (a bool[] value, `bool(t)` of a tensor
    or a traced number's comparison) was `taken` at the user's `loc`. A program whose
    predicate comes out otherwise stops before committing any effect (PathNotTakenError)."""

    output: int
    taken: bool
    loc: str


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    inputs: tuple[Value, ...]  # flattened tensor arguments
    lifted: tuple[Value, ...]  # tensors the function touched that were not arguments
    nodes: tuple[Node, ...]
    outputs: tuple[Operand, ...]
    effects: tuple[Effect, ...] = ()
    checks: tuple[Check, ...] = ()  # the branches this graph is the path of

    @property
    def params(self) -> tuple[Value, ...]:
        return self.inputs + self.lifted

    def replace(self, **kw: Any) -> Graph:
        d = {k: getattr(self, k) for k in ("name", "inputs", "lifted", "nodes", "outputs",
                                           "effects", "checks")}
        d.update(kw)
        return Graph(**d)

    def uses(self) -> dict[Value, int]:
        """How many times each value is read (by nodes, outputs and effects)."""
        count: dict[Value, int] = {}
        for v in itertools.chain((v for n in self.nodes for v in n.values_in()),
                                 (o for o in self.outputs if isinstance(o, Value)),
                                 (e.source for e in self.effects)):
            count[v] = count.get(v, 0) + 1
        return count


def walk(nodes: Iterable[Node]) -> Iterator[Node]:
    """Every node, including those inside regions (fused bodies)."""
    for n in nodes:
        yield n
        for r in n.regions():
            yield from walk(r.nodes)


def substitute(ops: Sequence[Operand], env: dict[Value, Operand]) -> tuple[Operand, ...]:
    return tuple(env.get(v, v) if isinstance(v, Value) else v for v in ops)
