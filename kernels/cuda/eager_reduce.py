"""Eager CUDA reductions, generated from the registry's ReduceSpec: the operand is viewed as
(rows, cols) with strides (kept dims, then reduced dims; eager.py makes the view), one block
reduces a row (grid-stride over rows): each thread combines a strided run of the row, then a
shared-memory tree combines the block's partials. Written without warp shuffles so that the
simulator runs it too (the JIT's reductions, issue 14 part B, use them). The accumulator is the
result dtype (sum of int32 is int64, as torch), the arg-reductions carry (value, index) pairs and
keep the first winner, NaN winning, as NumPy."""

from __future__ import annotations

from dataclasses import dataclass

from .eager_elementwise import NB

# combine(acc, v) -> acc, per ReduceSpec.combine; amax/amin propagate NaN
COMBINE = {
    "add": "{a} + {b}",
    "mul": "{a} * {b}",
    "max": "{a} if ({a} > {b} or {a} != {a}) else {b}",
    "min": "{a} if ({a} < {b} or {a} != {a}) else {b}",
    "and": "{a} and {b}",
    "or": "{a} or {b}",
}
# does (vb, ib) beat (va, ia)?
BETTER = {
    "argmax": "({vb} > {va} or ({vb} != {vb} and {va} == {va}) or (({vb} == {va} or "
              "({vb} != {vb} and {va} != {va})) and {ib} < {ia}))",
    "argmin": "({vb} < {va} or ({vb} != {vb} and {va} == {va}) or (({vb} == {va} or "
              "({vb} != {vb} and {va} != {va})) and {ib} < {ia}))",
}


@dataclass(frozen=True)
class Spec:
    combine: str  # a ReduceSpec.combine
    init: str  # the identity, as source text in the accumulator type
    src: str  # operand dtype
    acc: str  # accumulator (= result) dtype; int64 for the arg-reductions
    threads: int

    @property
    def name(self) -> str:
        return f"red_{self.combine}_{self.src}_{self.acc}_t{self.threads}"


def source(s: Spec) -> tuple[str, str]:
    T = NB[s.acc]
    S = NB[s.src]
    n = s.threads
    head = [
        f"def {s.name}(m, n, o, x, x_off, x_sm, x_sn):",
        "    tid = cuda.threadIdx.x",
        "    row = cuda.blockIdx.x",
    ]
    if s.combine in BETTER:
        better = BETTER[s.combine]
        body = [
            f"    sv = cuda.shared.array({n}, {S})",
            f"    si = cuda.shared.array({n}, int64)",
            "    while row < m:",
            f"        va = {S}({s.init})",
            "        ia = n",
            "        j = tid",
            "        while j < n:",
            "            vb = x[x_off + row * x_sm + j * x_sn]",
            f"            if {better.format(va='va', vb='vb', ia='ia', ib='j')}:",
            "                va = vb",
            "                ia = j",
            f"            j += {n}",
            "        sv[tid] = va",
            "        si[tid] = ia",
            "        cuda.syncthreads()",
            f"        s = {n // 2}",
            "        while s > 0:",
            "            if tid < s:",
            "                va = sv[tid]",
            "                ia = si[tid]",
            "                vb = sv[tid + s]",
            "                ib = si[tid + s]",
            f"                if {better.format(va='va', vb='vb', ia='ia', ib='ib')}:",
            "                    sv[tid] = vb",
            "                    si[tid] = ib",
            "            cuda.syncthreads()",
            "            s //= 2",
            "        if tid == 0:",
            "            o[row] = si[0]",
            "        cuda.syncthreads()",
            "        row += cuda.gridDim.x",
        ]
        sig = f"void(int64, int64, int64[::1], {S}[::1], int64, int64, int64)"
    else:
        c = COMBINE[s.combine]
        body = [
            f"    sh = cuda.shared.array({n}, {T})",
            "    while row < m:",
            f"        acc = {T}({s.init})",
            "        j = tid",
            "        while j < n:",
            f"            v = {T}(x[x_off + row * x_sm + j * x_sn])",
            f"            acc = {c.format(a='acc', b='v')}",
            f"            j += {n}",
            "        sh[tid] = acc",
            "        cuda.syncthreads()",
            f"        s = {n // 2}",
            "        while s > 0:",
            "            if tid < s:",
            "                a = sh[tid]",
            "                b = sh[tid + s]",
            f"                sh[tid] = {c.format(a='a', b='b')}",
            "            cuda.syncthreads()",
            "            s //= 2",
            "        if tid == 0:",
            "            o[row] = sh[0]",
            "        cuda.syncthreads()",
            "        row += cuda.gridDim.x",
        ]
        sig = f"void(int64, int64, {T}[::1], {S}[::1], int64, int64, int64)"
    return "\n".join(head + body) + "\n", sig
