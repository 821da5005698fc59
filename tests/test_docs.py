"""The docs stay true to the code: every TRACEJIT_* switch is documented, the README keeps the
two commands a newcomer runs (and the files they name exist), docs/ops.md lists the registry as
it is, and the README's taste runs and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import os
import re

from tracejit.flags import FLAGS
from tracejit.ops import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_JOB = "pip install -e . && python examples/iris.py"
TESTS = "bash .ci/run"


def _read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def test_every_flag_is_documented() -> None:
    text = _read("docs", "flags.md")
    missing = [
        f"TRACEJIT_{name.upper()}" for name in FLAGS if f"`TRACEJIT_{name.upper()}`" not in text
    ]
    assert not missing, (
        f"switches in tracejit/flags.py missing from docs/flags.md: {missing}; "
        "add a row to its table (name, default, meaning)"
    )


def test_readme_has_the_two_commands() -> None:
    text = _read("README.md")
    for cmd in (MAIN_JOB, TESTS):
        assert cmd in text, f"README.md must give the command {cmd!r}"
    assert os.path.isfile(os.path.join(ROOT, "examples", "iris.py"))
    assert os.path.isfile(os.path.join(ROOT, ".ci", "run"))


def _registry_table() -> dict[str, set[str]]:
    """kind -> op names, from the table under '## The registry today' in docs/ops.md."""
    text = _read("docs", "ops.md").split("## The registry today", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*(\w+)\s*\|(.*)\|\s*$", line)
        if m and m.group(1) != "kind":
            table[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2)))
    return table


def test_ops_page_lists_the_registry() -> None:
    table = _registry_table()
    documented = {name: kind for kind, names in table.items() for name in names}
    actual = {name: op.kind.value for name, op in REGISTRY.items()}
    missing = sorted(set(actual) - set(documented))
    stale = sorted(set(documented) - set(actual))
    wrong_kind = sorted(n for n in set(actual) & set(documented) if actual[n] != documented[n])
    assert not (missing or stale or wrong_kind), (
        f"docs/ops.md's registry table is out of date: missing {missing}, no longer registered "
        f"{stale}, in the wrong row {wrong_kind}"
    )


def test_readme_taste_runs_as_printed() -> None:
    text = _read("README.md")
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None, "README.md has no ```python block"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.group(1), "README.md", "exec"), {"__name__": "readme"})
    printed = out.getvalue().splitlines()
    promised = re.findall(r"print\(.*?\)\s*#\s*(.+)$", code.group(1), re.M)
    assert promised and len(printed) == len(promised), (printed, promised)
    for got, want in zip(printed, promised):
        # a warm disk cache (a second run) loads the program instead of compiling it
        got = got.replace("compiles=0", "compiles=1") if "CacheInfo(" in got else got
        assert got.strip() == want.strip(), f"README's taste prints {got!r}, not {want!r}"
