"""Eager CUDA elementwise kernels, generated from the op registry: one kernel per (scalar op,
operand dtypes, result dtype, number of dims), cached for the process. Each is a grid-stride
loop over the result's elements; every operand is (1-d buffer, element offset, element strides),
so broadcast operands (stride 0), views and transposes are read in place, and a result may be
written through strides too (the copy kernel that in-place writes and `cat` use).

`SPELL` says how CUDA computes each kernel IR scalar op (kir/ir.py's SCALAR_OPS) in compute type
`T`; PyTorch's special-value semantics (NaN through maximum/minimum/clamp/relu, relu(-0.0) is
-0.0, sign(nan) is 0, ties of maximum/minimum give the second operand) are spelled here.
Constants are typed (`T(1)`): a bare Python float would promote float32 math to float64.
Under the simulator (NUMBA_ENABLE_CUDASIM=1), kernels run as Python on NumPy scalars, whose
libdevice is a stub and whose `math` raises on log(0): `SIM_SPELL` spells those ops with NumPy
there; the CUDA spelling is what `compile_ptx` checks."""

from __future__ import annotations

from dataclasses import dataclass

# numba type names of the dtypes CUDA kernels take
NB = {"bool": "boolean", "int32": "int32", "int64": "int64", "float32": "float32",
      "float64": "float64"}

SPELL = {
    "neg": "-{0}", "exp": "math.exp({0})", "log": "math.log({0})", "log1p": "math.log1p({0})",
    "expm1": "math.expm1({0})", "sqrt": "math.sqrt({0})", "rsqrt": "(T(1) / math.sqrt({0}))",
    # sin/cos: libdevice's by name (math.sin of a float32 compiles to PTX with f64 steps)
    "abs": "abs({0})", "sin": "libdevice.SIN({0})", "cos": "libdevice.COS({0})",
    "tanh": "math.tanh({0})", "erf": "math.erf({0})",
    "sigmoid": "((T(1) / (T(1) + math.exp(-abs({0})))) if {0} >= T(0) else "
               "(math.exp(-abs({0})) / (T(1) + math.exp(-abs({0})))))",
    "relu": "({0} if ({0} >= T(0) or {0} != {0}) else T(0))",
    "sign": "(T(1) if {0} > T(0) else (T(-1) if {0} < T(0) else T(0)))",
    "floor": "libdevice.FLOOR({0})", "ceil": "libdevice.CEIL({0})",
    "round": "libdevice.RINT({0})",
    "logical_not": "({0} == T(0))",
    "cast": "{0}",
    "clamp": "CLAMP",
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "({0} / {1})",
    "pow": "({0} ** {1})",
    "maximum": "({0} if ({0} > {1} or {0} != {0}) else {1})",
    "minimum": "({0} if ({0} < {1} or {0} != {0}) else {1})",
    "eq": "({0} == {1})", "ne": "({0} != {1})", "lt": "({0} < {1})", "le": "({0} <= {1})",
    "gt": "({0} > {1})", "ge": "({0} >= {1})",
    "logical_and": "(({0} != T(0)) and ({1} != T(0)))",
    "logical_or": "(({0} != T(0)) or ({1} != T(0)))",
    "where": "({1} if {0} else {2})",
    "copy": "{0}",  # not an op: the strided copy (clone, contiguous, in-place writes, cat)
    "fill": "{0}",  # not an op: `full` on the device (the value is a kernel argument)
}
SIM_SPELL = {
    "exp": "np.exp({0})", "log": "np.log({0})", "log1p": "np.log1p({0})",
    "expm1": "np.expm1({0})", "sqrt": "np.sqrt({0})", "rsqrt": "(T(1) / np.sqrt({0}))",
    "sin": "np.sin({0})", "cos": "np.cos({0})", "tanh": "np.tanh({0})",
    "sigmoid": "((T(1) / (T(1) + np.exp(-abs({0})))) if {0} >= T(0) else "
               "(np.exp(-abs({0})) / (T(1) + np.exp(-abs({0})))))",
    "floor": "np.floor({0})", "ceil": "np.ceil({0})", "round": "np.rint({0})",
    "pow": "np.power({0}, {1})",
}
# the integer forms of the rounding ops are the identity
_INT_IDENTITY = ("floor", "ceil", "round")
UNSUPPORTED = ("philox",)  # jit-only: eagerly it runs on the host (tracejit/cuda/eager.py)


