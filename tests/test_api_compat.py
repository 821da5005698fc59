"""Small API gaps that made real PyTorch programs fail or silently misbehave: integer floor
division, CUDA requests, the legacy Variable and loss arguments, torch's keyword names and
out=. Checked against torch when it is installed, else against NumPy."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F  # noqa: N812

torch = pytest.importorskip("torch")


def _np(t: object) -> np.ndarray:
    return np.asarray(t.detach().numpy() if hasattr(t, "detach") else t)


# ---- 1. floor division -------------------------------------------------------------------------

INT_CASES = [
    ([7, -7, 5, -5, 0, 1], [2, 2, -3, -3, 4, -1]),
    ([[9, -9]], [[4], [-4]]),  # broadcast
    ([], []),  # empty
    (3, [2, -2]),  # 0-d
]


@pytest.mark.parametrize("a, b", INT_CASES)
@pytest.mark.parametrize("mode", ["floor", "trunc"])
def test_int_div_rounding_matches_torch(a: object, b: object, mode: str) -> None:
    ta, tb = torch.tensor(a, dtype=torch.int64), torch.tensor(b, dtype=torch.int64)
    ja, jb = tj.tensor(a, dtype=tj.int64), tj.tensor(b, dtype=tj.int64)
    want = torch.div(ta, tb, rounding_mode=mode)
    got = ja.div(jb, rounding_mode=mode)
    assert got.dtype is tj.int64 and got.shape == tuple(want.shape)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    if mode == "floor":
        assert (ja // jb).dtype is tj.int64
        np.testing.assert_array_equal((ja // jb).numpy(), (ta // tb).numpy())
        np.testing.assert_array_equal(tj.floor_divide(ja, jb).numpy(), want.numpy())


def test_int64_floor_division_is_exact_beyond_float64() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(-2**62, 2**62, 4000, dtype=np.int64)
    b = rng.integers(-2**40, 2**40, 4000, dtype=np.int64)
    b[:1000] = rng.integers(1, 9, 1000)
    b[b == 0] = 7
    want = np.floor_divide(a, b)
    np.testing.assert_array_equal((tj.from_numpy(a) // tj.from_numpy(b)).numpy(), want)
    trunc = (torch.from_numpy(a).div(torch.from_numpy(b), rounding_mode="trunc")).numpy()
    np.testing.assert_array_equal(tj.from_numpy(a).div(tj.from_numpy(b),
                                                       rounding_mode="trunc").numpy(), trunc)


@pytest.mark.parametrize("lhs, rhs", [
    ("int", 2), ("int", 2.0), ("float", 2), ("int", "float"), ("float", "int"), ("int32", 3),
    ("int32", "int"), (7, "int"), (7.5, "int"), ("int", "float0d"),
])
def test_floor_division_promotes_as_torch(lhs: object, rhs: object) -> None:
    def make(m: object, spec: object) -> object:
        table = {"int": ([7, -7, 9], "int64"), "float": ([7.5, -7.5, 9.0], "float32"),
                 "int32": ([7, -7, 9], "int32"), "float0d": (2.5, "float32")}
        if not isinstance(spec, str):
            return spec
        data, dtype = table[spec]
        return m.tensor(data, dtype=getattr(m, dtype))

    want = make(torch, lhs) // make(torch, rhs)
    got = make(tj, lhs) // make(tj, rhs)
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    np.testing.assert_allclose(got.numpy(), want.numpy())


def test_int_division_by_zero_raises_like_torch() -> None:
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        torch.tensor([4, 5]) // torch.tensor([1, 0])
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        tj.tensor([4, 5]) // tj.tensor([1, 0])
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        tj.tensor([4, 5]) // 0
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        tj.tensor([4, 5]).div(tj.tensor([0, 1]), rounding_mode="trunc")
    # float division by zero is inf/nan, not an error, in both
    np.testing.assert_array_equal((tj.tensor([1.0, -1.0]) // 0).numpy(),
                                  (torch.tensor([1.0, -1.0]) // 0).numpy())


def test_bad_rounding_mode_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="rounding_mode"):
        tj.tensor([1]).div(2, rounding_mode="round")


def test_int_floor_division_compiles_and_agrees_with_eager() -> None:
    f = tj.jit(lambda x, y: (x // y, x.div(y, rounding_mode="trunc"), x // 3))
    x, y = tj.tensor([7, -7, 5, -5, 2**60 + 3]), tj.tensor([2, 2, -3, -3, 5])
    want = [(torch.tensor(x.numpy()) // torch.tensor(y.numpy())).numpy(),
            torch.div(torch.tensor(x.numpy()), torch.tensor(y.numpy()),
                      rounding_mode="trunc").numpy(),
            (torch.tensor(x.numpy()) // 3).numpy()]
    for _ in range(2):  # the trace, then the compiled program
        for g, w in zip(f(x, y), want):
            assert g.dtype is tj.int64
            np.testing.assert_array_equal(g.numpy(), w)
    info = f.cache_info()
    assert info.fallbacks == 0 and info.hits >= 1  # compiles: 0 when the disk cache had it
    assert all(e.program is not None for e in f.explain().entries)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        f(x, tj.tensor([1, 1, 0, 1, 1]))  # the compiled program checks the divisor too


# ---- 2. devices ------------------------------------------------------------------------------


CUDA_FACTORIES = [
    lambda d: tj.randn(3, device=d), lambda d: tj.rand(3, device=d),
    lambda d: tj.zeros(3, device=d), lambda d: tj.ones(3, device=d),
    lambda d: tj.empty(3, device=d), lambda d: tj.full((3,), 1.0, device=d),
    lambda d: tj.tensor([1.0], device=d), lambda d: tj.as_tensor([1.0], device=d),
    lambda d: tj.arange(3, device=d), lambda d: tj.linspace(0, 1, 3, device=d),
    lambda d: tj.eye(2, device=d), lambda d: tj.randint(0, 5, (3,), device=d),
    lambda d: tj.randperm(3, device=d), lambda d: tj.zeros_like(tj.ones(2), device=d),
    lambda d: tj.ones_like(tj.ones(2), device=d), lambda d: tj.full_like(tj.ones(2), 2, device=d),
    lambda d: tj.empty_like(tj.ones(2), device=d), lambda d: tj.rand_like(tj.ones(2), device=d),
    lambda d: tj.randn_like(tj.ones(2), device=d), lambda d: tj.ones(2).to(d),
    lambda d: tj.ones(2).to(device=d), lambda d: tj.ones(2).new_zeros(2, device=d),
    lambda d: tj.nn.Linear(2, 2, device=d), lambda d: tj.nn.Linear(2, 2).to(d),
]


@pytest.mark.parametrize("make", CUDA_FACTORIES)
@pytest.mark.parametrize("dev", ["cuda", "cuda:0", tj.device("cuda")])
def test_cuda_requests_raise_instead_of_giving_cpu_tensors(make: object, dev: object) -> None:
    with pytest.raises(RuntimeError, match="CUDA is not available") as info:
        make(dev)  # type: ignore[operator]
    assert isinstance(info.value, AssertionError)  # what torch raises without CUDA
    assert "cuda" in str(info.value)


def test_cuda_method_raises() -> None:
    with pytest.raises(RuntimeError, match="'cuda'.*CUDA is not available"):
        tj.ones(2).cuda()
    with pytest.raises(RuntimeError, match="'cuda:1'.*CUDA is not available"):
        tj.ones(2).cuda(1)


@pytest.mark.parametrize("dev", ["cpu", "cpu:0", tj.device("cpu"), torch.device("cpu"), None])
def test_cpu_devices_keep_working(dev: object) -> None:
    t = tj.randn(3, device=dev)
    assert t.device == tj.device("cpu") and t.shape == (3,)
    assert tj.zeros(2, device=dev).to(dev).device.type == "cpu"


def test_cuda_and_accelerator_queries_match_torch_without_cuda() -> None:
    assert tj.cuda.is_available() is False and tj.cuda.device_count() == 0
    assert tj.accelerator.is_available() is False
    assert tj.accelerator.current_accelerator() is None
    assert tj.accelerator.device_count() == 0
    if not torch.cuda.is_available():
        assert torch.cuda.device_count() == tj.cuda.device_count()
        assert torch.accelerator.current_accelerator() is None
    tj.cuda.manual_seed(0)  # ignored without CUDA, as torch documents
    tj.cuda.manual_seed_all(0)


def test_default_device() -> None:
    assert tj.get_default_device() == tj.device("cpu")
    try:
        tj.set_default_device("cuda")
        assert tj.get_default_device() == tj.device("cuda")
        for make in (lambda: tj.randn(2), lambda: tj.zeros(2), lambda: tj.tensor([1.0]),
                     lambda: tj.arange(3), lambda: tj.nn.Linear(2, 2)):
            with pytest.raises(RuntimeError, match="CUDA is not available"):
                make()
        tj.set_default_device("cpu")
        assert tj.randn(2).device.type == "cpu"
    finally:
        tj.set_default_device(None)
    assert tj.get_default_device() == tj.device("cpu")


# ---- 3. Variable -------------------------------------------------------------------------------


def test_variable_returns_a_leaf_tensor_sharing_data() -> None:
    from tracejit.autograd import Variable

    t = tj.ones(2)
    v = Variable(t, requires_grad=True)
    tv = torch.autograd.Variable(torch.ones(2), requires_grad=True)
    assert type(v) is tj.Tensor and type(tv) is torch.Tensor
    assert v is not t and v.requires_grad and not t.requires_grad and v.is_leaf
    assert isinstance(t, Variable) and isinstance(v, Variable) and not isinstance(1, Variable)
    (v * 3).sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [3.0, 3.0])
    with tj.no_grad():
        v.add_(1)  # shares t's data, as torch's
    np.testing.assert_array_equal(t.numpy(), [2.0, 2.0])
    assert Variable(tj.ones(2) * tj.ones(2, requires_grad=True)).is_leaf
    assert Variable().shape == (0,) and not Variable(t).requires_grad


# ---- 4. size_average / reduce --------------------------------------------------------------------

LEGACY = [(None, None), (True, None), (False, None), (None, False), (None, True), (True, False),
          (False, True), (False, False), (True, True)]


def _loss_inputs(name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    if name in ("nll_loss", "cross_entropy"):
        return x, np.array([0, 2, 1, 2])
    if name == "binary_cross_entropy":
        return 1 / (1 + np.exp(-x)), rng.random((4, 3)).astype(np.float32)
    return x, rng.standard_normal((4, 3)).astype(np.float32)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss", "nll_loss",
                                  "cross_entropy", "binary_cross_entropy",
                                  "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("size_average, reduce", LEGACY)
def test_legacy_loss_arguments_match_torch(name: str, size_average: object,
                                           reduce: object) -> None:
    x, y = _loss_inputs(name)
    kw = {"size_average": size_average, "reduce": reduce}
    with warnings.catch_warnings(record=True) as tw:
        warnings.simplefilter("always")
        want = getattr(torch.nn.functional, name)(torch.tensor(x), torch.tensor(y), **kw)
    with warnings.catch_warnings(record=True) as jw:
        warnings.simplefilter("always")
        got = getattr(F, name)(tj.tensor(x), tj.tensor(y), **kw)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    t_msgs = [str(w.message) for w in tw if issubclass(w.category, UserWarning)]
    j_msgs = [str(w.message) for w in jw if issubclass(w.category, UserWarning)]
    assert j_msgs == t_msgs  # the same deprecation warning, naming the same reduction, or none


@pytest.mark.parametrize("cls", ["MSELoss", "L1Loss", "SmoothL1Loss", "NLLLoss",
                                 "CrossEntropyLoss", "BCELoss", "BCEWithLogitsLoss"])
@pytest.mark.parametrize("size_average, reduce", [(False, None), (None, False), (True, True)])
def test_legacy_loss_module_arguments(cls: str, size_average: object, reduce: object) -> None:
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        tm = getattr(torch.nn, cls)(size_average=size_average, reduce=reduce)
    with pytest.warns(UserWarning, match=f"reduction='{tm.reduction}'"):
        jm = getattr(tj.nn, cls)(size_average=size_average, reduce=reduce)
    assert jm.reduction == tm.reduction


def test_loss_positional_order_is_torchs() -> None:
    # nll_loss(input, target, weight, size_average, ignore_index, reduce, reduction)
    x, t = tj.tensor(_loss_inputs("nll_loss")[0]), tj.tensor([0, 2, 1, 2])
    tx, tt = torch.tensor(x.numpy()), torch.tensor(t.numpy())
    got = F.nll_loss(x, t, None, None, 2, None, "sum")
    want = torch.nn.functional.nll_loss(tx, tt, None, None, 2, None, "sum")
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-6)
    got = F.cross_entropy(x, t, None, None, 1, None, "mean", 0.1)
    want = torch.nn.functional.cross_entropy(tx, tt, None, None, 1, None, "mean", 0.1)
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-6)
    assert tj.nn.NLLLoss(None, None, 2).ignore_index == torch.nn.NLLLoss(None, None, 2).ignore_index


# ---- 5. keyword names --------------------------------------------------------------------------

A = np.array([[1.5, -2.0, 3.0], [0.5, 4.0, -1.0]], np.float32)
B = np.array([[2.0, 1.0, -3.0], [1.0, 0.5, 2.0]], np.float32)
M = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)


def _kw(m: object) -> dict[str, object]:
    """Keyword calls spelled with torch's parameter names (from torch's docs; most torch
    builtins have no inspectable signature). Each is run on torch and tracejit."""
    a, b, mm, c = m.tensor(A), m.tensor(B), m.tensor(M), m.tensor(A) > 0
    i = m.tensor([[0, 2], [1, 0]])
    return {
        "add": lambda: m.add(input=a, other=b, alpha=2),
        "sub": lambda: m.sub(input=a, other=b, alpha=0.5),
        "mul": lambda: m.mul(input=a, other=b),
        "div": lambda: m.div(input=a, other=b, rounding_mode="floor"),
        "true_divide": lambda: m.true_divide(input=a, other=b),
        "pow": lambda: m.pow(input=a.abs(), exponent=b),
        "floor_divide": lambda: m.floor_divide(input=a, other=b),
        "maximum": lambda: m.maximum(input=a, other=b),
        "minimum": lambda: m.minimum(input=a, other=b),
        "matmul": lambda: m.matmul(input=a, other=mm),
        "mm": lambda: m.mm(input=a, mat2=mm),
        "bmm": lambda: m.bmm(input=a.unsqueeze(0), mat2=mm.unsqueeze(0)),
        "dot": lambda: m.dot(input=a[0], tensor=b[0]),
        "sum": lambda: m.sum(input=a, dim=1, keepdim=True),
        "prod": lambda: m.prod(input=a, dim=0, keepdim=False),
        "mean": lambda: m.mean(input=a, dim=-1, keepdim=True),
        "var": lambda: m.var(input=a, dim=1, keepdim=True),
        "std": lambda: m.std(input=a, dim=0),
        "amax": lambda: m.amax(input=a, dim=1, keepdim=True),
        "amin": lambda: m.amin(input=a, dim=0),
        "argmax": lambda: m.argmax(input=a, dim=1, keepdim=True),
        "argmin": lambda: m.argmin(input=a, dim=0),
        "max": lambda: m.max(input=a, dim=1, keepdim=True),
        "min": lambda: m.min(input=a, dim=0),
        "max_other": lambda: m.max(input=a, other=b),
        "all": lambda: m.all(input=c, dim=1),
        "any": lambda: m.any(input=c, dim=0, keepdim=True),
        "logsumexp": lambda: m.logsumexp(input=a, dim=1, keepdim=True),
        "softmax": lambda: m.softmax(input=a, dim=1),
        "log_softmax": lambda: m.log_softmax(input=a, dim=0),
        "exp": lambda: m.exp(input=a), "log": lambda: m.log(input=a.abs()),
        "sqrt": lambda: m.sqrt(input=a.abs()), "abs": lambda: m.abs(input=a),
        "tanh": lambda: m.tanh(input=a), "sigmoid": lambda: m.sigmoid(input=a),
        "relu": lambda: m.relu(input=a), "neg": lambda: m.neg(input=a),
        "floor": lambda: m.floor(input=a), "sin": lambda: m.sin(input=a),
        "trunc": lambda: m.trunc(input=a),
        "cat": lambda: m.cat(tensors=[a, b], dim=1),
        "stack": lambda: m.stack(tensors=[a, b], dim=-1),
        "where": lambda: m.where(condition=c, input=a, other=b),
        "clamp": lambda: m.clamp(input=a, min=-1.0, max=2.0),
        "clip": lambda: m.clip(input=a, min=-1.0),
        "transpose": lambda: m.transpose(input=a, dim0=0, dim1=1),
        "reshape": lambda: m.reshape(input=a, shape=(3, 2)),
        "permute": lambda: m.permute(input=a, dims=(1, 0)),
        "flatten": lambda: m.flatten(input=a, start_dim=0, end_dim=-1),
        "squeeze": lambda: m.squeeze(input=a.unsqueeze(0), dim=0),
        "unsqueeze": lambda: m.unsqueeze(input=a, dim=-1),
        "narrow": lambda: m.narrow(input=a, dim=1, start=1, length=2),
        "split": lambda: m.split(tensor=a, split_size_or_sections=2, dim=1),
        "chunk": lambda: m.chunk(input=a, chunks=2, dim=1),
        "unbind": lambda: m.unbind(input=a, dim=1),
        "gather": lambda: m.gather(input=a, dim=1, index=i),
        "index_select": lambda: m.index_select(input=a, dim=1, index=m.tensor([2, 0])),
        "masked_fill": lambda: m.masked_fill(input=a, mask=c, value=0.0),
        "eq": lambda: m.eq(input=a, other=b), "ne": lambda: m.ne(input=a, other=b),
        "lt": lambda: m.lt(input=a, other=b), "le": lambda: m.le(input=a, other=b),
        "gt": lambda: m.gt(input=a, other=b), "ge": lambda: m.ge(input=a, other=b),
        "logical_and": lambda: m.logical_and(input=c, other=~c),
        "logical_or": lambda: m.logical_or(input=c, other=~c),
        "logical_not": lambda: m.logical_not(input=c),
        "isnan": lambda: m.isnan(input=a), "isfinite": lambda: m.isfinite(input=a),
        "norm": lambda: m.norm(input=a, p=1, dim=1, keepdim=True),
        "square": lambda: m.square(input=a),
        "allclose": lambda: m.allclose(input=a, other=a, rtol=1e-5, atol=1e-8),
        "equal": lambda: m.equal(input=a, other=b),
        "method_add": lambda: a.add(other=b, alpha=3), "method_pow": lambda: a.pow(exponent=2),
        "method_sum": lambda: a.sum(dim=0, keepdim=True),
        "method_max": lambda: a.max(dim=1, keepdim=False),
        "method_clamp": lambda: a.clamp(min=0.0, max=1.0),
        "method_transpose": lambda: a.transpose(dim0=1, dim1=0),
        "method_div": lambda: a.div(other=b, rounding_mode="trunc"),
        "method_mul": lambda: a.mul(other=b), "method_eq": lambda: a.eq(other=b),
        "method_maximum": lambda: a.maximum(other=b),
        "method_softmax": lambda: a.softmax(dim=-1), "method_mean": lambda: a.mean(dim=1),
        "method_where": lambda: a.where(condition=c, other=b),
    }


def _same(got: object, want: object) -> None:
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        if hasattr(want, "_fields"):  # torch.return_types.max: values, indices
            assert got.values is got[0] and got.indices is got[1]
            np.testing.assert_array_equal(_np(got.indices), _np(want.indices))
        for g, w in zip(got, want):
            _same(g, w)
        return
    if isinstance(want, (bool, float)):
        assert got == want
        return
    np.testing.assert_allclose(_np(got), _np(want), rtol=1e-5, atol=1e-6)


def test_torch_keyword_names_are_accepted() -> None:
    ours, theirs = _kw(tj), _kw(torch)
    assert len(ours) >= 40
    for name, call in ours.items():
        try:
            _same(call(), theirs[name]())
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


# torch's documented parameter names (first line of torch.X.__doc__); ours must be the same
# names in the same order, as inspect.signature reports them
SIGNATURES = {
    "add": "input other alpha out", "sub": "input other alpha out", "mul": "input other out",
    "div": "input other rounding_mode out", "pow": "input exponent out",
    "maximum": "input other out", "minimum": "input other out", "matmul": "input other out",
    "mm": "input mat2 out", "bmm": "input mat2 out", "dot": "input tensor out",
    "sum": "input dim keepdim dtype out", "prod": "input dim keepdim dtype out",
    "mean": "input dim keepdim dtype", "amax": "input dim keepdim out",
    "amin": "input dim keepdim out", "argmax": "input dim keepdim out",
    "argmin": "input dim keepdim out", "all": "input dim keepdim out",
    "any": "input dim keepdim out", "logsumexp": "input dim keepdim",
    "softmax": "input dim dtype", "log_softmax": "input dim dtype",
    "cat": "tensors dim out", "stack": "tensors dim out", "where": "condition input other out",
    "clamp": "input min max out", "transpose": "input dim0 dim1", "reshape": "input shape",
    "permute": "input dims", "flatten": "input start_dim end_dim", "squeeze": "input dim",
    "unsqueeze": "input dim", "narrow": "input dim start length",
    "split": "tensor split_size_or_sections dim", "chunk": "input chunks dim",
    "unbind": "input dim", "gather": "input dim index", "index_select": "input dim index out",
    "masked_fill": "input mask value", "eq": "input other out", "ne": "input other out",
    "lt": "input other out", "le": "input other out", "gt": "input other out",
    "ge": "input other out", "logical_and": "input other out", "logical_or": "input other out",
    "logical_not": "input out", "exp": "input out", "log": "input out", "sqrt": "input out",
    "abs": "input out", "tanh": "input out", "sigmoid": "input out", "relu": "input",
    "floor": "input out", "trunc": "input out", "square": "input out",
    "floor_divide": "input other out", "allclose": "input other rtol atol equal_nan",
    "equal": "input other", "isnan": "input",
}


def test_parameter_names_match_torchs_docs() -> None:
    assert len(SIGNATURES) >= 40
    bad = {}
    for name, want in SIGNATURES.items():
        params = inspect.signature(getattr(tj, name)).parameters
        names = [p for p in params if p in want.split()]  # extras (torch's overloads) allowed
        if names != want.split():
            bad[name] = (list(params), want)
        doc = (getattr(torch, name).__doc__ or "").strip().splitlines()
        forms = " ".join(ln for ln in doc
                         if ln.removeprefix(".. function:: ").startswith(name + "("))
        missing = [p for p in want.split() if p not in forms and p != "out"]  # often undocumented
        if forms and missing:  # the table is taken from torch's doc lines
            bad[name] = ("not in torch's doc", missing, forms)
    assert not bad


@pytest.mark.parametrize("name, make", [
    ("add", lambda m, a, b: (lambda o: m.add(a, b, alpha=2, out=o))),
    ("matmul", lambda m, a, b: (lambda o: m.matmul(a, b.T, out=o))),
    ("sum", lambda m, a, b: (lambda o: m.sum(a, dim=1, out=o))),
    ("exp", lambda m, a, b: (lambda o: m.exp(a, out=o))),
    ("cat", lambda m, a, b: (lambda o: m.cat([a, b], 0, out=o))),
    ("clamp", lambda m, a, b: (lambda o: m.clamp(a, min=0.0, out=o))),
    ("where", lambda m, a, b: (lambda o: m.where(a > 0, a, b, out=o))),
])
def test_out_writes_into_the_given_tensor(name: str, make: object) -> None:
    a, b = tj.tensor(A), tj.tensor(B)
    ta, tb = torch.tensor(A), torch.tensor(B)
    want = make(torch, ta, tb)(None)  # type: ignore[operator]
    o = tj.zeros(*want.shape)
    r = make(tj, a, b)(o)  # type: ignore[operator]
    assert r is o
    np.testing.assert_allclose(o.numpy(), want.numpy(), rtol=1e-6)
    empty = tj.empty(0)
    make(tj, a, b)(empty)  # type: ignore[operator]
    assert empty.shape == tuple(want.shape)  # an empty out is resized, as torch does
    np.testing.assert_allclose(empty.numpy(), want.numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match="out= has shape"):
        make(tj, a, b)(tj.zeros(7))  # type: ignore[operator]


def test_out_errors() -> None:
    with pytest.raises(RuntimeError, match="can't be cast"):
        tj.add(tj.ones(2), 1.5, out=tj.zeros(2, dtype=tj.int64))
    with pytest.raises(RuntimeError, match="automatic differentiation"):
        tj.add(tj.ones(2, requires_grad=True), 1, out=tj.zeros(2))
    with pytest.raises(TypeError, match="out"):
        tj.add(tj.ones(2), 1, out=[1, 2])


def test_out_under_jit_agrees_with_eager() -> None:
    def f(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        o = tj.zeros(2, 3)
        tj.mul(x, y, out=o)
        return tj.add(o, 1, out=o)

    g = tj.jit(f)
    x, y = tj.tensor(A), tj.tensor(B)
    for _ in range(2):
        np.testing.assert_allclose(g(x, y).numpy(), f(x, y).numpy())
    assert g.cache_info().fallbacks == 0
    assert all(e.program is not None for e in g.explain().entries)


def test_keyword_calls_under_jit() -> None:
    def f(a: tj.Tensor, b: tj.Tensor) -> tuple[tj.Tensor, ...]:
        v = tj.max(input=a, dim=1, keepdim=False)
        return (tj.add(input=a, other=b, alpha=2), tj.sum(input=a, dim=-1, keepdim=True),
                tj.matmul(input=a, other=b.transpose(dim0=0, dim1=1)), v.values, v.indices,
                tj.where(condition=a > b, input=a, other=b), tj.clamp(input=a, min=0.0))

    g = tj.jit(f)
    a, b = tj.tensor(A), tj.tensor(B)
    for _ in range(2):
        for x, y in zip(g(a, b), f(a, b)):
            np.testing.assert_allclose(x.numpy(), y.numpy())
    info = g.cache_info()
    assert info.fallbacks == 0 and info.hits >= 1  # compiles: 0 when the disk cache had it
    assert all(e.program is not None for e in g.explain().entries)
