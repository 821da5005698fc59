"""MultiheadAttention with PyTorch's parameters (`in_proj_weight`, `in_proj_bias`,
`out_proj`; `q/k/v_proj_weight` when kdim/vdim differ), masks and return values, so a torch
state_dict loads strictly and the same weights give the same outputs."""

from __future__ import annotations

import math
from typing import Any

from .. import dtypes as dt
from ..creation import empty, zeros
from ..errors import located
from ..tensor import Tensor
from . import functional as F  # noqa: N812 - PyTorch's idiom
from . import init
from .layers import Linear
from .module import Module
from .parameter import Parameter


def _float_mask(mask: Tensor | None, name: str, dtype: Any) -> Tensor | None:
    """torch's canonical mask: bool True (= masked out) becomes -inf, a float mask is added."""
    if mask is None:
        return None
    if mask.dtype is dt.bool_:
        return zeros(*mask.shape, dtype=dtype).masked_fill(mask, -math.inf)
    if mask.dtype.category != 2:
        raise TypeError(located(f"MultiheadAttention: only bool and floating types of {name} "
                                f"are supported, got {mask.dtype.name}"))
    return mask.to(dtype)


def _pad_last(mask: Tensor | None) -> Tensor | None:
    """One more key column that every query may attend to (the added bias_k or zero key)."""
    if mask is None:
        return None
    return F._F.cat([mask, zeros(*mask.shape[:-1], 1, dtype=mask.dtype)], -1)