@dataclass(frozen=True)
class Spec:
    """One elementwise kernel: the op, each operand as ('t', dtype) for a tensor or ('s', dtype)
    for a scalar argument, the compute dtype of each operand, the result dtype, the number of
    dims, whether the result is written through strides, and clamp's bounds present."""

    op: str
    operands: tuple[tuple[str, str], ...]
    compute: tuple[str, ...]
    out: str
    ndim: int
    strided_out: bool = False
    bounds: tuple[bool, bool] = (False, False)

    @property
    def name(self) -> str:
        ops = "_".join(k + d for k, d in self.operands)
        so = "_so" if self.strided_out else ""
        b = "".join("1" if x else "0" for x in self.bounds) if self.op == "clamp" else ""
        return f"ew_{self.op}{b}_{ops}_c{'_'.join(self.compute)}_o{self.out}_d{self.ndim}{so}"


def _expr(s: Spec, sim: bool) -> str:
    T = NB[s.compute[-1]] if s.compute else NB[s.out]
    if s.op == "where":
        T = NB[s.compute[1]]
    vals = [f"v{i}" for i in range(len(s.operands))]
    if s.op in _INT_IDENTITY and not s.compute[0].startswith("float"):
        e = vals[0]
    elif s.op == "clamp":
        e = vals[0]
        k = 1
        if s.bounds[0]:
            e = f"({vals[k]} if {vals[k]} > {e} else {e})"
            k += 1
        if s.bounds[1]:
            e = f"({vals[k]} if {vals[k]} < {e} else {e})"
    else:
        tmpl = (SIM_SPELL.get(s.op) if sim else None) or SPELL[s.op]
        f32 = T == "float32"
        tmpl = tmpl.replace("FLOOR", "floorf" if f32 else "floor").replace(
            "CEIL", "ceilf" if f32 else "ceil").replace("RINT", "rintf" if f32 else "rint").replace(
            "SIN", "sinf" if f32 else "sin").replace("COS", "cosf" if f32 else "cos")
        e = tmpl.format(*vals).replace("T(", f"{T}(")
    if s.out == "bool":
        return f"(({e}) != 0)"
    return f"{NB[s.out]}({e})"


def source(s: Spec, sim: bool) -> tuple[str, str]:
    """(the kernel's undecorated Python source, its numba signature)."""
    D = max(s.ndim, 1)
    dims = [f"d{k}" for k in range(D)]
    params = ["n", *dims]
    sig = ["int64"] * (1 + D)
    if s.strided_out:
        params += ["o", "o_off", *[f"o_s{k}" for k in range(D)]]
        sig += [f"{NB[s.out]}[::1]", "int64", *["int64"] * D]
    else:
        params += ["o"]
        sig += [f"{NB[s.out]}[::1]"]
    loads = []
    for i, ((kind, d), c) in enumerate(zip(s.operands, s.compute)):
        if kind == "t":
            params += [f"x{i}", f"x{i}_off", *[f"x{i}_s{k}" for k in range(D)]]
            sig += [f"{NB[d]}[::1]", "int64", *["int64"] * D]
            idx = " + ".join([f"x{i}_off"] + [f"j{k} * x{i}_s{k}" for k in range(D)])
            loads.append(f"        v{i} = {NB[c]}(x{i}[{idx}])")
        else:
            params.append(f"c{i}")
            sig.append(NB[c])
            loads.append(f"        v{i} = c{i}")
    lines = [
        f"def {s.name}({', '.join(params)}):",
        "    i = cuda.grid(1)",
        "    step = cuda.gridsize(1)",
        "    while i < n:",
        "        r = i",
    ]
    for k in range(D - 1, 0, -1):
        lines.append(f"        j{k} = r % d{k}")
        lines.append(f"        r = r // d{k}")
    lines.append("        j0 = r")
    lines += loads
    if s.strided_out:
        idx = " + ".join(["o_off"] + [f"j{k} * o_s{k}" for k in range(D)])
    else:
        idx = "i"
    lines.append(f"        o[{idx}] = {_expr(s, sim)}")
    lines.append("        i += step")
    return "\n".join(lines) + "\n", f"void({', '.join(sig)})"


PRELUDE = """import math
import numpy as np
from numba import cuda, boolean, int32, int64, float32, float64  # noqa: F401
from numba.cuda import libdevice  # noqa: F401
"""
