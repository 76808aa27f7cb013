"""RIHS01 type hashes, CDR bytes and the attachment, pinned.

The hashes are computed by rosbags (``hash_rihs01``) and pinned here. Cross-checks:
std_msgs/msg/String's hash appears verbatim in rmw_zenoh's ``docs/design.md`` (commit
99a6a2bd10b949052f4f12c5854825dc005e95a5) key expression examples; the Twist, JointState and
Image hashes are the "Topic type hash" lines that ``ros2 topic info --verbose`` prints on real
Jazzy systems (quoted in public notes found through the code search; ROS 2's generated
``.json`` type descriptions are build outputs, not in ros2/common_interfaces' sources).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from rtvla.errors import Ros2Error
from rtvla.ros2 import ATTACHMENT_SIZE, HUMBLE_TYPE_HASH, Attachment, MessageTypes, gid_for

HASHES = {
    "std_msgs/msg/String": "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18",
    "geometry_msgs/msg/Twist": "RIHS01_9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a",
    "sensor_msgs/msg/Image": "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
    "sensor_msgs/msg/JointState": "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e",
}


@pytest.fixture(scope="module")
def types() -> MessageTypes:
    return MessageTypes("jazzy")


@pytest.mark.parametrize("ros_type", sorted(HASHES))
def test_rihs01_hashes_are_pinned(types: MessageTypes, ros_type: str) -> None:
    assert types.type_hash(ros_type) == HASHES[ros_type]


def test_humble_has_no_type_hash() -> None:
    humble = MessageTypes("humble")
    assert humble.type_hash("sensor_msgs/msg/JointState") == HUMBLE_TYPE_HASH == "TypeHashNotSupported"
    with pytest.raises(Ros2Error, match="distro"):
        MessageTypes("iron")


def test_string_cdr_is_pinned_and_round_trips(types: MessageTypes) -> None:
    raw = types.serialize(types.make("std_msgs/msg/String", data="hello"), "std_msgs/msg/String")
    # encapsulation CDR_LE (00 01 00 00), uint32 length with the NUL, the bytes, the NUL
    assert raw == bytes.fromhex("00010000") + struct.pack("<I", 6) + b"hello\x00"
    assert types.deserialize(raw, "std_msgs/msg/String").data == "hello"


def test_twist_cdr_is_pinned_and_round_trips(types: MessageTypes) -> None:
    v = "geometry_msgs/msg/Vector3"
    msg = types.make("geometry_msgs/msg/Twist", linear=types.make(v, x=0.5, y=-0.1, z=0.0),
                     angular=types.make(v, x=0.0, y=0.0, z=0.25))
    raw = types.serialize(msg, "geometry_msgs/msg/Twist")
    assert raw == bytes.fromhex("00010000") + struct.pack("<6d", 0.5, -0.1, 0.0, 0.0, 0.0, 0.25)
    back = types.deserialize(raw, "geometry_msgs/msg/Twist")
    assert (back.linear.x, back.linear.y, back.angular.z) == (0.5, -0.1, 0.25)


def test_joint_state_cdr_is_pinned_and_round_trips(types: MessageTypes) -> None:
    msg = types.make("sensor_msgs/msg/JointState", header=types.header(1_500_000_000, "base"),
                     name=["j1", "j2"], position=np.array([0.5, -1.0]), velocity=np.array([0.0, 0.25]),
                     effort=np.zeros(0))
    raw = types.serialize(msg, "sensor_msgs/msg/JointState")
    assert raw.hex() == (
        "00010000"  # encapsulation
        "01000000" "0065cd1d"  # stamp: sec 1, nanosec 500000000
        "05000000" "6261736500" "000000"  # frame_id "base", padding
        "02000000" "030000006a310000" "030000006a320000"  # name: 2 strings
        "02000000" "00000000" "000000000000e03f" "000000000000f0bf"  # position, 8-aligned
        "02000000" "00000000" "0000000000000000" "000000000000d03f"  # velocity
        "00000000")  # effort: empty
    back = types.deserialize(raw, "sensor_msgs/msg/JointState")
    assert back.name == ["j1", "j2"] and back.header.stamp.nanosec == 500_000_000
    np.testing.assert_array_equal(back.position, [0.5, -1.0])


def test_image_cdr_is_pinned(types: MessageTypes) -> None:
    msg = types.make("sensor_msgs/msg/Image", header=types.header(0, "cam"), height=1, width=2, encoding="rgb8",
                     is_bigendian=0, step=6, data=np.arange(1, 7, dtype=np.uint8))
    raw = types.serialize(msg, "sensor_msgs/msg/Image")
    assert raw.hex() == (
        "00010000"  # encapsulation CDR_LE
        "00000000" "00000000"  # stamp
        "04000000" "63616d00"  # frame_id "cam"
        "01000000" "02000000"  # height, width
        "05000000" "7267623800"  # encoding "rgb8"
        "00" "0000"  # is_bigendian, then padding to align step
        "06000000"  # step
        "06000000" "010203040506")  # data: uint8 sequence
    back = types.deserialize(raw, "sensor_msgs/msg/Image")
    assert (back.height, back.width, back.encoding, back.step) == (1, 2, "rgb8", 6)


def test_image_round_trips(types: MessageTypes) -> None:
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    msg = types.make("sensor_msgs/msg/Image", header=types.header(0, "cam"), height=4, width=6, encoding="rgb8",
                     is_bigendian=0, step=18, data=frame.reshape(-1))
    back = types.deserialize(types.serialize(msg, "sensor_msgs/msg/Image"), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(np.asarray(back.data).reshape(4, 6, 3), frame)


def test_bad_types_and_payloads_are_refused(types: MessageTypes) -> None:
    with pytest.raises(Ros2Error, match="unknown ROS 2 message type"):
        types.type_hash("my_msgs/msg/Nope")
    with pytest.raises(Ros2Error, match="encapsulation"):
        types.deserialize(b"\x07\x07\x00\x00abc", "std_msgs/msg/String")
    raw = types.serialize(types.make("std_msgs/msg/String", data="hello"), "std_msgs/msg/String")
    with pytest.raises(Ros2Error, match="cannot deserialize"):
        types.deserialize(raw[:6], "std_msgs/msg/String")
    with pytest.raises(Ros2Error, match="cannot serialize"):
        types.serialize(types.make("std_msgs/msg/String", data="x"), "geometry_msgs/msg/Twist")


def test_attachment_is_pinned() -> None:
    gid = bytes(range(16))
    att = Attachment(sequence_number=1, source_timestamp_ns=1_700_000_000_123_456_789, gid=gid)
    raw = att.encode()
    # docs/design.md "Publishers": int64 seq LE | int64 timestamp LE | 1-byte GID length (16) | 16 GID bytes
    assert len(raw) == ATTACHMENT_SIZE == 33
    assert raw == struct.pack("<qqB", 1, 1_700_000_000_123_456_789, 16) + gid
    assert raw.hex() == "0100000000000000" "15cd853dfe9c9717" "10" "000102030405060708090a0b0c0d0e0f"
    assert Attachment.decode(raw) == att


def test_keyed_attachment_of_older_rmw_zenoh_is_pinned() -> None:
    # rmw_zenoh_cpp < 0.2.4: ze_serializer str "sequence_number", int64, str "source_timestamp",
    # int64, str "source_gid", buf (ros2/rmw_zenoh#600, #601)
    att = Attachment(1, 2, bytes(range(16)))
    raw = att.encode("keyed")
    assert raw.hex() == ("0f" + b"sequence_number".hex() + "0100000000000000"
                         "10" + b"source_timestamp".hex() + "0200000000000000"
                         "0a" + b"source_gid".hex() + "10000102030405060708090a0b0c0d0e0f")
    assert len(raw) == 77 and Attachment.decode(raw) == att
    with pytest.raises(Ros2Error, match="layout"):
        att.encode("json")


def test_malformed_attachments_are_refused() -> None:
    good = Attachment(5, 6, bytes(16)).encode()
    with pytest.raises(Ros2Error, match="33 bytes"):
        Attachment.decode(good[:-1])
    with pytest.raises(Ros2Error, match="malformed"):
        Attachment.decode(good[:16] + b"\x11" + good[17:])  # GID length byte says 17
    with pytest.raises(Ros2Error, match="gid"):
        Attachment(1, 2, b"short")
    assert gid_for("@ros2_lv/0/a/0/0/NN/%/%/n") != gid_for("@ros2_lv/0/a/0/0/NN/%/%/m")
    assert len(gid_for("x")) == 16
