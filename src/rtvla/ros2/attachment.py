"""The attachment rmw_zenoh puts on every sample: sequence number, source timestamp, GID.

rmw_zenoh (``docs/design.md``, "Publishers"; ``AttachmentData::serialize_to_zbytes`` in
``rmw_zenoh_cpp/src/detail/attachment_helpers.cpp``) writes it with Zenoh's ext serializer::

    int64 sequence number (little-endian) | int64 source timestamp, ns since the UNIX epoch
    | LEB128 length of the GID (always 16, one byte) | 16 GID bytes        = 33 bytes

Releases before that layout (ros-jazzy-rmw-zenoh-cpp up to 0.2.3; changed by
ros2/rmw_zenoh#601 for #600) wrote each field after its name as a string: ``"sequence_number"``,
int64, ``"source_timestamp"``, int64, ``"source_gid"``, 16 bytes (:data:`KEYED`, 77 bytes).
:meth:`Attachment.decode` reads both; :meth:`Attachment.encode` writes the current layout unless
asked for the keyed one. Both go through ``zenoh.ext.z_serialize``/``z_deserialize``, the same
serializer, rather than by hand. The GID identifies the publisher; rmw_zenoh derives it from
the entity's liveliness token (XXH3-128); receivers treat it as opaque, so rtvla derives it
from the token too, with BLAKE2b-128 (hashlib), which needs no extra dependency.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from rtvla.errors import Ros2Error

__all__ = ["ATTACHMENT_SIZE", "GID_SIZE", "KEYED", "POSITIONAL", "Attachment", "AttachmentLayout", "gid_for"]

GID_SIZE = 16
ATTACHMENT_SIZE = 8 + 8 + 1 + GID_SIZE

AttachmentLayout = Literal["positional", "keyed"]
POSITIONAL: AttachmentLayout = "positional"  # rmw_zenoh_cpp >= 0.2.4 (Jazzy), rolling since 2025-04
KEYED: AttachmentLayout = "keyed"  # older releases
_KEYS = ("sequence_number", "source_timestamp", "source_gid")
_KEYED_PREFIX = bytes([len(_KEYS[0])]) + _KEYS[0].encode()


def _ext() -> Any:
    try:
        import zenoh.ext
    except ImportError as exc:
        raise Ros2Error("rtvla.ros2 needs eclipse-zenoh: pip install 'rtvla[zenoh]'") from exc
    return zenoh.ext


def gid_for(token: str) -> bytes:
    """A 16-byte GID derived from an entity's liveliness token (stable for one entity)."""
    return hashlib.blake2b(token.encode(), digest_size=GID_SIZE).digest()


@dataclass(frozen=True)
class Attachment:
    """One sample's rmw_zenoh attachment."""

    sequence_number: int
    source_timestamp_ns: int
    gid: bytes

    def __post_init__(self) -> None:
        for name in ("sequence_number", "source_timestamp_ns"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
                raise Ros2Error(f"attachment.{name} must be an int64, got {v!r}")
        if not isinstance(self.gid, (bytes, bytearray)) or len(self.gid) != GID_SIZE:
            raise Ros2Error(f"attachment.gid must be {GID_SIZE} bytes, got {self.gid!r}")

    def encode(self, layout: AttachmentLayout = POSITIONAL) -> bytes:
        """The bytes rmw_zenoh expects: 33 (``"positional"``) or the older ``"keyed"`` layout."""
        ext = _ext()
        seq, stamp = ext.Int64(self.sequence_number), ext.Int64(self.source_timestamp_ns)
        if layout == POSITIONAL:
            return ext.z_serialize((seq, stamp, bytes(self.gid))).to_bytes()
        if layout == KEYED:
            return ext.z_serialize((_KEYS[0], seq, _KEYS[1], stamp, _KEYS[2], bytes(self.gid))).to_bytes()
        raise Ros2Error(f"attachment layout must be {POSITIONAL!r} or {KEYED!r}, got {layout!r}")

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | Any) -> Attachment:
        """Parse an attachment (bytes or a ``zenoh.ZBytes``); Ros2Error if it is not rmw_zenoh's."""
        raw = data.to_bytes() if hasattr(data, "to_bytes") else bytes(data)
        ext = _ext()
        import zenoh

        keyed = raw.startswith(_KEYED_PREFIX)
        if not keyed and len(raw) != ATTACHMENT_SIZE:
            raise Ros2Error(f"rmw_zenoh attachment must be {ATTACHMENT_SIZE} bytes, got {len(raw)}")
        try:
            if keyed:
                k0, seq, k1, stamp, k2, gid = ext.z_deserialize(
                    tuple[str, ext.Int64, str, ext.Int64, str, bytes], zenoh.ZBytes(raw))
                if (k0, k1, k2) != _KEYS:
                    raise ValueError(f"keys {(k0, k1, k2)} are not {_KEYS}")
            else:
                seq, stamp, gid = ext.z_deserialize(tuple[ext.Int64, ext.Int64, bytes], zenoh.ZBytes(raw))
        except Exception as exc:  # zenoh.ext.ZDeserializeError, ValueError
            raise Ros2Error(f"malformed rmw_zenoh attachment {raw.hex()}: {exc}") from exc
        if len(gid) != GID_SIZE:
            raise Ros2Error(f"rmw_zenoh attachment GID is {len(gid)} bytes, expected {GID_SIZE}")
        return cls(int(seq), int(stamp), bytes(gid))
