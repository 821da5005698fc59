"""Before Numba starts: let LLVM use 512-bit vectors where the CPU has AVX-512.

LLVM's cost model prefers 256-bit vectors on Intel's AVX-512 server parts (a tuning flag,
`prefer-256-bit`), so a fused float32 loop runs 8 lanes wide where 16 fit: on this project's
Xeon the vectorised exp took 0.61 ns an element at 256 bits and 0.41 at 512, tanh 1.31 and
0.73. Numba reads its target's features once, from NUMBA_CPU_FEATURES when set, so this sets
that variable to the host's own features minus the tuning flag, only when Numba has not been
imported yet, the user has not set the variable, and TRACEJIT_VECTOR_WIDTH is `auto` (the
default) or `512`; `256` leaves LLVM's choice alone. It applies to every njit function of the
process (Numba keys its disk cache by these features, so nothing compiled either way is mixed
up)."""

from __future__ import annotations

import os
import sys


def prefer_wide_vectors() -> None:
    want = os.environ.get("TRACEJIT_VECTOR_WIDTH", "auto").strip().lower()
    if want not in ("auto", "512", "256"):
        raise ValueError(f"TRACEJIT_VECTOR_WIDTH must be auto, 512 or 256, got {want!r}")
    if want == "256" or "numba" in sys.modules or "NUMBA_CPU_FEATURES" in os.environ:
        return
    try:
        import llvmlite.binding as ll

        features = ll.get_host_cpu_features()
    except Exception:  # an llvmlite that cannot say: leave Numba's defaults
        return
    if not features.get("avx512f"):
        return
    os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"


prefer_wide_vectors()  # on import: tracejit/__init__.py imports this module first
