"""Every public function of tracejit that torch also has (`tracejit.*`, `tracejit.nn.functional.*`,
Tensor methods) takes torch's parameter names, in torch's positional order, with torch's
defaults, for each of torch's overloads. torch's signatures come from `inspect.signature` where
torch's function is Python, else from the signature lines of its docstring (`sum(input, *,
dtype=None) -> Tensor` and each `.. function:: sum(input, dim, keepdim=False, *, dtype=None)`),
which is how torch documents the overloads of its builtins. Deliberate differences are listed
in EXCEPTIONS, each with its reason."""

from __future__ import annotations

import ast
import inspect
import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import tracejit
import tracejit.nn.functional as F  # noqa: N812

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    name: str
    keyword_only: bool
    default: Any = REQUIRED  # REQUIRED, a Python value, or the default's text when not literal
    variadic: bool = False  # *size, *dims


Overload = tuple[Param, ...]

_NOT_LITERAL = object()


def _literal(text: str) -> Any:
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    table = {"inf": float("inf"), "-inf": float("-inf"), "math.inf": float("inf"),
             "torch.strided": "strided", "torch.preserve_format": "preserve_format",
             "torch.contiguous_format": "contiguous_format"}
    return table.get(text, text)


def _split_top(s: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    out, depth, cur, quote = [], 0, "", ""
    for ch in s:
        if quote:
            cur += ch
            quote = "" if ch == quote else quote
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur)
    return [p.strip() for p in out]


def parse_doc_params(text: str) -> Overload | None:
    """The parameters of one documented signature `name(a, b=1, *, c=None)`; None when the
    text is not a parameter list this test understands."""
    params: list[Param] = []
    kw_only = False
    for part in _split_top(text):
        if part == "*":
            kw_only = True
            continue
        if part in ("/", "..."):
            continue
        variadic = part.startswith("*") and not part.startswith("**")
        part = part.lstrip("*")
        name, eq, default = part.partition("=")
        name = name.split(":")[0].strip()
        if not name.isidentifier():
            return None
        params.append(Param(name, kw_only, _literal(default) if eq else REQUIRED, variadic))
    return tuple(params)


def doc_overloads(fn: Any, name: str) -> list[Overload]:
    """torch's documented forms of `name`: the docstring's signature lines."""
    forms = []
    for line in (fn.__doc__ or "").splitlines():
        line = line.strip().removeprefix(".. function:: ").removeprefix(".. method:: ")
        line = line.removeprefix("torch.").removeprefix("Tensor.")
        if not line.startswith(name + "("):
            continue
        inner = _balanced(line[len(name):])
        parsed = None if inner is None else parse_doc_params(inner)
        if parsed is not None:
            forms.append(parsed)
    return forms


def _balanced(s: str) -> str | None:
    """The text inside the parenthesis that opens s."""
    depth = 0
    for i, ch in enumerate(s):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return s[1:i]
    return None


_PROBE = "zz_signature_probe"


def parser_overloads(fn: Any, method: bool) -> list[Overload]:
    """The signatures torch's argument parser lists when a call matches none of them: torch's
    own record of a builtin's overloads, names, order and defaults. Only builtins with several
    overloads print the list; a call missing its tensors is told that first, so the probe is
    retried with one and then two tensors in front."""
    text = ""
    for n in range(3):
        args = [torch.empty(0)] * (n + method)
        try:
            fn(*args, **{_PROBE: 0})
        except TypeError as e:
            text = str(e)
        except Exception:
            return []
        else:
            return []
        if "expected one of" in text or "missing" not in text:
            break
    if "expected one of" not in text:
        return []
    forms = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("* ("):
            continue
        params: list[Param] = []
        kw_only = False
        for part in _split_top(line[3:line.rindex(")")]):
            if part == "*":
                kw_only = True
                continue
            decl, eq, default = part.partition(" = ")
            params.append(Param(decl.split()[-1], kw_only,
                                _literal(default) if eq else REQUIRED))
        forms.append(tuple(params))
    return forms


def _writes(arg: Any) -> bool:
    return arg.alias_info is not None and arg.alias_info.is_write


