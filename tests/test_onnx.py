"""tracejit.onnx.export: each model or op is exported, checked by onnx.checker, run in
onnxruntime (CPUExecutionProvider) and compared with tracejit's eager result, values and
dtypes. Export only traces (no Numba compile); one test compares with the compiled @jit call.
Skipped when onnx or onnxruntime is not installed (pip install 'tracejit[onnx]' onnxruntime)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn as nn
import tracejit.nn.functional as F
from tracejit.ops import REGISTRY

# NumPy's warnings on the edge values (exp(1e30), casts of NaN): tracejit's eager result is the
# reference either way
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'tracejit[onnx]')")
ort = pytest.importorskip("onnxruntime",
                          reason="onnxruntime is not installed (pip install onnxruntime)")


def session(model: Any) -> Any:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def flat(out: Any) -> list[Any]:
    if isinstance(out, tj.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in out for t in flat(out[k])]
    return [t for o in out for t in flat(o)]


def compare(got: list[np.ndarray], want: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    want = [w.detach().numpy() for w in flat(want)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def export_check(fn: Callable, args: tuple, path: Any = None, **kw: Any) -> Any:
    """Export, check the model, run it on the example inputs and compare with eager."""
    model = tj.onnx.export(fn, args, path)
    onnx.checker.check_model(model, full_check=True)
    got = run(model, args)
    compare(got, fn(*args), **kw)
    return model


def run(model: Any, args: tuple) -> list[np.ndarray]:
    tensors = [a.detach().numpy() for a in args if isinstance(a, tj.Tensor)]
    return session(model).run(None, {i.name: a for i, a in zip(model.graph.input, tensors)})


# ---- models -----------------------------------------------------------------------------------
class TwoLayerNet(nn.Module):
    def __init__(self, d_in: int, h: int, d_out: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, h)
        self.linear2 = nn.Linear(h, d_out)

    def forward(self, x: tj.Tensor) -> tj.Tensor:
        return self.linear2(self.linear1(x).clamp(min=0))


def test_mlp_module(tmp_path: Any) -> None:
    tj.manual_seed(0)
    model = TwoLayerNet(10, 16, 3)
    x = tj.randn(8, 10)
    path = tmp_path / "mlp.onnx"
    export_check(model, (x,), path)
    loaded = onnx.load(str(path))  # the file on disk is the model
    assert [i.name for i in loaded.graph.input] == ["x"]
    assert sorted(i.name for i in loaded.graph.initializer) == \
        ["linear1.bias", "linear1.weight", "linear2.bias", "linear2.weight"]
    assert loaded.opset_import[0].version == tj.onnx.OPSET
    # the weights are data, not the example's: other inputs give the model's other results
    y = tj.randn(8, 10)
    compare(run(loaded, (y,)), model(y))


def test_a_jitted_function_exports_what_it_wraps_with_readable_names() -> None:
    lin = nn.Linear(3, 2)
    jf = tj.jit(lambda x: lin(x).relu())
    model = export_check(jf, (tj.randn(4, 3),))
    assert [i.name for i in model.graph.initializer] == ["lin_weight", "lin_bias"]
    model = export_check(tj.jit(lin), (tj.randn(4, 3),))  # a jitted Module: its own names
    assert [i.name for i in model.graph.input] == ["input"]
    assert [i.name for i in model.graph.initializer] == ["weight", "bias"]


def test_classifier_inference_matches_the_compiled_jit_call() -> None:
    tj.manual_seed(1)
    clf = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Dropout(0.5), nn.Linear(10, 3))

    def predict(x: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor]:
        logits = clf(x)
        return F.softmax(logits, dim=1), logits.argmax(dim=1)

    x = tj.randn(150, 4)
    # a Module is exported in eval mode (dropout is the identity), and its mode put back
    export_check(lambda x: clf.eval()(x), (x,))
    clf.train()
    m = tj.onnx.export(clf, (x,))
    assert clf.training and "Dropout" not in {n.op_type for n in m.graph.node}
    clf.eval()
    model = tj.onnx.export(predict, (x,))
    onnx.checker.check_model(model, full_check=True)
    probs, labels = run(model, (x,))
    assert labels.dtype == np.int64
    compare([probs, labels], predict(x))
    jf = tj.jit(predict)
    jf(x)
    compiled = jf(x)  # the second call runs the compiled program
    assert jf.cache_info().traces == 1
    compare([probs, labels], compiled)


def test_small_transformer_encoder() -> None:
    tj.manual_seed(2)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    layer.eval()
    x = tj.randn(2, 5, 16)
    model = export_check(layer, (x,), rtol=1e-5, atol=2e-6)
    assert "Dropout" not in {n.op_type for n in model.graph.node}


def test_embedding_gpt_block_with_causal_attention() -> None:
    tj.manual_seed(3)
    emb, ln, proj = nn.Embedding(11, 8), nn.LayerNorm(8), nn.Linear(8, 24)

    def block(tokens: tj.Tensor) -> tj.Tensor:
        h = ln(emb(tokens))
        q, k, v = proj(h).reshape(2, 6, 3, 2, 4).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.gelu(a.transpose(1, 2).reshape(2, 6, 8), approximate="tanh") + h

    export_check(block, (tj.randint(0, 11, (2, 6)),))


# ---- control flow -----------------------------------------------------------------------------
def test_cond_is_an_if_that_picks_at_run_time() -> None:
    w = tj.randn(4, 4)

    def f(x: tj.Tensor, flag: tj.Tensor) -> tj.Tensor:
        return tj.cond(flag, lambda a: (a @ w).relu(), lambda a: a.sum(0, keepdim=True) - a, x)

    x = tj.randn(3, 4)
    model = export_check(f, (x, tj.tensor(True)))
    assert "If" in {n.op_type for n in model.graph.node}
    # traced down one branch, the model still takes each at run time
    for flag in (True, False):
        compare(run(model, (x, tj.tensor(flag))), f(x, tj.tensor(flag)))
    # a data predicate (nonzero is true) on inputs the trace never saw
    g = lambda x: tj.cond(x.sum() > 0, lambda a: a * 2, lambda a: -a, x)  # noqa: E731
    m2 = tj.onnx.export(g, (tj.ones(3),))
    for v in (tj.ones(3), -tj.ones(3)):
        compare(run(m2, (v,)), g(v))


def test_while_loop_with_a_data_dependent_trip_count() -> None:
    def halve(x: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor]:
        def body(c: tuple) -> tuple:
            n, v = c
            return n + 1, v * 0.5

        return tj.while_loop(lambda c: c[1].abs().max() > 1.0, body, (tj.tensor(0), x))

    x = tj.tensor([3.0, -40.0])
    model = export_check(halve, (x,))
    assert "Loop" in {n.op_type for n in model.graph.node}
    for v in ([0.5, 0.25], [1000.0, 1.0], [-7.0, 2.0]):  # 0, 10 and 3 trips
        t = tj.tensor(v)
        got = run(model, (t,))
        compare(got, halve(t))
    assert int(run(model, (tj.tensor([1000.0, 1.0]),))[0]) == 10


def test_while_loop_max_iterations_bounds_the_trips() -> None:
    def f(x: tj.Tensor) -> tj.Tensor:
        return tj.while_loop(lambda v: v.sum() < 100.0, lambda v: v + 1.0, x, max_iterations=5)

    model = export_check(f, (tj.zeros(2),))
    for v in ([0.0, 0.0], [49.0, 49.0], [200.0, 0.0]):  # capped at 5, 1 trip, none
        compare(run(model, (tj.tensor(v),)), f(tj.tensor(v)))


def test_fori_loop_and_scan() -> None:
    w = tj.randn(3, 3) * 0.5

    def rnn(xs: tj.Tensor, h0: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor]:
        def step(h: tj.Tensor, x: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor]:
            h = (h @ w + x).tanh()
            return h, h.sum()

        return tj.scan(step, h0, xs)

    xs, h0 = tj.randn(5, 2, 3), tj.zeros(2, 3)
    model = export_check(rnn, (xs, h0))
    xs2 = tj.randn(5, 2, 3)
    compare(run(model, (xs2, h0)), rnn(xs2, h0))

    back = lambda xs: tj.scan(lambda c, x: (c + x, c * x), tj.zeros(3), xs, reverse=True)  # noqa
    export_check(back, (tj.randn(4, 3),))

    def power(x: tj.Tensor) -> tj.Tensor:
        return tj.fori_loop(0, 4, lambda i, acc: acc * x + i, tj.ones_like(x))

    export_check(power, (tj.tensor([0.5, 2.0, -1.0]),))

    def until(x: tj.Tensor, n: tj.Tensor) -> tj.Tensor:  # tensor bounds: a while loop
        return tj.fori_loop(0, n, lambda i, acc: acc + x * i, tj.zeros_like(x))

    m = export_check(until, (tj.ones(2), tj.tensor(3)))
    compare(run(m, (tj.ones(2), tj.tensor(6))), until(tj.ones(2), tj.tensor(6)))


# ---- one row per op and per semantic rule ------------------------------------------------------
class Row(NamedTuple):
    name: str
    fn: Callable
    args: Callable[[], tuple]
    atol: float = 1e-6  # 0 where tiny results must be right relatively (log1p near 0)


EDGE = [0.0, -0.0, 1e-9, -2.5, 0.5, 1.5, 2.5, 3.0, math.inf, -math.inf, math.nan, 1e30]
POS = [1e-9, 0.5, 1.0, 3.0, 1e30, math.inf, 0.0]


def e() -> tuple:
    return (tj.tensor(EDGE),)


def m34() -> tuple:
    tj.manual_seed(7)
    return (tj.randn(3, 4),)


def ints() -> tuple:
    return (tj.tensor([-7, 7, -7, 7, 0, 5, -1, 9]), tj.tensor([2, -2, -2, 2, 3, 5, 4, -4]))


def nans() -> tuple:
    return (tj.tensor([[1.0, math.nan, 3.0, math.nan], [-1.0, -5.0, 2.0, 2.0],
                       [4.0, 4.0, -math.inf, 0.0]]),)


EMB = nn.Embedding(5, 3)
ROWS = [
    # unary elementwise on edge values (NaN, +-inf, -0, tiny, huge)
    *(Row(n, (lambda n: lambda x: getattr(x, n)())(n), e) for n in
      ("neg", "exp", "abs", "sin", "cos", "tanh", "sigmoid", "erf", "relu", "sign", "floor",
       "ceil", "round", "logical_not", "trunc", "expm1", "square", "isnan", "isinf")),
    *(Row(n, (lambda n: lambda x: getattr(x, n)())(n), lambda: (tj.tensor(POS),)) for n in
      ("log", "log1p", "sqrt", "rsqrt")),
    Row("log1p tiny", lambda x: x.log1p(), lambda: (tj.tensor([1e-10, -1e-7, 3e-5, -0.5]),),
        atol=0.0),
    Row("expm1 tiny", lambda x: x.expm1(), lambda: (tj.tensor([1e-10, -1e-7, 3e-5, -30.0]),),
        atol=0.0),
    Row("unary on ints", lambda x: (x.neg(), x.abs(), x.sign(), x.floor(), x.relu(), x.exp()),
        lambda: (tj.tensor([-3, 0, 5]),)),
    # binary elementwise, broadcasting, literals and their dtypes
    Row("arith broadcast", lambda a, b: (a + b, a - b, a * b, a / b, a ** 2, b.abs() ** a),
        lambda: (tj.randn(3, 1), tj.randn(1, 4))),
    Row("maximum minimum nan", lambda a, b: (tj.maximum(a, b), tj.minimum(a, b)),
        lambda: (tj.tensor([1.0, math.nan, 2.0, -0.0]), tj.tensor([0.0, 1.0, math.nan, 0.0]))),
    Row("compare", lambda a, b: (a == b, a != b, a < b, a <= b, a > b, a >= b),
        lambda: (tj.tensor([1.0, math.nan, 2.0, 3.0]), tj.tensor([1.0, math.nan, 1.0, 4.0]))),
    Row("compare bools", lambda a, b: (a < b, a >= b, a == b, a & b, a | b, ~a, a + b, a * b),
        lambda: (tj.tensor([True, False, True, False]), tj.tensor([True, True, False, False]))),
    Row("compare int with float", lambda a: (a > 0.5, a == 2, a * 1.5, a + True),
        lambda: (tj.tensor([0, 1, 2]),)),
    Row("int floor division signs", lambda a, b: (a // b, a.div(b, rounding_mode="trunc"), a / b,
                                                  a // 2, -9 // b), ints),
    Row("float floor division signs", lambda a, b: (a // b, a.div(b, rounding_mode="trunc")),
        lambda: tuple(t.float() for t in ints())),
    Row("scalar literal dtypes", lambda i, f, d: (i + 2.5, i * 2, f + d, i + f, f * 3, d * i,
                                                  i / 4),
        lambda: (tj.tensor([1, -2]), tj.tensor([0.5, 1.5]), tj.tensor(2.0, dtype=tj.float64))),
    Row("float64 and int32", lambda a, b: (a * b, b + 1, b * b, b // 3, b.long() + b),
        lambda: (tj.randn(3, dtype=tj.float64), tj.tensor([5, -6, 7], dtype=tj.int32))),
    Row("where", lambda c, a: (tj.where(c, a, 0.0), tj.where(c, 1, a), a.masked_fill(c, -1.0)),
        lambda: (tj.tensor([True, False, True]), tj.tensor([1.0, 2.0, 3.0]))),
    Row("clamp", lambda a, i: (a.clamp(-1.0, 2.0), a.clamp(max=0.0), i.clamp(min=0.5),
                               i.clamp(-1, 1)),
        lambda: (tj.tensor([-3.0, 0.5, math.nan, 7.0]), tj.tensor([-3, 0, 2, 7]))),
    Row("casts", lambda x: (x.long(), x.int(), x.bool(), x.double(), x.long().float(),
                            x.bool().long()),
        lambda: (tj.tensor([-2.7, -0.5, 0.0, 0.9, 3.5]),)),
    # reductions: negative dims, keepdim, NaN, ints, bools
    Row("sum mean", lambda x: (x.sum(), x.sum(-1), x.sum((0, -1), keepdim=True), x.mean(0),
                               x.mean(-1, keepdim=True), x.var(1), x.std()), m34),
    Row("prod all any", lambda x: (x.prod(1), (x > 0).all(1), (x > 0).any(-1, keepdim=True),
                                   (x > 0).sum(0), x.all()), m34),
    Row("amax amin nan", lambda x: (x.amax(1), x.amin(0, keepdim=True), x.max(), x.min(-1).values,
                                    x.amax((0, 1))), nans),
    Row("argmax argmin nan", lambda x: (x.argmax(1), x.argmin(0, keepdim=True), x.argmax(),
                                        x.argmin(-1), x.max(1).indices,
                                        x.argmax(keepdim=True)), nans),
    Row("int reductions", lambda i: (i.sum(), i.prod(), i.amax(0), i.argmax(), i.max(0).indices),
        lambda: (ints()[0],)),
    Row("softmax family", lambda x: (F.softmax(x, -1), F.log_softmax(x, 0), x.logsumexp(1),
                                     F.layer_norm(x, (4,)), F.gelu(x),
                                     F.gelu(x, approximate="tanh"), F.silu(x), F.softplus(x)), m34),
    # movement
    Row("reshape view flatten", lambda x: (x.reshape(2, -1), x.view(4, 3), x.flatten(),
                                           x.reshape(3, 1, 4, 1).squeeze(-1), x.unsqueeze(-2),
                                           x.reshape(12)[3:3]), m34),
    Row("permute transpose expand", lambda x: (x.T, x.transpose(0, -1), x.permute(1, 0),
                                               x[:, :1].expand(3, 5),
                                               x.unsqueeze(0).expand(2, 3, 4),
                                               x.broadcast_to((2, 3, 4)), x.mT), m34),
    Row("slicing with steps", lambda x: (x[1:, ::2], x[..., -1], x[::2, 1:3], x[-1], x[:, 3:],
                                         x.narrow(1, 1, 2)), m34),
    Row("cat stack split", lambda x: (tj.cat([x, x * 2], -1), tj.stack([x, x], 0),
                                      *x.split(2, dim=1), *x.chunk(3, 0), tj.cat([x, x[:0]], 0)),
        m34),
    Row("slice_scatter", lambda x: _assign(x), m34),
    # contractions
    Row("matmul batched broadcast", lambda a, b: (a @ b, a[0, 0] @ b[0], a[0, 0, 0] @ b[1],
                                                  tj.bmm(a[0], b[:2])),
        lambda: (tj.randn(2, 1, 3, 4), tj.randn(5, 4, 2))),
    Row("einsum", lambda a, b: tj.einsum("ij,kj->ik", a, b), lambda: (tj.randn(3, 4),
                                                                      tj.randn(5, 4))),
    Row("sdpa masks", lambda q, k, v, m: (F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                                          F.scaled_dot_product_attention(q, k, v, m.float() - 1,
                                                                         scale=0.3)),
        lambda: (tj.randn(2, 3, 4), tj.randn(2, 5, 4), tj.randn(2, 5, 2),
                 tj.tensor([[True] * 5, [False] * 5, [True, False] * 2 + [True]]))),
    # indexing with int64 indices, negative ones included
    Row("gather index", lambda x, i: (tj.gather(x, 1, i[:3, None].clamp(0, 3)), x[i], x[:, i],
                                      x[i, i], x[[0, 2]][:, [1, -1]], x.index_select(1, i[:2] + 1)),
        lambda: (tj.randn(3, 4), tj.tensor([0, -1, 2]))),
    Row("index non-adjacent", lambda x, i: (x[i, :, i], x[:, i, i]),
        lambda: (tj.randn(3, 3, 3), tj.tensor([[0, 1], [-1, 2]]))),
    Row("scatter_add index_put", lambda x, i: (x.scatter_add(0, i.clamp(0, 2), x[:1]),
                                               _put(x, i)),
        lambda: (tj.randn(3, 4), tj.tensor([[2, 0, 1, 2]]))),
    Row("embedding", lambda t: EMB(t), lambda: (tj.tensor([[0, 4], [2, 2]]),)),
    # scan ops, creation, constants
    Row("cumsum sort topk", lambda x: (tj.cumsum(x, 1), x.long().cumsum(0),
                                       tj.sort(x, 1).values, tj.sort(x, 0, descending=True),
                                       tj.topk(x, 2, dim=1), tj.argsort(x, -1)),
        lambda: (tj.tensor([[1.0, 3.0, 1.0, -2.0], [0.0, 0.0, 5.0, math.nan],
                            [2.0, -1.0, 2.0, 2.0]]),)),
    Row("creation and constants", lambda x: (x + tj.arange(4), tj.zeros_like(x), tj.full((2,), 7),
                                             x * tj.tensor([1.0, -1.0, 2.0, 0.0]), tj.tril(x),
                                             tj.triu(x, 1), tj.ones(2, 2, dtype=tj.int64),
                                             tj.eye(3) @ x), m34),
]


def _assign(x: tj.Tensor) -> tj.Tensor:
    y = x.clone()
    y[:, 1::2] = -1.0
    y[0] = y[1] * 2
    return y


def _put(x: tj.Tensor, i: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor]:
    y = x.clone()
    y[tj.tensor([0, -1]), tj.tensor([1, 3])] = tj.tensor([10.0, 20.0])
    z = x.clone()
    # accumulate (an embedding's backward): duplicate indices add up
    z = z._index_put(tj.ones(4), tj.tensor([2, 2, -3]), dims=(0,), accumulate=True)
    return y, z


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_op_row(row: Row) -> None:
    export_check(row.fn, row.args(), atol=row.atol)


# ---- convolutional nets (the conv and pool ops of issue 15; skipped until they are registered) --
needs_conv = pytest.mark.skipif("conv" not in REGISTRY or "max_pool2d_indices" not in REGISTRY,
                                reason="the conv/pool ops are not in this tree yet (branches "
                                       "conv15, pool15)")


@needs_conv
@pytest.mark.parametrize("kw", [{}, {"stride": 2, "padding": 1},
                                {"padding": "same", "dilation": 2},
                                {"groups": 3, "stride": (2, 1)}], ids=str)
def test_conv2d(kw: dict) -> None:
    tj.manual_seed(4)
    export_check(nn.Conv2d(3, 6, 3, **kw), (tj.randn(2, 3, 9, 8),))


@needs_conv
def test_conv1d_and_conv_transpose() -> None:
    tj.manual_seed(5)
    export_check(nn.Conv1d(3, 4, 3, padding=1), (tj.randn(2, 3, 7),))
    x = tj.randn(2, 3, 5, 4)
    export_check(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), (x,))
    export_check(nn.ConvTranspose2d(3, 6, 2, stride=2, groups=3), (x,))


@needs_conv
@pytest.mark.parametrize("kw", [{"kernel_size": 2},
                                {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
                                {"kernel_size": 3, "stride": 1, "dilation": 2},
                                {"kernel_size": 2, "ceil_mode": True}], ids=str)
def test_max_pool2d_ties_nan_and_inf_windows(kw: dict) -> None:
    tj.manual_seed(6)
    x = tj.randn(2, 3, 9, 8)
    x[0, 0, 1, 1] = math.nan
    x[0, 0, 2, 2] = math.nan  # the last NaN of a window wins, as torch's kernel
    x[1, 1, :4, :4] = -math.inf  # an all -inf window keeps its first valid position
    export_check(nn.MaxPool2d(**kw), (x,))
    export_check(nn.MaxPool2d(**kw), (x[0],))  # unbatched
    export_check(lambda a: F.max_pool2d(a, **kw, return_indices=True), (x,))
    ties = tj.tensor([[[[1.0, 1.0, 2.0], [2.0, 0.0, 2.0], [1.0, 1.0, 1.0]]]])
    export_check(lambda a: F.max_pool2d(a, 2, 1, return_indices=True), (ties,))


@needs_conv
@pytest.mark.parametrize("kw", [{"kernel_size": 2},
                                {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
                                {"kernel_size": 3, "stride": 2, "padding": 1,
                                 "count_include_pad": False},
                                {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                                 "count_include_pad": False},
                                {"kernel_size": 2, "divisor_override": 3, "padding": 1}], ids=str)
def test_avg_pool2d(kw: dict) -> None:
    tj.manual_seed(7)
    export_check(nn.AvgPool2d(**kw), (tj.randn(2, 3, 9, 8),))


@needs_conv
def test_adaptive_avg_pool_and_batch_norm_in_eval() -> None:
    tj.manual_seed(8)
    x = tj.randn(2, 3, 9, 8)
    for size in ((1, 1), (3, 3), (4, 5), (2, 8)):
        export_check(nn.AdaptiveAvgPool2d(size), (x,))
    bn = nn.BatchNorm2d(3)
    bn(x)  # running statistics that are not the initial ones
    bn.eval()
    export_check(bn, (x,))


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.pool = nn.Conv2d(8, 16, 3, padding=1), nn.MaxPool2d(2)
        self.drop, self.fc = nn.Dropout2d(0.2), nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: tj.Tensor) -> tj.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.conv2(self.drop(x))))
        return self.fc(x.flatten(1))


@needs_conv
def test_a_digits_cnn_exports_in_eval_mode() -> None:
    tj.manual_seed(9)
    cnn = DigitsCNN()
    cnn(tj.randn(4, 1, 8, 8))  # one training-mode call moves BatchNorm's running statistics
    model = tj.onnx.export(cnn, (tj.randn(16, 1, 8, 8),))  # exported in eval mode
    assert cnn.training
    cnn.eval()
    x = tj.randn(16, 1, 8, 8)
    compare(run(model, (x,)), cnn(x))
    assert "Conv" in {n.op_type for n in model.graph.node}


# ---- what cannot be exported says so -----------------------------------------------------------
# ops with no ONNX mapping, and why (a new op fails test_every_op_is_mapped_or_declared until it
# gets an entry in tracejit/onnx/table.py or a reason here)
UNMAPPED = {
    "philox": "random numbers: export in eval mode, or pass the noise in as an input",
    "nonzero": "a data-dependent shape (boolean-mask indexing)",
    "attention_bwd": "only a gradient computes it; export traces without gradients",
    "fused": "export reads the graph before fusion",
    "conv_weight_grad": "only a gradient computes it",
    "conv_im2col": "made by passes/conv.py; export reads the graph before the passes",
    "conv_gemm": "made by passes/conv.py; export reads the graph before the passes",
    "conv_weight_grad_cols": "made by passes/conv.py after autodiff",
    "max_pool2d_relu_bwd": "made by passes/conv.py after autodiff",
    "avg_pool2d_bwd": "only a gradient computes it",
    "adaptive_avg_pool2d_bwd": "only a gradient computes it",
    "all_reduce": "communication between processes (tracejit.distributed) has no ONNX form",
}


def test_every_op_is_mapped_or_declared() -> None:
    mapped = set(tj.onnx.supported_ops())
    missing = sorted(n for n in REGISTRY if n not in mapped and n not in UNMAPPED)
    assert not missing, f"ops without an ONNX mapping or a reason in UNMAPPED: {missing}"


def test_unsupported_op_names_the_op_and_the_line() -> None:
    def noisy(x: tj.Tensor) -> tj.Tensor:
        return x + tj.randn(3)  # philox: random numbers have no ONNX mapping

    with pytest.raises(tj.onnx.UnsupportedOpError) as info:
        tj.onnx.export(noisy, (tj.ones(3),))
    msg = str(info.value)
    assert "'philox'" in msg and "test_onnx.py:" in msg and "table.py" in msg


def test_python_branch_on_a_tensor_is_refused() -> None:
    def f(x: tj.Tensor) -> tj.Tensor:
        if x.sum() > 0:
            return x * 2
        return x

    with pytest.raises(tj.onnx.ExportError, match="tracejit.cond"):
        tj.onnx.export(f, (tj.ones(2),))


def test_state_writes_and_non_tensor_results_are_refused() -> None:
    w = tj.zeros(2)

    def step(x: tj.Tensor) -> tj.Tensor:
        w.add_(x)
        return w * 1

    with pytest.raises(tj.onnx.ExportError, match="in place"):
        tj.onnx.export(step, (tj.ones(2),))
    with pytest.raises(tj.onnx.ExportError, match="not a tensor"):
        tj.onnx.export(lambda x: (x, 3), (tj.ones(2),))
    with pytest.raises(tj.onnx.ExportError, match="input_names"):
        tj.onnx.export(lambda x: x + 1, (tj.ones(2),), input_names=["a", "b"])
    with pytest.raises(tj.onnx.ExportError, match="while a trace is recording"):
        tj.jit(lambda x: tj.onnx.export(lambda y: y + 1, (x,)))(tj.ones(2))


def test_non_tensor_arguments_are_baked_in_and_names_can_be_given() -> None:
    def f(x: tj.Tensor, k: int, y: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor]:
        return x * k + y, y

    args = (tj.ones(2), 3, tj.tensor([1.0, 2.0]))
    model = tj.onnx.export(f, args, input_names=["a", "b"], output_names=["s", "b_out"])
    assert [i.name for i in model.graph.input] == ["a", "b"]
    assert [o.name for o in model.graph.output] == ["s", "b_out"]
    assert model.producer_name == "tracejit"
    compare(run(model, args), f(*args))
    with pytest.raises(tj.onnx.ExportError, match="used twice"):
        tj.onnx.export(f, args, input_names=["a", "b"], output_names=["a", "c"])


def test_missing_onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx then raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'tracejit\[onnx\]'"):
        tj.onnx.export(lambda x: x + 1, (tj.ones(2),))
