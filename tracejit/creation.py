"""Tensor factories and random numbers (PyTorch's names and defaults). Factories that make
values from scratch (full, arange) go through dispatch, so a trace records them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dtypes as dt
from .device import as_device
from .dispatch import STATE, dispatch
from .errors import located
from .ops import REGISTRY as R
from .ops.registry import ShapeError
from .tensor import Tensor, _from_value, _sizes


def _finish(t: Tensor, requires_grad: bool) -> Tensor:
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data: Any, *, dtype: Any = None, device: Any = None,
           requires_grad: bool = False) -> Tensor:
    """Copy `data` (numbers, nested lists, NumPy arrays, tensors) into a new tensor.

    >>> tensor([[1.0, 2.0]]).dtype
    tracejit.float32
    """
    as_device(device)
    t = _from_value(data, dtype, copy=True)
    if STATE.tracer is not None:
        STATE.tracer.constant(t)
    return _finish(t, requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """Like tensor(), but shares memory with a NumPy array or tensor when dtypes match."""
    as_device(device)
    if isinstance(data, Tensor) and (dtype is None or dt.as_dtype(dtype) is data.dtype):
        return data
    return _from_value(data, dtype, copy=False)


def from_numpy(a: np.ndarray) -> Tensor:
    """A tensor sharing `a`'s memory: changes to one show in the other."""
    if not isinstance(a, np.ndarray):
        raise TypeError(located(f"from_numpy: expected np.ndarray, got {type(a).__name__}"))
    return Tensor._make(a, dt.from_numpy_dtype(a.dtype))


def from_dlpack(ext: Any) -> Tensor:
    """Zero-copy import from any object with __dlpack__ (torch, JAX, NumPy)."""
    a = np.from_dlpack(ext)
    return Tensor._make(a, dt.from_numpy_dtype(a.dtype))


