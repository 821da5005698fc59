"""The op registry: every op is declared once, here or in a sibling module, as an OpDef.

Eager dispatch, autograd, tracing, the IR verifier, constant folding, the interpreter, codegen
and the tests all read these records; none special-cases an op by name. The structural nodes
of the IR (`constant`, `fused`: structural.py) are OpDefs too, described by the same fields.
Must not import tensor, dispatch or autograd (VJPs receive Tensors and use their methods), nor
ir at module level (ir imports this module).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..device import CPU, device
from ..dtypes import DType
from ..errors import located


class Kind(enum.Enum):
    ELEMENTWISE = "elementwise"  # same-shape map after broadcasting; has a scalar `expr`
    REDUCE = "reduce"  # reduces `dims`; has a ReduceSpec
    MOVEMENT = "movement"  # reshape/permute/expand/slice/cat: data movement, no arithmetic
    CONTRACT = "contract"  # matmul
    INDEX = "index"  # gather/scatter/advanced indexing
    CREATION = "creation"  # no tensor inputs: full, arange
    SCAN = "scan"  # along one dim, each output reading its whole row: cumsum, argsort
    WINDOW = "window"  # windows over the trailing spatial dims: pooling (ops/pool.py)
    # communication with the other processes of a group: `all_reduce` (ops/collective.py)
    COLLECTIVE = "collective"
    # graph structure rather than arithmetic: `constant`, `fused` (structural.py) and the
    # control flow `cond`, `while`, `scan` (control.py); they exist only in graphs (no Tensor
    # method dispatches them)
    STRUCTURAL = "structural"


class TensorType(NamedTuple):
    """What the IR and the shape rules know of a tensor: shape, dtype, device.
    (A NamedTuple: built once per eager op, so it must be cheap.)"""

    shape: tuple[int, ...]
    dtype: DType
    device: device = CPU

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.short}[{','.join(map(str, self.shape))}]"


# An operand as shape rules see it: a tensor's type, or a Python number used as a literal.
Operand = TensorType | bool | int | float


class OpError(Exception):
    """Base of the errors an op raises for bad user input. The message ends with the user's
    file:line, wherever in tracejit it is raised (shape rules, eager kernels, Tensor methods)."""

    def __init__(self, msg: str, *args: Any) -> None:
        super().__init__(located(msg), *args)


class ShapeError(OpError, RuntimeError):
    pass


class DTypeError(OpError, RuntimeError):
    pass


class ArgError(OpError, IndexError):
    pass


@dataclass(frozen=True)
class ReduceSpec:
    """How a reduction combines, for codegen: the identity `init` (a Python number; +-inf
    means the dtype's extreme for integers) and the kernel IR combine (`add`, `mul`, `max`,
    `min`, `and`, `or`; `argmax`/`argmin` for the arg-reductions, with index=True)."""

    init: Any
    combine: str
    index: bool = False  # an arg-reduction: the result is the winner's index


@dataclass
class VjpContext:
    """What a VJP sees: saved inputs (Tensors, or Python numbers for literals; None when the op
    did not save them), the saved output, the input types, attributes and which inputs need a
    gradient (so expensive unneeded gradients are skipped)."""

    inputs: Sequence[Any]
    out: Any
    in_types: Sequence[Operand]
    attrs: dict[str, Any]
    needs: Sequence[bool]


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: Kind
    # infer(operands, **attrs) -> TensorType (a tuple of them with `multiple_results`); raises
    # OpError
    infer: Callable[..., TensorType | tuple[TensorType, ...]]
    # eager(*arrays, **attrs): NumPy, inputs cast by `compute_dtype` (a sequence of arrays, one
    # per output, with `multiple_results`)
    eager: Callable[..., np.ndarray | Sequence[np.ndarray]]
    vjp: Callable[[VjpContext, Any], tuple[Any, ...]] | None = None
    attrs: tuple[str, ...] = ()
    saves: tuple[int | str, ...] = ()  # input indices and/or "out" kept for the VJP
    # an elementwise op's scalar operation in the kernel IR (a key of kir.ir.SCALAR_OPS; its
    # attributes are passed along): what it computes, never how a device spells it
    scalar: str | None = None
    reduce: ReduceSpec | None = None
    # the dtype(s) the eager kernel computes in, given the operands: one DType for every
    # operand, a tuple with one entry (or None: leave as is) per operand, or None: no cast
    compute_dtype: Callable[[Sequence[Operand]], Any] | None = None
    view: bool = False  # the output may alias the first input's memory (reshape, permute, ...)
    dynamic_shape: bool = False  # output shape depends on values (boolean-mask indexing)
    differentiable: bool = True
    # A node may have several outputs: `infer` returns one type and `eager` one array per output
    # (fused: one per result of its region). Dispatch only runs ops without it.
    multiple_results: bool = False
    # the attributes that hold a Region (fused: "body"; cond: its branches): the verifier checks
    # them, `ir.graph.walk` and the printer descend into them
    regions: tuple[str, ...] = ()
    # a control-flow node (cond, while, scan: control.py): its regions are whole sub-programs,
    # printed in full, optimised by every pass and run by the driver as real `if` and loops
    # (a fused node's region is a kernel's members instead)
    control: bool = False
    # cse may merge two such nodes with equal operands and attributes (not: constants, whose key
    # would hash the whole array, and fused nodes, which have several outputs)
    cse: bool = True
    # fold may evaluate the node now when every operand is a constant
    foldable: bool = True
    # the result is one buffer that every call of a compiled program shares (a constant baked
    # into it): the buffer plan never has a kernel write into it
    shared_result: bool = False
    # how the IR printer writes the node's right-hand side, from its attributes as printed
    # (regions left out) and its operands joined by ", "; None: `name[k=v, ...] operands`
    print_form: Callable[[dict[str, str], str], str] | None = None
    # the compiled form calls back into Python (a collective through mpi4py): the import line
    # the generated driver needs for the name its rule emits. A graph holding such a node
    # always gets a Python driver (a native one could not call it).
    host: str | None = None
    # device -> lowering rule (see "code-generation helpers" below)
    kernels: dict[str, Callable[..., str | None]] = field(default_factory=dict)
    doc: str = ""

    def __repr__(self) -> str:
        return f"<op {self.name}>"


REGISTRY: dict[str, OpDef] = {}


def defop(name: str, kind: Kind, **kw: Any) -> OpDef:
    if name in REGISTRY:
        raise ValueError(f"op {name!r} declared twice")
    op = OpDef(name, kind, **kw)
    REGISTRY[name] = op
    return op


# ---- code-generation helpers (for `kernels` rules) ----------------------------------------------
# A `kernels[device]` rule is `rule(args, attrs, out, ins) -> str | None`: `args` are the operand
# expressions, `out` the output TensorType, `ins` the operand types. It returns an expression, or
# statements that assign `{out}`, or None when this case has no compiled form (a graph break).
# `{into}` in the text marks where the driver may pass a buffer planned for the result: it
# becomes `, BUF` (a last positional argument: a Python driver's workspace buffer) or nothing.


def np_name(d: DType) -> str:
    return "np.bool_" if d.name == "bool" else f"np.{d.np.name}"


def lit(v: Any, d: DType | None = None) -> str:
    """A typed literal for generated code (Numba would promote a bare 2.0 to float64)."""
    if v is None:
        return "None"
    if isinstance(v, float) and not np.isfinite(v):
        text = "np.nan" if np.isnan(v) else ("np.inf" if v > 0 else "-np.inf")
    else:
        text = repr(v.item() if isinstance(v, np.generic) else v)
    return text if d is None else f"{np_name(d)}({text})"


# ---- shape helpers shared by the rules --------------------------------------------------------


def fmt_shape(s: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, s)) + "]"


def broadcast_shapes(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    nd = max((len(s) for s in shapes), default=0)
    out = [1] * nd
    for s in shapes:
        for i, n in enumerate(s, nd - len(s)):
            if n == out[i] or n == 1:
                continue
            if out[i] == 1:
                out[i] = n
            else:
                shown = " and ".join(fmt_shape(x) for x in shapes)
                raise ShapeError(
                    f"{op}: shapes {shown} cannot be broadcast together (dimension {i - nd} is "
                    f"{out[i]} in one and {n} in the other; sizes must match or be 1)"
                )
    return tuple(out)


def norm_dim(op: str, dim: int, ndim: int) -> int:
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise ArgError(f"{op}: dim must be an int, got {type(dim).__name__}")
    lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not lo <= dim <= hi:
        raise ArgError(
            f"{op}: dimension out of range (expected to be in range of [{lo}, {hi}], but got {dim})"
        )
    return int(dim) % max(ndim, 1)


def norm_dims(op: str, dims: Any, ndim: int) -> tuple[int, ...]:
    """None or () means every dimension (PyTorch's reductions); returns a sorted tuple."""
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, (int, np.integer)):
        dims = (dims,)
    out = tuple(sorted({norm_dim(op, d, ndim) for d in dims}))
    if len(out) != len(tuple(dims)):
        raise ArgError(f"{op}: dim {tuple(dims)} appears multiple times in the list of dims")
    return out if ndim else ()


def same_device(op: str, ops: Sequence[Operand]) -> device:
    """The operands' device. As in torch, a 0-d CPU tensor may join tensors on another device
    (it enters as a number: an optimizer's step count, a learning rate tensor)."""
    dev = None
    dev_dims = False
    for o in ops:
        if isinstance(o, TensorType):
            if dev is None or dev.type == "cpu" and not dev_dims and o.device.type != "cpu":
                dev, dev_dims = o.device, bool(o.shape)
            elif o.device != dev and not (o.device.type == "cpu" and not o.shape):
                raise ShapeError(
                    f"{op}: expected all tensors to be on the same device, but found at least "
                    f"two devices, {dev} and {o.device}; move them with .to(device)"
                )
    return dev or CPU