def schema_overloads(name: str, method: bool) -> list[Overload]:
    """The operator's native schemas (`aten::relu(Tensor self)`), as Python binds them: `self`
    is `input` (dropped for methods), the variants that write into given tensors add a keyword
    `out=None`. TorchScript's scalar forms (`aten::exp.float(float a)`) are not Python's."""
    try:
        schemas = torch._C._jit_get_schemas_for_operator(f"aten::{name}")
    except RuntimeError:
        return []
    forms, has_out = [], False
    names = {s.overload_name for s in schemas}
    for s in schemas:
        # Python binds the Tensor form and wraps a number into a tensor: add.Scalar(self,
        # Scalar other, Scalar alpha=1) is not callable from Python as written
        if "Scalar" in s.overload_name and (
                s.overload_name.replace("Scalar", "Tensor") in names or "" in names):
            continue
        # TorchScript's own arithmetic on Python values (add.int(int a, int b), add.t(t[] a,
        # t[] b)): no tensor and nothing optional, unlike a factory's schema
        if not any("Tensor" in str(a.type) for a in s.arguments) and not any(
                a.kwarg_only or a.has_default_value() for a in s.arguments):
            continue
        # and its constructors from one Python value (tensor.float(float t, *, dtype=None))
        if s.arguments and s.arguments[0].name == "t" and "Tensor" not in str(s.arguments[0].type):
            continue
        if any(_writes(a) for a in s.arguments if a.name != "self"):
            has_out = True
            continue
        params = []
        for a in s.arguments:
            if a.name == "self":
                if not method:
                    params.append(Param("input", False))
                continue
            default = a.default_value if a.has_default_value() else REQUIRED
            if a.name in ("dtype", "memory_format") and isinstance(default, int):
                default = f"a torch.{a.name}"  # schemas hold these as enum numbers
            if a.name == "pin_memory" and default is None:
                default = False  # Python's parser: `bool pin_memory = False` (torch.zeros)
            params.append(Param(a.name, a.kwarg_only, default))
        forms.append(params)
    if has_out and not method:
        for f in forms:
            f.append(Param("out", True, None))
    return [tuple(f) for f in forms]


def from_signature(sig: inspect.Signature, drop_first: bool = False) -> Overload:
    params = list(sig.parameters.values())
    if drop_first and params:  # a method's tensor
        params = params[1:]
    return tuple(Param(p.name, p.kind is p.KEYWORD_ONLY, p.default, p.kind is p.VAR_POSITIONAL)
                 for p in params if p.kind is not p.VAR_KEYWORD)


def torch_overloads(fn: Any, name: str, method: bool) -> list[Overload]:
    """torch's signatures of fn: inspect.signature when fn is Python code, else the argument
    parser's list of overloads, else the native schemas, else the docstring."""
    if isinstance(fn, (types.FunctionType, types.MethodType)):
        try:
            return [from_signature(inspect.signature(fn), drop_first=method)]
        except (TypeError, ValueError):
            pass
    for source in (lambda: parser_overloads(fn, method), lambda: schema_overloads(name, method),
                   lambda: doc_overloads(fn, name)):
        forms = source()
        if forms:
            return [_positional_limit(fn, method, f) for f in forms]
    return []


def _positional_limit(fn: Any, method: bool, form: Overload) -> Overload:
    """Schemas and docs do not always say which parameters are keyword-only in Python (the docs
    write `float(memory_format=torch.preserve_format)`; Python's binding is `float(*,
    memory_format)`): one call with a positional argument too many makes torch say how many
    it takes, and the parameters after those are keyword-only."""
    n = sum(not p.keyword_only and not p.variadic for p in form)
    if n == 0 or any(p.variadic for p in form):
        return form
    try:
        fn(*([torch.empty(0)] * method + [None] * (n + 1)))
    except TypeError as e:
        m = re.search(r"takes (?:from \d+ to )?(\d+) positional argument", str(e))
    except Exception:
        return form
    else:
        return form
    if m is None:
        return form
    limit = int(m.group(1))  # a method's count leaves out the tensor itself
    out, seen = [], 0
    for p in form:
        if not p.keyword_only and not p.variadic:
            seen += 1
            if seen > limit:
                p = Param(p.name, True, p.default)
        out.append(p)
    return tuple(out)


def _same_default(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, str) and not isinstance(ours, str):
        return True  # torch's docs name a value this test cannot evaluate (`torch.float32`)
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return list(ours) == list(theirs)  # dim=() and dim=[]: every dim
    try:
        return bool(ours == theirs) and type(ours) is type(theirs) or (
            isinstance(ours, (int, float)) and isinstance(theirs, (int, float))
            and not isinstance(ours, bool) and not isinstance(theirs, bool) and ours == theirs)
    except Exception:
        return False


