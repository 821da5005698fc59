"""Tensor factories and random numbers (PyTorch's names and defaults). Factories that make
values from scratch (full, arange) go through dispatch, so a trace records them."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dtypes as dt
from .device import as_device
from .dispatch import STATE, dispatch
from .errors import located
from .ops import REGISTRY as R
from .ops.registry import DTypeError, ShapeError
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
    dev = as_device(device)
    t = _from_value(data, dtype, copy=True)
    if STATE.tracer is not None:
        STATE.tracer.constant(t)
    return _finish(_placed(t, dev), requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """Like tensor(), but shares memory with a NumPy array or tensor when dtypes match."""
    dev = as_device(device) if device is not None else None
    if isinstance(data, Tensor) and (dtype is None or dt.as_dtype(dtype) is data.dtype) and \
            (dev is None or dev == data.device):
        return data
    if isinstance(data, Tensor):
        return data.to(dtype=dtype, device=dev)
    return _placed(_from_value(data, dtype, copy=False), dev or as_device(None))


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """A tensor sharing `ndarray`'s memory: changes to one show in the other."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(located(f"from_numpy: expected np.ndarray, got "
                                f"{type(ndarray).__name__}"))
    return Tensor._make(ndarray, dt.from_numpy_dtype(ndarray.dtype))


def from_dlpack(ext_tensor: Any, *, device: Any = None, copy: bool | None = None) -> Tensor:
    """Zero-copy import from any object with __dlpack__ (torch, JAX, NumPy); copy=True copies,
    device must be the CPU."""
    as_device(device)
    a = np.from_dlpack(ext_tensor)
    if copy:
        a = a.copy()
    return Tensor._make(a, dt.from_numpy_dtype(a.dtype))


