"""Attention and recurrent building blocks against torch from the same weights:
scaled_dot_product_attention, MultiheadAttention, TransformerEncoder(Layer), RNN/LSTM/GRU;
values and gradients, eager and under @jit (compiled, no fallback)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import tracejit
import tracejit.nn.functional as F  # noqa: N812
from tracejit.testing import check_grad

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RNG = np.random.default_rng(1234)


def randn(*shape: int, dtype: Any = np.float64) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def pair(a: np.ndarray, grad: bool = False) -> tuple[Any, Any]:
    """The same data as a tracejit and a torch tensor (leaves, when grad)."""
    ours = tracejit.tensor(a.copy(), requires_grad=grad)
    theirs = torch.tensor(a.copy(), requires_grad=grad)
    return ours, theirs


def load(ours: Any, theirs: Any) -> None:
    """torch's weights into our module: the keys must agree exactly (strict)."""
    sd = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict().keys()) == list(sd.keys())
    ours.load_state_dict(sd)


def close(a: Any, b: Any, tol: float = 1e-5) -> None:
    a = a.detach().numpy() if hasattr(a, "detach") else a
    b = b.detach().numpy() if hasattr(b, "detach") else b
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def assert_compiled(f: Any) -> None:
    info = f.cache_info()
    assert info.fallbacks == 0 and info.traces == 1 and info.hits >= 1, (info, str(f.explain()))
    assert not f.explain().graph_breaks


# ---- scaled_dot_product_attention ----------------------------------------------------------------

L, S, E, EV = 4, 6, 5, 3
MASK = RNG.random((L, S)) > 0.4
MASK[:, 0] = True
FMASK = RNG.standard_normal((L, S))

SDPA_CASES = {
    "plain": ((2, 3), {}),
    "no_batch": ((), {}),
    "three_batch_dims": ((2, 1, 3), {}),
    "bool_mask": ((2, 3), {"attn_mask": MASK}),
    "bool_mask_broadcast_heads": ((2, 3), {"attn_mask": np.broadcast_to(MASK, (3, L, S))}),
    "float_mask": ((2, 3), {"attn_mask": FMASK}),
    "causal": ((2,), {"is_causal": True}),
    "scale": ((2, 3), {"scale": 0.3, "attn_mask": MASK}),
}


@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_sdpa_values_and_gradients_match_torch(case: str) -> None:
    lead, kw = SDPA_CASES[case]
    arrays = [randn(*lead, L, E), randn(*lead, S, E), randn(*lead, S, EV)]
    ours, theirs = zip(*(pair(a, grad=True) for a in arrays))
    ok, tk = dict(kw), dict(kw)
    if "attn_mask" in kw:
        ok["attn_mask"] = tracejit.tensor(np.ascontiguousarray(kw["attn_mask"]))
        tk["attn_mask"] = torch.tensor(np.ascontiguousarray(kw["attn_mask"]))
    a = F.scaled_dot_product_attention(*ours, **ok)
    b = TF.scaled_dot_product_attention(*theirs, **tk)
    close(a, b, 1e-10)
    g = randn(*b.shape)
    a.backward(tracejit.tensor(g))
    b.backward(torch.tensor(g))
    for x, y in zip(ours, theirs):
        close(x.grad, y.grad, 1e-10)


