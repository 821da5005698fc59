"""cond, while_loop, fori_loop and scan: JAX's semantics over pytree carries in eager mode
(against NumPy float64 and the unrolled loop), their errors, and under @jit one node with
regions compiled to a real `if`/loop (one trace and one compile for every trip count), a
whole training run included."""

from __future__ import annotations

import copy
from collections import namedtuple

import numpy as np
import pytest

import tracejit as tj
from tracejit import dtypes as dt
from tracejit.ir.graph import Graph, Node, Region, Value
from tracejit.ir.interpret import interpret
from tracejit.ir.printer import print_graph
from tracejit.ir.verify import VerifyError, verify
from tracejit.ops import REGISTRY
from tracejit.ops.control import COND, SCAN, WHILE
from tracejit.ops.registry import TensorType
from tracejit.passes import run_pipeline

Pair = namedtuple("Pair", "a b")


def _np(t):
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def _one_compile(f):
    """One trace and one program (compiled now, or loaded from the disk cache)."""
    info = f.cache_info()
    assert info.traces == 1 and info.misses == 1 and info.compiles <= 1, info
    assert info.fallbacks == 0, info


# ---- eager -----------------------------------------------------------------------------------


def test_fori_loop_pytree_carry_matches_numpy():
    x = np.arange(3.0, dtype=np.float32)

    def body(i, c):
        return {"s": c["s"] + c["v"] * i, "v": c["v"] * 0.5, "k": [c["k"][0] + 1]}

    out = tj.fori_loop(2, 6, body, {"s": tj.zeros(3), "v": tj.tensor(x), "k": [0]})
    s, v = np.zeros(3), x.copy()
    for i in range(2, 6):
        s, v = s + v * i, v * 0.5
    assert set(out) == {"s", "v", "k"} and int(out["k"][0]) == 4
    np.testing.assert_allclose(_np(out["s"]), s, rtol=1e-6)
    np.testing.assert_allclose(_np(out["v"]), v, rtol=1e-6)
    assert tj.fori_loop(5, 2, body, {"s": tj.zeros(3), "v": tj.ones(3), "k": [0]})["k"][0] == 0


def test_while_loop_named_tuple_and_python_numbers():
    out = tj.while_loop(lambda c: c.a < 50, lambda c: Pair(c.a * 3, c.b + 1), Pair(1, 0))
    assert isinstance(out, Pair) and int(out.a) == 81 and int(out.b) == 4
    assert out.a.dtype is dt.int64


def test_scan_matches_numpy_forward_and_reverse():
    xs = np.array([1.0, -2.0, 3.0, 0.5], dtype=np.float32)
    for reverse in (False, True):
        c, ys = tj.scan(lambda c, x: (c * 0.9 + x["u"], {"y": c * x["u"]}), tj.tensor(1.0),
                        {"u": tj.tensor(xs)}, reverse=reverse)
        want_c, want_y = 1.0, np.zeros(4)
        for t in (range(3, -1, -1) if reverse else range(4)):
            want_y[t] = want_c * xs[t]
            want_c = want_c * 0.9 + xs[t]
        np.testing.assert_allclose(float(c), want_c, rtol=1e-6)
        np.testing.assert_allclose(_np(ys["y"]), want_y, rtol=1e-6)
    c, ys = tj.scan(lambda c, _: (c + 1, None), tj.tensor(0), None, length=5)
    assert int(c) == 5 and ys is None
    c, ys = tj.scan(lambda c, x: (c, x * 2), tj.zeros(2), tj.zeros(0, 3))
    assert tuple(ys.shape) == (0, 3)


def test_cond_eager_picks_a_branch():
    x = tj.tensor([1.0, 2.0])
    assert _np(tj.cond(tj.tensor(True), lambda a, b: a + b, lambda a, b: a - b, x, 1.0)).tolist() \
        == [2.0, 3.0]
    assert _np(tj.cond(0, lambda a: a * 2, lambda a: a * 3, x)).tolist() == [3.0, 6.0]


def rnn_params(seed=0):
    rng = np.random.default_rng(seed)
    return [tj.tensor(rng.normal(size=s).astype(np.float32) * 0.5, requires_grad=True)
            for s in ((3, 4), (4, 4), (4,))]


def rnn_scan(w_x, w_h, b, xs, h0):
    def cell(h, x):
        h = tj.tanh(x @ w_x + h @ w_h + b)
        return h, h.sum()

    h, ys = tj.scan(cell, h0, xs)
    return (ys.sum() + (h * h).sum(), h, ys)


