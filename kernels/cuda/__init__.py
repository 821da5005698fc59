"""Hand-written and generated Numba CUDA kernels (tracejit.kernels.cuda)."""