def test_sdpa_causal_is_upper_left_aligned_when_lengths_differ() -> None:
    for lq, lk in ((3, 5), (5, 3)):
        arrays = [randn(2, lq, E), randn(2, lk, E), randn(2, lk, EV)]
        ours, theirs = zip(*(pair(a) for a in arrays))
        a = F.scaled_dot_product_attention(*ours, is_causal=True)
        b = TF.scaled_dot_product_attention(*theirs, is_causal=True)
        close(a, b, 1e-10)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_row_is_zero_with_zero_gradient_as_torch(kind: str) -> None:
    m = MASK.copy()
    m[1] = False
    mask = m if kind == "bool" else np.where(m, 0.0, -np.inf)
    arrays = [randn(2, L, E), randn(2, S, E), randn(2, S, EV)]
    ours, theirs = zip(*(pair(a, grad=True) for a in arrays))
    a = F.scaled_dot_product_attention(*ours, attn_mask=tracejit.tensor(mask))
    b = TF.scaled_dot_product_attention(*theirs, attn_mask=torch.tensor(mask))
    assert np.all(a.detach().numpy()[:, 1] == 0)
    close(a, b, 1e-10)
    a.sum().backward()
    b.sum().backward()
    for x, y in zip(ours, theirs):
        assert np.isfinite(x.grad.numpy()).all()
        close(x.grad, y.grad, 1e-10)


def test_sdpa_float32_matches_torch() -> None:
    arrays = [randn(2, 3, L, E, dtype=np.float32), randn(2, 3, S, E, dtype=np.float32),
              randn(2, 3, S, EV, dtype=np.float32)]
    ours, theirs = zip(*(pair(a) for a in arrays))
    m = MASK.astype(np.float32) - 1
    a = F.scaled_dot_product_attention(*ours, attn_mask=tracejit.tensor(m))
    b = TF.scaled_dot_product_attention(*theirs, attn_mask=torch.tensor(m))
    assert a.dtype is tracejit.float32
    close(a, b, 1e-5)


def test_sdpa_gqa_matches_torch() -> None:
    arrays = [randn(2, 6, L, E), randn(2, 2, S, E), randn(2, 2, S, EV)]
    ours, theirs = zip(*(pair(a, grad=True) for a in arrays))
    a = F.scaled_dot_product_attention(*ours, enable_gqa=True)
    b = TF.scaled_dot_product_attention(*theirs, enable_gqa=True)
    close(a, b, 1e-10)
    a.sum().backward()
    b.sum().backward()
    for x, y in zip(ours, theirs):
        close(x.grad, y.grad, 1e-10)
    with pytest.raises(RuntimeError, match="multiple"):
        F.scaled_dot_product_attention(ours[0], ours[1][:, :1].expand(2, 4, S, E)[:, :4],
                                       ours[2][:, :1].expand(2, 4, S, EV), enable_gqa=True)


def test_sdpa_empty_and_size_one() -> None:
    q, k, v = (tracejit.tensor(randn(*s)) for s in ((3, E), (0, E), (0, EV)))
    out = F.scaled_dot_product_attention(q, k, v)
    assert out.shape == (3, EV) and not out.numpy().any()
    q0 = tracejit.tensor(randn(0, E))
    assert F.scaled_dot_product_attention(q0, tracejit.tensor(randn(S, E)),
                                          tracejit.tensor(randn(S, EV))).shape == (0, EV)
    arrays = [randn(1, E), randn(1, E), randn(1, EV)]
    ours, theirs = zip(*(pair(a) for a in arrays))
    close(F.scaled_dot_product_attention(*ours), TF.scaled_dot_product_attention(*theirs))


def test_sdpa_nan_propagates_as_torch() -> None:
    q = randn(L, E)
    q[2, 1] = np.nan
    arrays = [q, randn(S, E), randn(S, EV)]
    ours, theirs = zip(*(pair(a) for a in arrays))
    a = F.scaled_dot_product_attention(*ours).numpy()
    b = TF.scaled_dot_product_attention(*theirs).numpy()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    close(a[~np.isnan(a)], b[~np.isnan(b)], 1e-10)


def test_sdpa_errors_name_the_problem() -> None:
    q, k, v = (tracejit.tensor(randn(*s)) for s in ((L, E), (S, E), (S, EV)))
    with pytest.raises(RuntimeError, match="is_causal"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=tracejit.tensor(MASK), is_causal=True)
    with pytest.raises(RuntimeError, match="embedding size"):
        F.scaled_dot_product_attention(q, tracejit.tensor(randn(S, E + 1)), v)
    with pytest.raises(RuntimeError, match="sequence length"):
        F.scaled_dot_product_attention(q, k, tracejit.tensor(randn(S + 1, EV)))
    with pytest.raises(TypeError, match="attn_mask"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=tracejit.tensor(MASK.astype(np.int64)))
    with pytest.raises(TypeError, match="same dtype"):
        F.scaled_dot_product_attention(q.float(), k, v)
    with pytest.raises(ValueError, match="dropout_p"):
        F.scaled_dot_product_attention(q, k, v, dropout_p=1.5)


