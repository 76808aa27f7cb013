"""Zenoh latest-value channel: the Channel contract between machines.

Each :class:`ZenohChannel` handle opens (or borrows) a Zenoh session, publishes on one key
expression and subscribes to it. Peers connect only to the endpoints they are given:
multicast and gossip scouting are off unless asked for, so a robot on a shared network does
not discover, or get discovered by, anything it was not configured to talk to.

Values are numpy arrays (any plain-data dtype and shape), ``bytes``, JSON-serializable
objects (dicts of detections, plans), or dicts and lists that hold numpy arrays among plain
values (a frame: ``{"image": uint8 HxWx3, "depth": float32 HxW, "stamp_ns": ...}``): the
arrays travel as raw bytes beside the JSON, never pickled. Each message carries the publisher's sequence number
and monotonic stamp; the stamp is comparable to the receiver's clock only on one machine.
On the reading side ``seq`` counts the samples this handle holds (its own publishes and the
ones received), so ``wait_newer`` works whatever the publisher; ``missed`` counts publisher
sequence numbers that never arrived (sent with congestion control DROP: latest value wins).

Usage (two machines, or two processes on 127.0.0.1)::

    robot = ZenohChannel("rtvla/robot/state", listen=["tcp/0.0.0.0:7447"])
    station = ZenohChannel("rtvla/robot/state", connect=["tcp/192.168.1.20:7447"])
    robot.wait_matched(5.0)            # a subscriber is reachable
    robot.publish(np.zeros(7))
    s = station.wait_newer(0, timeout=1.0)
"""

from __future__ import annotations

import json
import logging
import re
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rtvla.channels.base import Sample
from rtvla.errors import ChannelClosed, ChannelError
from rtvla.timing import MONOTONIC, Clock

__all__ = ["TLS_KEYS", "ZenohChannel", "check_endpoints", "zenoh_config"]

logger = logging.getLogger(__name__)

_MAGIC = b"RTV1"
_HEADER = struct.Struct("<4sBQqI")  # magic, kind, publisher seq, stamp_ns, meta length
_KIND_BYTES, _KIND_ARRAY, _KIND_JSON, _KIND_TREE = 0, 1, 2, 3
_ND = "__nd__"  # in a tree's JSON: {"__nd__": i} stands for its i-th array
_ENDPOINT = re.compile(r"^[a-z][a-z0-9+-]*/\S+$")
_MODES = ("peer", "client")
_WARN_EVERY = 1000  # decode errors: one warning, then one per this many


def _zenoh() -> Any:
    try:
        import zenoh
    except ImportError as exc:
        raise ChannelError("ZenohChannel needs eclipse-zenoh: pip install 'rtvla[zenoh]'") from exc
    return zenoh


def check_endpoints(field: str, endpoints: Sequence[str]) -> list[str]:
    """``endpoints`` if each looks like ``proto/address`` (``tcp/127.0.0.1:7447``); else ChannelError."""
    if isinstance(endpoints, str):
        raise ChannelError(f"zenoh {field} must be a list of endpoints, got the string {endpoints!r}")
    out = []
    for e in endpoints:
        if not isinstance(e, str) or not _ENDPOINT.match(e):
            raise ChannelError(f"zenoh {field} endpoint must look like 'tcp/127.0.0.1:7447', got {e!r}")
        out.append(e)
    return out


#: ``tls`` options of :func:`zenoh_config`: zenoh's ``transport/link/tls`` settings.
TLS_KEYS = ("root_ca_certificate", "listen_certificate", "listen_private_key", "connect_certificate",
            "connect_private_key", "enable_mtls", "verify_name_on_connect")


def zenoh_config(*, mode: str = "peer", listen: Sequence[str] = (), connect: Sequence[str] = (),
                 multicast_scouting: bool = False, gossip_scouting: bool = False,
                 tls: Mapping[str, Any] | None = None) -> Any:
    """A ``zenoh.Config`` that talks only to ``connect`` and accepts on ``listen``.

    TLS: use ``tls/<host>:<port>`` endpoints and give ``tls`` (file paths of PEM files)::

        zenoh_config(listen=["tls/0.0.0.0:7447"],
                     tls={"listen_certificate": "robot.pem", "listen_private_key": "robot.key",
                          "root_ca_certificate": "ca.pem", "enable_mtls": True})
    """
    if mode not in _MODES:
        raise ChannelError(f"zenoh mode must be one of {_MODES}, got {mode!r}")
    listen_l = check_endpoints("listen", listen)
    connect_l = check_endpoints("connect", connect)
    zenoh = _zenoh()
    conf = zenoh.Config()
    conf.insert_json5("mode", json.dumps(mode))
    conf.insert_json5("listen/endpoints", json.dumps(listen_l))
    conf.insert_json5("connect/endpoints", json.dumps(connect_l))
    conf.insert_json5("scouting/multicast/enabled", json.dumps(bool(multicast_scouting)))
    conf.insert_json5("scouting/gossip/enabled", json.dumps(bool(gossip_scouting)))
    for key, value in dict(tls or {}).items():
        if key not in TLS_KEYS:
            raise ChannelError(f"zenoh tls.{key}: unknown option; known: {', '.join(TLS_KEYS)}")
        conf.insert_json5(f"transport/link/tls/{key}", json.dumps(value))
    return conf


