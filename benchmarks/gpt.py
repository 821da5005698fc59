"""gpt: one training step of a character-level GPT (benchmarks/gpt_model.py: nanoGPT's
architecture, pre-LayerNorm blocks with causal scaled_dot_product_attention and a GELU MLP, the
output projection tied to the token embedding), cross entropy over every position, AdamW
(lr 1e-3, betas (0.9, 0.95), weight decay 0.1 on the >= 2-d parameters only), dropout 0; the
step as users write it (`model(x, y)`, `zero_grad`, `backward`, `step`). tracejit and torch
build the model from the same `gpt_model` definition and load the same weights; torch.compile
compiles the model (forward, and backward through AOTAutograd), the optimizer stays eager.

The reference is the same model by hand in float64 NumPy (forward, the analytic backward of
every layer, AdamW as torch writes it). The check runs three steps (the jit traces while the
gradients and AdamW's state are created, and compiles on the third) and compares the last loss
and every parameter's total update in relative L2 norm (AdamW, like Adam, turns gradients near
0 into +-lr steps: see mlp_large.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import erf

from . import peers
from .core import Case, Inputs, Outputs, Workload, norm_error, register_workload
from .gpt_model import GPTConfig, build
from .jitprobe import JitProbe

CHECK_STEPS = 3
LR, BETAS, WEIGHT_DECAY, EPS = 1e-3, (0.9, 0.95), 0.1, 1e-8
LN_EPS = 1e-5
# nanoGPT's shakespeare-char model scaled to a 2-core CPU: 4 layers of width 128, 64 characters
SIZES = {
    "full": {"batch": 16, "block_size": 64, "vocab_size": 65, "n_layer": 4, "n_head": 4,
             "n_embd": 128},
    "quick": {"batch": 4, "block_size": 16, "vocab_size": 65, "n_layer": 2, "n_head": 2,
              "n_embd": 32},
}


def config(size: dict[str, Any]) -> GPTConfig:
    return GPTConfig(vocab_size=size["vocab_size"], block_size=size["block_size"],
                     n_layer=size["n_layer"], n_head=size["n_head"], n_embd=size["n_embd"],
                     dropout=0.0, bias=True)


def init_weights(rng: np.random.Generator, cfg: GPTConfig) -> dict[str, np.ndarray]:
    """float32 weights under the state_dict names of gpt_model.GPT, GPT-2's initialisation
    (normal 0.02, residual projections 0.02 / sqrt(2 n_layer)) with LayerNorm weights and every
    bias perturbed away from 1 and 0, so their gradients are checked as well."""
    c, v = cfg.n_embd, cfg.vocab_size

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return (std * rng.standard_normal(shape)).astype(np.float32)

    proj = 0.02 / math.sqrt(2 * cfg.n_layer)
    w = {"transformer.wte.weight": normal(v, c),
         "transformer.wpe.weight": normal(cfg.block_size, c)}
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        w |= {p + "ln_1.weight": 1 + normal(c, std=0.1), p + "ln_1.bias": normal(c),
              p + "attn.c_attn.weight": normal(3 * c, c), p + "attn.c_attn.bias": normal(3 * c),
              p + "attn.c_proj.weight": normal(c, c, std=proj), p + "attn.c_proj.bias": normal(c),
              p + "ln_2.weight": 1 + normal(c, std=0.1), p + "ln_2.bias": normal(c),
              p + "mlp.c_fc.weight": normal(4 * c, c), p + "mlp.c_fc.bias": normal(4 * c),
              p + "mlp.c_proj.weight": normal(c, 4 * c, std=proj),
              p + "mlp.c_proj.bias": normal(c)}
    w |= {"transformer.ln_f.weight": 1 + normal(c, std=0.1),
          "transformer.ln_f.bias": normal(c)}
    w["lm_head.weight"] = w["transformer.wte.weight"]  # tied: one array under both names
    return w


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    cfg = config(size)
    shape = (size["batch"], cfg.block_size)
    return {"cfg": cfg, "weights": init_weights(rng, cfg),
            "x": rng.integers(0, cfg.vocab_size, shape),
            "y": rng.integers(0, cfg.vocab_size, shape)}


def param_names(weights: dict[str, np.ndarray]) -> list[str]:
    """The parameters once each, in named_parameters() order (the tied lm_head.weight is
    transformer.wte.weight)."""
    return [k for k in weights if k != "lm_head.weight"]


# ---- the float64 NumPy reference: forward, backward and AdamW by hand ---------------------------


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
    mu = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + LN_EPS)
    xhat = (x - mu) * rstd
    return xhat * w + b, (xhat, rstd, w)


def _layer_norm_bwd(dy: np.ndarray, saved: Any) -> tuple[np.ndarray, ...]:
    xhat, rstd, w = saved
    g = dy * w
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    return dx, (dy * xhat).reshape(-1, dy.shape[-1]).sum(0), dy.reshape(-1, dy.shape[-1]).sum(0)


def _linear_bwd(dy: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """(dx, dW, db) of y = x @ W.T + b."""
    d2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
    return dy @ w, d2.T @ x2, d2.sum(0)


def numpy_loss_grads(w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                     cfg: GPTConfig) -> tuple[float, dict[str, np.ndarray]]:
    """The mean cross entropy of the next-character logits and its gradient for every
    parameter, in w's dtype."""
    B, T = x.shape  # noqa: N806
    C, nh = cfg.n_embd, cfg.n_head  # noqa: N806
    hs = C // nh
    scale = 1 / math.sqrt(hs)
    causal = np.tril(np.ones((T, T), dtype=bool))
    h = w["transformer.wte.weight"][x] + w["transformer.wpe.weight"][:T]
    tape = []
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        a, ln1 = _layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = a @ w[p + "attn.c_attn.weight"].T + w[p + "attn.c_attn.bias"]
        q, k, v = (qkv[..., j * C:(j + 1) * C].reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
                   for j in range(3))
        s = np.where(causal, q @ k.transpose(0, 1, 3, 2) * scale, -np.inf)
        att = np.exp(s - s.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        yh = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        h1 = h + yh @ w[p + "attn.c_proj.weight"].T + w[p + "attn.c_proj.bias"]
        a2, ln2 = _layer_norm(h1, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        f = a2 @ w[p + "mlp.c_fc.weight"].T + w[p + "mlp.c_fc.bias"]
        cdf = 0.5 * (1 + erf(f / math.sqrt(2)))
        g = f * cdf
        h = h1 + g @ w[p + "mlp.c_proj.weight"].T + w[p + "mlp.c_proj.bias"]
        tape.append((a, ln1, q, k, v, att, yh, a2, ln2, f, cdf, g))
    hf, lnf = _layer_norm(h, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"])
    logits = hf @ w["transformer.wte.weight"].T
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    loss = -np.take_along_axis(logp, y[..., None], -1).mean()

    grads: dict[str, np.ndarray] = {}
    dlogits = np.exp(logp)
    np.put_along_axis(dlogits, y[..., None], np.take_along_axis(dlogits, y[..., None], -1) - 1,
                      -1)
    dlogits /= B * T
    grads["transformer.wte.weight"] = dlogits.reshape(-1, logits.shape[-1]).T @ hf.reshape(-1, C)
    dh, grads["transformer.ln_f.weight"], grads["transformer.ln_f.bias"] = _layer_norm_bwd(
        dlogits @ w["transformer.wte.weight"], lnf)
    for i in reversed(range(cfg.n_layer)):
        p = f"transformer.h.{i}."
        a, ln1, q, k, v, att, yh, a2, ln2, f, cdf, g = tape[i]
        dg, grads[p + "mlp.c_proj.weight"], grads[p + "mlp.c_proj.bias"] = _linear_bwd(
            dh, g, w[p + "mlp.c_proj.weight"])
        df = dg * (cdf + f * np.exp(-0.5 * f * f) / math.sqrt(2 * math.pi))
        da2, grads[p + "mlp.c_fc.weight"], grads[p + "mlp.c_fc.bias"] = _linear_bwd(
            df, a2, w[p + "mlp.c_fc.weight"])
        dx, grads[p + "ln_2.weight"], grads[p + "ln_2.bias"] = _layer_norm_bwd(da2, ln2)
        dh1 = dh + dx
        dyh, grads[p + "attn.c_proj.weight"], grads[p + "attn.c_proj.bias"] = _linear_bwd(
            dh1, yh, w[p + "attn.c_proj.weight"])
        dyh4 = dyh.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
        datt = dyh4 @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ dyh4
        ds = att * (datt - (datt * att).sum(-1, keepdims=True)) * scale
        dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
        dqkv = np.concatenate([t.transpose(0, 2, 1, 3).reshape(B, T, C) for t in (dq, dk, dv)],
                              -1)
        da, grads[p + "attn.c_attn.weight"], grads[p + "attn.c_attn.bias"] = _linear_bwd(
            dqkv, a, w[p + "attn.c_attn.weight"])
        dx, grads[p + "ln_1.weight"], grads[p + "ln_1.bias"] = _layer_norm_bwd(da, ln1)
        dh = dh1 + dx
    np.add.at(grads["transformer.wte.weight"], x, dh)  # the embedding's share of the tied weight
    grads["transformer.wpe.weight"] = np.zeros_like(w["transformer.wpe.weight"])
    grads["transformer.wpe.weight"][:T] = dh.sum(0)
    return float(loss), grads


class NumpyAdamW:
    """torch.optim.AdamW's update: decoupled decay p *= 1 - lr * wd, then Adam's step."""

    def __init__(self, w: dict[str, np.ndarray]) -> None:
        self.w = w
        self.m = {k: np.zeros_like(w[k]) for k in param_names(w)}
        self.v = {k: np.zeros_like(w[k]) for k in param_names(w)}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2 = BETAS
        for k in self.m:
            p, g = self.w[k], grads[k]
            if p.ndim >= 2:
                p *= 1 - LR * WEIGHT_DECAY
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            denom = np.sqrt(self.v[k]) / math.sqrt(1 - b2 ** self.t) + EPS
            p -= LR / (1 - b1 ** self.t) * self.m[k] / denom


def outputs(inp: Inputs, loss: float, params: dict[str, np.ndarray]) -> Outputs:
    """The last loss, then each parameter's total update (final - initial)."""
    w0 = inp["weights"]
    return [np.array(loss)] + [np.asarray(params[k], np.float64) - w0[k]
                               for k in param_names(w0)]


def _numpy_weights(inp: Inputs, dtype: type) -> dict[str, np.ndarray]:
    w = {k: v.astype(dtype) for k, v in inp["weights"].items() if k != "lm_head.weight"}
    w["lm_head.weight"] = w["transformer.wte.weight"]
    return w


def reference(inp: Inputs) -> Outputs:
    w = _numpy_weights(inp, np.float64)
    opt = NumpyAdamW(w)
    loss = 0.0
    for _ in range(CHECK_STEPS):
        loss, grads = numpy_loss_grads(w, inp["x"], inp["y"], inp["cfg"])
        opt.step(grads)
    return outputs(inp, loss, w)


def numpy_case(inp: Inputs) -> Case:
    """The reference's code in float32: what hand-written NumPy costs."""
    w = _numpy_weights(inp, np.float32)
    opt = NumpyAdamW(w)
    last = [0.0]

    def run() -> float:
        last[0], grads = numpy_loss_grads(w, inp["x"], inp["y"], inp["cfg"])
        opt.step({k: g.astype(np.float32) for k, g in grads.items()})
        return last[0]

    return Case(run, lambda: outputs(inp, last[0], w))


# ---- tracejit and torch: the gpt_model definition, one step per call ---------------------------


def _module_case(lib: Any, inp: Inputs, wrap: Any = None, jit: Any = None) -> Case:
    model = build(lib, inp["cfg"])
    model.load_state_dict({k: lib.from_numpy(v.copy()) for k, v in inp["weights"].items()})
    opt = model.configure_optimizers(WEIGHT_DECAY, LR, BETAS)
    fwd = wrap(model) if wrap is not None else model
    params = dict(model.named_parameters())
    x, y = lib.from_numpy(inp["x"].copy()), lib.from_numpy(inp["y"].copy())

    def step(x: Any, y: Any) -> Any:
        _, loss = fwd(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    f = jit(step) if jit is not None else step
    last: list[Any] = [None]

    def run() -> Any:
        last[0] = f(x, y)
        return last[0]

    def output() -> Outputs:
        return outputs(inp, float(last[0].item()),
                       {k: p.detach().numpy() for k, p in params.items()})

    return Case(run, output, JitProbe(f) if jit is not None else None)


def tracejit_case(inp: Inputs, jit: bool) -> Case:
    tj = peers.tracejit_jit() if jit else peers.tracejit()
    return _module_case(tj, inp, jit=tj.jit if jit else None)


def torch_case(inp: Inputs, compile: bool) -> Case:
    th = peers.torch_compile() if compile else peers.torch()
    return _module_case(th, inp, wrap=th.compile if compile else None)


WORKLOAD = register_workload(Workload(
    name="gpt",
    description="character-level GPT train step (4 layers x 128, 4 heads, 64 chars, batch 16), "
                "cross entropy, AdamW with decay groups (one step per call)",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls={
        "tracejit-jit": lambda inp: tracejit_case(inp, jit=True),
        "tracejit-eager": lambda inp: tracejit_case(inp, jit=False),
        "numpy": numpy_case,
        "torch": lambda inp: torch_case(inp, compile=False),
        "torch-compile": lambda inp: torch_case(inp, compile=True),
    },
    tolerance=2e-3,
    error=norm_error,
    repeat=15,
    check_runs=CHECK_STEPS,
))