def test_sdpa_dropout_is_unbiased_and_uses_tracejit_rng() -> None:
    n = 4000
    q, k, v = randn(1, 1, E), randn(1, S, E), randn(1, S, EV)
    qb, kb, vb = (tracejit.tensor(np.broadcast_to(a, (n,) + a.shape[1:]).copy())
                  for a in (q, k, v))
    tracejit.manual_seed(0)
    d1 = F.scaled_dot_product_attention(qb, kb, vb, dropout_p=0.5).numpy()
    tracejit.manual_seed(0)
    d2 = F.scaled_dot_product_attention(qb, kb, vb, dropout_p=0.5).numpy()
    np.testing.assert_array_equal(d1, d2)
    ref = F.scaled_dot_product_attention(*(tracejit.tensor(a) for a in (q, k, v))).numpy()
    assert not np.allclose(d1, ref[0])  # dropped somewhere
    # E[dropout(attn)] = attn, so the mean over many draws approaches the plain output
    np.testing.assert_allclose(d1.mean(0), ref[0], atol=6 * np.abs(v).max() / math.sqrt(n))
    zero = F.scaled_dot_product_attention(qb, kb, vb, dropout_p=1.0).numpy()
    assert not zero.any()


def test_sdpa_jit_compiles_and_matches_eager() -> None:
    def f(q: Any, k: Any, v: Any, m: Any) -> Any:
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        b = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5)
        return (a + b).sum()

    m = MASK.copy()
    m[2] = False
    arrays = [randn(2, 3, L, E, dtype=np.float32), randn(2, 3, S, E, dtype=np.float32),
              randn(2, 3, S, EV, dtype=np.float32)]
    jf = tracejit.jit(f)
    mt = tracejit.tensor(m)
    results = []
    for run in (f, jf, jf):
        ins = [tracejit.tensor(a, requires_grad=True) for a in arrays]
        loss = run(*ins, mt)
        loss.backward()
        results.append((loss.item(), [x.grad.numpy() for x in ins]))
    for loss, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5, abs=1e-5)
        for g, g0 in zip(grads, results[0][1]):
            close(g, g0, 1e-5)
    assert_compiled(jf)


def _weights_by_hand(q: Any, k: Any, causal: bool, p: float) -> Any:
    """softmax(q k^T / sqrt(E)) with the causal mask, then dropout drawn as rand_like of the
    weights: what the fused kernel must compute, in tracejit's composite ops."""
    w = q.matmul(k.mT) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        keep = tracejit.arange(q.shape[-2]).unsqueeze(-1) >= tracejit.arange(k.shape[-2])
        w = w.masked_fill(keep.logical_not(), -math.inf)
    w = tracejit.softmax(w, -1)
    if p > 0:
        w = w * ((tracejit.rand_like(w) < 1.0 - p).to(w.dtype) * (1.0 / (1.0 - p)))
    return w


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_fused_dropout_draws_rand_like_of_the_weights(dtype: Any, causal: bool) -> None:
    arrays = [randn(2, 3, L, E, dtype=dtype), randn(2, 3, S, E, dtype=dtype),
              randn(2, 3, S, EV, dtype=dtype)]
    g = randn(2, 3, L, EV, dtype=dtype)
    got, want = [], []
    for fused in (True, False):
        ins = [tracejit.tensor(a, requires_grad=True) for a in arrays]
        tracejit.manual_seed(7)
        if fused:
            out = F.scaled_dot_product_attention(*ins, dropout_p=0.3, is_causal=causal)
        else:
            out = _weights_by_hand(ins[0], ins[1], causal, 0.3).matmul(ins[2])
        (out * tracejit.tensor(g)).sum().backward()
        (got if fused else want).append([out.detach().numpy()] + [x.grad.numpy() for x in ins])
        (got if fused else want).append(tracejit.creation.default_generator.get_state().numpy())
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(got[0], want[0]):
        close(a, b, tol)
    np.testing.assert_array_equal(got[1], want[1])  # the generator advanced alike


