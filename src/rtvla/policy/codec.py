"""openpi's msgpack-numpy wire format, written here (no openpi-client dependency).

The format of ``openpi_client.msgpack_numpy``: msgpack, with numpy arrays as maps whose keys
are *bytes*::

    {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": arr.shape}

and numpy scalars as ``{b"__npgeneric__": True, b"data": x.item(), b"dtype": x.dtype.str}``.
Void (structured), object and complex dtypes are refused both ways: object arrays are the
door through which msgpack-numpy falls back to pickle, and nothing here ever unpickles.

Where rtvla is stricter than openpi's decoder, and why:

* a map with *string* keys ``"__ndarray__"``/``"__npgeneric__"`` is refused; openpi's
  decoder would pass it on as a plain dict, which then fails somewhere downstream as "not
  an array" — the sender has a broken encoder, and the error here says so;
* the data length must equal ``prod(shape) * itemsize`` exactly (openpi accepts a longer
  buffer), and shape entries must be non-negative integers;
* every failure is a :class:`~rtvla.errors.CodecError` naming the field.

Decoded arrays are read-only views of the received bytes (no copy), as in openpi. Python
floats and numpy ``float64`` scalars (a ``float`` subclass) travel as msgpack floats.

Usage::

    data = packb({"observation/state": np.zeros(8, np.float32), "prompt": "pick"})
    obs = unpackb(data)
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

from rtvla.errors import CodecError

__all__ = ["REFUSED_KINDS", "Packer", "packb", "unpackb"]

#: numpy dtype kinds never encoded or decoded: void/structured, object, complex.
REFUSED_KINDS = frozenset("VOc")

_ND = b"__ndarray__"
_NG = b"__npgeneric__"


def _refuse(dtype: np.dtype[Any], what: str) -> None:
    if dtype.kind in REFUSED_KINDS or dtype.hasobject:
        raise CodecError(f"{what}: unsupported dtype {dtype} (kind {dtype.kind!r}); void, object "
                         "and complex dtypes are refused")


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _refuse(obj.dtype, "cannot encode array")
        return {_ND: True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        _refuse(obj.dtype, "cannot encode numpy scalar")
        return {_NG: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise CodecError(f"cannot encode a {type(obj).__module__}.{type(obj).__qualname__}; the wire "
                     "carries maps, lists, strings, bytes, numbers, booleans, None and numpy arrays")


def _dtype(raw: Any, what: str) -> np.dtype[Any]:
    if not isinstance(raw, (str, bytes)):
        raise CodecError(f"{what}: dtype must be a string such as '<f4', got {type(raw).__name__}")
    try:
        dt = np.dtype(raw.decode("ascii") if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"{what}: dtype {raw!r} is not a numpy dtype ({exc})") from None
    _refuse(dt, what)
    return dt


def _decode_array(obj: dict[Any, Any]) -> np.ndarray:
    dt = _dtype(obj.get(b"dtype"), "cannot decode array")
    shape = obj.get(b"shape")
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise CodecError(f"cannot decode array: shape must be a list of non-negative integers, got {shape!r}")
    data = obj.get(b"data")
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError(f"cannot decode array: data must be bytes, got {type(data).__name__}")
    expected = math.prod(shape) * dt.itemsize
    if len(data) != expected:
        raise CodecError(f"cannot decode array: {len(data)} data bytes for shape {tuple(shape)} of "
                         f"{dt} (expected {expected})")
    return np.frombuffer(data, dtype=dt).reshape(shape)


def _decode_generic(obj: dict[Any, Any]) -> Any:
    dt = _dtype(obj.get(b"dtype"), "cannot decode numpy scalar")
    if b"data" not in obj:
        raise CodecError("cannot decode numpy scalar: no data")
    try:
        return dt.type(obj[b"data"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot decode numpy scalar of {dt}: {exc}") from None


def _object_hook(obj: dict[Any, Any]) -> Any:
    if _ND in obj:
        return _decode_array(obj)
    if _NG in obj:
        return _decode_generic(obj)
    for key in ("__ndarray__", "__npgeneric__"):
        if key in obj:
            raise CodecError(f"a map with the string key {key!r}: openpi's format marks arrays with "
                             f"the bytes key b{key!r}; the sender's encoder is not openpi-compatible")
    return obj


def Packer() -> msgpack.Packer:
    """A reusable packer (cheaper than :func:`packb` per message); ``.pack(obj)`` may raise
    :class:`CodecError` from inside msgpack for an unsupported value."""
    return msgpack.Packer(default=_default)


def packb(obj: Any) -> bytes:
    """Encode ``obj``; :class:`CodecError` for values the format cannot carry."""
    try:
        return msgpack.packb(obj, default=_default)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode payload: {exc}") from None


def unpackb(data: bytes | bytearray | memoryview) -> Any:
    """Decode one message; :class:`CodecError` for malformed data or refused dtypes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"a message is bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_object_hook, raw=False)
    except CodecError:
        raise
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise CodecError(f"malformed msgpack message ({len(data)} bytes): "
                         f"{type(exc).__name__}: {exc}") from None
