"""The examples run at tiny sizes (in-process, with --steps), print a falling loss, and the
Iris example reaches at least 97% training accuracy with its default settings."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
LOSS_EXAMPLES = ["tensors_by_hand", "autograd_basics", "custom_function", "nn_sequential",
                 "nn_adam", "two_layer_net", "parallel_block", "dynamic_graph", "dropout_mlp"]


def run_main(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(EXAMPLES)
    monkeypatch.setattr(sys, "argv", [name + ".py", *argv])
    g = runpy.run_path(os.path.join(EXAMPLES, name + ".py"), run_name="example")
    return g["main"]()


@pytest.mark.parametrize("name", LOSS_EXAMPLES)
def test_example_loss_falls(name, monkeypatch, capsys):
    losses = run_main(name, ["--steps", "6"], monkeypatch)
    assert isinstance(losses, list) and len(losses) == 6
    assert losses[-1] < losses[0]
    out = capsys.readouterr().out
    assert "step    0  loss" in out and "step    5  loss" in out


def test_iris_reaches_97_percent(monkeypatch, capsys):
    accuracy = run_main("iris", [], monkeypatch)
    assert accuracy >= 0.97
    out = capsys.readouterr().out
    assert "training accuracy" in out and "step  999" in out
    assert "x faster compiled" in out and "fallbacks=0" in out and "0 graph breaks" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("step")]
    first = float(lines[0].split("loss")[1].split()[0])
    last = float(lines[-1].split("loss")[1].split()[0])
    assert last < first / 5


def test_branching_example(monkeypatch, capsys):
    losses = run_main("branching", ["--steps", "40", "--batch", "8", "--d-in", "20",
                                    "--hidden", "8"], monkeypatch)
    assert len(losses) == 40 and min(losses) < losses[0]
    out = capsys.readouterr().out
    seq = next(ln for ln in out.splitlines() if ln.startswith("     0  ")).split()[1]
    assert len(seq) == 40 and "a" in seq and "b" in seq  # both branches ran
    assert "traces=3" in out and "fallbacks=0" in out
    assert "compiled step" in out and "eager step" in out
    assert out.count("  path: the branch at branching.py:") == 2


def test_dataloader_example(monkeypatch, capsys):
    accuracy = run_main("dataloader_loop", ["--steps", "3"], monkeypatch)
    assert accuracy > 0.8
    out = capsys.readouterr().out
    assert "epoch   2" in out and "<All keys matched successfully>" in out


def test_examples_run_as_scripts():
    """The command a user types (a fresh interpreter, relative imports of _common)."""
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "iris.py"), "--steps", "5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "training accuracy" in r.stdout


def test_data_credit_is_shipped():
    readme = open(os.path.join(EXAMPLES, "data", "README.md")).read()
    assert "Fisher (1936)" in readme and "UCI" in readme and "public domain" in readme.lower()
    with open(os.path.join(EXAMPLES, "data", "iris.csv")) as f:
        assert f.readline().strip() == "150,4,setosa,versicolor,virginica"
