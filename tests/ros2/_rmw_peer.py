"""A Zenoh peer that behaves like rmw_zenoh_cpp, written from its design document and source,
independently of ``rtvla.ros2`` (raw zenoh, struct and rosbags only), so that the tests check
rtvla against the format and not against itself.

Sources: ros2/rmw_zenoh ``docs/design.md`` at commit 99a6a2bd10b949052f4f12c5854825dc005e95a5
("Topic and Service name mapping", "Graph Cache", "Publishers"), and
``rmw_zenoh_cpp/src/detail/liveliness_utils.cpp`` (``Entity::make(keyexpr)``: at least 9
chunks, none empty, the ``@ros2_lv`` admin space, a known entity kind, 13 chunks and a
parseable QoS chunk for endpoints).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import zenoh
from rosbags.typesys import Stores, get_typestore

from rtvla.channels.zenoh_channel import zenoh_config

KINDS = {"NN", "MP", "MS", "SS", "SC"}
ATTACHMENT = struct.Struct("<qqB16s")  # seq, source timestamp, GID length (16), GID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_pair() -> tuple[Any, Any, int]:
    """Two zenoh peers on 127.0.0.1 (multicast scouting off): (listening, connecting, port)."""
    for _ in range(5):  # the port may be taken between probing and listening
        port = free_port()
        try:
            a = zenoh.open(zenoh_config(listen=[f"tcp/127.0.0.1:{port}"]))
        except Exception:
            continue
        b = zenoh.open(zenoh_config(connect=[f"tcp/127.0.0.1:{port}"]))
        return a, b, port
    raise RuntimeError("no free port for a zenoh peer")


def validate_token(key: str) -> dict[str, Any]:
    """The fields of a liveliness token, checked as rmw_zenoh's graph cache checks them."""
    parts = key.split("/")
    assert len(parts) >= 9, f"token with {len(parts)} chunks: {key}"
    assert all(parts), f"token with an empty chunk: {key}"
    assert parts[0] == "@ros2_lv", key
    assert parts[1].isdigit() and parts[3].isdigit() and parts[4].isdigit(), key
    assert parts[5] in KINDS, key
    out = {"domain": int(parts[1]), "zid": parts[2], "nid": parts[3], "id": parts[4], "kind": parts[5],
           "enclave": parts[6].replace("%", "/"), "namespace": parts[7].replace("%", "/"),
           "node": parts[8].replace("%", "/")}
    if parts[5] == "NN":
        assert len(parts) == 9, key
        return out
    assert len(parts) == 13, key
    qos = parts[12].split(":")
    assert len(qos) == 6, f"qos chunk {parts[12]!r}"
    assert len(qos[2].split(",")) == 2 and len(qos[3].split(",")) == 2, parts[12]
    assert len(qos[4].split(",")) == 2 and len(qos[5].split(",")) == 3, parts[12]
    for field in [qos[0], qos[1], *qos[2].split(","), *qos[3].split(","), *qos[4].split(","),
                  *qos[5].split(",")]:
        assert field == "" or field.isdigit(), parts[12]
    out.update(topic=parts[9].replace("%", "/"), type=parts[10], hash=parts[11], qos=parts[12])
    return out


def encode_attachment(seq: int, stamp_ns: int, gid: bytes, *, keyed: bool = False) -> bytes:
    if keyed:
        return (b"\x0fsequence_number" + struct.pack("<q", seq) + b"\x10source_timestamp"
                + struct.pack("<q", stamp_ns) + b"\x0asource_gid\x10" + gid)
    return ATTACHMENT.pack(seq, stamp_ns, 16, gid)


def decode_attachment(raw: bytes) -> tuple[int, int, bytes]:
    """The current 33-byte layout, or the keyed one of rmw_zenoh_cpp < 0.2.4 (each field after
    its name, strings and the GID with a one-byte length)."""
    if raw[:16] == b"\x0fsequence_number":
        out, pos = [], 0
        for name, size in ((b"sequence_number", 8), (b"source_timestamp", 8), (b"source_gid", None)):
            assert raw[pos] == len(name) and raw[pos + 1:pos + 1 + len(name)] == name, raw.hex()
            pos += 1 + len(name)
            if size is None:
                assert raw[pos] == 16
                size, pos = 16, pos + 1
            out.append(raw[pos:pos + size])
            pos += size
        assert pos == len(raw) == 77, raw.hex()
        return struct.unpack("<q", out[0])[0], struct.unpack("<q", out[1])[0], out[2]
    assert len(raw) == ATTACHMENT.size == 33, f"attachment of {len(raw)} B"
    seq, stamp, n, gid = ATTACHMENT.unpack(raw)
    assert n == 16
    return seq, stamp, gid


@dataclass
class Received:
    msg: Any
    seq: int
    stamp_ns: int
    gid: bytes
    attachment_size: int = 33


