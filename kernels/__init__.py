"""Hand-written Numba kernels by device, installed as `tracejit.kernels`."""
