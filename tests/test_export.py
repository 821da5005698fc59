"""tracejit.export / load_exported (docs/export.md): round trips bitwise equal to the jitted
function (an MLP, `cond`, `fori_loop` and `scan`, a small GPT), a saved program run in a fresh
process that cannot import the model's module, the file read by the safetensors package, and
clear errors for what cannot be exported and for damaged, foreign or newer files.

Compiles are few: each model is exported once per module (fixtures), and the jitted function
and the loaded program compile the same graph, so they share one compiled driver."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.exporting import fileformat
from tracejit.exporting.graph_json import Decoder, Encoder
from tracejit.ir.printer import print_graph
from tracejit.ir.verify import verify

ROOT = Path(__file__).resolve().parent.parent


def _bits(t: Any) -> tuple[Any, ...]:
    a = t.detach().numpy()
    return a.dtype.str, a.shape, a.tobytes()


def _compiled(jf: Any, *args: Any) -> Any:
    """What the compiled program of `jf` returns for `args` (the first call of a new shape
    traces and runs eagerly; the second compiles and runs the program)."""
    with tj.no_grad():
        jf(*args)
        out = jf(*args)
    assert jf.cache_info().traces == 1 and jf.cache_info().hits >= 1
    return out


def _leaves(out: Any) -> list[Any]:
    if isinstance(out, dict):
        return [x for k in sorted(out) for x in _leaves(out[k])]
    if isinstance(out, (tuple, list)):
        return [x for o in out for x in _leaves(o)]
    return [out]


# ---- models ------------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: Any) -> Any:
        return self.fc2(tj.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tj.manual_seed(0)
    model = MLP().eval()
    x = tj.randn(5, 6)
    ex = tj.export(model, x)
    path = tmp_path_factory.mktemp("export") / "mlp.tjx"
    ex.save(path)
    return {"model": model, "x": x, "ex": ex, "path": path, "data": path.read_bytes(),
            "loaded": tj.load_exported(path), "jit": tj.jit(model)}


def loop_fn(x: Any, y: Any) -> Any:
    """fori_loop, scan and cond over the arguments; a dict, a tuple and None out."""
    z = tj.fori_loop(0, 3, lambda i, c: c * 0.5 + y.sum(), x)

    def step(c: Any, row: Any) -> Any:
        c = c + row
        return c, c * 2.0

    total, ys = tj.scan(step, tj.zeros(4), z)
    w = tj.cond(z.sum() > 0, lambda a: a + 1.0, lambda a: (a - 1.0).abs(), z)
    return w, {"ys": ys, "total": total, "none": None}


@pytest.fixture(scope="module")
def loops(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tj.manual_seed(1)
    x, y = tj.randn(5, 4), tj.randn(4)
    path = tmp_path_factory.mktemp("export") / "loops.tjx"
    tj.export(loop_fn, x, y).save(path)
    return {"x": x, "y": y, "loaded": tj.load_exported(path), "jit": tj.jit(loop_fn)}


# ---- round trips -------------------------------------------------------------------------------


def test_mlp_round_trip_is_bitwise_the_jitted_function(mlp: dict[str, Any]) -> None:
    want = _compiled(mlp["jit"], mlp["x"])
    assert _bits(mlp["loaded"](mlp["x"])) == _bits(want)
    assert _bits(mlp["ex"](mlp["x"])) == _bits(want)  # the Exported before saving, too
    x2 = tj.randn(5, 6) * 3  # other values, same shape: the compiled program of both
    with tj.no_grad():
        want2 = mlp["jit"](x2)
    assert _bits(mlp["loaded"](x2)) == _bits(want2)
    # and both are the model's own function (eager mode, to float32 rounding)
    with tj.no_grad():
        eager = mlp["model"](x2)
    np.testing.assert_allclose(mlp["loaded"](x2).numpy(), eager.numpy(), rtol=1e-5, atol=1e-6)


def test_strided_inputs_file_objects_and_jitted_functions(mlp: dict[str, Any]) -> None:
    xt = tj.randn(6, 5).t()  # a transposed view: not contiguous
    assert not xt.is_contiguous()
    with tj.no_grad():
        want = mlp["jit"](xt)
    assert _bits(mlp["loaded"](xt)) == _bits(want)
    buf = io.BytesIO()
    mlp["ex"].save(buf)
    assert buf.getvalue() == mlp["data"]  # saving is deterministic
    buf.seek(0)
    assert _bits(tj.load_exported(buf)(mlp["x"])) == _bits(mlp["loaded"](mlp["x"]))
    assert tj.export(mlp["jit"], mlp["x"]).ir() == mlp["ex"].ir()  # a JitFunction: its fn


def test_export_is_a_snapshot_of_the_weights(mlp: dict[str, Any]) -> None:
    ex = mlp["ex"]
    assert list(ex.weights) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    sd = mlp["model"].state_dict()
    for k, w in ex.weights.items():
        assert _bits(w) == _bits(sd[k])
        assert w.numpy() is not sd[k].numpy()  # copied at export


def test_specs_and_ir(mlp: dict[str, Any]) -> None:
    ex = mlp["ex"]
    (spec,) = ex.inputs
    assert (spec.name, spec.shape, spec.dtype) == ("x", (5, 6), tj.float32)
    out = ex.outputs
    assert (out.shape, out.dtype) == ((5, 3), tj.float32)
    text = ex.ir()
    assert text == mlp["loaded"].ir()  # the loaded graph prints as the exported one
    assert text.startswith("graph mlp(") and "matmul" in text and "relu" in text
    # the graph the jit compiles without autograd: its ir() starts with these very lines
    with tj.no_grad():
        jit_lines = mlp["jit"].ir(mlp["x"]).splitlines()
    assert jit_lines[:len(text.splitlines())] == text.splitlines()
    assert "mlp(x: f32[5,6])" in repr(ex) and "4 weights" in repr(ex)


def test_control_flow_round_trip(loops: dict[str, Any]) -> None:
    loaded, jf, y = loops["loaded"], loops["jit"], loops["y"]
    text = loaded.ir()
    assert "scan[" in text and "cond " in text and "then(" in text and "body(" in text
    for x in (loops["x"], -loops["x"].abs() - 10):  # both branches of the cond
        if x is loops["x"]:
            want = _compiled(jf, x, y)
        else:  # the other branch: the same compiled entry (it holds the cond), grad mode unchanged
            with tj.no_grad():
                want = jf(x, y)
        got = loaded(x, y)
        assert got[1]["none"] is None and sorted(got[1]) == ["none", "total", "ys"]
        assert [_bits(t) for t in _leaves(got) if t is not None] == \
            [_bits(t) for t in _leaves(want) if t is not None]


def test_small_gpt_round_trip(tmp_path: Path) -> None:
    from tracejit.benchmarks import gpt_model

    cfg = gpt_model.GPTConfig(vocab_size=17, block_size=8, n_layer=1, n_head=2, n_embd=16)
    model = gpt_model.build(tj, cfg, seed=0).eval()
    idx, targets = tj.randint(0, 17, (2, 8)), tj.randint(0, 17, (2, 8))
    tj.export(model, idx, targets).save(tmp_path / "gpt.tjx")
    loaded = tj.load_exported(tmp_path / "gpt.tjx")
    assert [s.dtype for s in loaded.inputs] == [tj.int64, tj.int64]
    # the tied embedding is one weight, under its state-dict name
    assert "transformer.wte.weight" in loaded.weights and "lm_head.weight" not in loaded.weights
    logits, loss = loaded(idx, targets)
    want = _compiled(tj.jit(model), idx, targets)
    assert (_bits(logits), _bits(loss)) == (_bits(want[0]), _bits(want[1]))
    assert logits.shape == (2, 8, 17) and loss.shape == ()


def test_outputs_that_are_inputs_weights_and_constants() -> None:
    w = tj.randn(3)

    def f(x: Any) -> Any:
        return x, w, (x * w).sum(), 3, "label"

    x = tj.randn(3)
    ex = tj.export(f, x)
    out = ex(x)
    assert out[0] is x and _bits(out[1]) == _bits(w) and out[3:] == (3, "label")
    spec = ex.outputs
    assert spec[0] == ex.inputs[0] and spec[1].name == "w" and spec[3:] == (3, "label")


def test_named_tuple_outputs_keep_their_fields(tmp_path: Path) -> None:
    x = tj.tensor([3.0, 1.0, 2.0])
    tj.export(lambda x: tj.sort(x), x).save(tmp_path / "sort.tjx")
    out = tj.load_exported(tmp_path / "sort.tjx")(x)
    assert type(out).__name__ == "sort" and out._fields == ("values", "indices")
    assert out.values.tolist() == [1.0, 2.0, 3.0] and out.indices.tolist() == [1, 2, 0]


def test_file_is_valid_safetensors(mlp: dict[str, Any]) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tensors = load_file(str(mlp["path"]))
    sd = mlp["model"].state_dict()
    assert set(tensors) == set(sd)  # this graph has no constants
    for k, a in tensors.items():
        assert a.dtype == np.float32 and a.tobytes() == sd[k].numpy().tobytes()
    with safe_open(str(mlp["path"]), framework="numpy") as f:
        meta = f.metadata()
    assert meta[fileformat.META_VERSION] == "1.0"
    graph = json.loads(meta[fileformat.META_GRAPH])
    assert graph["format"] == "tracejit.export" and graph["device"] == "cpu"
    ops = [n["op"] for n in graph["graph"]["nodes"]]
    assert ops.count("matmul") == 2 and "fused" in ops


def test_constants_are_stored_as_tensors(tmp_path: Path) -> None:
    def f(x: Any) -> Any:
        return x * tj.tensor([1.0, -0.0, float("inf"), float("nan")]) + 2.0

    x = tj.ones(4)
    tj.export(f, x).save(tmp_path / "c.tjx")
    from safetensors.numpy import load_file

    (name,) = load_file(str(tmp_path / "c.tjx"))
    assert name.startswith("__constant__.")
    got = tj.load_exported(tmp_path / "c.tjx")(x).numpy()
    assert got.tobytes() == (np.ones(4, np.float32) * np.array([1, -0.0, np.inf, np.nan],
                                                                 np.float32) + 2).tobytes()


# ---- a fresh process, without the model's source ------------------------------------------------

MODEL_SOURCE = '''
import tracejit as tj
from tracejit import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        h = tj.tanh(self.fc1(x))
        return {"logits": self.fc2(h), "norm": (h * h).sum(-1)}
'''

CHILD = '''
import importlib.util, sys
import numpy as np
import tracejit as tj
ex = tj.load_exported(sys.argv[1])
out = ex(tj.from_numpy(np.load(sys.argv[2])))
assert "tinynet_for_export" not in sys.modules, "the model's module was imported"
assert importlib.util.find_spec("tinynet_for_export") is None, "the model's module is reachable"
np.save(sys.argv[3], out["logits"].numpy())
np.save(sys.argv[4], out["norm"].numpy())
'''


def test_loads_in_a_fresh_process_without_the_model_module(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "tinynet_for_export.py").write_text(textwrap.dedent(MODEL_SOURCE))
    sys.path.insert(0, str(models))
    try:
        import tinynet_for_export  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(models))
    tj.manual_seed(5)
    net = tinynet_for_export.TinyNet().eval()
    x = tj.randn(4, 6)
    # one BLAS in both processes (the default picks per shape by timing)
    with tj.flags(blas="numpy"):
        tj.export(net, x).save(tmp_path / "net.tjx")
        want = _compiled(tj.jit(net), x)
    np.save(tmp_path / "x.npy", x.numpy())
    run = tmp_path / "run"
    run.mkdir()  # its working directory: neither the model's folder nor its parent
    env = dict(os.environ, TRACEJIT_BLAS="numpy",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    files = [str(tmp_path / n) for n in ("net.tjx", "x.npy", "logits.npy", "norm.npy")]
    r = subprocess.run([sys.executable, "-c", CHILD, *files], cwd=run, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.load(files[2]).tobytes() == want["logits"].numpy().tobytes()
    assert np.load(files[3]).tobytes() == want["norm"].numpy().tobytes()


# ---- the codec on its own: every golden program, no compile --------------------------------------


def test_codec_round_trips_the_golden_programs() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from golden.programs import PROGRAMS
    finally:
        sys.path.remove(str(ROOT / "tests"))
    for name, build in PROGRAMS.items():
        jf, args = build()
        g = jf._entry_for(args, {}).graph  # (the seed's step: effects; cond, while: regions)
        enc = Encoder("cpu")
        text = json.dumps(enc.graph(g), allow_nan=False)
        arrays = {k: np.array(a, copy=True) for k, a in enc.arrays.items()}
        back = verify(Decoder(arrays, "cpu", name).graph(json.loads(text)))
        assert print_graph(back) == print_graph(g), name


# ---- what cannot be exported -------------------------------------------------------------------


def _refused(fn: Any, *args: Any) -> str:
    with pytest.raises(tj.ExportError) as e:
        tj.export(fn, *args)
    return str(e.value)


def test_refuses_graph_breaks() -> None:
    def f(x: Any) -> Any:
        return x * float(x.sum())

    msg = _refused(f, tj.randn(3))
    assert "graph break" in msg and "test_export.py" in msg


def test_refuses_python_branches_on_tensors() -> None:
    def f(x: Any) -> Any:
        return x * 2 if x.sum() > 0 else x

    msg = _refused(f, tj.randn(3))
    assert "tracejit.cond" in msg and "only the path" in msg and "test_export.py" in msg


def test_refuses_in_place_writes() -> None:
    def f(x: Any) -> Any:
        x.mul_(2)
        return x + 1

    assert "writes in place into argument x" in _refused(f, tj.randn(3))

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("calls", tj.zeros(()))

        def forward(self, x: Any) -> Any:
            self.calls.add_(1)
            return x * 2

    msg = _refused(Counting(), tj.randn(3))
    assert "writes in place into the tensor calls" in msg and "eval()" in msg


def test_refuses_a_training_step() -> None:
    model = nn.Linear(3, 1)
    opt = tj.optim.SGD(model.parameters(), lr=0.1)

    def step(x: Any) -> Any:
        opt.zero_grad()
        loss = model(x).sum()
        loss.backward()
        opt.step()
        return loss

    before = model.weight.detach().clone()
    assert "writes in place into the tensor model.weight" in _refused(step, tj.randn(4, 3))
    assert _bits(model.weight) == _bits(before)  # the trace's update was undone


def test_refuses_random_draws_in_training_mode_but_exports_eval() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    assert "random numbers" in _refused(model.train(), tj.randn(2, 3))
    x = tj.randn(2, 3)
    with tj.no_grad():
        assert _bits(tj.export(model.eval(), x)(x)) == _bits(model(x))


def test_refuses_bad_example_arguments() -> None:
    x = tj.randn(3)
    assert "argument 1 (k)" in _refused(lambda x, k: x * k, x, 2.0)
    assert "same tensor" in _refused(lambda a, b: a + b, x, x)
    assert "is a list" in _refused(lambda xs: xs[0], [x])


def test_refuses_tensors_stored_into_python_state() -> None:
    seen: list[Any] = []

    def f(x: Any) -> Any:
        y = x * 2
        seen.append(y)
        return y + 1

    assert "Python state" in _refused(f, tj.randn(3))


# ---- calling with other inputs -----------------------------------------------------------------


def test_wrong_inputs_name_the_argument(mlp: dict[str, Any]) -> None:
    loaded = mlp["loaded"]
    with pytest.raises(tj.ops.registry.ShapeError, match=r"argument 0 \(x\) must have shape "
                       r"\[5, 6\] as exported, got \[4, 6\]"):
        loaded(tj.randn(4, 6))
    with pytest.raises(tj.ops.registry.DTypeError, match=r"must be float32, got float64"):
        loaded(tj.randn(5, 6, dtype=tj.float64))
    with pytest.raises(TypeError, match=r"takes 1 positional tensor argument\(s\) \(x\), got 2"):
        loaded(mlp["x"], mlp["x"])
    with pytest.raises(TypeError, match=r"must be a tensor, got a ndarray"):
        loaded(np.ones((5, 6), np.float32))


# ---- damaged, foreign and newer files ----------------------------------------------------------


def _load_bytes(tmp_path: Path, data: bytes) -> str:
    p = tmp_path / "bad.tjx"
    p.write_bytes(data)
    with pytest.raises(tj.ExportError) as e:
        tj.load_exported(p)
    return str(e.value)


def _repacked(data: bytes, edit: Any = None, version: str = "1.0") -> bytes:
    """The file rewritten with its graph JSON edited and a checksum that matches: a file a
    checksum cannot reject, for the checks behind it."""
    text, tensors, _ = fileformat.unpack(data, "<test>")
    if edit is not None:
        text = edit(text)
    return fileformat.pack(text, list(tensors.items()), version=version)


def _header(data: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _with_header(header: dict[str, Any], body: bytes) -> bytes:
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb + body


def test_tampered_files_are_rejected(mlp: dict[str, Any], tmp_path: Path) -> None:
    data = mlp["data"]
    flipped = data[:-1] + bytes([data[-1] ^ 1])  # one bit of the last weight
    assert "checksum mismatch" in _load_bytes(tmp_path, flipped)
    header, body = _header(data)
    meta = header["__metadata__"]
    text = meta[fileformat.META_GRAPH]
    meta[fileformat.META_GRAPH] = text.replace('"op":"relu"', '"op":"sigmoid"')
    assert meta[fileformat.META_GRAPH] != text
    assert "checksum mismatch" in _load_bytes(tmp_path, _with_header(header, body))
    header, body = _header(data)
    header["fc1.weight"]["shape"] = [6, 16]  # the same bytes read as another shape
    assert "checksum mismatch" in _load_bytes(tmp_path, _with_header(header, body))


def test_truncated_files_are_rejected(mlp: dict[str, Any], tmp_path: Path) -> None:
    data = mlp["data"]
    for cut in (len(data) - 1, len(data) - 40, 100, 5):
        msg = _load_bytes(tmp_path, data[:cut])
        assert "truncated" in msg, (cut, msg)


def test_newer_major_version_is_refused_newer_minor_loads(mlp: dict[str, Any],
                                                           tmp_path: Path) -> None:
    msg = _load_bytes(tmp_path, _repacked(mlp["data"], version="2.0"))
    assert "newer tracejit" in msg and "format 2.0" in msg

    def add_field(t: str) -> str:  # what a later minor version might add
        d = json.loads(t)
        d["graph"]["nodes"][0]["hint"] = "vectorise"
        d["graph"]["lifted"][0]["layout"] = "row-major"
        return json.dumps(d)

    p = tmp_path / "minor.tjx"
    p.write_bytes(_repacked(mlp["data"], add_field, version="1.7"))
    assert _bits(tj.load_exported(p)(mlp["x"])) == _bits(mlp["loaded"](mlp["x"]))
    # in a file of this very version, an unknown field is an error
    assert "(unknown layout)" in _load_bytes(tmp_path, _repacked(mlp["data"], add_field))


def test_unknown_op_bad_json_and_bad_graphs(mlp: dict[str, Any], tmp_path: Path) -> None:
    data = mlp["data"]
    msg = _load_bytes(tmp_path, _repacked(data, lambda t: t.replace('"op":"matmul"',
                                                                    '"op":"frobnicate"', 1)))
    assert "'frobnicate'" in msg and "does not have" in msg
    msg = _load_bytes(tmp_path, _repacked(data, lambda t: t[:-7]))
    assert "not valid JSON" in msg

    def reshape_matmul(t: str) -> str:
        d = json.loads(t)
        node = next(n for n in d["graph"]["nodes"] if n["op"] == "matmul")
        node["outputs"][0]["shape"] = [9, 9]
        return json.dumps(d)

    assert "does not verify" in _load_bytes(tmp_path, _repacked(data, reshape_matmul))

    def drop_weight(t: str) -> str:
        d = json.loads(t)
        d["lifted"][0] = "no.such.weight"
        return json.dumps(d)

    assert "'no.such.weight'" in _load_bytes(tmp_path, _repacked(data, drop_weight))


def test_foreign_files_are_rejected(tmp_path: Path) -> None:
    p = tmp_path / "ckpt.safetensors"
    tj.save({"w": tj.ones(2)}, p)
    assert "tracejit.load" in _load_bytes(tmp_path, p.read_bytes())
    assert "not a safetensors file" in _load_bytes(tmp_path, b"not a tracejit file at all")


def test_device_field_and_cuda(mlp: dict[str, Any]) -> None:
    with pytest.raises(tj.ExportError, match="CUDA backend"):
        tj.load_exported(mlp["path"], device="cuda")
    assert mlp["loaded"].device == "cpu"


def test_nothing_in_a_file_reaches_generated_source_as_code(mlp: dict[str, Any],
                                                            tmp_path: Path) -> None:
    """Locations are comments there and attribute strings may be spliced into calls: a file
    whose checksum matches still cannot smuggle a statement in."""
    def new_line_loc(t: str) -> str:
        d = json.loads(t)
        d["graph"]["nodes"][0]["loc"] = "x.py:1\nimport os; os.system('exit 1')"
        return json.dumps(d)

    assert "one printable line" in _load_bytes(tmp_path, _repacked(mlp["data"], new_line_loc))

    def string_attr(t: str) -> str:
        d = json.loads(t)
        d["graph"]["nodes"][0]["attrs"]["dims"] = "1), __import__('os').system('exit 1'), (0"
        return json.dumps(d)

    assert "characters other than" in _load_bytes(tmp_path, _repacked(mlp["data"], string_attr))


def test_a_graph_without_compiled_form_runs_in_the_interpreter(tmp_path: Path) -> None:
    def f(x: Any) -> Any:
        return (x * 3).softmax(-1)

    x = tj.randn(2, 5).half()  # float16: @jit runs it eagerly, the export interprets it
    tj.export(f, x).save(tmp_path / "h.tjx")
    with pytest.warns(RuntimeWarning, match="no compiled form"):
        loaded = tj.load_exported(tmp_path / "h.tjx")  # (it compiles as it loads)
    assert _bits(loaded(x)) == _bits(f(x))
