"""eager-dynamic and eager-gpt: eager mode's per-op overhead against torch eager's (issue 13),
tracejit and torch from the same weights, one thread each; one call is one training step.

- eager-dynamic: the "Learning PyTorch with Examples" dynamic net (examples/dynamic_graph.py):
  N=64, 1000-100-10, the output weight chosen by a Python `if` on the previous loss, sum of
  squares, `backward()`, `loss.item()`, the SGD update by hand under no_grad.
- eager-gpt: a small nanoGPT (the model of `gpt_model` below, written once for either library):
  token and position embeddings, pre-norm blocks of causal self-attention
  (`F.scaled_dot_product_attention(is_causal=True)`) and a GELU MLP, the LM head tied to the
  token embedding, cross entropy, then AdamW with nanoGPT's two weight-decay groups.
  Dropout is 0 and the GELU is the tanh form (GPT-2's), so the NumPy reference is exact.

The reference is the same steps in float64 NumPy with the backward written by hand; the check
compares the last loss and every parameter's total update after `check_runs` steps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import peers
from .core import Case, Inputs, Outputs, Workload, norm_error, register_workload

# ---- the dynamic net ----------------------------------------------------------------------

DYN_SIZES = {"full": {"n": 64, "d_in": 1000, "h": 100, "d_out": 10},
             "quick": {"n": 16, "d_in": 100, "h": 32, "d_out": 10}}
DYN_LR = 1e-6
DYN_THRESHOLD = 5.0e6  # the example's: below it the step uses w2a, above it w2b
CHECK_STEPS = 3


def dyn_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    n, d_in, h, d_out = size["n"], size["d_in"], size["h"], size["d_out"]
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in (
        ("x", (n, d_in)), ("y", (n, d_out)), ("w1", (d_in, h)), ("w2a", (h, d_out)),
        ("w2b", (h, d_out)))}


def numpy_dyn_step(x: np.ndarray, y: np.ndarray, w1: np.ndarray, w2a: np.ndarray,
                   w2b: np.ndarray, prev: float) -> float:
    """One step by hand, in the arrays' dtype; updates the weights in place."""
    w2 = w2a if prev < DYN_THRESHOLD else w2b
    h = x @ w1
    hr = np.maximum(h, 0)
    d = hr @ w2 - y
    loss = float((d * d).sum())
    g = 2 * d
    g_w2 = hr.T @ g
    g_w1 = x.T @ ((g @ w2.T) * (h > 0))
    w1 -= DYN_LR * g_w1
    w2 -= DYN_LR * g_w2  # in place: w2 is w2a or w2b
    return loss


def dyn_reference(inp: Inputs) -> Outputs:
    x, y, w1, w2a, w2b = (inp[k].astype(np.float64) for k in ("x", "y", "w1", "w2a", "w2b"))
    loss = float("inf")
    for _ in range(CHECK_STEPS):
        loss = numpy_dyn_step(x, y, w1, w2a, w2b, loss)
    return [np.float64(loss), w1 - inp["w1"], w2a - inp["w2a"], w2b - inp["w2b"]]


def dyn_numpy_case(inp: Inputs) -> Case:
    """The same step in float32 NumPy by hand: what it costs without a framework."""
    x, y, w1, w2a, w2b = (inp[k].copy() for k in ("x", "y", "w1", "w2a", "w2b"))
    state = {"prev": float("inf")}

    def step() -> float:
        state["prev"] = numpy_dyn_step(x, y, w1, w2a, w2b, state["prev"])
        return state["prev"]

    return Case(step, lambda: [np.float64(state["prev"]), w1 - inp["w1"], w2a - inp["w2a"],
                               w2b - inp["w2b"]])


def dyn_case(lib: Any, inp: Inputs) -> Case:
    """The tutorial's loop body, exactly as users write it, for tracejit or torch."""
    x, y = lib.from_numpy(inp["x"].copy()), lib.from_numpy(inp["y"].copy())
    w1, w2a, w2b = (lib.from_numpy(inp[k].copy()).requires_grad_() for k in ("w1", "w2a", "w2b"))
    state = {"prev": float("inf")}

    def step() -> float:
        w2 = w2a if state["prev"] < DYN_THRESHOLD else w2b
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        state["prev"] = loss.item()
        with lib.no_grad():
            for w in (w1, w2a, w2b):
                if w.grad is not None:
                    w -= DYN_LR * w.grad
                    w.grad = None
        return state["prev"]

    def output() -> Outputs:
        return [np.float64(state["prev"])] + [
            w.detach().numpy().astype(np.float64) - inp[k]
            for w, k in ((w1, "w1"), (w2a, "w2a"), (w2b, "w2b"))]

    return Case(step, output)


