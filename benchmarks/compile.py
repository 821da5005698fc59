"""compile: process start to the first *compiled* mlp-seed step, in a fresh subprocess, with a
cold and then a warm on-disk compile cache (each measurement gets its own new cache directory:
TRACEJIT_CACHE_DIR with NUMBA_CACHE_DIR inside it, TORCHINDUCTOR_CACHE_DIR,
JAX_COMPILATION_CACHE_DIR; the second process reuses the first one's).

tracejit.jit runs the seed step eagerly while tracing it (twice: `.grad` is None on the first
call) and compiles it, or loads it from the disk cache, on the third call; torch.compile and
jax.jit compile on the first. So each child calls the step until compiled code has run (for the
jit: until `cache_info().hits >= 1`) and reports the time to that point.

Run as `python -m tracejit.benchmarks.compile IMPL`, it is the child: it runs the step until
compiled, then to three steps, checks them against the float64 reference and prints one JSON
line (with the jit's cache_info: the warm process should show compiles=0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import mlp_seed
from .core import Case, Inputs, UnavailableError, Workload, max_error, register_workload

# cold_s, warm_s: the parent's spawn to the end of the child's first compiled step;
# *_first_call_s: the first call's start to the end of the first compiled step (the jit: the
# tracing calls and the compile or cache load); cold_calls: calls until compiled code ran;
# warm_compiles: compiles in the warm process (tracejit.jit; 0 when the disk cache worked)
METRICS = ("cold_s", "warm_s", "cold_first_call_s", "warm_first_call_s", "cold_calls",
           "warm_compiles")
TIMEOUT_S = 600


def cache_env(cache: str) -> dict[str, str]:
    """The environment of a child: every compiler's disk cache inside `cache`, and the thread
    count the CLI pinned (--threads) for its BLAS, OpenMP and Numba pools."""
    env = dict(os.environ)
    threads = os.environ.get("TRACEJIT_BENCH_THREADS")
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env.setdefault(var, threads)
    env.update({
        "TRACEJIT_CACHE_DIR": os.path.join(cache, "tracejit"),
        "NUMBA_CACHE_DIR": os.path.join(cache, "tracejit", "numba"),
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(cache, "inductor"),
        "TRITON_CACHE_DIR": os.path.join(cache, "triton"),
        "JAX_COMPILATION_CACHE_DIR": os.path.join(cache, "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    })
    return env


def _child_run(impl: str, env: dict[str, str]) -> dict[str, Any]:
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", __name__, impl], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"child exited {proc.returncode}: {tail}")
    got = json.loads(lines[-1])
    if got.get("skip"):
        raise UnavailableError(got["skip"])
    got["start_to_first_s"] = got["done_at"] - start
    return got


def measure(impl: str, case: Case, inp: Inputs, quick: bool) -> dict[str, float]:
    """Two fresh processes sharing one new cache directory: the first finds it cold, the
    second warm."""
    with tempfile.TemporaryDirectory(prefix="tracejit-bench-compile-") as cache:
        env = cache_env(cache)
        cold = _child_run(impl, env)
        warm = _child_run(impl, env)
    ok = cold["correct"] and warm["correct"]
    return {"cold_s": cold["start_to_first_s"], "warm_s": warm["start_to_first_s"],
            "cold_first_call_s": cold["first_call_s"],
            "warm_first_call_s": warm["first_call_s"],
            "cold_calls": float(cold["calls_to_compiled"]),
            "warm_compiles": float(warm["compiles"]),
            "correct": 1.0 if ok else 0.0,
            "max_error": max(cold["max_error"], warm["max_error"])}


def child(impl: str) -> None:
    """The measured process: set up, call the step until compiled code has run (timed), then
    run to three steps and check them."""
    inp = mlp_seed.make_inputs(mlp_seed.SIZES["full"])
    try:
        case = mlp_seed.IMPLS[impl](inp)
    except UnavailableError as e:
        print(json.dumps({"skip": str(e)}), flush=True)
        os._exit(0)
    skip = ""
    calls = 0
    t0 = time.perf_counter()
    while True:
        case.run()
        calls += 1
        if case.jit is None or case.jit.compiled():
            break
        if calls >= mlp_seed.CHECK_STEPS:
            skip = (f"tracejit.jit did not run compiled code in {calls} calls: "
                    f"{case.jit.describe()}")
            break
    first = time.perf_counter() - t0
    done_at = time.time()
    for _ in range(mlp_seed.CHECK_STEPS - calls):
        case.run()
    err = max_error(case.output(), mlp_seed.reference(inp))
    compiles = case.jit.info()[3] if case.jit is not None else 0
    print(json.dumps({"skip": skip, "first_call_s": first, "done_at": done_at,
                      "calls_to_compiled": calls, "compiles": compiles, "max_error": err,
                      "correct": err <= mlp_seed.WORKLOAD.tolerance}), flush=True)
    sys.stdout.flush()
    os._exit(0)  # interpreter shutdown (torch's thread pools) is not part of the measurement


WORKLOAD = register_workload(Workload(
    name="compile",
    description="process start to first compiled mlp-seed step, cold and warm disk cache "
                "(fresh subprocesses)",
    sizes={"full": dict(mlp_seed.SIZES["full"]), "quick": dict(mlp_seed.SIZES["quick"])},
    make_inputs=mlp_seed.make_inputs,
    reference=mlp_seed.reference,
    impls=dict(mlp_seed.IMPLS),
    tolerance=mlp_seed.WORKLOAD.tolerance,
    repeat=3,
    check_runs=mlp_seed.CHECK_STEPS,
    kind="metrics",
    metrics=METRICS,
    metric_units=("s", "s", "s", "s", "count", "count"),
    measure=measure,
    in_subprocess=True,
))

if __name__ == "__main__":
    child(sys.argv[1])