def rnn_unrolled(w_x, w_h, b, xs, h0):
    h, ys = h0, []
    for t in range(xs.shape[0]):
        h = tj.tanh(xs[t] @ w_x + h @ w_h + b)
        ys.append(h.sum())
    return (tj.stack(ys).sum() + (h * h).sum(), h, tj.stack(ys))


def test_rnn_scan_values_and_gradients_match_the_unrolled_loop():
    xs = tj.tensor(np.random.default_rng(1).normal(size=(5, 2, 3)).astype(np.float32))
    h0 = tj.zeros(2, 4)
    ps, qs = rnn_params(), rnn_params()
    loss, h, ys = rnn_scan(*ps, xs, h0)
    ref, rh, rys = rnn_unrolled(*qs, xs, h0)
    loss.backward()
    ref.backward()
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
    np.testing.assert_allclose(_np(ys), _np(rys), rtol=1e-6)
    for p, q in zip(ps, qs):
        np.testing.assert_allclose(_np(p.grad), _np(q.grad), rtol=1e-5, atol=1e-6)
    # and against central differences in float64
    p64 = [tj.tensor(_np(p), dtype=tj.float64, requires_grad=True) for p in ps]
    x64, h64 = xs.double(), h0.double()
    rnn_scan(*p64, x64, h64)[0].backward()
    w = _np(p64[1])
    eps, (i, j) = 1e-6, (1, 2)
    hi, lo = w.copy(), w.copy()
    hi[i, j] += eps
    lo[i, j] -= eps
    f = [float(rnn_scan(p64[0], tj.tensor(m), p64[2], x64, h64)[0]) for m in (hi, lo)]
    np.testing.assert_allclose(_np(p64[1].grad)[i, j], (f[0] - f[1]) / (2 * eps), rtol=1e-5)


def test_fori_loop_with_int_bounds_is_differentiable():
    w = tj.tensor([0.5, -1.0], requires_grad=True)
    tj.fori_loop(0, 3, lambda i, x: x * w + i, tj.ones(2)).sum().backward()
    wn = np.array([0.5, -1.0])
    # x3 = w^3 + w + 2 (from x0 = 1: x1 = w, x2 = w^2 + 1, x3 = w^3 + w + 2)
    np.testing.assert_allclose(_np(w.grad), 3 * wn ** 2 + 1, rtol=1e-6)


def test_while_loop_gradient_is_jax_error_unless_bounded():
    w = tj.tensor(1.5, requires_grad=True)
    out = tj.while_loop(lambda x: x < 10, lambda x: x * w, tj.tensor(1.0))
    assert float(out) == pytest.approx(1.5 ** 6)
    with pytest.raises(ValueError, match="not reverse-differentiable.*max_iterations"):
        out.backward()
    bounded = tj.while_loop(lambda x: x < 10, lambda x: x * w, tj.tensor(1.0), max_iterations=4)
    bounded.backward()
    w2 = tj.tensor(1.5, requires_grad=True)
    x = tj.tensor(1.0)
    for _ in range(4):
        x = x * w2
    x.backward()
    assert float(bounded) == pytest.approx(float(x))
    assert float(w.grad) == pytest.approx(float(w2.grad)) == pytest.approx(4 * 1.5 ** 3)


