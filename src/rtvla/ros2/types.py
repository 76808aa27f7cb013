"""ROS 2 message types through rosbags: CDR (little-endian, 4-byte header) and RIHS01 hashes.

rosbags ships the message definitions of each ROS 2 distribution as a *typestore*; its
``serialize_cdr``/``deserialize_cdr`` write and read the CDR that rmw_zenoh sends (with the
4-byte encapsulation header ``00 01 00 00`` for little-endian), and ``hash_rihs01`` gives the
REP-2011 type hash that rmw_zenoh puts in its key expressions (Jazzy and later). Humble has
no type hashes: its rmw_zenoh writes ``TypeHashNotSupported`` instead.

Usage::

    types = MessageTypes("jazzy")
    msg = types.make("std_msgs/msg/String", data="hello")
    raw = types.serialize(msg, "std_msgs/msg/String")      # b'\\x00\\x01\\x00\\x00\\x06...'
    types.deserialize(raw, "std_msgs/msg/String").data     # 'hello'
    types.type_hash("std_msgs/msg/String")                 # 'RIHS01_df668c74...'
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from rtvla.errors import Ros2Error
from rtvla.ros2.keys import HUMBLE_TYPE_HASH, dds_type_name

__all__ = ["DISTROS", "Distro", "MessageTypes", "split_stamp"]

Distro = Literal["jazzy", "humble"]
DISTROS: tuple[str, ...] = ("jazzy", "humble")


@functools.cache
def _typestore(distro: str) -> Any:
    try:
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:
        raise Ros2Error("rtvla.ros2 needs rosbags: pip install rosbags") from exc
    return get_typestore({"jazzy": Stores.ROS2_JAZZY, "humble": Stores.ROS2_HUMBLE}[distro])


def split_stamp(stamp_ns: int) -> tuple[int, int]:
    """Nanoseconds -> (sec, nanosec) as ``builtin_interfaces/msg/Time`` holds them."""
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return sec, nsec


class MessageTypes:
    """The message types of one ROS 2 distribution (``"jazzy"`` or ``"humble"``)."""

    def __init__(self, distro: str = "jazzy") -> None:
        if distro not in DISTROS:
            raise Ros2Error(f"ROS 2 distro must be one of {DISTROS}, got {distro!r}")
        self.distro = distro
        self._store = _typestore(distro)
        self._hashes: dict[str, str] = {}

    def check(self, ros_type: str) -> str:
        """``ros_type`` if this distribution defines it, else Ros2Error naming it."""
        dds_type_name(ros_type)  # validates the shape
        if ros_type not in self._store.types:
            raise Ros2Error(f"unknown ROS 2 message type {ros_type!r} for {self.distro} "
                            f"(rosbags' {self.distro} typestore does not define it)")
        return ros_type

    def type_hash(self, ros_type: str) -> str:
        """The type hash rmw_zenoh puts in keys: RIHS01 (Jazzy) or ``TypeHashNotSupported`` (Humble)."""
        self.check(ros_type)
        if self.distro == "humble":
            return HUMBLE_TYPE_HASH
        h = self._hashes.get(ros_type)
        if h is None:
            h = self._hashes[ros_type] = self._store.hash_rihs01(ros_type)
        return h

    def message_class(self, ros_type: str) -> Any:
        return self._store.types[self.check(ros_type)]

    def make(self, ros_type: str, **fields: Any) -> Any:
        """A message object of ``ros_type``; every field must be given (rosbags' classes)."""
        cls = self.message_class(ros_type)
        try:
            return cls(**fields)
        except TypeError as exc:
            raise Ros2Error(f"cannot build {ros_type}: {exc}") from exc

    def time(self, stamp_ns: int) -> Any:
        sec, nsec = split_stamp(stamp_ns)
        return self.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nsec)

    def header(self, stamp_ns: int, frame_id: str = "") -> Any:
        return self.make("std_msgs/msg/Header", stamp=self.time(stamp_ns), frame_id=frame_id)

    def serialize(self, msg: Any, ros_type: str) -> bytes:
        """Little-endian CDR with its 4-byte encapsulation header, as rmw_zenoh sends it."""
        self.check(ros_type)
        try:
            return bytes(self._store.serialize_cdr(msg, ros_type, little_endian=True))
        except Exception as exc:  # rosbags raises SerdeError, AttributeError, struct.error ...
            raise Ros2Error(f"cannot serialize {type(msg).__name__} as {ros_type}: {exc}") from exc

    def deserialize(self, data: bytes | memoryview, ros_type: str) -> Any:
        """Parse CDR (either endianness, per its header); Ros2Error if it is not a ``ros_type``."""
        self.check(ros_type)
        if len(data) < 4 or data[0] != 0 or data[1] not in (0, 1):
            raise Ros2Error(f"{ros_type} payload lacks a CDR encapsulation header: {bytes(data[:4]).hex()}")
        try:
            return self._store.deserialize_cdr(data, ros_type)
        except Exception as exc:  # rosbags.serde.SerdeError and friends
            raise Ros2Error(f"cannot deserialize {len(data)} B as {ros_type}: {exc}") from exc
