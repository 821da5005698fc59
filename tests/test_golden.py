"""Golden files: what each stage of @jit produces for five fixed programs (the seed's training
step, a row softmax, a layernorm, a cond and a while_loop; tests/golden/programs.py): the graph
IR, the kernel IR and the generated source, compared with tests/golden/<program>.<stage>.txt,
so a change to tracing, the passes or code generation shows up as a readable diff of what users
see.

Regenerate them (after a change that alters the output on purpose) with one command:

    TRACEJIT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

then read `git diff tests/golden` and commit the files with the change. Files no case makes any
more are deleted by the same command.

What varies between machines or runs is normalised away (see `normalise`): the tracejit and
Numba versions in a program's header, content hashes, and the hashes inside driver and kernel
names (they are salted with the CPU, Python, Numba and the kernel library's source), each
replaced by `<hN>`, numbered in order of first appearance, so two names that are equal stay
equal. `# file:line` comments name lines of tests/golden/programs.py (base names only).

Adding a stage is one function, (jitted function, its arguments) -> text, and one entry in
STAGES: every program then has a file for it."""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from collections.abc import Callable
from typing import Any

import pytest

import tracejit as tj

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
ROOT = os.path.dirname(HERE)
UPDATE = os.environ.get("TRACEJIT_UPDATE_GOLDEN", "") not in ("", "0")
REGENERATE = "TRACEJIT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py"


def _load_programs() -> Any:
    spec = importlib.util.spec_from_file_location("tracejit_golden_programs",
                                                  os.path.join(GOLDEN, "programs.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PROGRAMS: dict[str, Callable[[], tuple[Any, tuple[Any, ...]]]] = _load_programs().PROGRAMS


# ---- stages: (jitted function, arguments) -> the text of one artefact -----------------------


def stage_ir(jf: Any, args: tuple[Any, ...]) -> str:
    """The optimised graph IR with its buffer plan (`step.ir(...)`, before its kernels)."""
    return jf.ir(*args).split("\nkernels:\n")[0] + "\n"


def stage_kir(jf: Any, args: tuple[Any, ...]) -> str:
    """The kernel IR of every fused group and reduction (the `kernels:` part of `step.ir`)."""
    text = jf.ir(*args)
    return "kernels:\n" + text.split("\nkernels:\n", 1)[1] if "\nkernels:\n" in text \
        else "(no kernels)\n"


def stage_source(jf: Any, args: tuple[Any, ...]) -> str:
    """The generated source: the driver, then every kernel it calls (`step.source(...)`)."""
    return jf.source(*args)


STAGES: dict[str, Callable[[Any, tuple[Any, ...]], str]] = {
    "ir": stage_ir,
    "kir": stage_kir,
    "source": stage_source,
}

CASES = [(program, stage) for program in PROGRAMS for stage in STAGES]


# ---- normalisation ------------------------------------------------------------------------------

_HEX_RUN = re.compile(r"[0-9a-f]{8,}")


def _names(jf: Any, args: tuple[Any, ...], text: str) -> list[str]:
    """Generated names that carry a hash: functions the text defines or loads, and the
    compiled program's driver and kernels (if these inputs' entry was compiled)."""
    names = re.findall(r"^\s*def (\w+)\(", text, re.M) + re.findall(r"_k\('(\w+)'\)", text)
    prog = jf._entry_for(args, {}).program
    if prog is not None:
        names += [prog.name, *getattr(prog, "kernels", ())]
    return names


def normalise(text: str, names: list[str]) -> str:
    """`text` without what differs between machines and runs (see the module docstring)."""
    text = re.sub(r"^(# tracejit program .*), tracejit \S+, numba \S+$",
                  r"\1, tracejit <version>, numba <version>", text, flags=re.M)
    text = re.sub(r"\b[0-9a-f]{64}\b", "<content hash>", text)
    hashes = {h for n in names for h in _HEX_RUN.findall(n)}
    if hashes:
        found = re.finditer("|".join(sorted(map(re.escape, hashes), key=len, reverse=True)),
                            text)
        number: dict[str, str] = {}
        for m in found:
            number.setdefault(m.group(0), f"<h{len(number) + 1}>")
        for h, placeholder in number.items():
            text = text.replace(h, placeholder)
    for path, name in ((os.environ.get("TRACEJIT_CACHE_DIR", ""), "<cache dir>"),
                       (ROOT, "<repo>")):
        if path:
            text = text.replace(path, name)
    return text.rstrip("\n") + "\n"


def render(program: str, stage: str) -> str:
    """The normalised text of one case, made from scratch (fresh function and tensors), with
    the switches that change generated code pinned to their defaults."""
    with tj.flags(driver="python", check=False, disable=False):
        jf, args = PROGRAMS[program]()
        text = STAGES[stage](jf, args)
        return normalise(text, _names(jf, args, text))


def _path(program: str, stage: str) -> str:
    return os.path.join(GOLDEN, f"{program}.{stage}.txt")


# ---- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("program", "stage"), CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_golden(program: str, stage: str) -> None:
    got = render(program, stage)
    path = _path(program, stage)
    rel = os.path.relpath(path, ROOT)
    if UPDATE:
        old = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                old = f.read()
        if old != got:
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write(got)
        return
    if not os.path.exists(path):
        pytest.fail(f"{rel} does not exist; make it with: {REGENERATE}")
    with open(path, encoding="utf-8") as f:
        want = f.read()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            fromfile=f"{rel} (expected)",
                                            tofile=f"{program} {stage} (generated now)"))
        pytest.fail(f"the {stage} of the {program} program differs from {rel}:\n{diff}\n"
                    f"If the change is intended, regenerate the golden files with:\n"
                    f"    {REGENERATE}\nand commit them with the change.", pytrace=False)


def test_no_stale_golden_files() -> None:
    wanted = {os.path.basename(_path(p, s)) for p, s in CASES}
    stale = sorted(f for f in os.listdir(GOLDEN) if f.endswith(".txt") and f not in wanted)
    if UPDATE:
        for f in stale:
            os.remove(os.path.join(GOLDEN, f))
        return
    assert not stale, (f"golden files no case produces: {stale}; remove them, or run: "
                       f"{REGENERATE}")


def test_normalise_keeps_equal_names_equal_and_drops_versions() -> None:
    text = ("# tracejit program f_0123456789: graph f, native driver, tracejit 9.9, numba 1.2\n"
            f"# content hash {'ab' * 32}\nk0123abcdef_add = _k('k0123abcdef_add')\n"
            "v = k0123abcdef_add(p0)\nw = rfedcba9876_sum(v)\ndef f_0123456789(p0):\n")
    out = normalise(text, ["k0123abcdef_add", "rfedcba9876_sum", "f_0123456789"])
    assert out == ("# tracejit program f_<h1>: graph f, native driver, tracejit <version>, "
                   "numba <version>\n# content hash <content hash>\n"
                   "k<h2>_add = _k('k<h2>_add')\nv = k<h2>_add(p0)\nw = r<h3>_sum(v)\n"
                   "def f_<h1>(p0):\n")
