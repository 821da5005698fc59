"""The examples run at tiny sizes (in-process, with --steps), print a falling loss, and the
Iris example reaches at least 97% training accuracy with its default settings."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
LOSS_EXAMPLES = ["tensors_by_hand", "autograd_basics", "custom_function", "nn_sequential",
                 "nn_adam", "two_layer_net", "parallel_block", "dynamic_graph", "dropout_mlp",
                 "rnn_scan"]


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


def test_rnn_scan_example_checks_scan_against_the_unrolled_loop(monkeypatch, capsys):
    run_main("rnn_scan", ["--steps", "2", "--length", "4", "--batch", "3"], monkeypatch)
    out = capsys.readouterr().out
    diff = float(out.split("differ by at most ")[1].split()[0])
    assert diff < 1e-5
    assert "(1 trace, 1 program, 0 graph breaks)" in out
    assert "2 loops in its program, 0 graph breaks" in out  # the scan and its reverse


def test_while_solver_example(monkeypatch, capsys):
    counts = run_main("while_solver", ["--systems", "4", "--size", "8"], monkeypatch)
    assert len(set(counts)) > 1  # data-dependent trip counts ...
    out = capsys.readouterr().out
    assert "1 trace, 1 program, 3 compiled calls" in out  # ... one program
    errors = [float(ln.split("np.linalg.solve ")[1]) for ln in out.splitlines()
              if ln.startswith("system")]
    assert max(errors) < 1e-3


def test_iris_as_one_fori_loop(monkeypatch, capsys):
    accuracy = run_main("iris_fori_loop", ["--steps", "300"], monkeypatch)
    assert accuracy >= 0.9
    out = capsys.readouterr().out
    assert "298 Adam steps in one compiled call" in out and "0 graph breaks" in out
    jit_loss = float(out.split("step  299  loss ")[1].split()[0])
    eager_loss = float(out.split("eagerly: loss ")[1].split()[0])
    assert abs(jit_loss - eager_loss) < 1e-3


def test_branching_example(monkeypatch, capsys):
    losses = run_main("branching", ["--steps", "40", "--batch", "8", "--d-in", "20",
                                    "--hidden", "8"], monkeypatch)
    assert len(losses) == 40 and min(losses) < losses[0]
    out = capsys.readouterr().out
    seq = next(ln for ln in out.splitlines() if ln.startswith("     0  ")).split()[1]
    assert len(seq) == 40 and "a" in seq and "b" in seq  # both branches ran
    assert "traces=3" in out and "fallbacks=0" in out
    assert "compiled step" in out and "eager step" in out
    # both paths in one entry: a cond, no checked path
    assert "  path: the branch" not in out and "  note: merged paths: the branch at branching.py:" \
        in out


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


def test_gpt_example_trains_compiled_and_samples(monkeypatch, capsys):
    losses = run_main("gpt", ["--steps", "8", "--n-layer", "1", "--n-embd", "16",
                              "--block-size", "8", "--batch-size", "4", "--sample", "12"],
                      monkeypatch)
    assert len(losses) == 8 and max(losses[-2:]) < losses[0]
    out = capsys.readouterr().out
    assert "step    0  loss" in out and "held-out loss" in out
    # compiled (or loaded from the disk cache, compiles=0): every call after the traces hit
    assert "compiled calls=6 fallbacks=0" in out
    sample = out.split("sample:\n")[1]  # may hold newlines: the text has them
    assert sample.startswith("We hold ") and len(sample) >= len("We hold ") + 12


def test_iris_onnx_example_runs_the_export_without_tracejit(monkeypatch, capsys):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'tracejit[onnx]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    run_main("iris_onnx", ["--steps", "20"], monkeypatch)
    out = capsys.readouterr().out
    assert "outputs ['probs', 'label']" in out
    assert "onnxruntime agrees with tracejit on 150/150 flowers" in out


def test_digits_cnn_reaches_95_percent(monkeypatch, capsys):
    """The CNN on the real 8x8 digits: one compiled training step, above 95% test accuracy."""
    accuracy = run_main("digits_cnn", [], monkeypatch)
    assert accuracy > 0.95
    out = capsys.readouterr().out
    # compiles=0 when the disk cache already holds the step (a second run of the suite)
    assert "test accuracy" in out and re.search(r"compiles=[01], fallbacks=0", out), out
