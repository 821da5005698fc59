"""NumPy ufuncs that NumPy lacks, for eager mode: `erf_ufunc` (eager `torch.erf`).

Kept out of `scalar.py`: `numba.vectorize` with signatures builds its ufunc when the module is
imported (the loop from Numba's cache, then the ufunc wrapper, with the whole typing context),
and every generated module imports `scalar.py`, so a process that loads compiled programs from
the disk cache paid for an erf it never called. Eager `erf` imports this module on first use."""

from __future__ import annotations

import math

import numba


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf_ufunc(x):  # type: ignore[no-untyped-def]
    return math.erf(x)