@pytest.mark.parametrize("call, message", [
    (lambda: tj.while_loop(lambda x: x < 3, lambda x: x.float(), tj.tensor(0)),
     "must have the types of init_val: leaf 0 is i64\\[\\] in init_val but f32\\[\\]"),
    (lambda: tj.while_loop(lambda x: x.sum(), lambda x: x, tj.zeros(2)),
     "cond_fun must return a boolean scalar"),
    (lambda: tj.fori_loop(0, 2, lambda i, c: (c, c), tj.zeros(2)),
     "must have the structure of init_val"),
    (lambda: tj.scan(lambda c, x: (c, x), 0.0, tj.zeros(3), length=4),
     "length=4 disagrees with the leading sizes of xs, \\[3\\]"),
    (lambda: tj.scan(lambda c, x: (c, x), 0.0), "no xs to scan over and no length"),
    (lambda: tj.scan(lambda c, x: c, 0.0, tj.zeros(3)), "must return a pair"),
    (lambda: tj.cond(tj.ones(2) > 0, lambda: 1, lambda: 2), "must be a scalar"),
    (lambda: tj.while_loop(lambda x: x < 3, lambda x: x, 0, max_iterations=-1),
     "max_iterations must be None or an int >= 0"),
    (lambda: tj.fori_loop(0.0, 2, lambda i, c: c, 0), "lower must be an int"),
    (lambda: tj.scan(lambda c, x: (c, x), "a", tj.zeros(3)), "must hold tensors or numbers"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


# ---- the IR ---------------------------------------------------------------------------------


def _t(*shape, d=dt.float32):
    return TensorType(tuple(shape), d)


def _while_graph():
    """x -> while sum(x) < lim: x = x * 2 (with a dead node in the body)."""
    x, lim = Value(_t(3), "x"), Value(_t(), "lim")
    cl, cx = Value(_t()), Value(_t(3))
    s, go = Value(_t()), Value(_t(d=dt.bool_))
    cond = Region((cl, cx), (Node(REGISTRY["sum"], (cx,), (s,), {"dims": (0,), "keepdim": False}),
                             Node(REGISTRY["lt"], (s, cl), (go,))), (go,))
    bl, bx, y, dead = Value(_t()), Value(_t(3)), Value(_t(3)), Value(_t(3))
    from tracejit.ir.graph import Const

    body = Region((bl, bx), (Node(REGISTRY["mul"], (bx, Const(2.0, dt.float32)), (y,)),
                             Node(REGISTRY["exp"], (bx,), (dead,))), (y,))
    out = Value(_t(3))
    n = Node(WHILE, (lim, x), (out,), {"cond": cond, "body": body, "n_consts": 1,
                                       "max_iterations": None}, "t.py:1")
    return Graph("loop", (x, lim), (), (n,), (out,))


def test_printer_shows_regions_indented_and_interpreter_runs_them():
    g = verify(_while_graph())
    text = print_graph(g)
    assert "  %0: f32[3] = while[n_consts=1, max_iterations=None] %lim, %x" in text
    assert "\n    cond(%1: f32[], %2: f32[3]):\n      %3: f32[] = sum" in text
    assert "\n      yield %4\n    body(%5: f32[], %6: f32[3]):" in text
    (out,), _ = interpret(g, [np.ones(3, np.float32), np.array(20.0, np.float32)])
    assert out.tolist() == [8.0, 8.0, 8.0]


def test_passes_run_inside_regions():
    g = run_pipeline(_while_graph())
    body = g.nodes[0].attrs["body"]
    assert [m.name for m in body.nodes] == ["fused"]  # the dead exp dropped, the mul fused
    assert [m.name for m in g.nodes[0].attrs["cond"].nodes] == ["fused"]  # sum ; lt
    (out,), _ = interpret(g, [np.ones(3, np.float32), np.array(20.0, np.float32)])
    assert out.tolist() == [8.0, 8.0, 8.0]


def test_verifier_checks_region_types():
    g = _while_graph()
    n = g.nodes[0]
    body = n.attrs["body"]
    bad = Region(body.params, body.nodes, (body.nodes[0].inputs[0],) and (Value(_t(4)),))
    with pytest.raises(VerifyError):
        verify(g.replace(nodes=(Node(WHILE, n.inputs, n.outs, {**n.attrs, "body": bad}),)))
    assert COND.control and WHILE.control and SCAN.control and REGISTRY["while"] is WHILE


# ---- under @jit ------------------------------------------------------------------------------


def test_while_loop_one_compile_for_every_trip_count():
    @tj.jit
    def grow(x, lim):
        return tj.while_loop(lambda c: c[0].sum() < lim, lambda c: (c[0] * 2, c[1] + 1),
                             (x, 0))

    x = tj.ones(3)
    for lim, trips in [(10.0, 2), (100.0, 6), (2.0, 0), (1000.0, 9), (50.0, 5)]:
        v, n = grow(x, tj.tensor(lim))
        assert int(n) == trips and _np(v).tolist() == [2.0 ** trips] * 3
        assert v is not x
    _one_compile(grow)
    assert "while True:" in grow.source(x, tj.tensor(1.0))


def test_bounded_while_loop_compiles_with_its_cap():
    @tj.jit
    def f(x):
        return tj.while_loop(lambda v: v < 100, lambda v: v + 7, x, max_iterations=3)

    for v in (0.0, 90.0, 0.0):
        assert float(f(tj.tensor(v))) == min(v + 21, v + 7 * int(np.ceil((100 - v) / 7)))
    _one_compile(f)
    assert "for _ in range(3):" in f.source(tj.tensor(0.0))


def test_scan_rnn_under_jit_matches_eager():
    ps = [p.detach() for p in rnn_params()]
    f = tj.jit(lambda xs, h0: rnn_scan(*ps, xs, h0))
    rng = np.random.default_rng(3)
    for _ in range(3):
        xs = tj.tensor(rng.normal(size=(5, 2, 3)).astype(np.float32))
        got = f(xs, tj.zeros(2, 4))
        want = rnn_unrolled(*ps, xs, tj.zeros(2, 4))
        for a, b in zip(got, want):
            np.testing.assert_allclose(_np(a), _np(b), rtol=1e-5, atol=1e-6)
    _one_compile(f)
    text = f.ir(xs, tj.zeros(2, 4))
    assert "= scan[" in text and "    body(" in text and "matmul" in text


def test_cond_under_jit_takes_both_branches_and_writes_state():
    w = tj.zeros(2)

    @tj.jit
    def f(x):
        def big(v):
            w.add_(1.0)  # an in-place write in one branch: an effect of the cond
            return v * 10

        return tj.cond(x.sum() > 0, big, lambda v: v - 1, x)

    for v, want, w_after in [(1.0, 10.0, 1.0), (-1.0, -2.0, 1.0), (2.0, 20.0, 2.0),
                             (-3.0, -4.0, 2.0), (1.0, 10.0, 3.0)]:
        assert _np(f(tj.tensor([v, 0.0]))).tolist()[0] == want
        assert _np(w).tolist() == [w_after] * 2
    _one_compile(f)
    src = f.source(tj.tensor([1.0, 0.0]))
    assert "    if v" in src and "    else:" in src


def test_fori_loop_with_a_traced_trip_count():
    @tj.jit
    def f(x, n):
        return tj.fori_loop(0, n, lambda i, c: c + i.float() * x, tj.zeros(2))

    x = tj.ones(2)
    for n in (3, 5, 7, 0, 4):
        assert _np(f(x, n)).tolist() == [n * (n - 1) / 2] * 2
    info = f.cache_info()  # n traced as a value after it changed once: two traces, one program
    assert info.traces == 2 and info.compiles <= 1 and info.fallbacks == 0, info


def test_jitted_training_step_differentiates_through_scan():
    """loss.backward() through a scan inside @jit: the backward is a reverse scan region (two
    loops in one program, no unrolled chain), and the updates equal eager's."""
    ps, qs = rnn_params(), rnn_params()

    def make(params):
        def step(xs):
            loss = rnn_scan(*params, xs, tj.zeros(2, 4))[0]
            loss.backward()
            with tj.no_grad():
                for p in params:
                    p -= 0.05 * p.grad
                    p.grad = None
            return loss

        return step

    jstep, estep = tj.jit(make(ps)), make(qs)
    rng = np.random.default_rng(5)
    for _ in range(3):
        xs = tj.tensor(rng.normal(size=(5, 2, 3)).astype(np.float32))
        np.testing.assert_allclose(float(jstep(xs)), float(estep(xs)), rtol=1e-5)
        for p, q in zip(ps, qs):
            np.testing.assert_allclose(_np(p), _np(q), rtol=1e-5, atol=1e-6)
    _one_compile(jstep)
    text = jstep.ir(xs)
    assert "reverse=False" in text and "reverse=True" in text and not jstep.explain().graph_breaks


CAP = 5


def solver_params(seed=0):
    rng = np.random.default_rng(seed)
    return [tj.tensor(rng.normal(size=s) * 0.4, dtype=tj.float64, requires_grad=True)
            for s in ((3, 3), (3,), (3,))]


def solver_loop(w, b, s, x, n):
    """A bounded while_loop whose trip count is data-dependent: min(n, CAP) trips, unless the
    carry grows past 1e6 first. The body divides by n - i, which is 0 at the first trip not
    taken: a body VJP computed there would be 0 * inf = NaN."""
    def body(c):
        i, h = c
        return i + 1, tj.tanh(h @ w + b) * 2.0 / (n - i).double() + h * 0.5

    _, h = tj.while_loop(lambda c: (c[0] < n) & (c[1].abs().sum() < 1e6), body,
                         (tj.tensor(0), x * s), max_iterations=CAP)
    return h


def solver_unrolled(w, b, s, x, n):
    h = x * s
    for i in range(min(int(n), CAP)):
        h = tj.tanh(h @ w + b) * 2.0 / float(int(n) - i) + h * 0.5
    return h


def _sgd_step(params, loop):
    def step(x, n):
        h = loop(*params, x, n)
        loss = (h * h).sum() + h.sum()
        loss.backward()
        # (eagerly, zero trips leave w and b without a gradient: zeros, as under @jit)
        grads = [tj.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
        with tj.no_grad():
            for p, g in zip(params, grads):
                p -= 0.1 * g
                p.grad = None
        return loss, grads

    return step


TRIPS = [3, 0, 1, CAP - 1, CAP, 9, 2, 0, CAP, 1]  # 9: the cap stops the loop


def test_bounded_while_loop_gradient_compiles_in_a_training_step():
    """loss.backward() through a bounded while_loop inside @jit compiles: the loop is a scan
    of max_iterations trips, each a cond that runs the body only while the loop runs, and its
    backward a reverse scan whose trips not taken pass the gradient through. Gradients of the
    weights and of the initial carry (through `s`) equal the unrolled eager loop's for every
    trip count (0, 1, CAP - 1, CAP, the cap hit), with new inputs and weights every call, from
    one trace and one program, with no graph break and no NaN from the trips not taken."""
    ps, qs = solver_params(), solver_params()
    jstep, estep = tj.jit(_sgd_step(ps, solver_loop)), _sgd_step(qs, solver_unrolled)
    rng = np.random.default_rng(4)
    for n in TRIPS:
        x = tj.tensor(rng.normal(size=3), dtype=tj.float64)
        (a, ga), (b, gb) = jstep(x, tj.tensor(n)), estep(x, tj.tensor(n))
        np.testing.assert_allclose(float(a), float(b), rtol=1e-10)
        for g, h in zip(ga, gb):
            assert np.isfinite(_np(g)).all()
            np.testing.assert_allclose(_np(g), _np(h), rtol=1e-9, atol=1e-12)
        for p, q in zip(ps, qs):
            np.testing.assert_allclose(_np(p), _np(q), rtol=1e-9, atol=1e-12)
    _one_compile(jstep)
    assert not jstep.explain().graph_breaks
    text = jstep.ir(x, tj.tensor(2))
    assert "reverse=False" in text and "reverse=True" in text and " = cond " in text


def test_bounded_while_loop_gradient_of_a_jitted_forward():
    """A jitted forward returning a bounded while_loop's result, differentiated outside: the
    gradients of the argument (the carry) and the captured weights are the unrolled loop's
    and central differences', every trip count through one entry."""
    ps = [p.detach().requires_grad_() for p in solver_params(1)]
    f = tj.jit(lambda x, n: solver_loop(*ps, x, n))
    rng = np.random.default_rng(6)
    for n in TRIPS:
        x = tj.tensor(rng.normal(size=3), dtype=tj.float64, requires_grad=True)
        x2 = x.detach().requires_grad_()
        for p in ps:
            p.grad = None
        (f(x, tj.tensor(n)) ** 2).sum().backward()
        got = [_np(x.grad)] + [_np(p.grad) for p in ps]
        qs = [p.detach().requires_grad_() for p in ps]
        (solver_unrolled(*qs, x2, n) ** 2).sum().backward()
        want = [_np(x2.grad)] + [0.0 if q.grad is None else _np(q.grad) for q in qs]
        for g, h in zip(got, want):
            np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-12)
        eps, xv = 1e-6, _np(x)
        for k in range(3):
            hi, lo = xv.copy(), xv.copy()
            hi[k] += eps
            lo[k] -= eps
            fd = [float((solver_unrolled(*ps, tj.tensor(v), n) ** 2).sum()) for v in (hi, lo)]
            np.testing.assert_allclose(got[0][k], (fd[0] - fd[1]) / (2 * eps), rtol=1e-5,
                                       atol=1e-8)
    info = f.cache_info()
    assert info.traces == 1 and info.fallbacks == 0, info
    assert not f.explain().graph_breaks


def test_unbounded_while_loop_gradient_under_jit_is_a_graph_break_with_jaxs_error():
    w = tj.tensor(1.5, requires_grad=True)

    @tj.jit
    def f(x):
        return tj.while_loop(lambda v: v < 10, lambda v: v * w, x)

    y = f(tj.tensor(1.0))
    assert float(y) == pytest.approx(1.5 ** 6)
    with pytest.raises(ValueError, match="not reverse-differentiable.*max_iterations"):
        y.backward()
    assert "bound it with while_loop(..., max_iterations=N)" in str(f.explain())


def test_training_run_as_one_compiled_fori_loop():
    """1000 Adam steps (forward, backward, opt.step(), zero_grad) in one jitted call, equal
    to the same loop run eagerly."""
    rng = np.random.default_rng(0)
    X = tj.tensor(rng.normal(size=(30, 4)).astype(np.float32))
    y = tj.tensor(rng.integers(0, 3, 30))
    tj.manual_seed(0)
    model = tj.nn.Sequential(tj.nn.Linear(4, 8), tj.nn.ReLU(), tj.nn.Linear(8, 3))
    ref = copy.deepcopy(model)
    loss_fn = tj.nn.CrossEntropyLoss()

    def make(m):
        opt = tj.optim.Adam(m.parameters(), lr=0.01)

        def body(i, total):
            loss = loss_fn(m(X), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            return total + loss.detach()

        return lambda steps: tj.fori_loop(0, steps, body, tj.tensor(0.0))

    train, eager = tj.jit(make(model)), make(ref)
    # the first trace creates Adam's state, so it traces again; 1000 then traces the count
    # as a value (a while loop), and the last call runs compiled
    for steps in (2, 2, 1000, 1000):
        np.testing.assert_allclose(float(train(steps)), float(eager(steps)), rtol=1e-4)
    for p, q in zip(model.parameters(), ref.parameters()):
        # 2000 float32 Adam steps: compiled and eager kernels round differently, slightly
        np.testing.assert_allclose(_np(p), _np(q), rtol=1e-3, atol=2e-3)
    assert train.cache_info().hits == 1 and train.cache_info().fallbacks == 0
    assert not train.explain().graph_breaks


def test_a_body_the_region_cannot_hold_is_a_graph_break_with_eager_values():
    @tj.jit
    def f(x):  # an in-place write to the carry: JAX's carries are values
        return tj.while_loop(lambda v: v.sum() < 10, lambda v: v.add_(1.0), x.clone())

    for _ in range(2):
        assert _np(f(tj.zeros(2))).tolist() == [5.0, 5.0]
    assert "writes its carry in place" in str(f.explain())

    w = tj.nn.Linear(2, 1)

    @tj.jit
    def g(x):  # .grad is None before the loop and a tensor after it: the state changes shape
        def body(i, c):
            w(x).sum().backward()
            return c + 1

        return tj.fori_loop(0, 3, body, tj.tensor(0))

    assert int(g(tj.ones(1, 2))) == 3
    np.testing.assert_allclose(_np(w.weight.grad), [[3.0, 3.0]])
    assert "call zero_grad() at the end of the body" in str(g.explain())


def test_check_mode_runs_control_flow_beside_the_interpreter():
    @tj.jit(check=True)
    def f(x, lim):
        c, ys = tj.scan(lambda c, xt: (c + xt, c * xt), tj.zeros(3), x)
        big = tj.while_loop(lambda v: v.sum() < lim, lambda v: v * 2 + 1, c)
        return tj.cond(big.sum() > 100, lambda a: a - 100, lambda a: a, big), ys

    rng = np.random.default_rng(2)
    for lim in (5.0, 500.0, 50.0):
        x = tj.tensor(rng.uniform(0.5, 1.0, size=(4, 3)).astype(np.float32))
        got = f(x, tj.tensor(lim))
        with tj.disable_jit():
            want = f(x, tj.tensor(lim))
        for a, b in zip(got, want):
            np.testing.assert_allclose(_np(a), _np(b), rtol=1e-6)
    assert f.cache_info().fallbacks == 0


def test_jitted_step_differentiates_through_cond():
    """The backward of a cond under @jit is a cond on the same predicate over the branches'
    VJPs: one program serves both sides, gradients equal eager's."""
    def make(w):
        def step(x):
            y = tj.cond(x.sum() > 0, lambda a: (a * w).sum(), lambda a: (a * w * w).sum(), x)
            y.backward()
            g = w.grad.clone()
            with tj.no_grad():
                w.sub_(0.1 * w.grad)
            w.grad = None
            return y, g

        return step

    w1 = tj.tensor([1.0, 2.0], requires_grad=True)
    w2 = tj.tensor([1.0, 2.0], requires_grad=True)
    jstep, estep = tj.jit(make(w1)), make(w2)
    for v in (1.0, -1.0, 2.0, -0.5, 3.0):
        x = tj.tensor([v, 0.5])
        (a, ga), (b, gb) = jstep(x), estep(x)
        np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
        np.testing.assert_allclose(_np(ga), _np(gb), rtol=1e-6)
        np.testing.assert_allclose(_np(w1), _np(w2), rtol=1e-6)
    _one_compile(jstep)
    assert sum(" = cond " in ln for ln in jstep.ir(x).splitlines()) == 2
