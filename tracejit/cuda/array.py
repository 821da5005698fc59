"""DeviceArray: a CUDA tensor's storage. A 1-d device buffer (backend.alloc) plus an element
offset, shape and element strides, so views (reshape, permute, expand, slice) are metadata only
and share the buffer, as NumPy views do on the CPU. It answers the questions tracejit asks of a
NumPy array (shape, ndim, size, dtype, strides in bytes, flags) so shape logic is shared;
arithmetic is never done on it directly: eager.py launches kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import backend


class _Flags:
    __slots__ = ("c_contiguous", "writeable")

    def __init__(self, c_contiguous: bool, writeable: bool) -> None:
        self.c_contiguous = c_contiguous
        self.writeable = writeable


def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    s = 1
    for n in reversed(shape):
        out.append(s)
        s *= max(n, 1)
    return tuple(reversed(out))


class DeviceArray:
    __slots__ = ("buf", "offset", "shape", "estrides", "dtype", "owns", "__weakref__")
    __array_priority__ = -1

    def __init__(self, buf: Any, offset: int, shape: tuple[int, ...],
                 estrides: tuple[int, ...], dtype: np.dtype, owns: bool = False) -> None:
        self.buf = buf  # the 1-d device buffer (shared by every view)
        self.offset = int(offset)  # in elements
        self.shape = tuple(int(n) for n in shape)
        self.estrides = tuple(int(s) for s in estrides)  # in elements
        self.dtype = np.dtype(dtype)
        self.owns = owns  # made with its buffer (not a view of another array)

    @property
    def base(self) -> Any:
        """None for an array that owns its buffer, as NumPy's `base` (autograd asks)."""
        return None if self.owns else self.buf

    # ---- what a NumPy array would say --------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(s * self.itemsize for s in self.estrides)

    def is_contiguous(self) -> bool:
        want = c_strides(self.shape)
        return all(n == 1 or s == w for n, s, w in zip(self.shape, self.estrides, want))

    @property
    def flags(self) -> _Flags:
        # an expanded view (a zero stride over more than one element) must not be written
        overlap = any(s == 0 and n > 1 for n, s in zip(self.shape, self.estrides))
        return _Flags(self.is_contiguous(), not overlap)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __array__(self, *a: Any, **k: Any) -> np.ndarray:
        raise TypeError(
            "can't convert a cuda device tensor to a NumPy array; use Tensor.cpu() to copy the "
            "tensor to host memory first"
        )

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, offset={self.offset})"

    # ---- host transfers -----------------------------------------------------------------------
    @classmethod
    def from_host(cls, a: np.ndarray) -> DeviceArray:
        a = np.asarray(a)
        return cls(backend.to_device(a), 0, a.shape, c_strides(a.shape), a.dtype, True)

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        n = 1
        for s in shape:
            n *= s
        d = np.dtype(dtype)
        return cls(backend.alloc(n, d), 0, shape, c_strides(shape), d, True)

    def host(self) -> np.ndarray:
        """A new host array with this view's values (synchronises). Copies only the span of
        the buffer the view reaches (`.item()` of one element copies one element)."""
        if self.size == 0:
            return np.empty(self.shape, self.dtype)
        lo = self.offset + sum(min(0, s * (n - 1)) for n, s in zip(self.shape, self.estrides))
        hi = self.offset + sum(max(0, s * (n - 1)) for n, s in zip(self.shape, self.estrides))
        span = backend.to_host(self.buf[lo:hi + 1])
        return np.lib.stride_tricks.as_strided(
            span[self.offset - lo:], self.shape, self.strides, writeable=False).copy()

    def copy(self) -> DeviceArray:
        """A contiguous copy on the device."""
        from .eager import elementwise

        return elementwise("copy", [self], self.shape, self.dtype)

    def item(self) -> Any:
        return self.host().reshape(()).item()

    def tolist(self) -> Any:
        return self.host().tolist()

    # ---- views (metadata only) ----------------------------------------------------------------
    def view_as(self, shape: tuple[int, ...], estrides: tuple[int, ...],
                offset: int | None = None) -> DeviceArray:
        return DeviceArray(self.buf, self.offset if offset is None else offset, shape, estrides,
                           self.dtype)

    def permute(self, dims: tuple[int, ...]) -> DeviceArray:
        return self.view_as(tuple(self.shape[d] for d in dims),
                            tuple(self.estrides[d] for d in dims))

    def broadcast_to(self, shape: tuple[int, ...]) -> DeviceArray:
        lead = len(shape) - self.ndim
        st = [0] * lead
        for i, (n, s) in enumerate(zip(self.shape, self.estrides)):
            st.append(s if n == shape[lead + i] else 0)
        return self.view_as(tuple(shape), tuple(st))

    def slice(self, starts: tuple[int, ...], stops: tuple[int, ...],
              steps: tuple[int, ...]) -> DeviceArray:
        off = self.offset
        shape, st = [], []
        for n, s, a, b, k in zip(self.shape, self.estrides, starts, stops, steps):
            r = range(*slice(a, b, k).indices(n))
            shape.append(len(r))
            st.append(s * r.step)
            if len(r):
                off += r.start * s
        return self.view_as(tuple(shape), tuple(st), off)

    def reshape_view(self, shape: tuple[int, ...]) -> DeviceArray | None:
        """The view with `shape` sharing this buffer, or None when the strides cannot express
        it (a copy is needed: reshape of a permuted tensor)."""
        if self.is_contiguous():
            return self.view_as(tuple(shape), c_strides(tuple(shape)))
        if self.size == 0:
            return self.view_as(tuple(shape), c_strides(tuple(shape)))
        # only size-1 dims inserted or dropped keep a strided view; anything else copies
        old = [(n, s) for n, s in zip(self.shape, self.estrides) if n != 1]
        if [n for n in shape if n != 1] != [n for n, _ in old]:
            return None
        it = iter(old)
        st = [0 if n == 1 else next(it)[1] for n in shape]
        return self.view_as(tuple(shape), tuple(st))


def may_share_memory(a: Any, b: Any) -> bool:
    return isinstance(a, DeviceArray) and isinstance(b, DeviceArray) and a.buf is b.buf
