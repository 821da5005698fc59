"""nn.Parameter: a Tensor that a Module registers as a learnable weight (requires_grad=True).
Shares storage with the tensor it wraps, as PyTorch's does."""

from __future__ import annotations

from typing import Any, cast

from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that Modules collect in `parameters()`.

    >>> import tracejit as torch
    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> p.requires_grad, p.is_leaf
    (True, True)
    """

    __slots__ = ()

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True) -> None:
        if data is None:
            data = Tensor._make(Tensor([])._data, Tensor([])._dtype)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: expected a Tensor, got {type(data).__name__}; wrap it "
                            "with tracejit.tensor(...)")
        # the same NumPy array, not a copy: Parameter(t) aliases t as in PyTorch
        self._init(data._data, data._dtype, data._device)
        self._version = data._version
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo: dict) -> Parameter:
        if id(self) in memo:
            return memo[id(self)]
        p = Parameter(Tensor._make(self._data.copy(), self._dtype, self._device),
                      self._requires_grad)
        if self._grad is not None:
            p._grad = self._grad.__deepcopy__(memo)
        memo[id(self)] = p
        return p

    def __reduce_ex__(self, proto: Any) -> Any:
        data = cast(Any, self._data).host() if self.is_cuda else self._data.copy()
        return (_rebuild_parameter, (data, self._dtype.name, self._requires_grad))


def _rebuild_parameter(data: Any, dname: str, requires_grad: bool) -> Parameter:
    from ..dtypes import as_dtype

    return Parameter(Tensor._make(data, as_dtype(dname)), requires_grad)


class Buffer(Tensor):
    """Marker accepted by `Module.__setattr__` (PyTorch's nn.Buffer): registers a buffer."""

    __slots__ = ("persistent",)

    def __init__(self, data: Tensor, *, persistent: bool = True) -> None:
        self._init(data._data, data._dtype, data._device)
        self.persistent = persistent