def test_sdpa_fused_gradients_match_finite_differences() -> None:
    m = MASK.copy()
    m[1] = False  # a row that attends nowhere
    arrays = [randn(2, L, E), randn(2, S, E), randn(2, S, EV)]
    fmask = tracejit.tensor(FMASK)
    for mask in (tracejit.tensor(m), fmask, None):
        def fn(*xs: Any) -> Any:
            return F.scaled_dot_product_attention(*xs, attn_mask=mask)
        check_grad(fn, *arrays)


def test_sdpa_fused_under_jit_is_one_kernel_each_way_and_matches_eager() -> None:
    def step(q: Any, k: Any, v: Any) -> Any:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.2)
        loss = (out * out).sum()
        loss.backward()
        return loss

    arrays = [randn(2, 2, L, E, dtype=np.float32), randn(2, 2, S, E, dtype=np.float32),
              randn(2, 2, S, EV, dtype=np.float32)]
    jf = tracejit.jit(step)
    res = []
    for run in (step, jf, jf):
        tracejit.manual_seed(11)
        ins = [tracejit.tensor(a, requires_grad=True) for a in arrays]
        res.append([run(*ins).item()] + [x.grad.numpy() for x in ins])
    for r in res[1:]:
        assert r[0] == pytest.approx(res[0][0], rel=1e-6)
        for a, b in zip(r[1:], res[0][1:]):
            close(a, b, 1e-5)
    assert_compiled(jf)
    ir = str(jf.ir(*[tracejit.tensor(a, requires_grad=True) for a in arrays]))
    assert ir.count("= attention[") == 1 and ir.count("= attention_bwd[") == 1, ir
    assert "softmax" not in ir and "matmul" not in ir, ir
    src = jf.source(*[tracejit.tensor(a, requires_grad=True) for a in arrays])
    assert "attention_fwd(" in src and "attention_bwd_flat(" in src


def test_sdpa_broadcast_batch_and_grad_masks_take_the_composite() -> None:
    # batch dims that broadcast, and a float mask that wants a gradient, are computed by the
    # matmul/softmax composite: same values, and the mask gets its gradient
    q, k, v = randn(2, 1, L, E), randn(1, 3, S, E), randn(1, 3, S, EV)
    ours, theirs = zip(*(pair(a, True) for a in (q, k, v)))
    close(F.scaled_dot_product_attention(*ours), TF.scaled_dot_product_attention(*theirs))
    fm_o, fm_t = pair(FMASK, True)
    a = [tracejit.tensor(x) for x in (randn(L, E), randn(S, E), randn(S, EV))]
    F.scaled_dot_product_attention(*a, attn_mask=fm_o).sum().backward()
    TF.scaled_dot_product_attention(*(torch.tensor(x.numpy()) for x in a),
                                    attn_mask=fm_t).sum().backward()
    close(fm_o.grad, fm_t.grad, 1e-6)


# ---- MultiheadAttention --------------------------------------------------------------------------

def _mha_pair(**kw: Any) -> tuple[Any, Any]:
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(8, 2, **kw)
    ours = tracejit.nn.MultiheadAttention(8, 2, **kw)
    load(ours, theirs)
    return ours, theirs


