"""tracejit.nn.functional: the function forms of the layers and losses, written with tracejit
ops only (log_softmax + gather, where, ...) so they trace under @jit and differentiate."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import functional as _F  # noqa: N812
from .. import fused as _fused
from ..autograd import no_grad
from ..creation import arange, rand_like
from ..dispatch import STATE
from ..errors import located
from ..tensor import Tensor

__all__ = [
    "linear", "bilinear", "embedding", "one_hot", "relu", "relu_", "leaky_relu", "sigmoid", "tanh",
    "gelu", "silu", "softplus", "softmax", "log_softmax", "dropout", "layer_norm", "normalize",
    "mse_loss", "l1_loss", "smooth_l1_loss", "cross_entropy", "nll_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d",
]

# ---- layers --------------------------------------------------------------------------------------


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, the form nn.Linear uses (weight is [out_features, in_features])."""
    if input.dtype is not weight.dtype:
        raise TypeError(
            f"linear: input dtype {input.dtype.name} does not match the weight dtype "
            f"{weight.dtype.name}; convert the input with .to({weight.dtype}) (NumPy data is "
            "float64: tracejit.tensor(array, dtype=tracejit.float32)) or the model with "
            f".to({input.dtype})")
    if input.shape[-1:] != weight.shape[-1:]:
        raise RuntimeError(f"linear: input has {input.shape[-1] if input.ndim else 0} features "
                           f"in its last dim but the layer expects {weight.shape[-1]} (input "
                           f"shape {list(input.shape)}, weight shape {list(weight.shape)})")
    out = input.matmul(weight.t())
    return out if bias is None else out + bias


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor,
             bias: Tensor | None = None) -> Tensor:
    """y_o = x1^T W_o x2 + b_o, for weight [out, in1, in2] over any leading batch dims."""
    out_f, in1, in2 = weight.shape
    lead = input1.shape[:-1]
    x1 = input1.reshape(-1, in1)
    x2 = input2.reshape(-1, in2)
    # [N, in1] @ [in1, out*in2] -> [N, out, in2], then contract with x2 over in2
    t = x1.matmul(weight.permute(1, 0, 2).reshape(in1, out_f * in2)).reshape(-1, out_f, in2)
    y = (t * x2.unsqueeze(1)).sum(-1)
    if bias is not None:
        y = y + bias
    return y.reshape(tuple(lead) + (out_f,))


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of `weight` picked by the integer `input`; the padding row gets no gradient."""
    if input.dtype.category != 1:
        raise TypeError(f"embedding: expected an integer index tensor (int64 or int32), got "
                        f"{input.dtype.name}; use .long()")
    if scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: scale_grad_by_freq and sparse are not supported")
    n = weight.shape[0]
    if padding_idx is not None and padding_idx < 0:
        padding_idx += n
    # torch: indices in [0, num_embeddings), negatives included in what is out of range
    flat = input.reshape(-1)._check_index(n, op="embedding", style="range")
    if max_norm is not None:
        _embedding_renorm_(weight, flat, max_norm, norm_type)
    out = weight._index(flat, dims=(0,)).reshape(tuple(input.shape) + (weight.shape[1],))
    if padding_idx is not None and weight.requires_grad:
        # same values, but the rows read at padding_idx come from a detached copy: no gradient
        keep = (input != padding_idx).unsqueeze(-1)
        out = out.where(keep, out.detach())
    return out


def _embedding_renorm_(weight: Tensor, flat: Tensor, max_norm: float, norm_type: float) -> None:
    """Rescale the rows `flat` (checked 1-d indices) to norm at most max_norm, in place."""
    with no_grad():
        rows = weight._index(flat, dims=(0,))
        norms = _F.norm(rows, norm_type, dim=1, keepdim=True)
        scale = (max_norm / (norms + 1e-7)).clamp(max=1.0)
        weight[flat] = rows * scale


def one_hot(input: Tensor, num_classes: int = -1) -> Tensor:
    if input.dtype is not dt.int64:
        raise RuntimeError("one_hot is only applicable to index tensor of type int64")
    if num_classes < 0:
        num_classes = int(input.max().item()) + 1 if input.numel() else 0
    classes = arange(num_classes)
    return (input.unsqueeze(-1) == classes).to(dt.int64)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return input.relu_() if inplace else input.relu()


def relu_(input: Tensor) -> Tensor:
    return input.relu_()


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    out = _F.leaky_relu(input, negative_slope)
    return input.copy_(out) if inplace else out


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()


def tanh(input: Tensor) -> Tensor:
    return input.tanh()


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    return _F.gelu(input, approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    out = _F.silu(input)
    return input.copy_(out) if inplace else out


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    return _F.softplus(input, beta, threshold)


def _softmax_dim(name: str, ndim: int) -> int:
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call "
                  "to include dim=X as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


# _stacklevel: torch's (for the warning an implicit dim gives), kept so that dtype stays
# the fourth positional argument as in torch
def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
            dtype: Any = None) -> Tensor:
    return _F.softmax(input, _softmax_dim("softmax", input.ndim) if dim is None else dim, dtype)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
                dtype: Any = None) -> Tensor:
    d = _softmax_dim("log_softmax", input.ndim) if dim is None else dim
    return _F.log_softmax(input, d, dtype)


def dropout(input: Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p); identity in eval."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        out = input * 0.0
    else:
        # torch's noise: bernoulli(1 - p) / (1 - p); under @jit the draw, the comparison and
        # both multiplies are one fused kernel
        keep = (rand_like(input) < 1.0 - p).to(input.dtype)
        out = input * (keep * (1.0 / (1.0 - p)))
    return input.copy_(out) if inplace else out


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing `normalized_shape` dims (biased variance, as torch)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if tuple(input.shape[input.ndim - k:]) != shape:
        raise RuntimeError(f"layer_norm: expected input with shape [*, "
                           f"{', '.join(map(str, shape))}], but got input of size "
                           f"{list(input.shape)}")
    if _fused.usable(input, weight, bias):
        fast = _fused.layer_norm(input, shape, weight, bias, eps)
        if fast is not None:
            return fast
    dims = tuple(range(input.ndim - k, input.ndim))
    mu = input.mean(dims, keepdim=True)
    xc = input - mu
    var = (xc * xc).mean(dims, keepdim=True)
    out = xc * (var + eps).rsqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    return input / _F.norm(input, p, dim=dim, keepdim=True).clamp(min=eps)


# ---- losses --------------------------------------------------------------------------------------


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str,
                     stacklevel: int = 3) -> str:
    """The `reduction` that PyTorch's deprecated `size_average`/`reduce` arguments mean, with
    its UserWarning (torch's _Reduction.legacy_get_string): `reduction` when both are None."""
    if size_average is None and reduce is None:
        return reduction
    sa = True if size_average is None else size_average
    rd = True if reduce is None else reduce
    ret = "none" if not rd else "mean" if sa else "sum"
    warnings.warn(f"size_average and reduce args will be deprecated, please use "
                  f"reduction='{ret}' instead.", UserWarning, stacklevel=stacklevel)
    return ret


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction ('none', 'mean' or 'sum')")


def _check_pair(name: str, input: Tensor, target: Tensor) -> None:
    if not isinstance(target, Tensor):
        raise TypeError(f"{name}: target must be a Tensor, got {type(target).__name__}")
    if target.shape != input.shape:
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input "
                      f"size ({input.shape}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", stacklevel=3)


