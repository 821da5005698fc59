"""tracejit-bench: run the workloads in `benchmarks/` (installed as tracejit.benchmarks) against
tracejit's peers and print a table; the method is in benchmarks/README.md.

A progress bar goes to stderr, the tables to stdout, `--json` writes every sample. Usage:
`tracejit-bench --quick`, `python -m tracejit.bench --workload mlp-seed --impl numpy --json r.json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from typing import IO, Any

SCHEMA_VERSION = 1
BANDWIDTH_NOTE = "roofline = same-size copy time / median (1.00 = as fast as a memory copy)"


class ProgressBar:
    """One redrawn line on a terminal; one line per workload when stderr is not a terminal."""

    def __init__(self, total: int, stream: IO[str], enabled: bool) -> None:
        self.total, self.done, self.stream, self.enabled = max(total, 1), 0, stream, enabled
        self.tty = enabled and stream.isatty()
        self.last_workload = ""
        self.start = time.perf_counter()

    def __call__(self, workload: str, label: str, n: int) -> None:
        self.done = min(self.total, self.done + n)
        if not self.enabled:
            return
        if not self.tty:
            if workload != self.last_workload:
                self.stream.write(f"tracejit-bench: {workload} ...\n")
                self.stream.flush()
                self.last_workload = workload
            return
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * self.done // self.total:3d}%"
                f" {elapsed:6.1f}s  {workload}: {label}")
        cols = _columns()
        self.stream.write(line[:cols - 1].ljust(cols - 1))
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * (_columns() - 1) + "\r")
            self.stream.flush()


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return 100


# ---- formatting ---------------------------------------------------------------------------

def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}" if s / scale < 100 else f"{s / scale:.0f} {unit}"
    return f"{s * 1e9:.3g} ns"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    for unit, scale in (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10)):
        if abs(b) >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


def fmt_value(v: float | None, unit: str) -> str:
    if unit == "x":
        return "-" if v is None else f"{v:.2f}x"
    if unit == "count":
        return "-" if v is None else f"{v:.0f}"
    return fmt_bytes(v) if unit == "bytes" else fmt_seconds(v)


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


# ---- the header and the tables ------------------------------------------------------------

def header_lines(machine: dict[str, Any]) -> list[str]:
    blas = machine["blas"]
    nb, tb = blas.get("numpy", {}), blas.get("torch", {})
    th = machine["threads"]
    env = ", ".join(f"{k}={v}" for k, v in machine["env"].items() if v is not None) or "none set"
    vers = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v is not None)
    lines = [
        f"machine: {machine['cpu_model']} ({machine['cpu_family']}), {machine['cores']} cores"
        f" ({machine['affinity']} usable), {machine['platform']}",
        "load average (1, 5, 15 min): "
        + ", ".join(f"{x:.2f}" for x in machine.get("load_average") or []),
        f"numpy BLAS: {nb.get('name')} {nb.get('version')}, core type {nb.get('core', '?')},"
        f" {nb.get('threads', '?')} threads",
    ]
    if tb:
        lines.append(f"torch BLAS: {tb.get('name')} (MKL {tb.get('mkl')}),"
                     f" CPU capability {tb.get('cpu_capability')}")
    lines += [
        "threads: " + ", ".join(f"{k}={v}" for k, v in th.items()),
        f"env: {env}",
        f"versions: {vers}",
    ]
    if machine.get("unset"):
        lines.append(f"note: tracejit-bench re-ran itself without {machine['unset']} (it forces "
                     "OpenBLAS's kernel choice; PERF-NOTES: Haswell halves sgemm on Zen), so "
                     "every implementation runs with OpenBLAS's own choice")
    if machine["env"].get("OPENBLAS_CORETYPE"):
        lines.append("note: OPENBLAS_CORETYPE is set and forces OpenBLAS's kernel choice "
                     "(PERF-NOTES: Haswell halves sgemm on Zen); unset it to measure the default")
    return lines


def _check_cell(res: dict[str, Any]) -> str:
    if res["status"] == "skipped":
        return f"skipped: {res['reason']}"
    if res["status"] == "wrong":
        return f"WRONG: {res['reason']}"
    err = res["max_error"]
    return "ok" if err is None else f"ok (err {err:.1e})"


def table_rows(wl: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Column names and cells of one workload's table (shared by text and markdown)."""
    if wl["kind"] == "time":
        cols = ["impl", "median", "min", "max", "ratio"]
        if wl["roofline"] is not None:
            cols.append("roofline")
        cols.append("check")
        rows = []
        for res in wl["results"]:
            row = [res["impl"], fmt_seconds(res["median_s"]), fmt_seconds(res["min_s"]),
                   fmt_seconds(res["max_s"]), fmt_ratio(res["ratio"])]
            if wl["roofline"] is not None:
                f = res["roofline_fraction"]
                row.append("-" if f is None else f"{f:.2f}")
            row.append(_check_cell(res))
            rows.append(row)
        return cols, rows
    cols = ["impl"] + [f"{m} (median, min-max)" for m in wl["metrics"]] + ["ratio", "check"]
    rows = []
    for res in wl["results"]:
        row = [res["impl"]]
        for m, unit in zip(wl["metrics"], wl["metric_units"]):
            s = res["metrics"].get(m)
            row.append("-" if not s else f"{fmt_value(s['median'], unit)} "
                       f"({fmt_value(s['min'], unit)}-{fmt_value(s['max'], unit)})")
        row += [fmt_ratio(res["ratio"]), _check_cell(res)]
        rows.append(row)
    return cols, rows


