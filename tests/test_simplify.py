"""passes/simplify.py's rewrites of a transposed product and of clones, through jitted
functions: the same values as eager mode, the printed IR without the removed nodes, and no
returned buffer shared where eager mode shares none."""

from __future__ import annotations

from typing import Any

import numpy as np

import tracejit as tj


def _twice(jf: Any, *args: Any) -> Any:
    jf(*args)
    return jf(*args)  # compiled


def test_a_transposed_product_is_made_in_its_layout_and_its_clone_dropped() -> None:
    def f(a: Any, b: Any) -> Any:
        return (a.t() @ b).t().clone()  # a Linear weight's gradient: (x.T @ g).T, cloned

    jf = tj.jit(f)
    a, b = tj.randn(5, 3), tj.randn(5, 4)
    out = _twice(jf, a, b)
    np.testing.assert_allclose(out.numpy(), f(a, b).numpy(), rtol=1e-5, atol=1e-6)
    text = jf.ir(a, b)
    assert "clone" not in text
    assert text.count("matmul") == 1 and out.numpy().flags.c_contiguous
    assert not np.shares_memory(out.numpy(), a.numpy())
    assert not np.shares_memory(out.numpy(), b.numpy())


def test_a_clone_of_a_value_also_returned_is_kept() -> None:
    def f(x: Any) -> Any:
        y = x * 2
        return y, y.clone()

    jf = tj.jit(f)
    x = tj.randn(4)
    y, z = _twice(jf, x)
    np.testing.assert_array_equal(y.numpy(), z.numpy())
    assert not np.shares_memory(y.numpy(), z.numpy())
    assert "clone" in jf.ir(x)


def test_a_clone_of_an_argument_or_a_view_is_kept() -> None:
    jf = tj.jit(lambda x: (x.clone(), x.t().clone()))
    x = tj.randn(3, 2)
    c, t = _twice(jf, x)
    assert not np.shares_memory(c.numpy(), x.numpy())
    assert not np.shares_memory(t.numpy(), x.numpy())
    np.testing.assert_array_equal(t.numpy(), x.numpy().T)