MHA_CASES = {
    "default": ({}, {}),
    "batch_first": ({"batch_first": True}, {}),
    "kdim_vdim": ({"kdim": 5, "vdim": 3}, {}),
    "no_bias": ({"bias": False}, {}),
    "bias_kv_zero_attn": ({"add_bias_kv": True, "add_zero_attn": True}, {}),
    "key_padding_mask": ({}, {"key_padding_mask": True}),
    "attn_mask_bool": ({}, {"attn_mask": "bool"}),
    "attn_mask_float_3d": ({}, {"attn_mask": "float3d"}),
    "both_masks_no_weights": ({}, {"key_padding_mask": True, "attn_mask": "bool",
                                   "need_weights": False}),
    "per_head_weights": ({}, {"average_attn_weights": False, "attn_mask": "bool"}),
    "no_weights": ({}, {"need_weights": False}),
    "causal_hint": ({}, {"attn_mask": "causal", "is_causal": True, "need_weights": False}),
    "bias_kv_masks": ({"add_bias_kv": True}, {"key_padding_mask": True, "attn_mask": "bool"}),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_multihead_attention_matches_torch(case: str) -> None:
    ctor, fkw = MHA_CASES[case]
    ours, theirs = _mha_pair(**ctor)
    n, lq, lk = 3, 4, 5
    kd, vd = ctor.get("kdim", 8), ctor.get("vdim", 8)
    bf = ctor.get("batch_first", False)
    shp = (lambda seq, d: (n, seq, d)) if bf else (lambda seq, d: (seq, n, d))
    arrays = [randn(*shp(lq, 8), dtype=np.float32), randn(*shp(lk, kd), dtype=np.float32),
              randn(*shp(lk, vd), dtype=np.float32)]
    ins = [pair(a, grad=True) for a in arrays]
    okw: dict[str, Any] = {}
    tkw: dict[str, Any] = {}
    if fkw.get("key_padding_mask"):
        kpm = np.zeros((n, lk), bool)
        kpm[0, 1:3] = True
        kpm[2, 0] = True
        okw["key_padding_mask"], tkw["key_padding_mask"] = tracejit.tensor(kpm), torch.tensor(kpm)
    mk = fkw.get("attn_mask")
    if mk is not None:
        if mk == "bool":
            m = RNG.random((lq, lk)) > 0.7  # True = masked out in MultiheadAttention
            m[:, 0] = False
        elif mk == "causal":
            m = np.triu(np.ones((lq, lk), bool), 1)
        else:
            m = randn(n * 2, lq, lk, dtype=np.float32)
        okw["attn_mask"], tkw["attn_mask"] = tracejit.tensor(m), torch.tensor(m)
    for key in ("need_weights", "average_attn_weights", "is_causal"):
        if key in fkw:
            okw[key] = tkw[key] = fkw[key]
    a, aw = ours(*(o for o, _ in ins), **okw)
    b, bw = theirs(*(t for _, t in ins), **tkw)
    close(a, b)
    if bw is None:
        assert aw is None
    else:
        close(aw, bw)
    g = randn(*b.shape, dtype=np.float32)
    (a * tracejit.tensor(g)).sum().backward()
    (b * torch.tensor(g)).sum().backward()
    for (o, t) in ins:
        close(o.grad, t.grad, 2e-5)
    ours_p = dict(ours.named_parameters())
    for k, p in theirs.named_parameters():
        close(ours_p[k].grad, p.grad, 2e-5)


def test_multihead_attention_unbatched_and_state_dict_names() -> None:
    ours, theirs = _mha_pair()
    assert [k for k, _ in ours.named_parameters()] == \
        ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    x = randn(4, 8, dtype=np.float32)
    kpm = np.array([False, True, False, False])
    for need in (True, False):
        a, aw = ours(*[tracejit.tensor(x)] * 3, key_padding_mask=tracejit.tensor(kpm),
                     need_weights=need)
        b, bw = theirs(*[torch.tensor(x)] * 3, key_padding_mask=torch.tensor(kpm),
                       need_weights=need)
        close(a, b)
        if need:
            assert aw is not None and aw.shape == (4, 4)
            close(aw, bw)
    sep = tracejit.nn.MultiheadAttention(8, 2, kdim=3, vdim=5)
    assert [k for k, _ in sep.named_parameters()] == [
        "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "out_proj.weight",
        "out_proj.bias"]
    with pytest.raises(AssertionError, match="divisible"):
        tracejit.nn.MultiheadAttention(8, 3)
    with pytest.raises(RuntimeError, match="is_causal"):
        ours(*[tracejit.tensor(x)] * 3, is_causal=True)
    with pytest.raises(RuntimeError, match="key_padding_mask"):
        ours(*[tracejit.tensor(x)] * 3, key_padding_mask=tracejit.tensor(np.zeros(5, bool)))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_multihead_attention_fully_masked_rows_follow_torch() -> None:
    """need_weights=True softmaxes plainly (NaN, as torch); need_weights=False goes through
    scaled_dot_product_attention (zeros, as torch)."""
    ours, theirs = _mha_pair()
    x = randn(3, 1, 8, dtype=np.float32)
    kpm = np.ones((1, 3), bool)
    for need in (True, False):
        a, _ = ours(*[tracejit.tensor(x)] * 3, key_padding_mask=tracejit.tensor(kpm),
                    need_weights=need)
        b, _ = theirs(*[torch.tensor(x)] * 3, key_padding_mask=torch.tensor(kpm),
                      need_weights=need)
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_multihead_attention_dropout_only_in_training() -> None:
    m = tracejit.nn.MultiheadAttention(8, 2, dropout=0.5)
    x = tracejit.tensor(randn(4, 2, 8, dtype=np.float32))
    m.eval()
    a1, w1 = m(x, x, x)
    a2, w2 = m(x, x, x)
    np.testing.assert_array_equal(a1.detach().numpy(), a2.detach().numpy())
    m.train()
    _, wt = m(x, x, x, average_attn_weights=False)
    assert (wt.detach().numpy() == 0).any()


def test_multihead_attention_jit_compiles_and_matches_eager() -> None:
    m = tracejit.nn.MultiheadAttention(8, 2, batch_first=True)
    kpm = tracejit.tensor(np.array([[False, False, True, True, False], [False] * 5]))
    x = tracejit.tensor(randn(2, 5, 8, dtype=np.float32))

    def f(x: Any) -> Any:
        out, w = m(x, x, x, key_padding_mask=kpm)
        out2, _ = m(x, x, x, key_padding_mask=kpm, need_weights=False)
        return out + out2, w

    jf = tracejit.jit(f)
    ref = f(x)
    for _ in range(2):
        got = jf(x)
        for g, r in zip(got, ref):
            close(g, r)
    assert_compiled(jf)


# ---- TransformerEncoder --------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Support for mismatched src_key_padding_mask")
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_matches_torch(norm_first: bool, activation: str) -> None:
    torch.manual_seed(0)
    kw = {"dim_feedforward": 16, "activation": activation, "norm_first": norm_first,
          "batch_first": True}
    t_layer = torch.nn.TransformerEncoderLayer(8, 2, **kw)
    theirs = torch.nn.TransformerEncoder(t_layer, 2, norm=torch.nn.LayerNorm(8),
                                         enable_nested_tensor=False)
    o_layer = tracejit.nn.TransformerEncoderLayer(8, 2, **kw)
    ours = tracejit.nn.TransformerEncoder(o_layer, 2, norm=tracejit.nn.LayerNorm(8))
    load(ours, theirs)
    theirs.eval()
    ours.eval()
    n, seq = 3, 5
    x = randn(n, seq, 8, dtype=np.float32)
    kpm = np.zeros((n, seq), bool)
    kpm[0, 3:] = True
    mask = np.triu(np.full((seq, seq), -np.inf, np.float32), 1)
    xo, xt = pair(x, grad=True)
    for args in ({}, {"mask": mask}, {"src_key_padding_mask": kpm},
                 {"mask": mask, "src_key_padding_mask": kpm}):
        ao = {k: tracejit.tensor(v) for k, v in args.items()}
        at = {k: torch.tensor(v) for k, v in args.items()}
        a = ours(xo, **ao)
        b = theirs(xt, **at)
        close(a, b)
    a.sum().backward()
    b.sum().backward()
    close(xo.grad, xt.grad, 2e-5)
    ours_p = dict(ours.named_parameters())
    for k, p in theirs.named_parameters():
        close(ours_p[k].grad, p.grad, 2e-5)


def test_transformer_encoder_layer_seq_first_and_state_dict() -> None:
    torch.manual_seed(1)
    theirs = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, bias=False)
    ours = tracejit.nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, bias=False)
    load(ours, theirs)
    x = randn(5, 2, 8, dtype=np.float32)
    m = np.zeros((5, 5), bool)
    m[:, 4] = True
    close(ours(tracejit.tensor(x), src_mask=tracejit.tensor(m)),
          theirs(torch.tensor(x), src_mask=torch.tensor(m)))
    with pytest.raises(RuntimeError, match="relu/gelu"):
        tracejit.nn.TransformerEncoderLayer(8, 2, activation="swish")
    layer = tracejit.nn.TransformerEncoderLayer(8, 2, dim_feedforward=12,
                                                activation=tracejit.nn.functional.silu)
    assert layer(tracejit.tensor(x)).shape == (5, 2, 8)


