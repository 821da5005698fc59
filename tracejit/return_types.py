"""The named tuples some functions return, as torch.return_types: `sort(values, indices)` and
`topk(values, indices)` unpack like tuples and name their fields.

>>> import tracejit as torch
>>> values, indices = torch.sort(torch.tensor([3, 1, 2]))
>>> torch.sort(torch.tensor([3, 1, 2])).indices
tensor([1, 2, 0])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .tensor import Tensor


def _repr(self: Any) -> str:
    return f"tracejit.return_types.{type(self).__name__}(\nvalues={self.values!r},\n" \
           f"indices={self.indices!r})"


class sort(NamedTuple):  # noqa: N801 - torch's name
    values: Tensor
    indices: Tensor

    def __repr__(self) -> str:
        return _repr(self)


class topk(NamedTuple):  # noqa: N801 - torch's name
    values: Tensor
    indices: Tensor

    def __repr__(self) -> str:
        return _repr(self)
