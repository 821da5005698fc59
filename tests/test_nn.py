"""tracejit.nn: every layer and loss against NumPy float64 references and finite-difference
gradients (rows below), plus Module bookkeeping, state dicts, hooks, containers and init."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F  # noqa: N812
from tracejit import nn
from tracejit.testing import check_grad, check_op

rng = np.random.default_rng(0)


def r(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape)


# ---- NumPy float64 references --------------------------------------------------------------------


def np_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def np_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis, keepdims=True))


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def np_erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


def np_layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axes, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * w + b


def np_reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    return {"mean": loss.mean, "sum": loss.sum, "none": lambda: loss}[reduction]()


def np_nll(logp: np.ndarray, t: np.ndarray, w: np.ndarray | None, ignore: int,
           reduction: str) -> np.ndarray:
    """logp [N, C, *], t [N, *]."""
    lp = np.moveaxis(logp, 1, -1)
    valid = t != ignore
    safe = np.where(valid, t, 0)
    picked = -np.take_along_axis(lp, safe[..., None], -1)[..., 0]
    ww = (w[safe] if w is not None else np.ones_like(picked)) * valid
    loss = picked * ww
    if reduction == "mean":
        return loss.sum() / ww.sum()
    return np_reduce(loss, reduction)


def np_cross_entropy(x: np.ndarray, t: np.ndarray, w: np.ndarray | None = None,
                     ignore: int = -100, reduction: str = "mean",
                     smoothing: float = 0.0) -> np.ndarray:
    logp = np_log_softmax(x, 1)
    c = x.shape[1]
    if t.dtype.kind == "f":
        q = t * (1 - smoothing) + smoothing / c
        wb = 1.0 if w is None else w.reshape((1, -1) + (1,) * (x.ndim - 2))
        per = -(logp * q * wb).sum(1)
        return per.sum() / (x.size / c) if reduction == "mean" else np_reduce(per, reduction)
    nll = np_nll(logp, t, w, ignore, reduction)
    if smoothing == 0:
        return nll
    valid = t != ignore
    wb = 1.0 if w is None else w.reshape((1, -1) + (1,) * (x.ndim - 2))
    smooth = -(logp * wb).sum(1) * valid
    if reduction == "mean":
        denom = (w[np.where(valid, t, 0)] * valid).sum() if w is not None else valid.sum()
        smooth = smooth.sum() / denom
    elif reduction == "sum":
        smooth = smooth.sum()
    return (1 - smoothing) * nll + smooth * smoothing / c


def np_lstm(x, h, c, wi, wh, bi, bh):
    g = x @ wi.T + bi + h @ wh.T + bh
    i, f, gg, o = np.split(g, 4, axis=1)
    c2 = np_sigmoid(f) * c + np_sigmoid(i) * np.tanh(gg)
    return np_sigmoid(o) * np.tanh(c2), c2


def np_gru(x, h, wi, wh, bi, bh):
    gi, gh = x @ wi.T + bi, h @ wh.T + bh
    ir, iz, inn = np.split(gi, 3, axis=1)
    hr, hz, hn = np.split(gh, 3, axis=1)
    rr, z = np_sigmoid(ir + hr), np_sigmoid(iz + hz)
    n = np.tanh(inn + rr * hn)
    return (1 - z) * n + z * h


def _lstm(x, h, c, wi, wh, bi, bh):
    cell = nn.LSTMCell(x.shape[1], h.shape[1], dtype=x.dtype)
    for name, v in (("weight_ih", wi), ("weight_hh", wh), ("bias_ih", bi), ("bias_hh", bh)):
        cell._parameters[name] = v
    return cell(x, (h, c))


def _gru(x, h, wi, wh, bi, bh):
    cell = nn.GRUCell(x.shape[1], h.shape[1], dtype=x.dtype)
    for name, v in (("weight_ih", wi), ("weight_hh", wh), ("bias_ih", bi), ("bias_hh", bh)):
        cell._parameters[name] = v
    return cell(x, h)


def _rnn(x, h, wi, wh, bi, bh, nl="tanh"):
    cell = nn.RNNCell(x.shape[1], h.shape[1], nonlinearity=nl, dtype=x.dtype)
    for name, v in (("weight_ih", wi), ("weight_hh", wh), ("bias_ih", bi), ("bias_hh", bh)):
        cell._parameters[name] = v
    return cell(x, h)


T3 = np.array([2, 0, 3])
T_IGN = np.array([2, -100, 3, 1])
PROBS = np_softmax(r(3, 4), 1)
W4 = np.abs(r(4)) + 0.5

# (name, tracejit fn, NumPy reference, inputs): each row is checked for values (float32 vs
# float64 NumPy) and for gradients (float64 vs central differences)
ROWS = [
    ("linear", lambda x, w, b: F.linear(x, w, b), lambda x, w, b: x @ w.T + b,
     (r(3, 4), r(5, 4), r(5))),
    ("linear_3d_nobias", lambda x, w: F.linear(x, w), lambda x, w: x @ w.T, (r(2, 3, 4), r(5, 4))),
    ("bilinear", lambda a, b, w, c: F.bilinear(a, b, w, c),
     lambda a, b, w, c: np.einsum("ni,oij,nj->no", a, w, b) + c,
     (r(3, 2), r(3, 4), r(5, 2, 4), r(5))),
    ("embedding", lambda w: F.embedding(tj.tensor([[0, 2], [3, 2]]), w),
     lambda w: w[np.array([[0, 2], [3, 2]])], (r(4, 3),)),
    ("relu", lambda x: nn.ReLU()(x), lambda x: np.maximum(x, 0), (r(3, 4),)),
    ("leaky_relu", lambda x: nn.LeakyReLU(0.2)(x), lambda x: np.where(x > 0, x, 0.2 * x),
     (r(3, 4),)),
    ("sigmoid", lambda x: nn.Sigmoid()(x), np_sigmoid, (r(3, 4),)),
    ("tanh", lambda x: nn.Tanh()(x), np.tanh, (r(3, 4),)),
    ("gelu", lambda x: nn.GELU()(x), lambda x: 0.5 * x * (1 + np_erf(x / np.sqrt(2))), (r(3, 4),)),
    ("gelu_tanh", lambda x: nn.GELU("tanh")(x),
     lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))), (r(3, 4),)),
    ("silu", lambda x: nn.SiLU()(x), lambda x: x * np_sigmoid(x), (r(3, 4),)),
    ("softplus", lambda x: nn.Softplus()(x), lambda x: np.log1p(np.exp(x)), (r(3, 4),)),
    ("softmax", lambda x: nn.Softmax(dim=1)(x), lambda x: np_softmax(x, 1), (r(3, 4),)),
    ("log_softmax", lambda x: nn.LogSoftmax(dim=-1)(x), lambda x: np_log_softmax(x, -1),
     (r(2, 3, 4),)),
    ("identity", lambda x: nn.Identity(7, k=1)(x) * 1.0, lambda x: x, (r(3, 4),)),
    ("flatten", lambda x: nn.Flatten()(x), lambda x: x.reshape(2, -1), (r(2, 3, 4),)),
    ("layer_norm", lambda x, w, b: F.layer_norm(x, (4,), w, b),
     lambda x, w, b: np_layer_norm(x, w, b, 1), (r(3, 4), r(4), r(4))),
    ("layer_norm_2d", lambda x, w, b: F.layer_norm(x, (3, 4), w, b),
     lambda x, w, b: np_layer_norm(x, w, b, 2), (r(2, 3, 4), r(3, 4), r(3, 4))),
    ("rnn_cell", _rnn, lambda x, h, wi, wh, bi, bh: np.tanh(x @ wi.T + bi + h @ wh.T + bh),
     (r(2, 3), r(2, 4), r(4, 3), r(4, 4), r(4), r(4))),
    ("rnn_cell_relu", lambda *a: _rnn(*a, nl="relu"),
     lambda x, h, wi, wh, bi, bh: np.maximum(x @ wi.T + bi + h @ wh.T + bh, 0),
     (r(2, 3), r(2, 4), r(4, 3), r(4, 4), r(4), r(4))),
    ("lstm_cell", _lstm, np_lstm, (r(2, 3), r(2, 4), r(2, 4), r(16, 3), r(16, 4), r(16), r(16))),
    ("gru_cell", _gru, np_gru, (r(2, 3), r(2, 4), r(12, 3), r(12, 4), r(12), r(12))),
]

LOSS_ROWS = []
for red in ("mean", "sum", "none"):
    LOSS_ROWS += [
        (f"mse_{red}", lambda x, t, red=red: nn.MSELoss(reduction=red)(x, t),
         lambda x, t, red=red: np_reduce((x - t) ** 2, red), (r(3, 4), r(3, 4))),
        (f"l1_{red}", lambda x, t, red=red: nn.L1Loss(reduction=red)(x, t),
         lambda x, t, red=red: np_reduce(np.abs(x - t), red), (r(3, 4), r(3, 4))),
        (f"smooth_l1_{red}", lambda x, t, red=red: nn.SmoothL1Loss(reduction=red, beta=0.5)(x, t),
         lambda x, t, red=red: np_reduce(np.where(np.abs(x - t) < 0.5, (x - t) ** 2,
                                                  np.abs(x - t) - 0.25), red),
         (r(3, 4), r(3, 4))),
        (f"ce_{red}", lambda x, red=red: nn.CrossEntropyLoss(reduction=red)(x, tj.tensor(T3)),
         lambda x, red=red: np_cross_entropy(x, T3, reduction=red), (r(3, 4),)),
        (f"ce_weight_ignore_{red}", lambda x, w, red=red: nn.CrossEntropyLoss(
            w, ignore_index=-100, reduction=red)(x, tj.tensor(T_IGN)),
         lambda x, w, red=red: np_cross_entropy(x, T_IGN, w, reduction=red), (r(4, 4), W4)),
        (f"ce_smooth_{red}", lambda x, red=red: nn.CrossEntropyLoss(
            reduction=red, label_smoothing=0.2)(x, tj.tensor(T_IGN)),
         lambda x, red=red: np_cross_entropy(x, T_IGN, reduction=red, smoothing=0.2),
         (r(4, 4),)),
        (f"ce_smooth_weight_{red}", lambda x, w, red=red: nn.CrossEntropyLoss(
            w, reduction=red, label_smoothing=0.1)(x, tj.tensor(T_IGN)),
         lambda x, w, red=red: np_cross_entropy(x, T_IGN, w, reduction=red, smoothing=0.1),
         (r(4, 4), W4)),
        (f"ce_probs_{red}", lambda x, p, red=red: nn.CrossEntropyLoss(
            reduction=red, label_smoothing=0.1)(x, p),
         lambda x, p, red=red: np_cross_entropy(x, p, reduction=red, smoothing=0.1),
         (r(3, 4), PROBS)),
        (f"nll_{red}", lambda x, red=red: nn.NLLLoss(reduction=red)(x, tj.tensor(T3)),
         lambda x, red=red: np_nll(x, T3, None, -100, red), (r(3, 4),)),
        (f"bce_{red}", lambda x, t, w, red=red: nn.BCELoss(w, reduction=red)(x.sigmoid(), t),
         lambda x, t, w, red=red: np_reduce(-w * (t * np.log(np_sigmoid(x)) + (1 - t) *
                                                  np.log(1 - np_sigmoid(x))), red),
         (r(3, 4), rng.uniform(size=(3, 4)), np.abs(r(4)))),
        (f"bce_logits_{red}", lambda x, t, pw, red=red: nn.BCEWithLogitsLoss(
            reduction=red, pos_weight=pw)(x, t),
         lambda x, t, pw, red=red: np_reduce(-(pw * t * np.log(np_sigmoid(x)) + (1 - t) *
                                               np.log(1 - np_sigmoid(x))), red),
         (r(3, 4), rng.uniform(size=(3, 4)), np.abs(r(4)) + 0.5)),
    ]
LOSS_ROWS += [
    ("ce_spatial", lambda x: F.cross_entropy(x, tj.tensor(np.array([[0, 2, 1], [1, 1, 0]]))),
     lambda x: np_cross_entropy(x, np.array([[0, 2, 1], [1, 1, 0]])), (r(2, 3, 3),)),
    ("ce_unbatched", lambda x: F.cross_entropy(x, tj.tensor(2)),
     lambda x: -np_log_softmax(x, 0)[2], (r(4),)),
    ("ce_ignore_custom", lambda x: F.cross_entropy(x, tj.tensor([1, 3, 3, 0]), ignore_index=3),
     lambda x: np_cross_entropy(x, np.array([1, 3, 3, 0]), ignore=3), (r(4, 4),)),
]

IDS = [row[0] for row in ROWS + LOSS_ROWS]


@pytest.mark.parametrize("name,fn,ref,inputs", ROWS + LOSS_ROWS, ids=IDS)
def test_values_against_numpy(name, fn, ref, inputs):
    check_op(fn, ref, *inputs, atol=2e-5, rtol=2e-4)


@pytest.mark.parametrize("name,fn,ref,inputs", ROWS + LOSS_ROWS, ids=IDS)
def test_gradients_finite_differences(name, fn, ref, inputs):
    check_grad(fn, *inputs, atol=1e-5, rtol=1e-4)


# ---- layers: defaults, shapes, special cases -----------------------------------------------------


def test_linear_default_init_bounds_and_repr():
    tj.manual_seed(0)
    lin = nn.Linear(400, 30)
    bound = 1 / math.sqrt(400)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    assert w.shape == (30, 400) and b.shape == (30,)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    # kaiming_uniform(a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std bound/sqrt(3)
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert np.abs(b).max() <= bound
    assert repr(nn.Linear(3, 2, bias=False)) == "Linear(in_features=3, out_features=2, bias=False)"
    assert nn.Linear(3, 2, dtype=tj.float64).weight.dtype == tj.float64


def test_linear_rejects_float64_input_with_a_clear_message():
    lin = nn.Linear(4, 2)
    with pytest.raises(TypeError, match="float64.*float32"):
        lin(tj.tensor(np.ones((3, 4))))


def test_embedding_padding_idx_gets_no_gradient_and_starts_at_zero():
    emb = nn.Embedding(5, 3, padding_idx=1)
    assert np.all(emb.weight.detach().numpy()[1] == 0)
    idx = tj.tensor([[1, 2], [1, 4]])
    emb(idx).sum().backward()
    g = emb.weight.grad.numpy()
    np.testing.assert_array_equal(g[1], 0)
    np.testing.assert_array_equal(g[2], 1)
    np.testing.assert_array_equal(g[0], 0)
    assert repr(emb) == "Embedding(5, 3, padding_idx=1)"


def test_embedding_max_norm_renormalises_rows_in_place():
    emb = nn.Embedding(3, 4, max_norm=1.0)
    with tj.no_grad():
        emb.weight.copy_(tj.tensor(np.full((3, 4), 2.0)).float())
    out = emb(tj.tensor([0, 2]))
    np.testing.assert_allclose(np.linalg.norm(out.detach().numpy(), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb.weight.detach().numpy()[1]), 4.0)


def test_dropout_train_scales_and_eval_is_identity():
    tj.manual_seed(0)
    d = nn.Dropout(0.25)
    x = tj.ones(200, 100)
    y = d(x).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    d.eval()
    assert d(x) is x
    assert F.dropout(x, 1.0).sum().item() == 0
    assert repr(d) == "Dropout(p=0.25, inplace=False)"
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


def test_dropout_gradient_is_the_mask():
    tj.manual_seed(1)
    x = tj.ones(50, requires_grad=True)
    y = F.dropout(x, 0.5)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), y.detach().numpy())


def test_cells_default_hidden_and_unbatched_input():
    tj.manual_seed(0)
    cell = nn.LSTMCell(3, 4)
    x = tj.randn(3)
    h, c = cell(x)
    assert h.shape == (4,) and c.shape == (4,)
    h2, c2 = cell(x.unsqueeze(0), (tj.zeros(1, 4), tj.zeros(1, 4)))
    np.testing.assert_allclose(h.detach().numpy(), h2.detach().numpy()[0], rtol=1e-6)
    bound = 1 / math.sqrt(4)
    assert all(np.abs(p.detach().numpy()).max() <= bound for p in cell.parameters())
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh", "bias_ih",
                                                       "bias_hh"]
    assert cell.weight_ih.shape == (16, 3)
    assert nn.GRUCell(3, 4).weight_hh.shape == (12, 4)
    assert nn.RNNCell(3, 4)(tj.randn(2, 3)).shape == (2, 4)
    assert repr(nn.GRUCell(3, 4, bias=False)) == "GRUCell(3, 4, bias=False)"


def test_layer_norm_module_defaults():
    ln = nn.LayerNorm(4)
    assert ln.weight.tolist() == [1.0] * 4 and ln.bias.tolist() == [0.0] * 4
    assert repr(ln) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    out = ln(tj.randn(3, 4)).detach().numpy()
    np.testing.assert_allclose(out.mean(1), 0, atol=1e-6)
    assert nn.LayerNorm(4, elementwise_affine=False).weight is None


def test_softmax_implicit_dim_warns_like_torch():
    with pytest.warns(UserWarning, match="Implicit dimension"):
        out = nn.Softmax()(tj.randn(2, 3))
    np.testing.assert_allclose(out.sum(1).numpy(), 1, rtol=1e-6)


def test_loss_reprs_and_bad_reduction():
    assert repr(nn.MSELoss()) == "MSELoss()"
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    with pytest.raises(ValueError):
        F.mse_loss(tj.ones(2), tj.ones(2), reduction="avg")


def test_cross_entropy_all_ignored_mean_is_nan_like_torch():
    out = F.cross_entropy(tj.randn(2, 3), tj.tensor([-100, -100]))
    assert math.isnan(out.item())


def test_one_hot():
    out = F.one_hot(tj.tensor([0, 2, 1]), 4)
    assert out.dtype == tj.int64
    assert out.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]


# ---- Module bookkeeping --------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.scale = nn.Parameter(tj.ones(1))
        self.register_buffer("running", tj.zeros(4))
        self.register_buffer("scratch", tj.zeros(2), persistent=False)

    def forward(self, x):
        return self.block(self.act(self.fc1(x))) * self.scale + self.running


def test_registration_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "fc1.weight", "fc1.bias", "block.0.weight", "block.0.bias"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert [n for n, _ in net.named_buffers()] == ["running", "scratch"]
    assert [n for n, _ in net.named_children()] == ["fc1", "act", "block"]
    assert [n for n, _ in net.named_modules()] == ["", "fc1", "act", "block", "block.0",
                                                   "block.1"]
    assert len(list(net.modules())) == 6 and len(list(net.parameters(recurse=False))) == 1
    assert list(net.state_dict()) == ["scale", "running", "fc1.weight", "fc1.bias",
                                      "block.0.weight", "block.0.bias"]
    assert net.get_submodule("block.0") is net.block[0]
    assert net.get_parameter("block.0.bias") is net.block[0].bias
    del net.act
    assert "act" not in dict(net.named_children())


def test_shared_parameters_counted_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, lin)
    assert len(list(seq.parameters())) == 2
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_assignment_rules():
    net = Net()
    with pytest.raises(TypeError):
        net.scale = tj.ones(1)  # a plain tensor cannot replace a Parameter
    net.scale = None
    assert net.scale is None and "scale" not in dict(net.named_parameters())
    net.running = tj.ones(4)
    assert net.running.tolist() == [1.0] * 4
    net.extra = nn.Parameter(tj.zeros(2))
    assert "extra" in dict(net.named_parameters())
    with pytest.raises(AttributeError):
        nn.Module().missing  # noqa: B018


def test_train_eval_zero_grad_requires_grad_apply():
    net = Net()
    assert net.training and net.block[1].training
    net.eval()
    assert not net.training and not net.block[1].training
    net.train()
    net(tj.randn(2, 3)).sum().backward()
    assert net.fc1.weight.grad is not None
    net.zero_grad(set_to_none=False)
    assert net.fc1.weight.grad.abs().sum().item() == 0
    net.zero_grad()
    assert net.fc1.weight.grad is None
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen[0] == "Linear"


def test_to_float64_converts_parameters_in_place():
    net = Net()
    p = net.fc1.weight
    net.to(tj.float64)
    assert net.fc1.weight is p and p.dtype == tj.float64 and net.running.dtype == tj.float64
    assert net(tj.randn(2, 3, dtype=tj.float64)).dtype == tj.float64
    net.float()
    assert p.dtype == tj.float32


def test_forward_hooks_and_pre_hooks():
    lin = nn.Linear(2, 2)
    calls = []
    h = lin.register_forward_hook(lambda m, args, out: calls.append(args[0].shape) or out * 0)
    pre = lin.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    x = tj.ones(1, 2)
    assert lin(x).abs().sum().item() == 0
    assert calls == [(1, 2)]
    h.remove()
    pre.remove()
    expected = (x @ lin.weight.t() + lin.bias).detach().numpy()
    np.testing.assert_allclose(lin(x).detach().numpy(), expected)


def test_repr_nested():
    net = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.LeakyReLU(0.1)))
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "  (1): Sequential(\n"
        "    (0): ReLU()\n"
        "    (1): LeakyReLU(negative_slope=0.1)\n"
        "  )\n"
        ")")


# ---- state dicts ---------------------------------------------------------------------------------


def test_state_dict_round_trip_and_detached_sharing():
    a, b = Net(), Net()
    sd = a.state_dict()
    assert not sd["fc1.weight"].requires_grad
    assert np.shares_memory(sd["fc1.weight"].numpy(), a.fc1.weight.detach().numpy())
    assert repr(b.load_state_dict(sd)) == "<All keys matched successfully>"
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k].numpy())
    assert "scratch" not in sd


def test_load_state_dict_strict_report_and_model_untouched():
    net = Net()
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    bad = OrderedDict(net.state_dict())
    bad["fc1.weight"] = tj.zeros(4, 3)  # would be applied if loading were not all-or-nothing
    del bad["fc1.bias"]
    bad["fc9.weight"] = tj.zeros(1)
    with pytest.raises(RuntimeError) as e:
        net.load_state_dict(bad)
    msg = str(e.value)
    assert msg.startswith("Error(s) in loading state_dict for Net:")
    assert 'Missing key(s) in state_dict: "fc1.bias".' in msg
    assert 'Unexpected key(s) in state_dict: "fc9.weight".' in msg
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    res = net.load_state_dict(bad, strict=False)
    assert res.missing_keys == ["fc1.bias"] and res.unexpected_keys == ["fc9.weight"]
    assert net.fc1.weight.abs().sum().item() == 0


def test_load_state_dict_size_mismatch_changes_nothing():
    net = Net()
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    sd = {k: tj.zeros(*v.shape) for k, v in net.state_dict().items()}
    sd["block.0.weight"] = tj.zeros(4, 5)
    with pytest.raises(RuntimeError, match=r"size mismatch for block.0.weight: copying a param "
                                           r"with shape .*\[4, 5\].* current model is .*\[4, 4\]"):
        net.load_state_dict(sd, strict=False)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


# ---- containers ----------------------------------------------------------------------------------


def test_sequential_indexing_slicing_append():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear)
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is seq[0]
    seq.append(nn.Sigmoid())
    assert len(seq) == 4 and list(seq.state_dict())[-1] == "2.bias"
    assert seq(tj.randn(5, 2)).shape == (5, 1)
    named = nn.Sequential(OrderedDict([("a", nn.Linear(2, 2)), ("b", nn.ReLU())]))
    assert list(named.state_dict()) == ["a.weight", "a.bias"]
    del seq[1]
    assert [type(m).__name__ for m in seq] == ["Linear", "Linear", "Sigmoid"]
    with pytest.raises(IndexError):
        seq[5]


def test_module_list_and_dict():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    ml.append(nn.ReLU())
    assert len(ml) == 4 and len(list(ml.parameters())) == 6
    assert isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    md = nn.ModuleDict({"enc": nn.Linear(2, 3), "act": nn.ReLU()})
    md["dec"] = nn.Linear(3, 2)
    assert list(md.keys()) == ["enc", "act", "dec"] and "act" in md
    assert [n for n, _ in md.named_parameters()][0] == "enc.weight"

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = ml

    assert len(list(Holder().parameters())) == 6


# ---- init and clipping ---------------------------------------------------------------------------


def test_init_functions():
    tj.manual_seed(0)
    w = tj.empty(200, 100)
    nn.init.xavier_uniform_(w)
    a = math.sqrt(6 / 300)
    assert np.abs(w.numpy()).max() <= a and np.abs(w.numpy()).max() > 0.95 * a
    nn.init.xavier_normal_(w, gain=2.0)
    assert abs(w.numpy().std() - 2 * math.sqrt(2 / 300)) < 0.01
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.numpy().std() - math.sqrt(2 / 200)) < 0.005
    nn.init.kaiming_uniform_(w, nonlinearity="relu")
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / 100)
    nn.init.constant_(w, 0.5)
    assert np.all(w.numpy() == 0.5)
    nn.init.zeros_(w)
    nn.init.ones_(w[0])
    assert w.sum().item() == 100
    nn.init.uniform_(w, -2, -1)
    assert w.numpy().max() <= -1 and w.numpy().min() >= -2
    nn.init.normal_(w, 3.0, 0.1)
    assert abs(w.numpy().mean() - 3.0) < 0.01
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    p = nn.Parameter(tj.zeros(3, 3))
    nn.init.normal_(p)  # in place on a leaf that requires grad: init runs under no_grad
    assert p.requires_grad and p.is_leaf


def test_clip_grad_norm():
    a = nn.Parameter(tj.zeros(3))
    b = nn.Parameter(tj.zeros(4))
    a.grad = tj.tensor([3.0, 0.0, 0.0])
    b.grad = tj.tensor([0.0, 4.0, 0.0, 0.0])
    total = nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    assert total.item() == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad.numpy(), [3 / (5 + 1e-6), 0, 0], rtol=1e-6)
    total = nn.utils.clip_grad_norm_([a, b], max_norm=10.0)
    np.testing.assert_allclose(np.linalg.norm(np.r_[a.grad.numpy(), b.grad.numpy()]), 1.0,
                               rtol=1e-5)  # unchanged: already below max_norm
    inf = nn.utils.clip_grad_norm_([a, b], 0.1, norm_type=math.inf)
    assert inf.item() == pytest.approx(0.8, rel=1e-5)
    nn.utils.clip_grad_value_([a, b], 0.01)
    assert np.abs(b.grad.numpy()).max() <= 0.01


def test_parameter_basics():
    t = tj.ones(2)
    p = nn.Parameter(t)
    assert p.requires_grad and isinstance(p, tj.Tensor)
    assert np.shares_memory(p.detach().numpy(), t.numpy())
    assert repr(p).startswith("Parameter containing:\ntensor(")
    assert not nn.Parameter(tj.ones(1), requires_grad=False).requires_grad
    import copy

    q = copy.deepcopy(p)
    assert isinstance(q, nn.Parameter) and not np.shares_memory(q.detach().numpy(), t.numpy())
    assert type(p * 2) is tj.Tensor