def full(size: Sequence[int], fill_value: Any, *, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    dev = as_device(device)
    if dtype is None:
        dtype = dt.scalar_dtype(fill_value) if not isinstance(fill_value, Tensor) else None
    d = dt.as_dtype(dtype)
    v = fill_value.item() if isinstance(fill_value, Tensor) else fill_value
    shape = _sizes((size,)) if not isinstance(size, int) else (size,)
    if dev.type == "cuda":  # filled on the device by a kernel
        from .cuda.eager import full as cuda_full

        if any(n < 0 for n in shape):
            raise ShapeError(f"full: trying to create tensor with negative dimension in "
                             f"{list(shape)}")
        data: Any = cuda_full(shape, v, d.np)
        return _finish(Tensor._make(data, d, dev), requires_grad)
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


def zeros_like(input: Tensor, *, dtype: Any = None, device: Any = None,
               requires_grad: bool = False) -> Tensor:
    return full(input.shape, 0, dtype=_like(input, dtype), device=device or input.device,
                requires_grad=requires_grad)


def ones_like(input: Tensor, *, dtype: Any = None, device: Any = None,
              requires_grad: bool = False) -> Tensor:
    return full(input.shape, 1, dtype=_like(input, dtype), device=device or input.device,
                requires_grad=requires_grad)


def empty_like(input: Tensor, *, dtype: Any = None, device: Any = None,
               requires_grad: bool = False) -> Tensor:
    return zeros_like(input, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(input: Tensor, fill_value: Any, *, dtype: Any = None, device: Any = None,
              requires_grad: bool = False) -> Tensor:
    return full(input.shape, fill_value, dtype=_like(input, dtype),
                device=device or input.device, requires_grad=requires_grad)


def arange(start: float = 0, end: float | None = None, step: float = 1, *, dtype: Any = None,
           device: Any = None, requires_grad: bool = False) -> Tensor:
    """arange(5) -> 0..4 (int64); any float bound makes it the default float dtype."""
    dev = as_device(device)
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        d = dt.get_default_dtype() if is_float else dt.int64
    else:
        d = dt.as_dtype(dtype)
    t = dispatch(R["arange"], (), {"start": start, "end": end, "step": step, "dtype": d})
    return _finish(_placed(t, dev), requires_grad)


def linspace(start: float, end: float, steps: int, *, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    if steps < 0:
        raise RuntimeError(located(f"linspace: number of steps must be non-negative, got {steps}"))
    dev = as_device(device)
    d = _float_or(dtype)
    if steps == 1:
        return full((1,), start, dtype=d, device=dev, requires_grad=requires_grad)
    i = arange(steps, dtype=dt.float64)
    t = (i * ((end - start) / max(steps - 1, 1)) + start).to(d)
    return _finish(_placed(t, dev), requires_grad)


def eye(n: int, m: int | None = None, *, dtype: Any = None, device: Any = None,
        requires_grad: bool = False) -> Tensor:
    m = n if m is None else m
    dev = as_device(device)
    if n < 0 or m < 0:
        raise RuntimeError(located(f"eye: n and m must be non-negative, got n={n}, m={m}"))
    t = arange(n).reshape(n, 1).eq(arange(m).reshape(1, m)).to(_float_or(dtype))
    return _finish(_placed(t, dev), requires_grad)


# ---- random -------------------------------------------------------------------------------------
# A generator is a Philox4x32-10 key and a block offset (runtime/philox.py), each held in a 0-d
# int64 tensor that is only ever changed in place: a draw under @jit reads both as lifted inputs
# of the compiled program and advances the offset with an in-place add, an effect the program
# writes back, so eager and compiled calls continue the same stream.


def _fresh_seed() -> int:
    entropy: Any = np.random.SeedSequence().entropy  # an int when no entropy was passed in
    return int(entropy) % (2**63)


def _as_seed(seed: Any) -> int:
    if isinstance(seed, Tensor) and seed.numel() == 1:
        seed = seed.item()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(located(f"manual_seed: expected an int seed, got "
                                f"{type(seed).__name__}"))
    return int(seed) % 2**64  # negative seeds wrap, as torch's do


def _int64_bits(v: int) -> np.ndarray:
    return np.array(v % 2**64, np.uint64).view(np.int64)


class Generator:
    """A seedable random source: Philox4x32-10, a counter-based generator whose state is a key
    (from the seed) and a counter offset that every draw advances. Eager mode and compiled
    programs compute the same numbers from it; the streams differ from PyTorch's."""

    def __init__(self, device: Any = "cpu") -> None:
        as_device(device)
        self._seed = _fresh_seed()
        self._key = Tensor._make(_int64_bits(self._seed), dt.int64)
        self._offset = Tensor._make(np.zeros((), np.int64), dt.int64)

    def _no_trace(self, what: str) -> None:
        if STATE.tracer is not None:
            STATE.tracer.graph_break(f"{what} of a random generator inside a compiled function; "
                                     "seed it before calling the function")

    def manual_seed(self, seed: Any) -> Generator:
        self._no_trace("manual_seed")
        self._seed = _as_seed(seed)
        # written in place: compiled programs read these very tensors on every call
        self._key._data[...] = _int64_bits(self._seed)
        self._offset._data[...] = 0
        return self

    def seed(self) -> int:
        return self.manual_seed(_fresh_seed()).initial_seed()

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> Tensor:
        """The state as an int64 tensor [key, offset] (the key's 64 bits as a signed value)."""
        self._no_trace("get_state")
        return Tensor._make(np.array([self._key._data, self._offset._data], np.int64), dt.int64)

    def set_state(self, state: Tensor) -> Generator:
        self._no_trace("set_state")
        if not isinstance(state, Tensor) or state.dtype is not dt.int64 or \
                tuple(state.shape) != (2,):
            got = (f"{state.dtype} tensor of shape {list(state.shape)}"
                   if isinstance(state, Tensor) else type(state).__name__)
            raise RuntimeError(located(
                f"set_state: expected the int64 tensor of shape [2] that get_state() returns "
                f"([key, offset]), got a {got}"))
        key, offset = (int(v) for v in state._data)
        if offset < 0:
            raise RuntimeError(located(f"set_state: the offset must be >= 0, got {offset}"))
        self._key._data[...] = key
        self._offset._data[...] = offset
        return self

    def _advance(self, nblocks: int) -> None:
        """Consume `nblocks` counter values: an in-place add, so a trace records it as an
        effect on the offset and compiled calls advance the generator as eager ones do."""
        if nblocks:
            self._offset.add_(nblocks)


default_generator = Generator()
# CUDA tensors' draws (tracejit.cuda.manual_seed): Philox as the CPU's, computed on the host
# and copied to the device once; seeded by tracejit.manual_seed too, as torch's seeds every device
cuda_generator = Generator()


def _dev_gen(generator: Any, dev: Any) -> Any:
    return cuda_generator if generator is None and dev.type == "cuda" else generator


def _placed(t: Tensor, dev: Any) -> Tensor:
    """t (made on the host) copied to `dev` when that is a CUDA device."""
    if dev.type != "cuda":
        return t
    from .cuda.transfer import to_device

    return to_device(t, dev)


def manual_seed(seed: int) -> Generator:
    """Seed the default generator (tracejit's random streams are its own, not PyTorch's), and
    the CUDA one (tracejit.cuda.manual_seed), as torch.manual_seed seeds every device."""
    cuda_generator.manual_seed(seed)
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state() -> Tensor:
    """The default generator's state: an int64 tensor [key, offset] (see Generator)."""
    return default_generator.get_state()


def set_rng_state(new_state: Tensor) -> None:
    default_generator.set_state(new_state)


def _shape(op: str, size: Sequence[Any]) -> tuple[int, ...]:
    shape = _sizes(size)
    if any(n < 0 for n in shape):
        raise ShapeError(f"{op}: trying to create tensor with negative dimension in "
                         f"{list(shape)}")
    return shape


def _gen(op: str, generator: Any) -> Generator:
    if generator is None:
        return default_generator
    if not isinstance(generator, Generator):
        raise TypeError(located(f"{op}: generator must be a tracejit.Generator, got "
                                f"{type(generator).__name__}"))
    return generator


def _draw(op: str, shape: tuple[int, ...], d: dt.DType, generator: Any,
          normal: bool) -> Tensor:
    """`shape` uniforms in [0, 1) (or standard normals) of float dtype `d`: element i from
    counter block offset + i // 4 (float64: i // 2), as runtime/philox.py describes."""
    from .runtime.philox import blocks

    if not d.is_floating_point:
        raise DTypeError(f"{op}: expected a floating-point dtype, got {d}; draw in float32 "
                         "and convert, or use randint for integers")
    g = _gen(op, generator)
    wide = d is dt.float64
    n = int(np.prod(shape, dtype=np.int64))
    idx = arange(n, dtype=dt.int64).reshape(shape)
    out = dispatch(R["philox"], (idx, g._key, g._offset),
                   {"dtype": dt.float64 if wide else dt.float32, "wide": wide, "normal": normal})
    g._advance(blocks(n, wide))
    return out if out.dtype is d else out.to(d)


def rand(*size: Any, generator: Generator | None = None, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """Uniforms in [0, 1); under @jit a node of the compiled graph (see Generator)."""
    dev = as_device(device)
    t = _draw("rand", _shape("rand", size), _float_or(dtype), _dev_gen(generator, dev), False)
    return _finish(_placed(t, dev), requires_grad)


def randn(*size: Any, generator: Generator | None = None, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """Standard normals (Box-Muller on Philox uniforms); under @jit a node of the graph."""
    dev = as_device(device)
    t = _draw("randn", _shape("randn", size), _float_or(dtype), _dev_gen(generator, dev), True)
    return _finish(_placed(t, dev), requires_grad)


def _numpy_rng(op: str, generator: Any) -> np.random.Generator:
    """A NumPy generator seeded from one Philox block of `generator` (which it consumes), for
    the draws that have no compiled form yet (randperm, multinomial)."""
    from .runtime.philox import words

    if STATE.tracer is not None:
        STATE.tracer.graph_break(f"random number generation ({op} has no compiled form yet; "
                                 "rand, randn, randint, bernoulli and dropout do)")
    g = _gen(op, generator)
    w = words(np.int64(g._key._data), np.int64(g._offset._data), np.int64(1))
    g._offset._data[...] += 1
    return np.random.Generator(np.random.PCG64([int(x) for x in w]))


def randint(low: int = 0, high: Any = None, size: Any = (), *,
            generator: Generator | None = None, dtype: Any = None, device: Any = None,
            requires_grad: bool = False) -> Tensor:
    """Integers uniform in [low, high): low + floor(u * (high - low)) for float64 Philox
    uniforms u (53 random bits, so the bias is below 2^-21 for any span under 2^32), as graph
    nodes under @jit: the same numbers eagerly and compiled."""
    if high is None or not isinstance(high, (int, np.integer)):  # randint(high, size)
        low, high, size = 0, low, (size if high is None else high)
    bounds: list[int] = []
    for name, v in (("low", low), ("high", high)):
        try:  # (a traced Python int becomes a guard: the bounds set the graph's constants)
            if isinstance(v, bool):
                raise TypeError
            bounds.append(operator.index(v))
        except TypeError:
            raise TypeError(located(f"randint: expected an integer {name}, got "
                                    f"{type(v).__name__} ({v!r})")) from None
    low, high = bounds
    dev = as_device(device)
    if requires_grad:
        raise RuntimeError(located("randint: only floating-point tensors can require "
                                   "gradients, and randint makes integers"))
    if high <= low:
        raise RuntimeError(located(f"randint: expected low < high, got low={low}, high={high}"))
    span = int(high) - int(low)
    if span > 2**53:
        raise RuntimeError(located(f"randint: the range high - low = {span} is wider than 2^53, "
                                   "which float64 uniforms cannot cover evenly"))
    d = dt.int64 if dtype is None else dt.as_dtype(dtype)
    shape = _shape("randint", (size,))
    u = _draw("randint", shape, dt.float64, _dev_gen(generator, dev), False)
    # u * span < span in exact arithmetic but may round up to it: clamp to the last value
    k = (u * float(span)).floor().clamp(max=float(span - 1)).to(dt.int64)
    out = k + int(low) if low else k
    return _placed(out if d is dt.int64 else out.to(d), dev)


def randperm(n: int, *, generator: Generator | None = None, dtype: Any = None,
             device: Any = None, requires_grad: bool = False) -> Tensor:
    dev = as_device(device)
    d = dt.int64 if dtype is None else dt.as_dtype(dtype)
    rng = _numpy_rng("randperm", _dev_gen(generator, dev))
    t = Tensor._make(rng.permutation(n).astype(d.np), d)
    return _finish(_placed(t, dev), requires_grad)


def rand_like(input: Tensor, *, dtype: Any = None, device: Any = None,
              generator: Generator | None = None, requires_grad: bool = False) -> Tensor:
    return rand(*input.shape, dtype=_like(input, dtype), device=device, generator=generator,
                requires_grad=requires_grad)


def randn_like(input: Tensor, *, dtype: Any = None, device: Any = None,
               generator: Generator | None = None, requires_grad: bool = False) -> Tensor:
    return randn(*input.shape, dtype=_like(input, dtype), device=device, generator=generator,
                 requires_grad=requires_grad)


def bernoulli(input: Tensor, p: float | None = None, *,
              generator: Generator | None = None) -> Tensor:
    """1 with probability input[i] (or the float p, in input's shape), else 0, in input's
    dtype: rand_like(input) < probability (0 never, 1 always: the uniforms lie in [0, 1))."""
    probs = input
    if p is not None:
        if not isinstance(input, Tensor):
            raise TypeError(located(f"bernoulli: expected a tensor, got "
                                    f"{type(input).__name__}"))
        if not 0.0 <= p <= 1.0:
            raise ValueError(located(f"bernoulli: p must be in [0, 1], got {p}"))
        probs = full(input.shape, float(p), dtype=input.dtype)
    return _bernoulli(probs, generator)


def _bernoulli(p: Tensor, generator: Generator | None) -> Tensor:
    if not isinstance(p, Tensor):
        raise TypeError(located(f"bernoulli: expected a tensor of probabilities, got "
                                f"{type(p).__name__}"))
    if not p.dtype.is_floating_point:
        raise DTypeError(f"bernoulli: expected a floating-point tensor of probabilities, got "
                         f"{p.dtype}; convert it with .float()")
    u = _draw("bernoulli", tuple(p.shape), p.dtype, generator, False)
    return (u < p.detach()).to(p.dtype)


def multinomial(input: Tensor, num_samples: int, replacement: bool = False, *,
                generator: Generator | None = None) -> Tensor:
    rng = _numpy_rng("multinomial", generator)
    p = input._data.astype(np.float64)
    rows = p.reshape(-1, p.shape[-1])
    out = np.stack([rng.choice(rows.shape[1], num_samples, replace=replacement, p=r / r.sum())
                    for r in rows]).astype(np.int64)
    return Tensor._make(out.reshape(p.shape[:-1] + (num_samples,)), dt.int64)