def mse_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
             reduce: bool | None = None, reduction: str = "mean",
             weight: Tensor | None = None) -> Tensor:
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_pair("mse_loss", input, target)
    d = input - target
    return _weighted("mse_loss", d * d, input, weight, reduction)


def l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
            reduce: bool | None = None, reduction: str = "mean",
            weight: Tensor | None = None) -> Tensor:
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_pair("l1_loss", input, target)
    return _weighted("l1_loss", (input - target).abs(), input, weight, reduction)


def _weighted(name: str, loss: Tensor, input: Tensor, weight: Tensor | None,
              reduction: str) -> Tensor:
    """torch 2.13's per-element weights: loss * weight, and 'mean' divides by the weights'
    sum (a weighted mean), not by the element count."""
    if weight is None:
        return _reduce(loss, reduction)
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError(located(f"{name}: weight must have the input's shape "
                                 f"{list(input.shape)}, got {list(weight.shape)}"))
    loss = loss * weight
    if reduction == "mean":
        return loss.sum() / weight.sum()
    return _reduce(loss, reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
                   reduce: bool | None = None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (L1 when beta == 0)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_pair("smooth_l1_loss", input, target)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    a = (input - target).abs()
    if beta == 0.0:
        return _reduce(a, reduction)
    return _reduce((a * a * (0.5 / beta)).where(a < beta, a - 0.5 * beta), reduction)


def _class_dim_view(t: Tensor, ndim: int) -> Tensor:
    """A [C] per-class tensor shaped to broadcast against [N, C, d1, ...] inputs."""
    return t.reshape((1, -1) + (1,) * (ndim - 2)) if ndim >= 2 else t


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,
             size_average: bool | None = None, ignore_index: int = -100,
             reduce: bool | None = None, reduction: str = "mean") -> Tensor:
    """-input[n, target[n]] (times weight[target[n]]); mean divides by the summed weights of
    the targets that are not ignore_index."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    return _nll_loss(input, target, weight, ignore_index, reduction, "nll_loss")


def _checked_target(target: Tensor, n_classes: int, ignore_index: int, op: str) -> Tensor:
    """The class-index target, checked (eagerly and in compiled code): each in [0, n_classes)
    or equal to ignore_index, as torch requires ("Target -1 is out of bounds.")."""
    _target_dtype(target, op)
    return target._check_index(n_classes, op=op, dim=1, ignore=int(ignore_index),
                               style="target")


def _target_dtype(target: Tensor, op: str) -> None:
    if target.dtype.category != 1:
        raise RuntimeError(f"{op}: expected target of an integer dtype (class indices), got "
                           f"{target.dtype.name}; use .long(), or pass probabilities to "
                           "cross_entropy")


def _nll_loss(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
              reduction: str, op: str, checked: bool = False) -> Tensor:
    """nll_loss; `checked`: the caller has already checked `target` with _checked_target."""
    _target_dtype(target, op)
    unbatched = input.ndim == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)  # noqa: A001
    if input.ndim < 2 or tuple(target.shape) != (input.shape[0],) + tuple(input.shape[2:]):
        raise ValueError(f"Expected target of shape {[input.shape[0]] + list(input.shape[2:])} "
                         f"for input of shape {list(input.shape)}, got {list(target.shape)}")
    n_classes = input.shape[1]
    if weight is not None and tuple(weight.shape) != (n_classes,):
        raise RuntimeError(f"{op}: weight tensor should be defined either for all {n_classes} "
                           f"classes or no classes but got weight tensor of shape: "
                           f"{list(weight.shape)}")
    if not checked:
        target = _checked_target(target, n_classes, ignore_index, op)
    valid = target != ignore_index
    safe = target.where(valid, 0)
    picked = -input.gather(1, safe.unsqueeze(1)).squeeze(1)
    if weight is not None:
        w = weight._index(safe.reshape(-1), dims=(0,)).reshape(safe.shape)  # safe: checked
        w = w.where(valid, 0.0)
    else:
        w = valid.to(input.dtype)
    loss = picked * w
    if reduction == "mean":
        return loss.sum() / w.sum()
    if unbatched and reduction == "none":
        return loss.squeeze(0)
    return _reduce(loss, reduction)


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average: bool | None = None, ignore_index: int = -100,
                  reduce: bool | None = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over dim 1 (dim 0 unbatched) followed by the NLL of the target classes, or
    of target probabilities when `target` is floating point (then ignore_index does not apply).
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    cdim = 0 if input.ndim == 1 else 1
    logp = _F.log_softmax(input, cdim)
    n_classes = input.shape[cdim]
    if target.is_floating_point():
        if target.shape != input.shape:
            raise RuntimeError(f"cross_entropy: probability targets must have the input's shape "
                               f"{list(input.shape)}, got {list(target.shape)}")
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / n_classes
        prod = logp * target
        if weight is not None:
            prod = prod * _class_dim_view(weight, input.ndim)
        per = -prod.sum(cdim)
        if reduction == "mean":
            return per.sum() / max(input.numel() // max(n_classes, 1), 1) if input.numel() else \
                per.sum() * math.nan
        return _reduce(per, reduction)
    # checked once, here, so the label-smoothing terms below read the checked target too
    target = _checked_target(target, n_classes, ignore_index, "cross_entropy")
    nll = _nll_loss(logp, target, weight, ignore_index, reduction, "cross_entropy", checked=True)
    if label_smoothing == 0.0:
        return nll
    valid = target != ignore_index
    lw = logp if weight is None else logp * _class_dim_view(weight, input.ndim)
    smooth = (-lw.sum(cdim)).where(valid, 0.0)
    if reduction == "mean":
        if weight is not None:
            safe = target.where(valid, 0)
            wsum = weight._index(safe.reshape(-1), dims=(0,)).reshape(safe.shape).where(valid,
                                                                                        0.0)
            smooth = smooth.sum() / wsum.sum()
        else:
            smooth = smooth.sum() / valid.sum()
    elif reduction == "sum":
        smooth = smooth.sum()
    return nll * (1 - label_smoothing) + smooth * (label_smoothing / n_classes)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """-(y log x + (1-y) log(1-x)), each log clamped at -100 as torch does."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if target.shape != input.shape:
        raise ValueError(f"Using a target size ({target.shape}) that is different to the input "
                         f"size ({input.shape}) is deprecated. Please ensure they have the same "
                         "size.")
    log_x = input.log().clamp(min=-100)
    log_1mx = (1 - input).log().clamp(min=-100)
    loss = -(target * log_x + (1 - target) * log_1mx)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     size_average: bool | None = None,
                                     reduce: bool | None = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """(1-y) x + (1 + (pw-1) y) softplus(-x), the numerically stable form."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if target.shape != input.shape:
        raise ValueError(f"Target size ({target.shape}) must be the same as input size "
                         f"({input.shape})")
    sp = (-input.abs()).exp().log1p() + (-input).relu()  # softplus(-x), never overflows
    if pos_weight is not None:
        loss = (1 - target) * input + ((pos_weight - 1) * target + 1) * sp
    else:
        loss = (1 - target) * input + sp
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


# ---- attention -----------------------------------------------------------------------------------

__all__ += ["scaled_dot_product_attention"]


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """softmax(Q K^T * scale + mask) V over the last two dims, any leading batch dims.

    A boolean mask says where to attend (True), a float mask is added to the scores;
    `is_causal` lets query i see keys j <= i (upper-left aligned, as torch). A row that can
    attend nowhere gives zeros, as torch 2.13 does (its "safe softmax"), not NaN. Written with
    matmul, where and softmax, so it differentiates and compiles under @jit.
    """
    name = "scaled_dot_product_attention"
    for arg, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or t.ndim < 2:
            raise RuntimeError(located(
                f"{name}: {arg} must be a tensor of at least 2 dims [..., L, E], got "
                f"{list(t.shape) if isinstance(t, Tensor) else type(t).__name__}"))
        if t.dtype.category != 2:
            raise TypeError(located(f"{name}: {arg} must be a floating tensor, got "
                                    f"{t.dtype.name}; use .float()"))
    if not (query.dtype is key.dtype and key.dtype is value.dtype):
        raise TypeError(located(
            f"{name}: query, key and value must have the same dtype, got {query.dtype.name}, "
            f"{key.dtype.name} and {value.dtype.name}"))
    if query.shape[-1] != key.shape[-1]:
        raise RuntimeError(located(
            f"{name}: query and key must have the same embedding size (last dim), got query "
            f"{list(query.shape)} and key {list(key.shape)}"))
    if key.shape[-2] != value.shape[-2]:
        raise RuntimeError(located(
            f"{name}: key and value must have the same sequence length (dim -2), got key "
            f"{list(key.shape)} and value {list(value.shape)}"))
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{name}: dropout_p has to be between 0 and 1, but got {dropout_p}")
    if attn_mask is not None and is_causal:
        # torch's reference (math) implementation refuses this; pass one or the other
        raise RuntimeError(located(
            f"{name}: explicit attn_mask should not be set when is_causal=True; fold the causal "
            "mask into attn_mask or drop attn_mask"))
    if enable_gqa:
        key, value = _gqa_expand(query, key, name), _gqa_expand(query, value, name)
    L, S = query.shape[-2], key.shape[-2]
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if attn_mask is not None and attn_mask.dtype is not dt.bool_ and \
            attn_mask.dtype is not query.dtype:
        raise TypeError(located(
            f"{name}: attn_mask must be bool (True = attend) or of the query's dtype "
            f"{query.dtype.name} (added to the scores), got {attn_mask.dtype.name}"))
    if (query.dtype in (dt.float32, dt.float64) and dropout_p < 1.0
            and tuple(query.shape[:-2]) == tuple(key.shape[:-2]) == tuple(value.shape[:-2])
            and not (attn_mask is not None and attn_mask.requires_grad)):
        return _fused_attention(query, key, value, attn_mask, dropout_p, is_causal, float(s))
    scores = query.matmul(key.mT) * s
    if is_causal:
        attn_mask = arange(L).unsqueeze(-1) >= arange(S)
    if attn_mask is not None:
        if attn_mask.dtype is dt.bool_:
            scores = scores.masked_fill(attn_mask.logical_not(), -math.inf)
        elif attn_mask.dtype is query.dtype:
            scores = scores + attn_mask
        else:
            raise TypeError(located(
                f"{name}: attn_mask must be bool (True = attend) or of the query's dtype "
                f"{query.dtype.name} (added to the scores), got {attn_mask.dtype.name}"))
    # rows masked everywhere: softmax over zeros (finite, so backward stays finite), then 0
    if S == 0:
        attn = scores  # no keys: the output is zeros of [..., L, Ev], as torch
    elif STATE.tracer is None and not scores.is_cuda and \
            not np.isneginf(scores._data).all(-1).any():
        # eagerly, a look at the scores shows that no row is masked everywhere (a causal mask
        # always leaves the first key): both masked_fills would leave every value and every
        # gradient as it is, so skip them and their six ops forward and backward
        attn = _F.softmax(scores, -1)
    else:
        dead = (scores == -math.inf).all(-1, keepdim=True)
        attn = _F.softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)
    if dropout_p > 0.0:
        attn = dropout(attn, dropout_p, training=True)
    return attn.matmul(value)


def _fused_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None,
                     dropout_p: float, is_causal: bool, scale: float) -> Tensor:
    """The `attention` op (ops/attention.py): one kernel, eager and compiled. Dropout draws
    what `rand_like` of the (..., L, S) weights would, from the default generator."""
    from ..creation import _gen
    from ..dispatch import dispatch
    from ..ops import REGISTRY
    from ..runtime.philox import blocks

    mask = "none" if attn_mask is None else ("bool" if attn_mask.dtype is dt.bool_ else "float")
    ops: list[Tensor] = [query, key, value] + ([attn_mask] if attn_mask is not None else [])
    g = None
    if dropout_p > 0.0:
        g = _gen("scaled_dot_product_attention", None)
        ops += [g._key, g._offset.clone()]  # (a copy: the VJP recomputes the same draws)
    out = dispatch(REGISTRY["attention"], tuple(ops),
                   {"scale": scale, "causal": bool(is_causal), "mask": mask, "p": dropout_p})
    if g is not None:
        n = math.prod(query.shape[:-1]) * key.shape[-2]
        g._advance(blocks(n, query.dtype is dt.float64))
    return out


def _gqa_expand(query: Tensor, kv: Tensor, name: str) -> Tensor:
    """Grouped-query attention: repeat each key/value head for its group of query heads."""
    if query.ndim < 3 or kv.ndim < 3:
        raise RuntimeError(located(f"{name}: enable_gqa needs a heads dim (-3) in query, key "
                                   "and value"))
    hq, hk = query.shape[-3], kv.shape[-3]
    if hk == 0 or hq % hk:
        raise RuntimeError(located(
            f"{name}: with enable_gqa the number of query heads ({hq}) must be a multiple of "
            f"the number of key/value heads ({hk})"))
    if hq == hk:
        return kv
    lead = tuple(kv.shape[:-3])
    g = kv.unsqueeze(-3).expand(*lead, hk, hq // hk, kv.shape[-2], kv.shape[-1])
    return g.reshape(*lead, hq, kv.shape[-2], kv.shape[-1])


from .conv import conv1d, conv2d, conv_transpose1d, conv_transpose2d  # noqa: E402

# pooling, batch norm and channel dropout (issue 15): nn/functional_pool.py
from .functional_pool import (  # noqa: E402
    adaptive_avg_pool2d,
    avg_pool2d,
    batch_norm,
    dropout2d,
    max_pool2d,
    max_pool2d_with_indices,
)

__all__ += ["max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d",
            "batch_norm", "dropout2d"]
