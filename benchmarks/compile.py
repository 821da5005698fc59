"""compile: process start to the first mlp-seed step, in a fresh subprocess, with a cold and
then a warm on-disk compile cache (each measurement gets its own new cache directory:
TRACEJIT_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR, JAX_COMPILATION_CACHE_DIR).

Run as `python -m tracejit.benchmarks.compile IMPL`, it is the child: it times the first step,
checks three steps against the float64 reference and prints one JSON line.
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
from .core import Case, Inputs, Workload, max_error, register_workload

METRICS = ("cold_s", "warm_s", "cold_first_call_s", "warm_first_call_s")
TIMEOUT_S = 600


def _env(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "TRACEJIT_CACHE_DIR": os.path.join(cache, "tracejit"),
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
    got["start_to_first_s"] = got["done_at"] - start
    return got


def measure(impl: str, case: Case, inp: Inputs, quick: bool) -> dict[str, float]:
    """Two fresh processes sharing one new cache directory: the first finds it cold, the
    second warm."""
    with tempfile.TemporaryDirectory(prefix="tracejit-bench-compile-") as cache:
        env = _env(cache)
        cold = _child_run(impl, env)
        warm = _child_run(impl, env)
    ok = cold["correct"] and warm["correct"]
    return {"cold_s": cold["start_to_first_s"], "warm_s": warm["start_to_first_s"],
            "cold_first_call_s": cold["first_call_s"],
            "warm_first_call_s": warm["first_call_s"],
            "correct": 1.0 if ok else 0.0,
            "max_error": max(cold["max_error"], warm["max_error"])}


def child(impl: str) -> None:
    """The measured process: set up, time the first step, then check three steps."""
    inp = mlp_seed.make_inputs(mlp_seed.SIZES["full"])
    case = mlp_seed.IMPLS[impl](inp)
    t0 = time.perf_counter()
    case.run()
    first = time.perf_counter() - t0
    done_at = time.time()
    for _ in range(mlp_seed.CHECK_STEPS - 1):
        case.run()
    err = max_error(case.output(), mlp_seed.reference(inp))
    print(json.dumps({"first_call_s": first, "done_at": done_at, "max_error": err,
                      "correct": err <= mlp_seed.WORKLOAD.tolerance}), flush=True)
    sys.stdout.flush()
    os._exit(0)  # interpreter shutdown (torch's thread pools) is not part of the measurement


WORKLOAD = register_workload(Workload(
    name="compile",
    description="process start to first mlp-seed step, cold and warm disk cache (subprocesses)",
    sizes={"full": dict(mlp_seed.SIZES["full"]), "quick": dict(mlp_seed.SIZES["quick"])},
    make_inputs=mlp_seed.make_inputs,
    reference=mlp_seed.reference,
    impls=dict(mlp_seed.IMPLS),
    tolerance=mlp_seed.WORKLOAD.tolerance,
    repeat=3,
    check_runs=mlp_seed.CHECK_STEPS,
    kind="metrics",
    metrics=METRICS,
    metric_units=("s", "s", "s", "s"),
    measure=measure,
))

if __name__ == "__main__":
    child(sys.argv[1])
