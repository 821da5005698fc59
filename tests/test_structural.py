"""Structural nodes (`constant`, `fused`) are ops in the registry like any other: declared with
`defop` in tracejit/ops/structural.py, typed by their `infer` through the verifier's common
path, run by their `eager` in the interpreter, and never told apart by comparing a name."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from tracejit import dtypes as dt
from tracejit.ir.graph import Graph, Node, Region, Value, walk
from tracejit.ir.interpret import interpret, run_node
from tracejit.ir.printer import print_graph
from tracejit.ir.verify import VerifyError, verify
from tracejit.ops import REGISTRY, Kind
from tracejit.ops.registry import TensorType
from tracejit.ops.structural import CONSTANT, FUSED
from tracejit.passes.fold import fold

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The only module that may spell these names as string literals: the one declaring them.
DECLARED_IN = os.path.join("tracejit", "ops", "structural.py")
NAME_LITERAL = re.compile(r"""(["'])(fused|constant)\1""")


def _t(*shape: int, d: dt.DType = dt.float32) -> TensorType:
    return TensorType(tuple(shape), d)


def test_structural_ops_are_in_the_registry() -> None:
    assert REGISTRY["constant"] is CONSTANT and REGISTRY["fused"] is FUSED
    assert CONSTANT.kind is Kind.STRUCTURAL and FUSED.kind is Kind.STRUCTURAL
    assert FUSED.regions == ("body",) and CONSTANT.regions == ()
    assert FUSED.multiple_results and not CONSTANT.multiple_results
    assert CONSTANT.shared_result and not FUSED.shared_result


def test_no_module_matches_structural_ops_by_name() -> None:
    """`n.name == "fused"`, `n.name in ("constant", ...)`, `Node("constant", ...)`: none of
    these may come back. Test the op (`n.op is FUSED`) or its fields (`n.op.regions`, ...)."""
    found = []
    for base, _, files in os.walk(os.path.join(ROOT, "tracejit")):
        for f in files:
            path = os.path.join(base, f)
            rel = os.path.relpath(path, ROOT)
            if not f.endswith(".py") or rel == DECLARED_IN:
                continue
            with open(path, encoding="utf-8") as fh:
                for k, line in enumerate(fh, 1):
                    if NAME_LITERAL.search(line):
                        found.append(f"{rel}:{k}: {line.strip()}")
    assert not found, ("structural ops matched by name (use CONSTANT/FUSED from "
                       "tracejit.ops.structural, or an OpDef field):\n" + "\n".join(found))


def test_the_name_check_would_catch_one() -> None:
    assert NAME_LITERAL.search('if n.name == "fused":')
    assert NAME_LITERAL.search("n.name in ('constant', 'fused')")
    assert not NAME_LITERAL.search("if n.op is FUSED:")


def _add_region(t: TensorType) -> tuple[Region, Value]:
    a0, a1 = Value(t, "a0"), Value(t, "a1")
    s = Value(t)
    return Region((a0, a1), (Node(REGISTRY["add"], (a0, a1), (s,)),), (s,)), s


def test_verifier_types_a_constant_by_its_rule() -> None:
    v = Value(_t(3, d=dt.float64))
    g = Graph("g", (), (), (Node(CONSTANT, (), (v,), {"value": np.zeros(3, np.float32)}),), (v,))
    with pytest.raises(VerifyError, match="constant claims f64"):
        verify(g)
    ok = Value(_t(3))
    verify(Graph("g", (), (), (Node(CONSTANT, (), (ok,), {"value": np.zeros(3, np.float32)}),),
                 (ok,)))


def test_verifier_types_a_fused_node_by_its_rule_and_region() -> None:
    t = _t(2, 3)
    x, y = Value(t, "x"), Value(t, "y")
    body, s = _add_region(t)
    fused = Node(FUSED, (x, y), (s,), {"body": body, "index": 0, "domain": (2, 3), "rdims": 0})
    g = Graph("g", (x, y), (), (fused,), (s,))
    assert verify(g) is g
    assert [n.name for n in walk(g.nodes)] == ["fused", "add"]
    assert "fused.0(%x, %y)" in print_graph(g)

    z = Value(_t(3, 2), "z")  # the operand no longer matches the region's param
    bad = Node(FUSED, (x, z), (s,), fused.attrs)
    with pytest.raises(VerifyError, match="fused is ill-typed: .*param 1"):
        verify(Graph("g", (x, z), (), (bad,), (s,)))

    wrong = Value(_t(2, 3, d=dt.float64))  # the output claims another type than the region's
    lie = Node(FUSED, (x, y), (wrong,), fused.attrs)
    with pytest.raises(VerifyError, match="fused claims f64"):
        verify(Graph("g", (x, y), (), (lie,), (wrong,)))

    stray = Value(t)  # the region yields a value it does not define
    broken = Node(FUSED, (x, y), (stray,), {**fused.attrs,
                                            "body": Region(body.params, body.nodes, (stray,))})
    with pytest.raises(VerifyError, match="does not define"):
        verify(Graph("g", (x, y), (), (broken,), (stray,)))


def test_interpreter_runs_structural_ops_through_eager() -> None:
    t = _t(2, 3)
    x, y = Value(t, "x"), Value(t, "y")
    body, s = _add_region(t)
    fused = Node(FUSED, (x, y), (s,), {"body": body, "index": 0, "domain": (2, 3), "rdims": 0})
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 2, np.float32)
    (out,), _ = interpret(Graph("g", (x, y), (), (fused,), (s,)), [a, b])
    np.testing.assert_array_equal(out, a + b)

    value = np.arange(3, dtype=np.float32)
    (c,) = run_node(Node(CONSTANT, (), (Value(_t(3)),), {"value": value}), [])
    np.testing.assert_array_equal(c, value)
    assert c is not value  # a copy: the node's own array is never handed out


def test_fold_makes_constant_nodes() -> None:
    t = _t(4)
    f = Value(t)
    full = Node(REGISTRY["full"], (), (f,), {"shape": (4,), "value": 1.5, "dtype": dt.float32})
    g = verify(fold(Graph("g", (), (), (full,), (f,))))
    (n,) = g.nodes
    assert n.op is CONSTANT
    np.testing.assert_array_equal(n.attrs["value"], np.full(4, 1.5, np.float32))