# ---- the small GPT ------------------------------------------------------------------------

GPT_SIZES = {"full": {"vocab": 65, "block": 64, "layers": 2, "heads": 4, "embd": 64, "batch": 8},
             "quick": {"vocab": 17, "block": 8, "layers": 1, "heads": 2, "embd": 16, "batch": 2}}
LR, BETAS, ADAM_EPS, WEIGHT_DECAY, LN_EPS = 1e-3, (0.9, 0.95), 1e-8, 0.1, 1e-5


def gpt_model(lib: Any, size: dict[str, Any]) -> Any:
    """nanoGPT's model.py at a small size, given the library (torch or tracejit)."""
    nn, F = lib.nn, lib.nn.functional
    Module: Any = nn.Module  # noqa: N806 - either library's
    C, nh = size["embd"], size["heads"]

    class CausalSelfAttention(Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_attn = nn.Linear(C, 3 * C)
            self.c_proj = nn.Linear(C, C)

        def forward(self, x: Any) -> Any:
            B, T, _ = x.size()
            q, k, v = self.c_attn(x).split(C, dim=2)
            q = q.view(B, T, nh, C // nh).transpose(1, 2)
            k = k.view(B, T, nh, C // nh).transpose(1, 2)
            v = v.view(B, T, nh, C // nh).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_fc = nn.Linear(C, 4 * C)
            self.gelu = nn.GELU(approximate="tanh")
            self.c_proj = nn.Linear(4 * C, C)

        def forward(self, x: Any) -> Any:
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(C)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(C)
            self.mlp = MLP()

        def forward(self, x: Any) -> Any:
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(size["vocab"], C)
            self.wpe = nn.Embedding(size["block"], C)
            self.h = nn.ModuleList([Block() for _ in range(size["layers"])])
            self.ln_f = nn.LayerNorm(C)
            self.lm_head = nn.Linear(C, size["vocab"], bias=False)
            self.lm_head.weight = self.wte.weight  # weight tying, as nanoGPT

        def forward(self, idx: Any, targets: Any) -> Any:
            T = idx.size(1)
            pos = lib.arange(0, T, dtype=lib.long)
            x = self.wte(idx) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    return GPT()


def gpt_inputs(size: dict[str, Any]) -> Inputs:
    """Token batches and nanoGPT's initial weights (normal(0, 0.02), the residual projections
    scaled by 1/sqrt(2 * layers), zero biases, unit LayerNorm weights), keyed by torch's
    state_dict names (the tied lm_head is wte)."""
    rng = np.random.default_rng(0)
    V, T, C, L, B = (size[k] for k in ("vocab", "block", "embd", "layers", "batch"))
    f32 = np.float32

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return (std * rng.standard_normal(shape)).astype(f32)

    p: dict[str, np.ndarray] = {"wte.weight": normal(V, C), "wpe.weight": normal(T, C)}
    proj_std = 0.02 / np.sqrt(2 * L)
    for i in range(L):
        b = f"h.{i}."
        p[b + "ln_1.weight"], p[b + "ln_1.bias"] = np.ones(C, f32), np.zeros(C, f32)
        p[b + "attn.c_attn.weight"], p[b + "attn.c_attn.bias"] = normal(3 * C, C), np.zeros(
            3 * C, f32)
        p[b + "attn.c_proj.weight"] = normal(C, C, std=proj_std)
        p[b + "attn.c_proj.bias"] = np.zeros(C, f32)
        p[b + "ln_2.weight"], p[b + "ln_2.bias"] = np.ones(C, f32), np.zeros(C, f32)
        p[b + "mlp.c_fc.weight"], p[b + "mlp.c_fc.bias"] = normal(4 * C, C), np.zeros(4 * C, f32)
        p[b + "mlp.c_proj.weight"] = normal(C, 4 * C, std=proj_std)
        p[b + "mlp.c_proj.bias"] = np.zeros(C, f32)
    p["ln_f.weight"], p["ln_f.bias"] = np.ones(C, f32), np.zeros(C, f32)
    idx = rng.integers(0, V, (B, T + 1))
    return {"params": p, "idx": idx[:, :-1].copy(), "targets": idx[:, 1:].copy(),
            "size": dict(size)}


# -- float64 NumPy, by hand: forward with its saved values, then the backward --

_C_GELU = math.sqrt(2 / math.pi)  # Python floats here: float32 arrays stay float32


def _ln_fwd(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    mu = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + LN_EPS)
    xhat = (x - mu) * rstd
    return xhat * w + b, (xhat, rstd, w)


def _ln_bwd(g: np.ndarray, saved: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xhat, rstd, w = saved
    gx = g * w
    dx = rstd * (gx - gx.mean(-1, keepdims=True) - xhat * (gx * xhat).mean(-1, keepdims=True))
    return dx, (g * xhat).reshape(-1, w.size).sum(0), g.reshape(-1, w.size).sum(0)


def _linear_bwd(g: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    return g @ w, g2.T @ x2, g2.sum(0)


def numpy_gpt_loss_grads(p: dict[str, np.ndarray], idx: np.ndarray, targets: np.ndarray,
                         size: dict[str, Any]) -> tuple[float, dict[str, np.ndarray]]:
    L, nh, C = size["layers"], size["heads"], size["embd"]
    B, T = idx.shape
    hs = C // nh
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    x = p["wte.weight"][idx] + p["wpe.weight"][:T]
    mask = np.tril(np.ones((T, T), bool))
    saved = []
    for i in range(L):
        b = f"h.{i}."
        a_in, ln1 = _ln_fwd(x, p[b + "ln_1.weight"], p[b + "ln_1.bias"])
        qkv = a_in @ p[b + "attn.c_attn.weight"].T + p[b + "attn.c_attn.bias"]
        q, k, v = (qkv[..., j * C:(j + 1) * C].reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
                   for j in range(3))
        s = np.where(mask, q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs), -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        att = e / e.sum(-1, keepdims=True)
        yh = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + yh @ p[b + "attn.c_proj.weight"].T + p[b + "attn.c_proj.bias"]
        m_in, ln2 = _ln_fwd(x, p[b + "ln_2.weight"], p[b + "ln_2.bias"])
        u = m_in @ p[b + "mlp.c_fc.weight"].T + p[b + "mlp.c_fc.bias"]
        th = np.tanh(_C_GELU * (u + 0.044715 * u**3))
        gl = 0.5 * u * (1 + th)
        x = x + gl @ p[b + "mlp.c_proj.weight"].T + p[b + "mlp.c_proj.bias"]
        saved.append((a_in, ln1, q, k, v, att, yh, m_in, ln2, u, th, gl))
    f_in, lnf = _ln_fwd(x, p["ln_f.weight"], p["ln_f.bias"])
    logits = (f_in @ p["wte.weight"].T).reshape(B * T, -1)
    z = logits - logits.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1, keepdims=True))
    tgt = targets.reshape(-1)
    loss = float(-(z - lse)[np.arange(B * T), tgt].mean())
    # backward
    dlog = np.exp(z - lse)
    dlog[np.arange(B * T), tgt] -= 1
    dlog = (dlog / (B * T)).reshape(B, T, -1)
    grads["wte.weight"] += dlog.reshape(B * T, -1).T @ f_in.reshape(B * T, C)
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = _ln_bwd(dlog @ p["wte.weight"], lnf)
    for i in reversed(range(L)):
        b = f"h.{i}."
        a_in, ln1, q, k, v, att, yh, m_in, ln2, u, th, gl = saved[i]
        dgl, grads[b + "mlp.c_proj.weight"], grads[b + "mlp.c_proj.bias"] = _linear_bwd(
            dx, gl, p[b + "mlp.c_proj.weight"])
        du = dgl * (0.5 * (1 + th) + 0.5 * u * (1 - th**2) * _C_GELU * (1 + 3 * 0.044715 * u**2))
        dm, grads[b + "mlp.c_fc.weight"], grads[b + "mlp.c_fc.bias"] = _linear_bwd(
            du, m_in, p[b + "mlp.c_fc.weight"])
        dln, grads[b + "ln_2.weight"], grads[b + "ln_2.bias"] = _ln_bwd(dm, ln2)
        dx = dx + dln
        dyh, grads[b + "attn.c_proj.weight"], grads[b + "attn.c_proj.bias"] = _linear_bwd(
            dx, yh, p[b + "attn.c_proj.weight"])
        dy = dyh.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
        datt = dy @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ dy
        ds = att * (datt - (datt * att).sum(-1, keepdims=True)) / math.sqrt(hs)
        dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
        dqkv = np.concatenate([t.transpose(0, 2, 1, 3).reshape(B, T, C) for t in (dq, dk, dv)],
                              -1)
        da, grads[b + "attn.c_attn.weight"], grads[b + "attn.c_attn.bias"] = _linear_bwd(
            dqkv, a_in, p[b + "attn.c_attn.weight"])
        dln, grads[b + "ln_1.weight"], grads[b + "ln_1.bias"] = _ln_bwd(da, ln1)
        dx = dx + dln
    np.add.at(grads["wte.weight"], idx, dx)
    grads["wpe.weight"][:T] += dx.sum(0)
    return loss, grads


def numpy_adamw(p: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                state: dict[str, Any]) -> None:
    """torch.optim.AdamW: decoupled decay on the 2-d parameters (nanoGPT's groups)."""
    state["t"] = t = state.get("t", 0) + 1
    b1, b2 = BETAS
    for k, w in p.items():
        g = grads[k]
        m = state.setdefault("m" + k, np.zeros_like(w))
        v = state.setdefault("v" + k, np.zeros_like(w))
        if w.ndim >= 2:
            w *= 1 - LR * WEIGHT_DECAY
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        w -= (LR / (1 - b1**t)) * m / (np.sqrt(v) / math.sqrt(1 - b2**t) + ADAM_EPS)


def gpt_reference(inp: Inputs) -> Outputs:
    p = {k: v.astype(np.float64) for k, v in inp["params"].items()}
    state: dict[str, Any] = {}
    loss = 0.0
    for _ in range(CHECK_STEPS):
        loss, grads = numpy_gpt_loss_grads(p, inp["idx"], inp["targets"], inp["size"])
        numpy_adamw(p, grads, state)
    return [np.float64(loss)] + [p[k] - inp["params"][k] for k in sorted(p)]


def gpt_numpy_case(inp: Inputs) -> Case:
    """The same step in float32 NumPy with the backward by hand."""
    p = {k: v.copy() for k, v in inp["params"].items()}
    state: dict[str, Any] = {}
    last = [0.0]

    def step() -> float:
        last[0], grads = numpy_gpt_loss_grads(p, inp["idx"], inp["targets"], inp["size"])
        numpy_adamw(p, grads, state)
        return last[0]

    return Case(step, lambda: [np.float64(last[0])] + [p[k] - inp["params"][k]
                                                        for k in sorted(p)])


def gpt_case(lib: Any, inp: Inputs) -> Case:
    """nanoGPT's training step: forward with the loss, zero_grad, backward, AdamW."""
    lib.manual_seed(0)
    model = gpt_model(lib, inp["size"])
    named = dict(model.named_parameters())
    assert sorted(named) == sorted(inp["params"]), sorted(set(named) ^ set(inp["params"]))
    with lib.no_grad():
        for k, t in named.items():
            t.copy_(lib.from_numpy(inp["params"][k].copy()))
    decay = [t for t in named.values() if t.dim() >= 2]
    no_decay = [t for t in named.values() if t.dim() < 2]
    opt = lib.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=LR, betas=BETAS, eps=ADAM_EPS)
    idx, targets = lib.from_numpy(inp["idx"]), lib.from_numpy(inp["targets"])
    last: list[Any] = [None]

    def step() -> Any:
        loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last[0] = loss
        return loss

    def output() -> Outputs:
        return [np.float64(last[0].item())] + [
            named[k].detach().numpy().astype(np.float64) - inp["params"][k] for k in sorted(named)]

    return Case(step, output)


register_workload(Workload(
    name="eager-dynamic",
    description="tutorial dynamic net step (64, 1000-100-10, branch, backward, SGD), eager",
    sizes=DYN_SIZES,
    make_inputs=dyn_inputs,
    reference=dyn_reference,
    impls={"tracejit-eager": lambda inp: dyn_case(peers.tracejit(), inp),
           "numpy": dyn_numpy_case,
           "torch": lambda inp: dyn_case(peers.torch(), inp)},
    tolerance=1e-4,
    repeat=15,
    check_runs=CHECK_STEPS,
    error=norm_error,
))

register_workload(Workload(
    name="eager-gpt",
    description="small GPT step (2 layers, 4 heads, 64 embd, T=64, batch 8), AdamW, eager",
    sizes=GPT_SIZES,
    make_inputs=gpt_inputs,
    reference=gpt_reference,
    impls={"tracejit-eager": lambda inp: gpt_case(peers.tracejit(), inp),
           "numpy": gpt_numpy_case,
           "torch": lambda inp: gpt_case(peers.torch(), inp)},
    tolerance=1e-3,
    repeat=15,
    check_runs=CHECK_STEPS,
    error=norm_error,
))
