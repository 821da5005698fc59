"""Pytrees, as JAX's tree_util sees them: tuples, lists, dicts (keys sorted, as JAX), named
tuples and None are containers; anything else (a Tensor, a number) is a leaf. The control
flow (control.py) flattens carries with these; a TreeDef compares equal for equal structure.

>>> leaves, tree = tree_flatten({"b": (1, 2), "a": [3, None]})
>>> leaves
[3, 1, 2]
>>> tree_unflatten(tree, [x * 10 for x in leaves])
{'a': [30, None], 'b': (10, 20)}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TreeDef:
    kind: str  # "leaf", "none", "tuple", "list", "dict", "namedtuple"
    children: tuple[TreeDef, ...] = ()
    meta: Any = None  # dict: its keys in order; namedtuple: its type

    @property
    def num_leaves(self) -> int:
        return 1 if self.kind == "leaf" else sum(c.num_leaves for c in self.children)

    def __str__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = [str(c) for c in self.children]
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c}" for k, c in zip(self.meta, inner)) + "}"
        if self.kind == "list":
            return "[" + ", ".join(inner) + "]"
        name = self.meta.__name__ if self.kind == "namedtuple" else ""
        return name + "(" + ", ".join(inner) + ("," if len(inner) == 1 and not name else "") + ")"


_LEAF = TreeDef("leaf")


def tree_flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    leaves: list[Any] = []

    def walk(x: Any) -> TreeDef:
        if x is None:
            return TreeDef("none")
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return TreeDef("namedtuple", tuple(walk(c) for c in x), type(x))
        if isinstance(x, (tuple, list)):
            return TreeDef("list" if isinstance(x, list) else "tuple", tuple(walk(c) for c in x))
        if isinstance(x, dict):
            keys = sorted(x, key=repr) if not all(isinstance(k, str) for k in x) else sorted(x)
            return TreeDef("dict", tuple(walk(x[k]) for k in keys), tuple(keys))
        leaves.append(x)
        return _LEAF

    return leaves, walk(tree)


def tree_unflatten(tree: TreeDef, leaves: list[Any]) -> Any:
    it = iter(leaves)

    def build(t: TreeDef) -> Any:
        if t.kind == "leaf":
            return next(it)
        if t.kind == "none":
            return None
        kids = [build(c) for c in t.children]
        if t.kind == "tuple":
            return tuple(kids)
        if t.kind == "list":
            return kids
        if t.kind == "dict":
            return dict(zip(t.meta, kids))
        return t.meta(*kids)

    out = build(tree)
    rest = list(it)
    if rest:
        raise ValueError(f"tree_unflatten: {len(rest)} leaves left over for the structure "
                         f"{tree}")
    return out


def tree_map(f: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    leaves, t = tree_flatten(tree)
    others = [tree_flatten(r)[0] for r in rest]
    return tree_unflatten(t, [f(x, *xs) for x, *xs in zip(leaves, *others)])
