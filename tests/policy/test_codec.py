from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rtvla.errors import CodecError
from rtvla.policy.codec import Packer, packb, unpackb

DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float16", "float32", "float64", ">f4", ">i8", "<U5", "S3", "datetime64[ns]", "timedelta64[ms]"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_array_round_trip_each_dtype(dtype):
    rng = np.random.default_rng(0)
    if dtype.startswith("<U"):
        arr = np.array([["ab", "cde"], ["", "wxyz"]], dtype=dtype)
    elif dtype.startswith("S"):
        arr = np.array([b"ab", b"xyz"], dtype=dtype)
    else:
        arr = (rng.standard_normal((3, 4)) * 100).astype(dtype)
    out = unpackb(packb({"a": arr}))["a"]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_wire_format_is_openpis_bytes_keyed_map():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = msgpack.unpackb(packb(arr), raw=False)
    assert raw == {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": "<f4", b"shape": [2, 3]}
    raw = msgpack.unpackb(packb(np.int64(7)), raw=False)
    assert raw == {b"__npgeneric__": True, b"data": 7, b"dtype": "<i8"}


def test_nested_dicts_strings_scalars_and_lists():
    obs = {
        "state": np.ones(14),
        "images": {"cam_high": np.zeros((3, 8, 8), np.uint8), "cam_low": np.full((3, 8, 8), 7, np.uint8)},
        "prompt": "fold the towel",
        "n": 3, "x": 1.5, "flag": True, "none": None, "blob": b"\x00\x01",
        "np_int": np.int32(-4), "np_bool": np.bool_(True), "np_f32": np.float32(0.25),
        "list": [1, "two", np.arange(3)],
    }
    out = unpackb(packb(obs))
    assert out["prompt"] == "fold the towel" and out["n"] == 3 and out["x"] == 1.5
    assert out["flag"] is True and out["none"] is None and out["blob"] == b"\x00\x01"
    assert out["np_int"] == np.int32(-4) and isinstance(out["np_int"], np.int32)
    assert isinstance(out["np_bool"], np.bool_) and isinstance(out["np_f32"], np.float32)
    np.testing.assert_array_equal(out["images"]["cam_low"], obs["images"]["cam_low"])
    np.testing.assert_array_equal(out["list"][2], np.arange(3))
    assert out["list"][:2] == [1, "two"]


def test_empty_zero_dim_and_non_contiguous_arrays():
    a = np.arange(12.0).reshape(3, 4)[:, ::2]  # a strided view
    for arr in (np.zeros((0, 7), np.float32), np.array(3.5), a):
        out = unpackb(packb(arr))
        assert out.shape == arr.shape
        np.testing.assert_array_equal(out, arr)


def test_decoded_arrays_are_read_only_views():
    out = unpackb(packb(np.zeros(4)))
    with pytest.raises(ValueError):
        out[0] = 1


def test_packer_reusable():
    p = Packer()
    assert unpackb(p.pack({"a": np.ones(2)}))["a"].tolist() == [1.0, 1.0]
    assert unpackb(p.pack({"b": 1}))["b"] == 1


@pytest.mark.parametrize("value", [
    np.array([object()], dtype=object), np.zeros(2, np.complex64), np.complex128(1j),
    np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), np.void(b"ab"),
])
def test_refused_dtypes_on_encode(value):
    with pytest.raises(CodecError, match="unsupported dtype"):
        packb({"x": value})


@pytest.mark.parametrize("dtype", ["|O", "<c8", "|V8", "[('a', '<f4')]"])
def test_refused_dtypes_on_decode(dtype):
    data = msgpack.packb({b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": dtype, b"shape": [1]})
    with pytest.raises(CodecError):
        unpackb(data)
    data = msgpack.packb({b"__npgeneric__": True, b"data": 0, b"dtype": dtype})
    with pytest.raises(CodecError):
        unpackb(data)


def test_string_keyed_array_map_refused():
    data = msgpack.packb({"x": {"__ndarray__": True, "data": b"\x00" * 4, "dtype": "<f4", "shape": [1]}})
    with pytest.raises(CodecError, match="string key '__ndarray__'"):
        unpackb(data)
    with pytest.raises(CodecError, match="__npgeneric__"):
        unpackb(msgpack.packb({"__npgeneric__": True, "data": 1, "dtype": "<i8"}))


@pytest.mark.parametrize("payload, match", [
    ({b"__ndarray__": True, b"data": b"\x00" * 7, b"dtype": "<f4", b"shape": [2]}, "7 data bytes"),
    ({b"__ndarray__": True, b"data": b"\x00" * 4, b"dtype": "<f4", b"shape": [-1]}, "shape"),
    ({b"__ndarray__": True, b"data": "text", b"dtype": "<f4", b"shape": [1]}, "data must be bytes"),
    ({b"__ndarray__": True, b"data": b"\x00" * 4, b"dtype": "nonsense", b"shape": [1]}, "not a numpy dtype"),
    ({b"__ndarray__": True, b"data": b"\x00" * 4, b"dtype": 5, b"shape": [1]}, "dtype must be a string"),
])
def test_malformed_arrays_name_the_field(payload, match):
    with pytest.raises(CodecError, match=match):
        unpackb(msgpack.packb(payload))


def test_malformed_messages_and_unencodable_values():
    with pytest.raises(CodecError, match="malformed msgpack"):
        unpackb(b"\xc1")
    with pytest.raises(CodecError, match="malformed msgpack"):
        unpackb(packb(1) + packb(2))
    with pytest.raises(CodecError, match="a message is bytes"):
        unpackb("text")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"cannot encode a builtins.set"):
        packb({"s": {1, 2}})


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int16, np.uint8, np.bool_]),
                  shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)))
def test_round_trip_property(arr):
    out = unpackb(packb({"k": [arr]}))["k"][0]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