def test_transformer_encoder_jit_compiles_and_matches_eager() -> None:
    layer = tracejit.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True,
                                                activation="gelu")
    enc = tracejit.nn.TransformerEncoder(layer, 2)
    enc.eval()
    kpm = tracejit.tensor(np.array([[False] * 4 + [True], [False] * 5]))
    x = tracejit.tensor(randn(2, 5, 8, dtype=np.float32))
    jf = tracejit.jit(lambda x: enc(x, src_key_padding_mask=kpm))
    ref = enc(x, src_key_padding_mask=kpm)
    for _ in range(2):
        close(jf(x), ref)
    assert_compiled(jf)


# ---- RNN, LSTM, GRU ------------------------------------------------------------------------------

RNN_CASES = {
    "one_layer": {},
    "two_layers_bidirectional": {"num_layers": 2, "bidirectional": True},
    "batch_first_no_bias": {"batch_first": True, "bias": False},
    "three_layers": {"num_layers": 3},
}


def _rnn_pair(kind: str, **kw: Any) -> tuple[Any, Any]:
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(3, 4, **kw)
    ours = getattr(tracejit.nn, kind)(3, 4, **kw)
    load(ours, theirs)
    return ours, theirs


def _state_pairs(kind: str, layers: int, n: int | None) -> tuple[Any, Any, list[Any]]:
    shape = (layers, 4) if n is None else (layers, n, 4)
    h = [pair(randn(*shape, dtype=np.float32), grad=True)]
    if kind == "LSTM":
        h.append(pair(randn(*shape, dtype=np.float32), grad=True))
        return (h[0][0], h[1][0]), (h[0][1], h[1][1]), h
    return h[0][0], h[0][1], h


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("case", list(RNN_CASES))
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_matches_torch(kind: str, case: str, with_state: bool) -> None:
    kw = RNN_CASES[case]
    ours, theirs = _rnn_pair(kind, **kw)
    seq, n = 5, 2
    x = randn(*((n, seq, 3) if kw.get("batch_first") else (seq, n, 3)), dtype=np.float32)
    xo, xt = pair(x, grad=True)
    layers = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    if with_state:
        ho, ht, leaves = _state_pairs(kind, layers, n)
        a, ha = ours(xo, ho)
        b, hb = theirs(xt, ht)
    else:
        leaves = []
        a, ha = ours(xo)
        b, hb = theirs(xt)
    close(a, b)
    if kind == "LSTM":
        close(ha[0], hb[0])
        close(ha[1], hb[1])
        lo = a.sum() + (ha[0] * 2).sum() + (ha[1] * 3).sum()
        lt = b.sum() + (hb[0] * 2).sum() + (hb[1] * 3).sum()
    else:
        close(ha, hb)
        lo, lt = a.sum() + (ha * 2).sum(), b.sum() + (hb * 2).sum()
    lo.backward()
    lt.backward()
    close(xo.grad, xt.grad)
    for o, t in leaves:
        close(o.grad, t.grad)
    ours_p = dict(ours.named_parameters())
    for k, p in theirs.named_parameters():
        close(ours_p[k].grad, p.grad, 2e-5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrent_unbatched_and_parameter_names(kind: str) -> None:
    ours, theirs = _rnn_pair(kind, num_layers=2, bidirectional=True)
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in theirs.named_parameters()]
    assert "weight_ih_l1_reverse" in dict(ours.named_parameters())
    x = randn(5, 3, dtype=np.float32)
    ho, ht, _ = _state_pairs(kind, 4, None)
    a, ha = ours(tracejit.tensor(x), ho)
    b, hb = theirs(torch.tensor(x), ht)
    assert a.shape == (5, 8)
    close(a, b)
    for u, w in zip(ha if kind == "LSTM" else [ha], hb if kind == "LSTM" else [hb]):
        assert u.shape == (4, 4)
        close(u, w)


