"""tracejit.save / tracejit.load: safetensors files that round-trip tensors, state dicts and
optimizer state, read by the safetensors package (and torch), and rejected with a clear error
when truncated, corrupted, crafted or mismatched, leaving the model untouched."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import time
from collections import OrderedDict

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn, optim
from tracejit.serialization import SerializationError


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def snapshot(m: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in m.state_dict().items()}


def test_tensor_round_trip_every_dtype(tmp_path):
    values = [tj.randn(2, 3), tj.randn(4, dtype=tj.float64), tj.tensor([1.5, -2.0]).half(),
              tj.tensor([1, -2], dtype=tj.int32), tj.arange(5), tj.tensor([True, False]),
              tj.tensor(3.5), tj.zeros(0, 3)]
    for i, t in enumerate(values):
        path = tmp_path / f"t{i}.safetensors"
        tj.save(t, path)
        back = tj.load(path)
        assert back.dtype == t.dtype and back.shape == t.shape
        np.testing.assert_array_equal(back.numpy(), t.numpy())
        back.add_(1) if back.dtype != tj.bool else None  # loaded arrays are writable
    p = nn.Parameter(tj.ones(2))
    tj.save(p, tmp_path / "p.st")
    assert tj.load(tmp_path / "p.st").requires_grad


def test_state_dict_round_trip_and_file_layout(tmp_path):
    m = model()
    path = str(tmp_path / "m.safetensors")
    tj.save(m.state_dict(), path)
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert n % 8 == 0
    assert header["0.weight"] == {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48]}
    assert header["__metadata__"]["format"] == "pt"
    loaded = tj.load(path)
    assert list(loaded) == list(m.state_dict())
    m2 = model()
    m2.load_state_dict(loaded)
    for k, v in snapshot(m2).items():
        np.testing.assert_array_equal(v, snapshot(m)[k])


def test_file_readable_by_safetensors_numpy(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    m = model()
    path = str(tmp_path / "m.safetensors")
    tj.save(m.state_dict(), path)
    theirs = st.load_file(path)
    assert set(theirs) == set(m.state_dict())
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(theirs[k], v.numpy())
        assert theirs[k].dtype == np.float32


@pytest.mark.torch
def test_file_readable_by_torch_and_back(tmp_path):
    torch = pytest.importorskip("torch")
    stt = pytest.importorskip("safetensors.torch")
    m = model()
    path = str(tmp_path / "m.safetensors")
    tj.save(m.state_dict(), path)
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    tm.load_state_dict(stt.load_file(path))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(tm(torch.from_numpy(x)).detach().numpy(),
                               m(tj.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    # and a checkpoint written by torch loads into tracejit
    back = str(tmp_path / "torch.safetensors")
    stt.save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, back)
    m2 = model()
    m2.load_state_dict(tj.load(back))
    np.testing.assert_array_equal(m2[0].weight.detach().numpy(), tm[0].weight.detach().numpy())


def test_reads_plain_safetensors_files(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    path = str(tmp_path / "plain.safetensors")
    st.save_file({"b": np.arange(3, dtype=np.int64), "a": np.ones((2, 2), np.float64)}, path)
    out = tj.load(path)
    assert set(out) == {"a", "b"} and out["b"].dtype == tj.int64
    np.testing.assert_array_equal(out["a"].numpy(), np.ones((2, 2)))


def test_optimizer_state_dict_round_trip(tmp_path):
    m = model()
    opt = optim.Adam(m.parameters(), lr=0.01, amsgrad=True)
    x = tj.randn(6, 3)
    for _ in range(2):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    path = tmp_path / "opt.safetensors"
    tj.save({"model": m.state_dict(), "optim": opt.state_dict(), "epoch": 2}, path)
    ck = tj.load(path)
    assert ck["epoch"] == 2
    sd = ck["optim"]
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert sd["param_groups"][0]["foreach"] is None and sd["param_groups"][0]["amsgrad"] is True
    assert set(sd["state"]) == {0, 1, 2, 3} and sd["state"][0]["step"].item() == 2
    m2 = model()
    m2.load_state_dict(ck["model"])
    opt2 = optim.Adam(m2.parameters())
    opt2.load_state_dict(sd)
    for mm, oo in ((m, opt), (m2, opt2)):
        oo.zero_grad()
        mm(x).pow(2).mean().backward()
        oo.step()
    for k, v in snapshot(m2).items():
        np.testing.assert_array_equal(v, snapshot(m)[k])


def test_nested_python_values_and_streams():
    obj = {"a": [1, 2.5, None, True, "s", (tj.ones(1), float("inf"))], 3: {"nan": math.nan},
           "od": OrderedDict(z=1, a=2)}
    buf = io.BytesIO()
    tj.save(obj, buf)
    back = tj.load(io.BytesIO(buf.getvalue()))
    assert back["a"][:5] == [1, 2.5, None, True, "s"] and back["a"][5][1] == math.inf
    assert isinstance(back["a"][5], tuple) and back["a"][5][0].tolist() == [1.0]
    assert math.isnan(back[3]["nan"]) and list(back["od"]) == ["z", "a"]
    assert isinstance(back["od"], OrderedDict)
    with pytest.raises(TypeError, match="cannot store a object"):
        tj.save({"x": object()}, io.BytesIO())


# ---- rejected files ------------------------------------------------------------------------------


def good_bytes() -> bytes:
    buf = io.BytesIO()
    tj.save(model().state_dict(), buf)
    return buf.getvalue()


def with_header(header: dict, data: bytes) -> bytes:
    hb = json.dumps(header).encode()
    return struct.pack("<Q", len(hb)) + hb + data


def split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def crafted() -> list[tuple[str, bytes, str]]:
    raw = good_bytes()
    header, data = split(raw)
    (n,) = struct.unpack("<Q", raw[:8])
    cases = [
        ("empty", b"", "truncated"),
        ("length only part", raw[:5], "truncated"),
        ("header cut", raw[:8 + n // 2], "truncated"),
        ("data cut", raw[:-7], "truncated"),
        ("huge header length", struct.pack("<Q", 2**62) + raw[8:], "exceeds"),
        ("not json", struct.pack("<Q", 4) + b"\xff{x}" + data, "not valid UTF-8 JSON"),
        ("json list", with_header([], b""), "must be an object"),  # type: ignore[arg-type]
        ("trailing bytes", raw + b"junk", "not described by the header"),
    ]
    h = json.loads(json.dumps(header))
    h["0.weight"]["shape"] = [3, 3]
    cases.append(("wrong shape", with_header(h, data), "wrong shape"))
    h = json.loads(json.dumps(header))
    h["0.weight"]["dtype"] = "Q99"
    cases.append(("unknown dtype", with_header(h, data), "unknown dtype"))
    h = json.loads(json.dumps(header))
    h["0.bias"]["data_offsets"] = [0, 16]
    cases.append(("overlap", with_header(h, data), "data_offsets|overlapping"))
    h = json.loads(json.dumps(header))
    h["0.weight"]["shape"] = [-4, -3]
    cases.append(("negative shape", with_header(h, data), "invalid shape"))
    h = json.loads(json.dumps(header))
    h["2.bias"]["extra"] = 1
    cases.append(("extra field", with_header(h, data), "exactly dtype"))
    h = json.loads(json.dumps(header))
    h["__metadata__"]["tracejit.v1"] = json.dumps(["dict", [[["value", "w"],
                                                             ["tensor", "nope", False]]]])
    cases.append(("dangling reference", with_header(h, data), "lacks"))
    h = json.loads(json.dumps(header))
    h["__metadata__"]["tracejit.v1"] = json.dumps(["pickle", "cos\nsystem\n"])
    cases.append(("unknown node", with_header(h, data), "unknown node"))
    h = json.loads(json.dumps(header))
    h["__metadata__"]["tracejit.v1"] = "{"
    cases.append(("bad structure json", with_header(h, data), "corrupted structure"))
    bools = with_header({"b": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x07")
    cases.append(("bool bytes", bools, "BOOL data"))
    one = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    four = b"\0" * 4
    for label, field, value, message in [
        ("list dtype", "dtype", ["F32"], "unknown dtype"),  # was a TypeError (unhashable)
        ("int dtype", "dtype", 3, "unknown dtype"),
        ("bool in shape", "shape", [True], "invalid shape"),
        ("float in shape", "shape", [1.0], "invalid shape"),
        ("shape not a list", "shape", "1", "invalid shape"),
        ("rank 65", "shape", [1] * 65, "invalid shape"),
        ("dimension past int64", "shape", [2**63], "invalid shape"),
        ("offsets reversed", "data_offsets", [4, 0], "invalid data_offsets"),
        ("offsets past the file", "data_offsets", [0, 2**40], "truncated"),
        ("offset past uint64", "data_offsets", [0, 2**70], "digits"),
        ("three offsets", "data_offsets", [0, 2, 4], "invalid data_offsets"),
    ]:
        cases.append((label, with_header({"t": {**one, field: value}}, four), message))
    cases.append(("entry not an object", with_header({"t": [1]}, four), "exactly dtype"))
    cases.append(("metadata not an object", with_header({"__metadata__": 3}, b""),
                  "__metadata__ must map"))
    cases.append(("metadata value not a string",
                  with_header({"__metadata__": {"format": 1}}, b""), "__metadata__ must map"))
    deep = b"[" * 200_000 + b"]" * 200_000  # was a RecursionError
    cases.append(("deeply nested header", struct.pack("<Q", len(deep)) + deep, "not valid"))
    h = json.loads(json.dumps(header))
    h["__metadata__"]["tracejit.v1"] = "[" * 200_000 + "]" * 200_000
    cases.append(("deeply nested structure", with_header(h, data), "corrupted structure"))
    h = json.loads(json.dumps(header))
    nest: list = ["value", 1]
    for _ in range(300):
        nest = ["list", [nest]]
    h["__metadata__"]["tracejit.v1"] = json.dumps(nest)
    cases.append(("structure nested too deeply", with_header(h, data), "nested too deeply"))
    dup = (b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
           b'"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
    cases.append(("duplicated tensor", struct.pack("<Q", len(dup)) + dup + four, "duplicated"))
    dup = b'{"t": {"dtype": "F32", "shape": [1], "shape": [1], "data_offsets": [0, 4]}}'
    cases.append(("duplicated field", struct.pack("<Q", len(dup)) + dup + four, "duplicated"))
    return cases


@pytest.mark.parametrize("name,raw,message", crafted(), ids=[c[0] for c in crafted()])
def test_bad_files_raise_a_clear_error(tmp_path, name, raw, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(SerializationError, match=message) as e:
        tj.load(path)
    assert str(path) in str(e.value)


class _Boom:
    def __reduce__(self):
        return (open, (os.environ["TRACEJIT_BOOM"], "w"))


def test_a_pickle_is_never_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("TRACEJIT_BOOM", str(marker))
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(SerializationError):
        tj.load(path)
    assert not marker.exists()


def test_mismatched_checkpoint_leaves_the_model_untouched(tmp_path):
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    path = tmp_path / "other.safetensors"
    tj.save(other.state_dict(), path)
    m = model()
    before = snapshot(m)
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        m.load_state_dict(tj.load(path))
    for k, v in snapshot(m).items():
        np.testing.assert_array_equal(v, before[k])
    # a corrupted copy of a matching checkpoint fails in load(), before the model is touched
    good = tmp_path / "good.safetensors"
    tj.save(model().state_dict(), good)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(SerializationError, match="truncated"):
        m.load_state_dict(tj.load(cut))
    for k, v in snapshot(m).items():
        np.testing.assert_array_equal(v, before[k])


def _huge_shape_file() -> bytes:
    """A header whose shape holds thousands of 4000-digit integers: multiplying them out took
    minutes (and then failed to print the product) before the shape was bounded."""
    dims = ",".join(["9" * 4000] * 3000)
    hb = ('{"t": {"dtype": "F32", "shape": [' + dims + '], "data_offsets": [0, 4]}}').encode()
    return struct.pack("<Q", len(hb)) + hb + b"\0" * 4


def test_huge_integers_in_a_shape_are_rejected_quickly():
    raw = _huge_shape_file()
    t0 = time.perf_counter()
    with pytest.raises(SerializationError, match="digits"):
        tj.load(io.BytesIO(raw))
    assert time.perf_counter() - t0 < 0.5
    # a sane rank with huge (but int64) dimensions: the element count is never multiplied out
    hb = json.dumps({"t": {"dtype": "F32", "shape": [2**62] * 64,
                           "data_offsets": [0, 4]}}).encode()
    t0 = time.perf_counter()
    with pytest.raises(SerializationError, match="needs more than the whole file"):
        tj.load(io.BytesIO(struct.pack("<Q", len(hb)) + hb + b"\0" * 4))
    assert time.perf_counter() - t0 < 0.5


_JUNK = [None, True, -1, 0, 1, 2**31, 2**64, -(2**70), 1.5, float("inf"), "", "F32", "BOOL",
         [], [0], [-1], [2**63], [[1]], ["x"], [0, 4], [4, 0], [0, 2**80], {}, {"a": 1},
         [1] * 70]


def _mutants(raw: bytes, rng: np.random.Generator):
    """Truncations at every length, byte flips in and after the header, and JSON-level edits
    that put junk in each field of each entry."""
    for n in range(len(raw)):
        yield raw[:n]
    (hlen,) = struct.unpack("<Q", raw[:8])
    for _ in range(400):
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, min(len(b), 8 + hlen + 64)))
            b[i] = int(rng.integers(0, 256))
        yield bytes(b)
    header, data = split(raw)
    names = list(header)
    for _ in range(400):
        h = json.loads(json.dumps(header))
        name = names[int(rng.integers(len(names)))]
        if name == "__metadata__":
            key = rng.choice(["format", "tracejit.v1", "extra"])
            h[name][str(key)] = _JUNK[int(rng.integers(len(_JUNK)))] if rng.random() < 0.5 \
                else json.dumps(_JUNK[int(rng.integers(len(_JUNK)))])
        else:
            field = str(rng.choice(["dtype", "shape", "data_offsets", "extra"]))
            h[name][field] = _JUNK[int(rng.integers(len(_JUNK)))]
        try:
            yield with_header(h, data)
        except ValueError:  # json.dumps refuses nothing here, but keep the fuzz total
            continue


def test_fuzzed_files_load_or_raise_serialization_error():
    raw = good_bytes()
    rng = np.random.default_rng(1234)
    outcomes = {"ok": 0, "rejected": 0}
    t0 = time.perf_counter()
    for m in _mutants(raw, rng):
        t = time.perf_counter()
        try:
            tj.load(io.BytesIO(m))
            outcomes["ok"] += 1
        except SerializationError:
            outcomes["rejected"] += 1
        # anything else (TypeError, RecursionError, ValueError, MemoryError) fails the test
        assert time.perf_counter() - t < 1.0, m[:200]
    assert outcomes["rejected"] > 1000 and outcomes["ok"] >= 1, outcomes
    assert time.perf_counter() - t0 < 60
