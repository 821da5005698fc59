"""Scalar functions shared by eager kernels and generated code (the `expr` templates of the
elementwise ops call these names). Compiled lazily by Numba on first use."""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf_ufunc(x):  # type: ignore[no-untyped-def]
    return math.erf(x)
