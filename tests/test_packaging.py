"""The wheel holds every package of the source tree: pyproject.toml lists packages by hand (three
top-level folders map into tracejit), so a new subpackage missing from the list would import
in an editable checkout and be absent from an installed wheel."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _tree_packages() -> set[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in cfg["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts or (name == "tracejit" and rel.parts[:1] in
                                              (("kernels",), ("benchmarks",))):
                continue  # (symlinks some worktrees keep: mapped by package-dir instead)
            found.add(".".join((name, *rel.parts)))
    return found


def test_every_package_is_listed_in_pyproject() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    tree = _tree_packages()
    assert not tree - listed, f"add to pyproject.toml's packages: {sorted(tree - listed)}"
    assert not listed - tree, f"listed but not in the tree: {sorted(listed - tree)}"


def test_benchmark_data_is_package_data() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = cfg["package-data"]["tracejit.benchmarks"]
    data = [p for p in (ROOT / "benchmarks" / "data").iterdir() if p.is_file()]
    assert data
    for p in data:
        assert any(p.match(pat.split("/")[-1]) for pat in patterns), p.name
