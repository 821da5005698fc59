#!/usr/bin/env bash
# Interleaved before/after timing of tracejit itself: an earlier commit (REV) against this
# working tree, the same tracejit-bench workloads and implementations, alternating ROUNDS times
# so that machine load hits both sides alike; prints the median of each side's per-run medians.
#   benchmarks/ab.sh REV [ROUNDS] [tracejit-bench arguments...]
#   benchmarks/ab.sh bc6cd01 5 --workload dispatch --impl tracejit-jit
# The earlier commit is checked out into a temporary git worktree and imported through
# PYTHONPATH (its kernels/ and benchmarks/ linked where the installed package maps them), and
# checked to be the tracejit that side imports.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: benchmarks/ab.sh REV [ROUNDS] [tracejit-bench args]}
ROUNDS=${2:-5}
shift $(( $# >= 2 ? 2 : 1 ))
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--workload dispatch --impl tracejit-jit --impl tracejit-eager)
PY=${PYTHON:-$PWD/.venv/bin/python}
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/before" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git worktree add -q --detach "$WORK/before" "$REV"
ln -s ../kernels "$WORK/before/tracejit/kernels"
ln -s ../benchmarks "$WORK/before/tracejit/benchmarks"
mkdir -m 700 "$WORK/cache-before" "$WORK/cache-after" "$WORK/run"
# run from an empty folder: python puts the current directory first on sys.path, which would
# import this tree's tracejit on the "before" side too
cd "$WORK/run"
PYTHONPATH="$WORK/before" "$PY" -c 'import sys, tracejit; sys.exit(not tracejit.__file__.startswith(sys.argv[1]))' "$WORK/before"
for r in $(seq "$ROUNDS"); do
    PYTHONPATH="$WORK/before" TRACEJIT_CACHE_DIR="$WORK/cache-before" \
        "$PY" -m tracejit.bench "${ARGS[@]}" --json "$WORK/before_$r.json" --no-progress >/dev/null
    TRACEJIT_CACHE_DIR="$WORK/cache-after" \
        "$PY" -m tracejit.bench "${ARGS[@]}" --json "$WORK/after_$r.json" --no-progress >/dev/null
done
"$PY" - "$WORK" "$REV" <<'EOF'
import glob, json, statistics, sys

work, rev = sys.argv[1], sys.argv[2]
runs: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
for side, per in runs.items():
    for path in sorted(glob.glob(f"{work}/{side}_*.json")):
        for w in json.load(open(path))["workloads"]:
            for res in w["results"]:
                if res.get("median_s"):
                    per.setdefault(f"{w['name']} {res['impl']}", []).append(res["median_s"])
print(f"| workload, impl | before ({rev}) | after (working tree) | after / before |")
print("|---|---|---|---|")
for key, before in runs["before"].items():
    after = runs["after"].get(key)
    if not after:
        continue
    b, a = statistics.median(before), statistics.median(after)
    print(f"| {key} | {b * 1e6:.2f} us | {a * 1e6:.2f} us | {a / b:.3f} |")
print(f"\n(median of {len(before)} interleaved runs' medians per side)")
EOF