class MultiheadAttention(Module):
    """Attention over `num_heads` heads of size embed_dim // num_heads, as torch's:
    inputs (L, N, E) or (N, L, E) with batch_first, or unbatched (L, E); returns
    (attn_output, attn_weights), the weights averaged over heads unless
    average_attn_weights=False, and None when need_weights=False."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got "
                             f"embed_dim={embed_dim} and num_heads={num_heads} instead")
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise AssertionError(f"embed_dim must be divisible by num_heads (embed_dim="
                                 f"{embed_dim}, num_heads={num_heads})")
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(empty(embed_dim, embed_dim, dtype=dtype))
            self.k_proj_weight = Parameter(empty(embed_dim, self.kdim, dtype=dtype))
            self.v_proj_weight = Parameter(empty(embed_dim, self.vdim, dtype=dtype))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim, dtype=dtype))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * embed_dim, dtype=dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        if add_bias_kv:
            self.bias_k = Parameter(empty(1, 1, embed_dim, dtype=dtype))
            self.bias_v = Parameter(empty(1, 1, embed_dim, dtype=dtype))
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
        if self.bias_v is not None:
            init.xavier_normal_(self.bias_v)

    def _project(self, query: Tensor, key: Tensor, value: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
        e = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        name = type(self).__name__
        if query.ndim not in (2, 3):
            raise RuntimeError(located(f"{name}: query should be unbatched 2D (L, E) or "
                                       f"batched 3D, got {query.ndim}D {list(query.shape)}"))
        batched = query.ndim == 3
        if key.ndim != query.ndim or value.ndim != query.ndim:
            raise RuntimeError(located(
                f"{name}: query, key and value must all be {query.ndim}D, got key "
                f"{list(key.shape)} and value {list(value.shape)}"))
        if batched and self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        tgt_len, bsz, e = query.shape
        src_len = key.shape[0]
        h, hd = self.num_heads, self.head_dim
        if e != self.embed_dim:
            raise RuntimeError(located(f"{name}: was expecting embedding dimension of "
                                       f"{self.embed_dim}, but got {e}"))
        if key.shape[:2] != value.shape[:2]:
            raise RuntimeError(located(f"{name}: key shape {list(key.shape)} does not match "
                                       f"value shape {list(value.shape)}"))
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (bsz, src_len):
            raise RuntimeError(located(
                f"{name}: expecting key_padding_mask shape of {(bsz, src_len)}, but got "
                f"{tuple(key_padding_mask.shape)}"))
        kpm = _float_mask(key_padding_mask, "key_padding_mask", query.dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError(located(
                f"{name}: need attn_mask if specifying the is_causal hint; you may use "
                "Transformer.generate_square_subsequent_mask to create it"))
        # torch: the hint replaces the mask only where SDPA can take it (no padding, no weights)
        use_causal = is_causal and kpm is None and not need_weights
        mask = None if use_causal else _float_mask(attn_mask, "attn_mask", query.dtype)
        if mask is not None:
            if mask.ndim == 2:
                if tuple(mask.shape) != (tgt_len, src_len):
                    raise RuntimeError(located(
                        f"{name}: the shape of the 2D attn_mask is {tuple(mask.shape)}, but "
                        f"should be {(tgt_len, src_len)}"))
                mask = mask.unsqueeze(0)
            elif mask.ndim == 3:
                if tuple(mask.shape) != (bsz * h, tgt_len, src_len):
                    raise RuntimeError(located(
                        f"{name}: the shape of the 3D attn_mask is {tuple(mask.shape)}, but "
                        f"should be {(bsz * h, tgt_len, src_len)}"))
            else:
                raise RuntimeError(located(f"{name}: attn_mask's dimension {mask.ndim} is "
                                           "not supported (2D or 3D)"))
        q, k, v = self._project(query, key, value)
        if self.bias_k is not None and self.bias_v is not None:
            k = F._F.cat([k, self.bias_k.expand(1, bsz, e)], 0)
            v = F._F.cat([v, self.bias_v.expand(1, bsz, e)], 0)
            mask, kpm = _pad_last(mask), _pad_last(kpm)
        # (L, N, E) -> (N * H, L, head_dim)
        q = q.reshape(tgt_len, bsz * h, hd).transpose(0, 1)
        k = k.reshape(k.shape[0], bsz * h, hd).transpose(0, 1)
        v = v.reshape(v.shape[0], bsz * h, hd).transpose(0, 1)
        if self.add_zero_attn:
            k = F._F.cat([k, zeros(bsz * h, 1, hd, dtype=k.dtype)], 1)
            v = F._F.cat([v, zeros(bsz * h, 1, hd, dtype=v.dtype)], 1)
            mask, kpm = _pad_last(mask), _pad_last(kpm)
        s = k.shape[1]
        if kpm is not None:
            kpm = kpm.reshape(bsz, 1, 1, s).expand(bsz, h, 1, s).reshape(bsz * h, 1, s)
            mask = kpm if mask is None else mask + kpm
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q * math.sqrt(1.0 / hd)).matmul(k.mT)
            if mask is not None:
                scores = scores + mask
            weights = F.softmax(scores, dim=-1)
            if p > 0.0:
                weights = F.dropout(weights, p=p)
            out = weights.matmul(v)  # (N * H, L, head_dim)
            out = out.transpose(0, 1).reshape(tgt_len * bsz, e)
            out = self.out_proj(out).reshape(tgt_len, bsz, e)
            w = weights.reshape(bsz, h, tgt_len, s)
            if average_attn_weights:
                w = w.mean(1)
            if not batched:
                return out.squeeze(1), w.squeeze(0)
            return (out.transpose(0, 1) if self.batch_first else out), w
        if mask is not None:
            mask = mask.unsqueeze(0) if mask.shape[0] == 1 else mask.reshape(bsz, h, -1, s)
        out = F.scaled_dot_product_attention(
            q.reshape(bsz, h, tgt_len, hd), k.reshape(bsz, h, s, hd), v.reshape(bsz, h, s, hd),
            mask, p, use_causal)
        out = out.permute(2, 0, 1, 3).reshape(tgt_len * bsz, e)
        out = self.out_proj(out).reshape(tgt_len, bsz, e)
        if not batched:
            return out.squeeze(1), None
        return (out.transpose(0, 1) if self.batch_first else out), None
