"""The two shared-memory channels between a policy process and its users.

* **requests** (``uint8``): a little-endian length word, then the msgpack (openpi codec) of
  ``{"tick", "stamp_ns", "observation"}``. Latest-value semantics fit: when the policy is
  busy, only the newest observation matters. A request's channel sequence number is its
  request id.
* **chunks** (``float64``): 8 int64 header words (request id, tick, request stamp, publish
  stamp, inference ns, status, horizon, action dim; written through an int64 view, so stamps
  stay exact) followed by the ``[H, A]`` actions. :class:`ChunkReader` reads them in any
  process that attaches from the channel's spec; :class:`RequestWriter` writes requests.

``spec_to_wire``/``spec_from_wire`` carry a :class:`~rtvla.channels.shm.ShmSpec` as plain
msgpack-able data (the policy process's control pipe carries msgpack, never pickle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtvla.channels.shm import SharedArrayChannel, ShmSpec
from rtvla.errors import PolicyError
from rtvla.policy import codec
from rtvla.policy.base import PolicyMetadata
from rtvla.timing import MONOTONIC, Clock

__all__ = [
    "LEN_BYTES",
    "STATUS_ERROR",
    "STATUS_OK",
    "ChunkLayout",
    "ChunkReader",
    "PolicyChunk",
    "RequestWriter",
    "decode_request",
    "encode_request",
    "request_room",
    "spec_from_wire",
    "spec_to_wire",
]

_HEADER_WORDS = 8
STATUS_OK = 0
STATUS_ERROR = 1
LEN_BYTES = 8


@dataclass(frozen=True)
class PolicyChunk:
    """One answer from a policy process. ``actions`` is None when the inference failed."""

    request_id: int
    tick: int  # the control tick the request was stamped with
    request_ns: int  # the monotonic time the request was stamped with
    done_ns: int  # when the chunk was published
    infer_ns: int
    actions: np.ndarray | None  # [H, A] float64, validated

    @property
    def ok(self) -> bool:
        return self.actions is not None

    @property
    def latency_s(self) -> float:
        """Request stamp to publish: what the scheduler must cover."""
        return (self.done_ns - self.request_ns) / 1e9


@dataclass(frozen=True)
class ChunkLayout:
    """The chunk channel's array: ``[8 int64 header words | H * A float64 actions]``."""

    horizon: int
    action_dim: int

    @property
    def size(self) -> int:
        return _HEADER_WORDS + self.horizon * self.action_dim

    def pack(self, out: np.ndarray, *, request_id: int, tick: int, request_ns: int, done_ns: int,
             infer_ns: int, actions: np.ndarray | None) -> np.ndarray:
        header = out[:_HEADER_WORDS].view(np.int64)
        header[:] = (request_id, tick, request_ns, done_ns, infer_ns,
                     STATUS_OK if actions is not None else STATUS_ERROR, self.horizon, self.action_dim)
        body = out[_HEADER_WORDS:]
        if actions is None:
            body[:] = np.nan
        else:
            body[:] = actions.reshape(-1)
        return out

    def unpack(self, arr: np.ndarray) -> PolicyChunk:
        header = arr[:_HEADER_WORDS].view(np.int64)
        rid, tick, req_ns, done_ns, infer_ns, status, h, a = (int(v) for v in header)
        if (h, a) != (self.horizon, self.action_dim):
            raise PolicyError(f"chunk layout mismatch: header says {h}x{a}, reader expects "
                              f"{self.horizon}x{self.action_dim}")
        actions = arr[_HEADER_WORDS:].reshape(h, a).copy() if status == STATUS_OK else None
        return PolicyChunk(rid, tick, req_ns, done_ns, infer_ns, actions)


class ChunkReader:
    """Reads chunks from a chunk channel in any process (attach from its spec)."""

    def __init__(self, spec: ShmSpec, horizon: int, action_dim: int) -> None:
        self.layout = ChunkLayout(horizon, action_dim)
        if spec.shape != (self.layout.size,):
            raise PolicyError(f"chunk channel {spec.name!r} has shape {spec.shape}, expected ({self.layout.size},)")
        self.channel = SharedArrayChannel.attach(spec)
        self.seq = 0

    def latest(self) -> PolicyChunk | None:
        s = self.channel.latest()
        return None if s is None else self.layout.unpack(s.value)

    def wait_newer(self, timeout: float | None = None) -> PolicyChunk | None:
        """The next chunk published after the last one this reader returned (None on timeout)."""
        s = self.channel.wait_newer(self.seq, timeout)
        if s is None:
            return None
        self.seq = s.seq
        return self.layout.unpack(s.value)

    def close(self) -> None:
        self.channel.close()


def encode_request(buf: np.ndarray, tick: int, stamp_ns: int, observation: Mapping[str, Any]) -> np.ndarray:
    data = codec.packb({"tick": int(tick), "stamp_ns": int(stamp_ns), "observation": dict(observation)})
    room = buf.size - LEN_BYTES
    if len(data) > room:
        raise PolicyError(f"observation of {len(data)} bytes does not fit the request channel "
                          f"({room} bytes); raise max_request_bytes")
    buf[:LEN_BYTES].view(np.uint64)[0] = len(data)
    buf[LEN_BYTES:LEN_BYTES + len(data)] = np.frombuffer(data, np.uint8)
    return buf


def decode_request(arr: np.ndarray) -> dict[str, Any]:
    n = int(arr[:LEN_BYTES].view(np.uint64)[0])
    if n > arr.size - LEN_BYTES:
        raise PolicyError(f"request length word {n} exceeds the channel")
    # One copy of the payload only (the arrays decoded from it are views of these bytes).
    req = codec.unpackb(arr[LEN_BYTES:LEN_BYTES + n].tobytes())
    if not isinstance(req, dict) or "observation" not in req:
        raise PolicyError("malformed request: no observation")
    return req


class RequestWriter:
    """Publishes requests into a policy process's request channel (any one process)."""

    def __init__(self, spec: ShmSpec, *, clock: Clock = MONOTONIC) -> None:
        self.channel = SharedArrayChannel.attach(spec)
        self.clock = clock
        self._buf = np.zeros(spec.shape, np.uint8)

    def request(self, observation: Mapping[str, Any], *, tick: int = 0, stamp_ns: int | None = None) -> int:
        stamp = self.clock.now_ns() if stamp_ns is None else stamp_ns
        return self.channel.publish(encode_request(self._buf, tick, stamp, observation))

    def close(self) -> None:
        self.channel.close()


def request_room(meta: PolicyMetadata) -> int:
    """Twice the declared observation's bytes plus 64 KiB (prompt, RTC fields, msgpack
    framing); 4 MiB when the policy declares no shapes. Every publish copies the whole
    channel, so it is sized to the observation rather than generously."""
    sized = [s for s in meta.observation if s.dtype != "str"]
    if not sized or any(not s.shape for s in sized):
        return 4 << 20
    return 2 * sum(int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize for s in sized) + 65536


def spec_to_wire(spec: ShmSpec) -> dict[str, Any]:
    return {"name": spec.name, "segment": spec.segment, "shape": list(spec.shape),
            "dtype": spec.dtype.str, "slots": spec.slots}


def spec_from_wire(d: Mapping[str, Any]) -> ShmSpec:
    return ShmSpec(str(d["name"]), str(d["segment"]), tuple(int(x) for x in d["shape"]),
                   np.dtype(str(d["dtype"])), int(d["slots"]))