def workload_title(wl: dict[str, Any]) -> str:
    size = ", ".join(f"{k}={v}" for k, v in wl["size"].items())
    title = f"{wl['name']}: {wl['description']} [{size}; {wl['repeat']} repeats]"
    return title


def workload_notes(wl: dict[str, Any]) -> list[str]:
    notes = []
    if wl["baseline"] is not None:
        notes.append(f"ratio = median / median of {wl['baseline']}"
                     + (f" ({wl['baseline_note']})" if wl["baseline_note"] else ""))
    if wl["roofline"] is not None:
        r = wl["roofline"]
        notes.append(f"{BANDWIDTH_NOTE}; copy of {fmt_bytes(r['bytes'])}: "
                     f"{fmt_seconds(r['copy_median_s'])} ({r['bandwidth_gbs']:.1f} GB/s)")
    return notes


def render_text(wl: dict[str, Any]) -> str:
    cols, rows = table_rows(wl)
    # the last column (check) is left free-width so long reasons do not widen the table
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(cols[:-1])]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1]
    lines = [f"== {workload_title(wl)}", fmt(cols)]
    lines += [fmt(r) for r in rows]
    lines += [f"   {n}" for n in workload_notes(wl)]
    return "\n".join(lines) + "\n"


def render_markdown(wl: dict[str, Any]) -> str:
    cols, rows = table_rows(wl)
    esc = lambda s: s.replace("|", "\\|")
    lines = [f"### {esc(workload_title(wl))}", "", "| " + " | ".join(cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    lines += [""] + [f"{esc(n)}." for n in workload_notes(wl)]
    return "\n".join(lines) + "\n"


# ---- the headline -------------------------------------------------------------------------

HEADLINE_PEERS = ("tracejit-eager", "torch", "torch-compile", "jax", "numpy")


def _headline_rows(wl: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(row label, metric name or "" for time, results by impl) for one workload."""
    by = {r["impl"]: r for r in wl["results"]}
    if wl["kind"] == "time":
        return [(wl["name"], "", by)]
    if wl["name"] == "compile":
        return [("compile (cold cache)", "cold_s", by), ("compile (warm cache)", "warm_s", by)]
    if wl["name"] == "jit-compile":
        rows = [(f"jit-compile {m.split('_')[0]} (start to 1st compiled step)", m, by)
                for m in sorted((m for m in wl["metrics"] if m.endswith("_first_s")),
                                key=lambda m: int(m[1:].split("_")[0]))]
        rows += [(f"jit-compile {m.split('_')[0]} (compile alone)", m, by)
                 for m in sorted((m for m in wl["metrics"] if m.endswith("_compile_s")),
                                 key=lambda m: int(m[1:].split("_")[0]))]
        rows += [(f"jit-compile {m.replace('_', ' ')}", m, by) for m in wl["metrics"]
                 if "ratio" in m]
        return rows
    return []


def _value(res: dict[str, Any] | None, metric: str) -> float | None:
    if res is None or res["status"] != "ok":
        return None
    if not metric:
        return res["median_s"]
    m = res["metrics"].get(metric)
    return None if not m else m["median"]


def render_headline(doc: dict[str, Any]) -> str:
    """The key rows: tracejit-jit's median and each peer's median over it (above 1: the jit
    is faster), from this run only."""
    lines = ["## Headline", "",
             "tracejit-jit's median, and each peer's median divided by it (**> 1: the jit is "
             "faster**), all from this one run; `-` = did not run (see its table).", "",
             "| workload | tracejit-jit | " + " | ".join(HEADLINE_PEERS) + " |",
             "|---|---|" + "---|" * len(HEADLINE_PEERS)]
    for wl in doc["workloads"]:
        units = dict(zip(wl["metrics"], wl["metric_units"]))
        for label, metric, by in _headline_rows(wl):
            jit = _value(by.get("tracejit-jit"), metric)
            unit = units.get(metric, "s")
            if jit is None:
                r = by.get("tracejit-jit")
                why = "not run" if r is None else f"{r['status']}: {r['reason'][:80]}"
                cells = [why.replace("|", "/")]
            else:
                cells = [fmt_value(jit, unit)]
            for peer in HEADLINE_PEERS:
                v = _value(by.get(peer), metric)
                if v is None:
                    cells.append("-")
                elif unit == "x":
                    cells.append(fmt_value(v, unit))
                elif jit:
                    cells.append(f"{v / jit:.2f}x ({fmt_value(v, unit)})")
                else:
                    cells.append(fmt_value(v, unit))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


# ---- JSON ---------------------------------------------------------------------------------

def _metric_stats(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"median": None, "min": None, "max": None, "samples": []}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "samples": xs}


def result_json(wr: Any) -> dict[str, Any]:
    """A WorkloadResult as the documented JSON object (benchmarks/README.md, "JSON schema")."""
    results = []
    for r in wr.results:
        s = r.summary()
        results.append({
            "impl": r.impl, "status": r.status, "reason": r.reason, "correct": r.correct,
            "max_error": r.max_error, "tolerance": r.tolerance,
            "median_s": s["median"], "min_s": s["min"], "max_s": s["max"],
            "samples_s": r.samples, "calls_per_sample": r.calls_per_sample,
            "metrics": {k: _metric_stats(v) for k, v in r.metrics.items()},
            "ratio": r.ratio, "roofline_fraction": r.roofline_fraction,
        })
    return {
        "name": wr.name, "description": wr.description, "size": wr.size, "kind": wr.kind,
        "metrics": list(wr.metrics), "metric_units": list(wr.metric_units),
        "repeat": wr.repeat, "baseline": wr.baseline, "baseline_note": wr.baseline_note,
        "roofline": wr.roofline, "results": results,
    }


# ---- the command --------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tracejit-bench",
        description="Benchmark tracejit (eager and jit) against NumPy, torch, torch.compile "
                    "and jax.jit on the workloads in tracejit.benchmarks.")
    p.add_argument("--workload", action="append", metavar="NAME",
                   help="workload to run (repeatable; default: all; see --list)")
    p.add_argument("--impl", action="append", metavar="NAME",
                   help="implementation to run (repeatable; default: all available)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="timed samples per implementation (default: per workload)")
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="pin NumPy's BLAS, torch, Numba and XLA to N threads each (default 1: "
                        "interleaved libraries' spinning thread pools fight on a small machine)")
    p.add_argument("--json", metavar="PATH", help="write every sample and the machine as JSON")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--plot", metavar="PATH", help="bar chart of the ratios (needs matplotlib)")
    p.add_argument("--list", action="store_true", help="list workloads and implementations")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p.parse_args(argv)


def _list(out: IO[str]) -> None:
    from tracejit.benchmarks import core

    for w in core.workloads().values():
        sizes = "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items())
                          for k, v in w.sizes.items())
        out.write(f"{w.name:12s} {w.description}\n{'':12s} sizes {sizes}\n"
                  f"{'':12s} impls {', '.join(core.impl_names(w))}\n")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark CLI; returns the exit status (0, or 2 for a usage error)."""
    args = parse_args(argv)
    if argv is None and not args.list:  # the command line, not a caller's process
        _reexec_without_forcing_vars()
    if args.device == "cuda":  # the GPU workloads of issue 14 (tracejit/cuda/bench.py)
        from tracejit.cuda import bench as gpu_bench

        return gpu_bench.run(args.repeat, args.quick)
    from tracejit.benchmarks import core, machine, peers, runner

    if args.list:
        _list(sys.stdout)
        return 0
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("tracejit-bench: --plot needs matplotlib (pip install matplotlib, or "
                  "pip install tracejit[bench])", file=sys.stderr)
            return 2
    all_w = core.workloads()
    names = args.workload or [n for n, w in all_w.items() if w.default]
    unknown = [n for n in names if n not in all_w]
    known_impls = {i for w in all_w.values() for i in w.impls}
    unknown += [i for i in args.impl or [] if i not in known_impls]
    if unknown:
        print(f"tracejit-bench: unknown workload or impl: {', '.join(unknown)} (see --list)",
              file=sys.stderr)
        return 2
    if args.repeat is not None and args.repeat < 1:
        print("tracejit-bench: --repeat must be at least 1", file=sys.stderr)
        return 2

    peers.set_quick(args.quick)
    machine.pin_threads(max(1, args.threads))
    cores_before = machine.pin_cores(max(1, args.threads))
    try:
        return _run(args, argv, core, machine, peers, runner, all_w, names)
    finally:
        if cores_before is not None:  # a caller's process (tests) gets its cores back
            os.sched_setaffinity(0, cores_before)


# OpenBLAS reads these when NumPy loads it, before main() runs: the CLI re-runs itself once
# without them so that every implementation (NumPy, tracejit, jax's and torch's own BLAS aside)
# is measured with OpenBLAS's own kernel choice. The library never changes a user's environment.
FORCING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _reexec_without_forcing_vars() -> None:
    found = [f"{k}={os.environ[k]}" for k in FORCING_VARS if os.environ.get(k)]
    if not found or os.environ.get("TRACEJIT_BENCH_UNSET") is not None:
        return
    env = {k: v for k, v in os.environ.items() if k not in FORCING_VARS}
    env["TRACEJIT_BENCH_UNSET"] = " ".join(found)
    import tracejit

    root = os.path.dirname(os.path.dirname(os.path.abspath(tracejit.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])  # the same tracejit as this process
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "tracejit.bench", *sys.argv[1:]], env)


def _run(args: argparse.Namespace, argv: list[str] | None, core: Any, machine: Any, peers: Any,
         runner: Any, all_w: dict[str, Any], names: list[str]) -> int:
    selected = [(all_w[n], runner.select_impls(all_w[n], args.impl)) for n in names]
    if any(i in ("torch", "torch-compile") for _, impls in selected for i in impls):
        try:  # imported now so the header can name its BLAS and its threads are pinned
            peers.torch()
        except core.UnavailableError:
            pass
    info = machine.info()
    out = sys.stdout
    command = "tracejit-bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    _print_header(out, info, command, args.markdown)

    total = sum(runner.units(w, impls, args.repeat or
                             (max(3, w.repeat // 3) if args.quick else w.repeat))
                for w, impls in selected)
    bar = ProgressBar(total, sys.stderr, not args.no_progress)
    results = []
    tables: list[str] = []  # markdown: written after the headline, once every workload ran
    try:
        for w, impls in selected:
            wr = runner.run_workload(w, impls, quick=args.quick, repeat=args.repeat,
                                     explicit=set(args.impl or []), progress=bar)
            wl = result_json(wr)
            results.append(wl)
            bar.close()
            if args.markdown:
                tables.append(render_markdown(wl) + "\n")
            else:
                out.write(render_text(wl) + "\n")
                out.flush()
    finally:
        bar.close()
    end_info = machine.info()
    if args.markdown:
        load = ", ".join(f"{x:.2f}" for x in end_info.get("load_average") or [])
        out.write(render_headline({"workloads": results})
                  + f"Load average (1, 5, 15 min) when the run ended: {load} on "
                    f"{end_info['cores']} cores (the machine may be shared: compare within "
                    "this run only).\n\n" + "".join(tables))
        out.flush()

    doc = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "quick": args.quick, "device": args.device,
        "repeat": args.repeat, "machine": end_info, "workloads": results,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    if args.plot:
        plot(doc, args.plot)
    return 0


def _print_header(out: IO[str], info: dict[str, Any], command: str, markdown: bool) -> None:
    if markdown:
        out.write("# tracejit-bench results\n\nRegenerate with (stdout is this file):\n\n```\n"
                  + command
                  + "\n```\n\n" + "\n".join(f"- {h}" for h in header_lines(info)) + "\n\n")
    else:
        out.write("\n".join(header_lines(info)) + "\n\n")
    out.flush()


def plot(doc: dict[str, Any], path: str) -> None:
    """Ratios to each workload's baseline as grouped bars, log scale (lower is faster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tracejit.benchmarks.core import IMPL_ORDER

    wls = [w for w in doc["workloads"] if w["baseline"] is not None]
    impls = [i for i in IMPL_ORDER
             if any(r["impl"] == i and r["ratio"] for w in wls for r in w["results"])]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(wls) + 2), 4.5))
    width = 0.8 / max(len(impls), 1)
    for k, impl in enumerate(impls):
        xs, ys = [], []
        for j, w in enumerate(wls):
            r = next((r for r in w["results"] if r["impl"] == impl), None)
            if r is not None and r["ratio"]:
                xs.append(j + (k - (len(impls) - 1) / 2) * width)
                ys.append(r["ratio"])
        ax.bar(xs, ys, width, label=impl)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(wls)))
    ax.set_xticklabels([f"{w['name']}\n(vs {w['baseline']})" for w in wls], fontsize=8)
    ax.set_ylabel("time / baseline time (lower is faster)")
    cpu = doc["machine"]["cpu_model"]
    ax.set_title(f"tracejit-bench, {cpu}, {doc['machine']['cores']} cores", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
