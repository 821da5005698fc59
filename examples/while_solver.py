"""An iterative solver with `tracejit.while_loop`: Jacobi iteration x <- (b - R x) / d for
diagonally dominant systems A x = b, run until the residual is below a tolerance. The trip
count depends on the data; under @jit the loop is one compiled `while`, so every system and
every tolerance runs the same program (one trace, one compile). Checked against NumPy's
direct solve.

    python examples/while_solver.py --systems 6 --size 64
"""

from __future__ import annotations

import numpy as np
from _common import parse_args

import tracejit as torch


@torch.jit
def jacobi(A, b, tol):  # noqa: N803 - the maths' name
    eye = torch.eye(A.shape[0])
    d = (A * eye).sum(1)  # the diagonal
    R = A * (1 - eye)  # noqa: N806 - the rest

    def residual(x):
        return (A @ x - b).norm() / b.norm()

    def keep_going(state):
        x, it = state
        return residual(x) > tol

    def step(state):
        x, it = state
        return (b - R @ x) / d, it + 1

    x, iterations = torch.while_loop(keep_going, step, (torch.zeros_like(b), 0))
    return x, iterations, residual(x)


def system(rng: np.random.Generator, n: int, dominance: float) -> tuple:
    A = rng.normal(size=(n, n))  # noqa: N806
    A += np.diag(np.abs(A).sum(1) * dominance)  # row-diagonally dominant: Jacobi converges
    return A.astype(np.float32), rng.normal(size=n).astype(np.float32)


def main() -> list[int]:
    args = parse_args(__doc__.splitlines()[0], steps=0, systems=6, size=64)
    rng = np.random.default_rng(args.seed)
    counts = []
    for k in range(args.systems):
        A, b = system(rng, args.size, dominance=(1.0, 1.3, 2.0)[k % 3])  # noqa: N806
        tol = [1e-3, 1e-5][k % 2]
        x, it, res = jacobi(torch.tensor(A), torch.tensor(b), torch.tensor(tol))
        err = float(np.abs(x.numpy() - np.linalg.solve(A.astype(np.float64), b)).max())
        counts.append(int(it))
        print(f"system {k}: {int(it):3d} iterations to residual {float(res):.2e} "
              f"(tol {tol:.0e}), max error against np.linalg.solve {err:.2e}")
    info = jacobi.cache_info()
    print(f"{args.systems} systems, {len(set(counts))} different trip counts: {info.traces} "
          f"trace, {info.misses} program, {info.hits} compiled calls")
    return counts


if __name__ == "__main__":
    main()