class Recording:
    """Samples on one exact key; a sample without a valid attachment is counted, not kept."""

    def __init__(self, peer: RmwPeer, key: str, ros_type: str) -> None:
        self.key, self.ros_type, self.peer = key, ros_type, peer
        self.samples: list[Received] = []
        self.rejected = 0
        self._cond = threading.Condition()
        self._sub = peer.session.declare_subscriber(key, self._on)

    def _on(self, sample: Any) -> None:
        if sample.attachment is None:
            with self._cond:
                self.rejected += 1
            return
        raw = sample.attachment.to_bytes()
        seq, stamp, gid = decode_attachment(raw)
        msg = self.peer.store.deserialize_cdr(sample.payload.to_bytes(), self.ros_type)
        with self._cond:
            self.samples.append(Received(msg, seq, stamp, gid, len(raw)))
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 20.0) -> list[Received]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.samples) >= n, timeout), (
                f"{self.key}: {len(self.samples)} of {n} samples")
            return list(self.samples)


class Publisher:
    def __init__(self, peer: RmwPeer, key: str, ros_type: str, token: str) -> None:
        self.peer, self.ros_type = peer, ros_type
        self._pub = peer.session.declare_publisher(key)
        self._matched = threading.Event()
        self._listener = self._pub.declare_matching_listener(
            lambda status: self._matched.set() if status.matching else self._matched.clear())
        if self._pub.matching_status.matching:
            self._matched.set()
        self.token = peer.session.liveliness().declare_token(token)
        self.gid = bytes(range(16))
        self.seq = 0

    def wait_matched(self, timeout: float = 20.0) -> bool:
        """Block until a subscriber on the key is reachable."""
        return self._matched.wait(timeout)

    def publish(self, msg: Any, *, attachment: bool = True, keyed: bool = False) -> None:
        self.seq += 1
        payload = bytes(self.peer.store.serialize_cdr(msg, self.ros_type, little_endian=True))
        att = encode_attachment(self.seq, time.time_ns(), self.gid, keyed=keyed) if attachment else None
        self._pub.put(payload, attachment=att)


class RmwPeer:
    """A ROS 2 node as rmw_zenoh would run it: node token, graph cache, endpoints with tokens."""

    def __init__(self, session: Any, node: str, *, domain: int = 0, store: Stores = Stores.ROS2_JAZZY) -> None:
        self.session, self.node, self.domain = session, node, domain
        self.store = get_typestore(store)
        self.zid = str(session.info.zid())
        self._next = 1
        self.node_token = session.liveliness().declare_token(f"@ros2_lv/{domain}/{self.zid}/0/0/NN/%/%/{node}")
        self._graph: set[str] = set()
        self._cond = threading.Condition()
        # rmw_zenoh: liveliness_get for the initial graph, then a subscriber for changes.
        self._lv_sub = session.liveliness().declare_subscriber(f"@ros2_lv/{domain}/**", self._on_token,
                                                                 history=True)
        for reply in session.liveliness().get(f"@ros2_lv/{domain}/**", timeout=5.0):
            if reply.ok is not None:
                self._add(str(reply.ok.key_expr))

    def _add(self, key: str) -> None:
        with self._cond:
            self._graph.add(key)
            self._cond.notify_all()

    def _on_token(self, sample: Any) -> None:
        key = str(sample.key_expr)
        if sample.kind == zenoh.SampleKind.PUT:
            self._add(key)
        else:
            with self._cond:
                self._graph.discard(key)
                self._cond.notify_all()

    def graph(self) -> list[str]:
        with self._cond:
            return sorted(self._graph)

    def wait_entity(self, timeout: float = 20.0, **want: Any) -> tuple[str, dict[str, Any]]:
        """The first token (validated) whose fields match ``want``."""
        found: list[tuple[str, dict[str, Any]]] = []

        def match() -> bool:
            for key in self._graph:
                fields = validate_token(key)
                if all(fields.get(k) == v for k, v in want.items()):
                    found.append((key, fields))
                    return True
            return False

        with self._cond:
            assert self._cond.wait_for(match, timeout), f"no token with {want}; graph: {sorted(self._graph)}"
        return found[0]

    def _token(self, kind: str, topic: str, dds_type: str, type_hash: str, qos: str = "::,10:,:,:,,") -> str:
        eid = self._next
        self._next += 1
        return (f"@ros2_lv/{self.domain}/{self.zid}/0/{eid}/{kind}/%/%/{self.node}/{topic.replace('/', '%')}/"
                f"{dds_type}/{type_hash}/{qos}")

    def record(self, topic: str, key: str, ros_type: str, dds_type: str, type_hash: str) -> Recording:
        rec = Recording(self, key, ros_type)
        rec.token = self.session.liveliness().declare_token(self._token("MS", topic, dds_type, type_hash))
        return rec

    def publisher(self, topic: str, key: str, ros_type: str, dds_type: str, type_hash: str) -> Publisher:
        return Publisher(self, key, ros_type, self._token("MP", topic, dds_type, type_hash))
