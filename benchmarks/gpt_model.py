"""A nanoGPT-sized character-level GPT, written once against a library module argument.

`build(lib, cfg)` makes the same model from torch or from tracejit (`lib` is the module itself):
token and position embeddings, `n_layer` pre-LayerNorm blocks (causal self-attention through
`F.scaled_dot_product_attention(is_causal=True)`, an MLP with GELU), dropout, the output
projection tied to the token embedding, `configure_optimizers` (AdamW with weight decay on the
>= 2-d parameters only, as nanoGPT's) and `generate(idx, max_new_tokens, temperature, top_k)`.
Imports nothing but the standard library: the caller picks the library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GPTConfig:
    """The model's sizes. The defaults are a small character-level model (about 0.2 M params)."""

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be a multiple of n_head "
                             f"({self.n_head}), so that every head gets n_embd // n_head dims")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout}")


_CLASSES: dict[int, Any] = {}


def model_class(lib: Any) -> Any:
    """The GPT class written in `lib`'s API (defined once per library, then reused)."""
    key = id(lib)
    if key not in _CLASSES:
        _CLASSES[key] = _define(lib)
    return _CLASSES[key]


def build(lib: Any, cfg: GPTConfig, seed: int | None = None) -> Any:
    """A GPT made with `lib` (torch or tracejit); `seed` seeds `lib`'s generator first, so the
    initial weights are a function of the seed (different libraries draw differently: to start
    two libraries from the same weights, copy one's `state_dict` into the other)."""
    if seed is not None:
        lib.manual_seed(seed)
    return model_class(lib)(cfg)


def _define(torch: Any) -> Any:  # noqa: C901 - one model, its classes read as one listing
    nn = torch.nn
    F = torch.nn.functional  # noqa: N806
    Module: Any = nn.Module  # noqa: N806 - a base class only known at run time

    class CausalSelfAttention(Module):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__()
            # query, key and value of every head in one projection
            self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
            self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
            self.resid_dropout = nn.Dropout(cfg.dropout)
            self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout

        def forward(self, x: Any) -> Any:
            B, T, C = x.size()  # noqa: N806
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            # (B, T, C) -> (B, n_head, T, head size)
            q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0.0,
                is_causal=True)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))

    class MLP(Module):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__()
            self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
            self.dropout = nn.Dropout(cfg.dropout)

        def forward(self, x: Any) -> Any:
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(Module):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
            self.attn = CausalSelfAttention(cfg)
            self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
            self.mlp = MLP(cfg)

        def forward(self, x: Any) -> Any:
            # pre-LayerNorm residual blocks
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(Module):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__()
            self.config = cfg
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            ))
            self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
            # weight tying: the output projection is the token embedding (one parameter)
            self.transformer.wte.weight = self.lm_head.weight
            self.apply(self._init_weights)
            # residual projections scaled down by depth (GPT-2's initialisation)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

        @staticmethod
        def _init_weights(module: Any) -> None:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def num_params(self) -> int:
            """Parameters counted once (the tied embedding once)."""
            return sum(p.numel() for p in self.parameters())

        def forward(self, idx: Any, targets: Any = None) -> tuple[Any, Any]:
            _, t = idx.size()
            if t > self.config.block_size:
                raise ValueError(f"GPT: a sequence of length {t} is longer than block_size "
                                 f"{self.config.block_size}; crop it to the last block_size "
                                 "tokens")
            pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
            for block in self.transformer.h:
                x = block(x)
            x = self.transformer.ln_f(x)
            if targets is None:
                # generation reads only the last position's logits
                return self.lm_head(x[:, [-1], :]), None
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                   ignore_index=-1)
            return logits, loss

        def configure_optimizers(self, weight_decay: float, learning_rate: float,
                                 betas: tuple[float, float] = (0.9, 0.95)) -> Any:
            """AdamW with two groups: weight decay on matrices and embeddings (>= 2 dims), none
            on biases and LayerNorm parameters."""
            params = [p for p in self.parameters() if p.requires_grad]
            groups = [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ]
            return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)

        def generate(self, idx: Any, max_new_tokens: int, temperature: float = 1.0,
                     top_k: int | None = None) -> Any:
            """Extend idx (B, T) by max_new_tokens tokens, each sampled from the softmax of the
            last logits / temperature, restricted to the top_k most likely when given."""
            with torch.no_grad():
                for _ in range(max_new_tokens):
                    bs = self.config.block_size
                    idx_cond = idx if idx.size(1) <= bs else idx[:, -bs:]
                    logits, _ = self(idx_cond)
                    logits = logits[:, -1, :] / temperature
                    if top_k is not None:
                        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                        logits[logits < v[:, [-1]]] = -float("inf")
                    probs = F.softmax(logits, dim=-1)
                    idx_next = torch.multinomial(probs, num_samples=1)
                    idx = torch.cat((idx, idx_next), dim=1)
            return idx

    return GPT