def full(size: Sequence[int], fill_value: Any, *, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    as_device(device)
    if dtype is None:
        dtype = dt.scalar_dtype(fill_value) if not isinstance(fill_value, Tensor) else None
    d = dt.as_dtype(dtype)
    v = fill_value.item() if isinstance(fill_value, Tensor) else fill_value
    shape = _sizes((size,)) if not isinstance(size, int) else (size,)
    t = dispatch(R["full"], (), {"shape": shape, "value": v, "dtype": d})
    return _finish(t, requires_grad)


def _float_or(dtype: Any) -> dt.DType:
    return dt.get_default_dtype() if dtype is None else dt.as_dtype(dtype)


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return full(_sizes(size), 0, dtype=_float_or(dtype), device=device,
                requires_grad=requires_grad)


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return full(_sizes(size), 1, dtype=_float_or(dtype), device=device,
                requires_grad=requires_grad)


def empty(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    # PyTorch leaves memory uninitialised; zeros is the deterministic choice and costs little
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def _like(x: Tensor, dtype: Any) -> dt.DType:
    return x.dtype if dtype is None else dt.as_dtype(dtype)


def zeros_like(x: Tensor, *, dtype: Any = None, device: Any = None,
               requires_grad: bool = False) -> Tensor:
    return full(x.shape, 0, dtype=_like(x, dtype), device=device, requires_grad=requires_grad)


def ones_like(x: Tensor, *, dtype: Any = None, device: Any = None,
              requires_grad: bool = False) -> Tensor:
    return full(x.shape, 1, dtype=_like(x, dtype), device=device, requires_grad=requires_grad)


def empty_like(x: Tensor, *, dtype: Any = None, device: Any = None,
               requires_grad: bool = False) -> Tensor:
    return zeros_like(x, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(x: Tensor, fill_value: Any, *, dtype: Any = None, device: Any = None,
              requires_grad: bool = False) -> Tensor:
    return full(x.shape, fill_value, dtype=_like(x, dtype), device=device,
                requires_grad=requires_grad)


def arange(start: float, end: float | None = None, step: float = 1, *, dtype: Any = None,
           device: Any = None, requires_grad: bool = False) -> Tensor:
    """arange(5) -> 0..4 (int64); any float bound makes it the default float dtype."""
    as_device(device)
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        d = dt.get_default_dtype() if is_float else dt.int64
    else:
        d = dt.as_dtype(dtype)
    t = dispatch(R["arange"], (), {"start": start, "end": end, "step": step, "dtype": d})
    return _finish(t, requires_grad)


def linspace(start: float, end: float, steps: int, *, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    if steps < 0:
        raise RuntimeError(located(f"linspace: number of steps must be non-negative, got {steps}"))
    as_device(device)
    d = _float_or(dtype)
    if steps == 1:
        return full((1,), start, dtype=d, requires_grad=requires_grad)
    i = arange(steps, dtype=dt.float64)
    t = (i * ((end - start) / max(steps - 1, 1)) + start).to(d)
    return _finish(t, requires_grad)


def eye(n: int, m: int | None = None, *, dtype: Any = None, device: Any = None,
        requires_grad: bool = False) -> Tensor:
    m = n if m is None else m
    as_device(device)
    if n < 0 or m < 0:
        raise RuntimeError(located(f"eye: n and m must be non-negative, got n={n}, m={m}"))
    t = arange(n).reshape(n, 1).eq(arange(m).reshape(1, m)).to(_float_or(dtype))
    return _finish(t, requires_grad)


# ---- random -------------------------------------------------------------------------------------


def _fresh_seed() -> int:
    entropy: Any = np.random.SeedSequence().entropy  # an int when no entropy was passed in
    return int(entropy) % (2**63)


class Generator:
    """A seedable random source (NumPy's PCG64 underneath). Streams differ from PyTorch's."""

    def __init__(self, device: Any = "cpu") -> None:
        self._seed = _fresh_seed()
        self._rng = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> Generator:
        self._seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def seed(self) -> int:
        return self.manual_seed(_fresh_seed()).initial_seed()

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> Tensor:
        import json

        raw = json.dumps(self._rng.bit_generator.state).encode()
        return Tensor._make(np.frombuffer(raw, np.uint8).astype(np.int64), dt.int64)

    def set_state(self, state: Tensor) -> Generator:
        import json

        self._rng.bit_generator.state = json.loads(bytes(state._data.astype(np.uint8)).decode())
        return self


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator (tracejit's random streams are its own, not PyTorch's)."""
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state() -> Tensor:
    return default_generator.get_state()


def set_rng_state(state: Tensor) -> None:
    default_generator.set_state(state)


def _shape(op: str, size: Sequence[Any]) -> tuple[int, ...]:
    shape = _sizes(size)
    if any(n < 0 for n in shape):
        raise ShapeError(f"{op}: trying to create tensor with negative dimension in "
                         f"{list(shape)}")
    return shape


def _rng(generator: Generator | None) -> np.random.Generator:
    if STATE.tracer is not None:
        STATE.tracer.graph_break("random number generation")
    return (generator or default_generator)._rng


def rand(*size: Any, generator: Generator | None = None, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    as_device(device)
    d = _float_or(dtype)
    a = _rng(generator).random(_shape("rand", size), dtype=np.float64).astype(d.np)
    return _finish(Tensor._make(a, d), requires_grad)


def randn(*size: Any, generator: Generator | None = None, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    as_device(device)
    d = _float_or(dtype)
    a = _rng(generator).standard_normal(_shape("randn", size), dtype=np.float64).astype(d.np)
    return _finish(Tensor._make(a, d), requires_grad)


def randint(low: int, high: Any = None, size: Any = (), *,
            generator: Generator | None = None, dtype: Any = None, device: Any = None) -> Tensor:
    if high is None or not isinstance(high, (int, np.integer)):  # randint(high, size)
        low, high, size = 0, low, (size if high is None else high)
    as_device(device)
    if high <= low:
        raise RuntimeError(located(f"randint: expected low < high, got low={low}, high={high}"))
    d = dt.int64 if dtype is None else dt.as_dtype(dtype)
    a = _rng(generator).integers(low, high, _shape("randint", (size,)), dtype=np.int64)
    a = a.astype(d.np)
    return Tensor._make(a, d)


def randperm(n: int, *, generator: Generator | None = None, dtype: Any = None,
             device: Any = None) -> Tensor:
    as_device(device)
    d = dt.int64 if dtype is None else dt.as_dtype(dtype)
    return Tensor._make(_rng(generator).permutation(n).astype(d.np), d)


def rand_like(x: Tensor, *, dtype: Any = None, device: Any = None,
              generator: Generator | None = None, requires_grad: bool = False) -> Tensor:
    return rand(*x.shape, dtype=_like(x, dtype), device=device, generator=generator,
                requires_grad=requires_grad)


def randn_like(x: Tensor, *, dtype: Any = None, device: Any = None,
               generator: Generator | None = None, requires_grad: bool = False) -> Tensor:
    return randn(*x.shape, dtype=_like(x, dtype), device=device, generator=generator,
                 requires_grad=requires_grad)


def bernoulli(p: Tensor, *, generator: Generator | None = None) -> Tensor:
    a = (_rng(generator).random(p.shape) < p._data).astype(p.dtype.np)
    return Tensor._make(a, p.dtype)


def multinomial(probs: Tensor, num_samples: int, replacement: bool = False, *,
                generator: Generator | None = None) -> Tensor:
    rng = _rng(generator)
    p = probs._data.astype(np.float64)
    rows = p.reshape(-1, p.shape[-1])
    out = np.stack([rng.choice(rows.shape[1], num_samples, replace=replacement, p=r / r.sum())
                    for r in rows]).astype(np.int64)
    return Tensor._make(out.reshape(p.shape[:-1] + (num_samples,)), dt.int64)