def _array_meta(value: np.ndarray) -> dict[str, Any]:
    if value.dtype.hasobject:
        raise ChannelError(f"cannot send an array of dtype {value.dtype} (holds Python objects)")
    return {"descr": np.lib.format.dtype_to_descr(value.dtype), "shape": list(value.shape)}


def _lift(value: Any, arrays: list[np.ndarray]) -> Any:
    """``value`` with every array replaced by a placeholder (appended to ``arrays``) and numpy
    scalars made plain, so that the rest is JSON."""
    if isinstance(value, np.ndarray):
        _array_meta(value)
        arrays.append(np.ascontiguousarray(value))
        return {_ND: len(arrays) - 1}
    if isinstance(value, dict):
        if _ND in value:
            raise ChannelError(f"cannot send a dict with the reserved key {_ND!r}")
        return {k: _lift(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lift(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _lower(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _ND in value:
            return arrays[int(value[_ND])]
        return {k: _lower(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower(v, arrays) for v in value]
    return value


def _encode_tree(tree: Any, arrays: list[np.ndarray], seq: int, stamp_ns: int) -> bytes:
    try:
        body_json = json.dumps(tree, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ChannelError(f"ZenohChannel sends numpy arrays, bytes or JSON-serializable values; "
                           f"cannot send {type(tree).__name__}: {exc}") from exc
    meta = json.dumps([_array_meta(a) for a in arrays]).encode()
    return b"".join([_HEADER.pack(_MAGIC, _KIND_TREE, seq, stamp_ns, len(meta)), meta,
                     *(a.tobytes() for a in arrays), body_json])


def _encode(value: Any, seq: int, stamp_ns: int) -> bytes:
    if isinstance(value, (dict, list, tuple)):
        arrays: list[np.ndarray] = []
        tree = _lift(value, arrays)
        if arrays:
            return _encode_tree(tree, arrays, seq, stamp_ns)
        value = tree
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise ChannelError(f"cannot send an array of dtype {value.dtype} (holds Python objects)")
        meta = json.dumps({"descr": np.lib.format.dtype_to_descr(value.dtype),
                           "shape": list(value.shape)}).encode()
        body = np.ascontiguousarray(value).tobytes()
        kind = _KIND_ARRAY
    elif isinstance(value, (bytes, bytearray, memoryview)):
        meta, body, kind = b"", bytes(value), _KIND_BYTES
    else:
        try:
            body = json.dumps(value, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ChannelError(f"ZenohChannel sends numpy arrays, bytes or JSON-serializable values; "
                               f"cannot send {type(value).__name__}: {exc}") from exc
        meta, kind = b"", _KIND_JSON
    return _HEADER.pack(_MAGIC, kind, seq, stamp_ns, len(meta)) + meta + body


def _decode(data: bytes) -> tuple[Any, int, int]:
    """Returns (value, publisher seq, stamp_ns); raises ValueError on a foreign payload."""
    if len(data) < _HEADER.size:
        raise ValueError(f"payload of {len(data)} B is shorter than the header")
    magic, kind, seq, stamp, meta_len = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError(f"payload magic {magic!r} is not {_MAGIC!r}")
    start = _HEADER.size + meta_len
    if kind == _KIND_ARRAY:
        meta = json.loads(data[_HEADER.size:start])
        dtype = np.lib.format.descr_to_dtype(meta["descr"])
        shape = tuple(int(d) for d in meta["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if len(data) - start != count * dtype.itemsize:
            raise ValueError(f"array body is {len(data) - start} B, expected {count * dtype.itemsize} B")
        value: Any = np.frombuffer(data, dtype, count, start).reshape(shape)  # read-only
    elif kind == _KIND_BYTES:
        value = data[start:]
    elif kind == _KIND_JSON:
        value = json.loads(data[start:])
    elif kind == _KIND_TREE:
        arrays = []
        offset = start
        for m in json.loads(data[_HEADER.size:start]):
            dtype = np.lib.format.descr_to_dtype(m["descr"])
            shape = tuple(int(d) for d in m["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            if offset + count * dtype.itemsize > len(data):
                raise ValueError(f"tree payload of {len(data)} B is cut short inside its arrays")
            arrays.append(np.frombuffer(data, dtype, count, offset).reshape(shape))  # read-only
            offset += count * dtype.itemsize
        value = _lower(json.loads(data[offset:]), arrays)
    else:
        raise ValueError(f"unknown payload kind {kind}")
    return value, seq, stamp


class ZenohChannel:
    """A latest-value channel over Zenoh, same contract as the in-process and shm channels.

    ``session`` lets several channels share one Zenoh session (then they do not close it);
    otherwise the channel opens its own from the endpoint arguments.
    """

    def __init__(self, key: str, *, listen: Sequence[str] = (), connect: Sequence[str] = (),
                 mode: str = "peer", multicast_scouting: bool = False, gossip_scouting: bool = False,
                 tls: Mapping[str, Any] | None = None, session: Any = None, express: bool = True,
                 clock: Clock = MONOTONIC) -> None:
        if not isinstance(key, str) or not key or any(c in key for c in "*$?#"):
            raise ChannelError(f"zenoh key must be a plain key expression like 'rtvla/camera', got {key!r}")
        zenoh = _zenoh()
        try:
            key_expr = zenoh.KeyExpr(key)
        except Exception as exc:  # zenoh raises its own ZError
            raise ChannelError(f"invalid zenoh key {key!r}: {exc}") from exc
        self.name = key
        self.clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._publish_lock = threading.Lock()
        self._sample: Sample[Any] | None = None
        self._seq = 0  # samples this handle holds
        self._pub_seq = 0  # this handle's own publishes
        self._last_remote_seq = 0
        self._closed = False
        self.received = 0
        self.missed = 0
        self.decode_errors = 0
        self.last_received_ns = 0
        self._owns_session = session is None
        if session is None:
            conf = zenoh_config(mode=mode, listen=listen, connect=connect,
                                multicast_scouting=multicast_scouting, gossip_scouting=gossip_scouting,
                                tls=tls)
            try:
                session = zenoh.open(conf)
            except Exception as exc:
                raise ChannelError(f"zenoh channel {key!r}: cannot open session "
                                   f"(listen={list(listen)}, connect={list(connect)}): {exc}") from exc
        self._session = session
        self._matched = threading.Event()
        try:
            self._pub = session.declare_publisher(
                key_expr, congestion_control=zenoh.CongestionControl.DROP, express=express,
                allowed_destination=zenoh.Locality.REMOTE)  # local readers get it directly
            self._matching = self._pub.declare_matching_listener(self._on_matching)
            if self._pub.matching_status.matching:
                self._matched.set()
            self._sub = session.declare_subscriber(key_expr, self._on_sample,
                                                   allowed_origin=zenoh.Locality.REMOTE)
        except Exception:
            if self._owns_session:
                session.close()
            raise

    # -- zenoh callbacks (zenoh's threads) --------------------------------------------------

    def _on_matching(self, status: Any) -> None:
        if status.matching:
            self._matched.set()
        else:
            self._matched.clear()

    def _on_sample(self, zsample: Any) -> None:
        now = self.clock.now_ns()
        try:
            value, pub_seq, stamp = _decode(zsample.payload.to_bytes())
        except (ValueError, KeyError, TypeError) as exc:
            self.decode_errors += 1
            if self.decode_errors % _WARN_EVERY == 1:
                logger.warning("zenoh channel %s: dropped undecodable payload (%s; %d so far)",
                               self.name, exc, self.decode_errors)
            return
        with self._cond:
            if self._closed:
                return
            if pub_seq > self._last_remote_seq + 1 and self._last_remote_seq:
                self.missed += pub_seq - self._last_remote_seq - 1
            self._last_remote_seq = pub_seq  # a restarted publisher starts again from 1
            self.received += 1
            self.last_received_ns = now
            self._seq += 1
            self._sample = Sample(value, stamp, self._seq)
            self._cond.notify_all()

    # -- contract ---------------------------------------------------------------------------

    def publish(self, value: Any) -> int:
        """Send ``value`` to every matching subscriber and hold it locally; returns the local seq."""
        stamp = self.clock.now_ns()
        with self._publish_lock:  # keeps sends in publisher-seq order; readers are not held up
            if self._closed:
                raise ChannelClosed(f"channel {self.name!r} is closed")
            payload = _encode(value, self._pub_seq + 1, stamp)
            self._pub_seq += 1
            self._pub.put(payload)
            with self._cond:
                self._seq += 1
                self._sample = Sample(value, stamp, self._seq)
                self._cond.notify_all()
                return self._seq

    def latest(self) -> Sample[Any] | None:
        return self._sample

    @property
    def seq(self) -> int:
        return self._seq

    def wait_newer(self, seq: int, timeout: float | None = None) -> Sample[Any] | None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self._seq > seq or self._closed, timeout)
            if not ok or self._sample is None or self._sample.seq <= seq:
                return None
            return self._sample

    def wait_matched(self, timeout: float | None = None) -> bool:
        """Block until a remote subscriber matches this key (False on timeout)."""
        return self._matched.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Undeclare, close the session if this channel opened it, wake waiters; idempotent."""
        with self._publish_lock, self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for entity in (self._matching, self._sub, self._pub):
            try:
                entity.undeclare()
            except Exception as exc:  # the session may already be closed by its owner
                logger.debug("zenoh channel %s: undeclare failed: %s", self.name, exc)
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> ZenohChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ZenohChannel({self.name!r}, seq={self._seq}, {'closed' if self._closed else 'open'})"