def mismatches(ours: Callable, overloads: list[Overload], method: bool) -> list[str]:
    """What stops a call written against any of torch's overloads from binding to ours."""
    sig = inspect.signature(ours)
    params = list(sig.parameters.values())
    if method and params and params[0].kind is not params[0].VAR_POSITIONAL:
        params = params[1:]  # the tensor the method is called on, whatever its name
    by_name = {p.name: p for p in params if p.kind is not p.POSITIONAL_ONLY}
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    # the names torch puts at each position, over all overloads: ours may merge overloads
    # (max(input, dim) and max(input, other)) and tell them apart by type
    at_position: dict[int, set[str]] = {}
    for ov in overloads:
        for i, p in enumerate(q for q in ov if not q.keyword_only and not q.variadic):
            at_position.setdefault(i, set()).add(p.name)
    problems = []
    for ov in overloads:
        names = {p.name for p in ov}
        for i, p in enumerate(q for q in ov if not q.keyword_only and not q.variadic):
            if i < len(positional):
                if positional[i].name not in at_position[i]:
                    problems.append(f"position {i} is {positional[i].name!r}, torch's "
                                    f"{sorted(at_position[i])}")
            elif not var_pos:
                problems.append(f"{p.name!r} cannot be passed by position {i}")
        for p in ov:
            if p.variadic:
                if not var_pos and not positional:
                    problems.append(f"takes no *{p.name}")
                continue
            mine = by_name.get(p.name)
            if mine is None:
                if not var_kw:
                    problems.append(f"no parameter {p.name!r}")
                continue
            if p.default is not REQUIRED:
                if mine.default is REQUIRED:
                    problems.append(f"{p.name!r} is required, torch's default is {p.default!r}")
                elif not _same_default(mine.default, p.default):
                    problems.append(f"{p.name!r} defaults to {mine.default!r}, torch's to "
                                    f"{p.default!r}")
        required = [p.name for p in params if p.default is REQUIRED
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        extra = [n for n in required if n not in names]
        if extra:
            problems.append(f"requires {extra}, which torch's form "
                            f"({', '.join(p.name for p in ov)}) does not take")
    return sorted(set(problems))


# ---- what is walked ----------------------------------------------------------------------------


def _public_functions(ns: Any, theirs: Any) -> dict[str, tuple[Any, Any]]:
    out = {}
    for name in dir(ns):
        if name.startswith("_"):
            continue
        mine, other = getattr(ns, name), getattr(theirs, name, None)
        if other is None or isinstance(mine, type) or isinstance(mine, types.ModuleType):
            continue
        if not callable(mine) or not callable(other) or isinstance(other, type):
            continue
        out[name] = (mine, other)
    return out


def _methods() -> dict[str, tuple[Any, Any]]:
    out = {}
    for name in dir(tracejit.Tensor):
        if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
            continue
        if name.startswith("__"):
            continue  # operators: Python's protocol fixes their signatures
        mine = inspect.getattr_static(tracejit.Tensor, name)
        other = getattr(torch.Tensor, name, None)
        if other is None or isinstance(mine, (property, type)) or not callable(other):
            continue
        if isinstance(mine, (staticmethod, classmethod)):
            continue
        if not callable(mine):
            continue
        out[name] = (getattr(tracejit.Tensor, name), other)
    return out


def targets() -> dict[str, tuple[Any, Any, bool, str]]:
    """'torch.sum' -> (ours, torch's, is a method, the name in torch's docs)."""
    out: dict[str, tuple[Any, Any, bool, str]] = {}
    for name, (mine, other) in _public_functions(tracejit, torch).items():
        out[f"torch.{name}"] = (mine, other, False, name)
    for name, (mine, other) in _public_functions(F, torch.nn.functional).items():
        out[f"torch.nn.functional.{name}"] = (mine, other, False, name)
    for name, (mine, other) in _methods().items():
        out[f"torch.Tensor.{name}"] = (mine, other, True, name)
    return out


# Deliberate differences: name -> the reason. Each must still be a mismatch (a test fails when
# one is fixed, so the list stays true).
_DEPRECATED_ALPHA = ("torch's parser still lists the deprecated sub(input, alpha, other) form, "
                     "which torch warns about; ours takes alpha by keyword, as torch's current "
                     "form")
_SCALAR_SELF = ("torch names the scalar operand `self` in one overload "
                "(pow(Scalar self, Tensor exponent), where(condition, Tensor self, Scalar "
                "other)), a name only a keyword call could use; ours calls it input")
_UNBIASED = ("ours defaults unbiased to None, meaning 'not given', so that a correction= "
             "passed alone can be told apart; with neither given it is unbiased (correction "
             "1), torch's default")
_OUT_DTYPE = ("out_dtype (torch 2.9) asks a float16/bfloat16 matmul to return float32; "
              "tracejit's matmul has no reduced-precision inputs, so nothing to widen")
_VARIADIC_KW = ("torch's parser also accepts the sizes as a keyword (`repeats=`, `size=`); "
                "ours takes them as *sizes, by position, as every example in torch's docs")
EXCEPTIONS: dict[str, str] = {
    "torch.cond": "tracejit.cond follows JAX's lax.cond (pred, true_fun, false_fun, *operands), "
                  "as issue 12 specifies for control flow; torch's is torch.cond(pred, true_fn, "
                  "false_fn, operands) with the operands as one tuple",
    "torch.while_loop": "tracejit.while_loop follows JAX's lax.while_loop(cond_fun, body_fun, "
                        "init_val) (plus max_iterations=); torch's names are cond_fn, body_fn, "
                        "carried_inputs",
    "torch.Tensor.subtract": _DEPRECATED_ALPHA,
    "torch.pow": _SCALAR_SELF,
    "torch.where": _SCALAR_SELF,
    "torch.std": _UNBIASED,
    "torch.var": _UNBIASED,
    "torch.Tensor.std": _UNBIASED,
    "torch.Tensor.var": _UNBIASED,
    "torch.mm": _OUT_DTYPE,
    "torch.bmm": _OUT_DTYPE,
    "torch.addmm": _OUT_DTYPE,
    "torch.Tensor.mm": _OUT_DTYPE,
    "torch.Tensor.bmm": _OUT_DTYPE,
    "torch.Tensor.repeat": _VARIADIC_KW,
    "torch.Tensor.expand": _VARIADIC_KW + "; implicit= is an internal flag of torch's tracer",
    "torch.Tensor.view": _VARIADIC_KW + "; view(dtype) reinterprets the bits as another dtype, "
                         "which tracejit does not do (use .to(dtype) to convert)",
    "torch.Tensor.to": "torch's to(tensor, non_blocking, copy) form names the tensor whose dtype "
                       "to take; ours takes it by position (x.to(other)), as users call it",
    "torch.Tensor.type": "torch's **kwargs takes the legacy `async=` (non_blocking's old name, "
                         "a Python keyword since 3.7)",
    "torch.Tensor.uniform_": "torch's bounds are named `from` and `to`; `from` is a Python "
                             "keyword, so ours are a and b, passed by position as users do",
    "torch.nn.functional.max_pool2d": "torch's is a boolean_dispatch wrapper (*args, **kwargs) "
                                      "choosing a form by return_indices; ours has the "
                                      "signature both forms share (max_pool2d_with_indices's)",
    "torch.einsum": "torch declares einsum(*args) and takes the equation out of args; ours "
                    "names it: einsum(equation, *operands), the same positional call",
    "torch.load": "tracejit reads safetensors and never unpickles: no pickle_module, and "
                  "weights_only is always True (torch's None means True since 2.6)",
    "torch.save": "tracejit writes safetensors: pickle_module, pickle_protocol and torch's "
                  "zipfile switches have nothing to configure",
}


def report() -> tuple[dict[str, list[str]], list[str]]:
    """(mismatches per function, the functions whose torch signature is unknown)."""
    bad, unknown = {}, []
    for qual, (mine, other, method, name) in targets().items():
        try:
            inspect.signature(mine)
        except (TypeError, ValueError):
            bad[qual] = ["ours has no signature"]
            continue
        overloads = torch_overloads(other, name, method)
        if not overloads:
            unknown.append(qual)
            continue
        problems = mismatches(mine, overloads, method)
        if problems:
            bad[qual] = problems
    return bad, unknown


def test_signatures_take_torchs_names_order_and_defaults() -> None:
    bad, unknown = report()
    checked = len(targets()) - len(unknown)
    assert checked >= 300, (checked, unknown)
    stale = [k for k in EXCEPTIONS if k not in bad]
    assert not stale, f"listed as exceptions but now match torch: {stale}"
    real = {k: v for k, v in bad.items() if k not in EXCEPTIONS}
    assert not real, "\n".join(f"{k}: {'; '.join(v)}" for k, v in sorted(real.items()))


# ---- what the fixes above do, against torch ----------------------------------------------------


def _arr(t: Any) -> Any:
    return t.detach().numpy()


X = [[1.2345, -2.5551, 125.5], [0.5, 1.5, -0.125]]
W = [[0.5, 1.0, 2.0], [0.25, 3.0, 1.5]]


def _calls(m: Any) -> dict[str, Callable[[], Any]]:
    """torch's spellings that failed or differed before these signatures matched."""
    F_ = m.nn.functional
    x, w = m.tensor(X), m.tensor(W)
    return {
        "round_decimals": lambda: m.round(x, decimals=2),
        "round_negative": lambda: x.round(decimals=-1),
        "mse_weight": lambda: F_.mse_loss(x, w, None, None, "mean", w),
        "l1_weight_sum": lambda: F_.l1_loss(x, w, reduction="sum", weight=w),
        "arange_end": lambda: m.arange(end=5),
        "randint_high": lambda: m.randint(high=3, size=(4,)).shape,
        "zeros_like_input": lambda: m.zeros_like(input=x, memory_format=m.preserve_format),
        "zeros_options": lambda: m.zeros(2, 3, layout=m.strided, pin_memory=False),
        "float_memory_format": lambda: x.double().float(memory_format=m.contiguous_format),
        "clone_memory_format": lambda: x.clone(memory_format=m.contiguous_format),
        "mean_out": lambda: m.mean(x, 1, out=m.empty(0)),
        "softmax_dtype_4th": lambda: F_.softmax(x, 1, 3, m.float64),
        "normalize_out_5th": lambda: F_.normalize(x, 2.0, 1, 1e-12, m.empty(0)),
        "norm_dtype": lambda: m.norm(x, 2, None, False, None, m.float64),
        "method_norm_dtype": lambda: x.norm(1, 1, False, m.float64),
        "topk_last_dim": lambda: x.topk(2).indices,
        "swapaxes_axis": lambda: m.swapaxes(x, axis0=0, axis1=1),
        "split_size": lambda: x.split(split_size=2, dim=1),
        "broadcast_size": lambda: x[0].broadcast_to(size=(2, 3)),
        "mm_mat2": lambda: x.mm(mat2=w.T),
        "bmm_mat2": lambda: x[None].bmm(mat2=w.T[None]),
        "copy_other": lambda: m.zeros(2, 3).copy_(other=x),
        "one_hot_input": lambda: F_.one_hot(input=m.tensor([0, 2]), num_classes=3),
        "from_numpy_ndarray": lambda: m.from_numpy(np.array(X)),
        "numel_input": lambda: m.numel(input=x),
        "multinomial_top1": lambda: m.multinomial(input=m.tensor([[0.0, 1.0, 0.0]]),
                                                  num_samples=1),
        "bernoulli_p_one": lambda: m.bernoulli(x, 1.0),
        "bernoulli_input": lambda: m.bernoulli(input=m.ones(3)),
    }


def test_torch_spellings_agree_with_torch() -> None:
    ours, theirs = _calls(tracejit), _calls(torch)
    for name, call in ours.items():
        got, want = call(), theirs[name]()
        if isinstance(want, tuple):
            assert isinstance(got, tuple) and len(got) == len(want), name
            pairs = list(zip(got, want)) if not isinstance(want, torch.Size) else [(got, want)]
        else:
            pairs = [(got, want)]
        for g, w_ in pairs:
            if isinstance(w_, (int, torch.Size)):
                assert tuple(g) == tuple(w_) if isinstance(w_, torch.Size) else g == w_, name
                continue
            assert str(g.dtype).removeprefix("tracejit.") == str(w_.dtype).removeprefix(
                "torch."), name
            np.testing.assert_allclose(_arr(g), _arr(w_), rtol=1e-6, atol=1e-6, err_msg=name)


def test_copy_takes_the_source_once() -> None:
    x = tracejit.zeros(2)
    np.testing.assert_array_equal(x.copy_(src=tracejit.ones(2)).numpy(), [1.0, 1.0])
    with pytest.raises(TypeError, match="give the source tensor once"):
        x.copy_(tracejit.ones(2), src=tracejit.ones(2))


@pytest.mark.parametrize("call, match", [
    (lambda: tracejit.zeros(2, pin_memory=True), "pin_memory=True needs an accelerator"),
    (lambda: tracejit.ones(2).clone(memory_format=tracejit.channels_last),
     "memory_format=tracejit.channels_last is not supported"),
    (lambda: tracejit.empty(2, layout="sparse"), "layout='sparse' is not supported"),
    (lambda: tracejit.ones(3).gather(0, tracejit.tensor([0]), sparse_grad=True),
     "sparse_grad=True"),
    (lambda: tracejit.round(tracejit.tensor([1, 2]), decimals=1), "floating-point"),
    (lambda: tracejit.nn.functional.mse_loss(tracejit.ones(2), tracejit.ones(2),
                                             weight=tracejit.ones(3)), "weight must have"),
    (lambda: tracejit.randint(0, 5, (2,), requires_grad=True), "only floating-point"),
])
def test_unsupported_option_values_say_what_to_do(call: Callable[[], Any], match: str) -> None:
    with pytest.raises((RuntimeError, TypeError, ValueError), match=match):
        call()