def test_recurrent_edge_cases_and_errors() -> None:
    ours, theirs = _rnn_pair("LSTM")
    x = randn(1, 1, 3, dtype=np.float32)  # one step, one sequence
    a, (h, c) = ours(tracejit.tensor(x))
    b, (hb, cb) = theirs(torch.tensor(x))
    close(a, b)
    close(c, cb)
    with pytest.raises(NotImplementedError, match="proj_size"):
        tracejit.nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(RuntimeError, match="input_size"):
        ours(tracejit.tensor(randn(5, 2, 4, dtype=np.float32)))
    with pytest.raises(RuntimeError, match="hidden size"):
        gru = tracejit.nn.GRU(3, 4)
        gru(tracejit.tensor(randn(5, 2, 3, dtype=np.float32)),
            tracejit.tensor(randn(1, 3, 4, dtype=np.float32)))
    with pytest.raises(ValueError, match="2D or 3D"):
        ours(tracejit.tensor(randn(3, dtype=np.float32)))
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        tracejit.nn.GRU(3, 4, dropout=0.5)
    assert repr(tracejit.nn.LSTM(3, 4, 2, bidirectional=True)) == \
        repr(torch.nn.LSTM(3, 4, 2, bidirectional=True))


def test_recurrent_dropout_between_layers_in_training_only() -> None:
    m = tracejit.nn.GRU(3, 4, num_layers=2, dropout=0.5)
    x = tracejit.tensor(randn(6, 2, 3, dtype=np.float32))
    m.eval()
    np.testing.assert_array_equal(m(x)[0].detach().numpy(), m(x)[0].detach().numpy())
    m.train()
    tracejit.manual_seed(0)
    a = m(x)[0].detach().numpy()
    tracejit.manual_seed(1)
    b = m(x)[0].detach().numpy()
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrent_jit_compiles_and_matches_eager(kind: str) -> None:
    m = getattr(tracejit.nn, kind)(3, 4, num_layers=2, bidirectional=True, batch_first=True)

    def f(x: Any) -> Any:
        out, h = m(x)
        return out.sum() + (h[0] if kind == "LSTM" else h).sum()

    jf = tracejit.jit(f)
    arr = randn(2, 5, 3, dtype=np.float32)
    results = []
    for run in (f, jf, jf):
        m.zero_grad()
        x = tracejit.tensor(arr, requires_grad=True)
        loss = run(x)
        loss.backward()
        results.append((loss.item(), x.grad.numpy(),
                        {k: p.grad.numpy().copy() for k, p in m.named_parameters()}))
    for loss, gx, gp in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5)
        close(gx, results[0][1])
        for k in gp:
            close(gp[k], results[0][2][k])
    assert_compiled(jf)
