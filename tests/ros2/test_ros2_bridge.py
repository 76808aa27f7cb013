"""Ros2Bridge on loopback Zenoh against a peer that behaves like rmw_zenoh (see _rmw_peer.py).

The peer finds rtvla's node and endpoints by querying ``@ros2_lv/0/**``, validates every token,
subscribes to the exact data keys (written out literally here), requires the attachment and
deserializes with rosbags; it publishes a Twist on ``/cmd_vel`` that rtvla must receive.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("zenoh")

import cv2
from _rmw_peer import RmwPeer, open_pair, validate_token

from rtvla.action.control import check_setpoint
from rtvla.action.setpoints import Setpoint
from rtvla.errors import FrameError, Ros2Error
from rtvla.robots.base import RobotLimits, RobotState
from rtvla.ros2.bridge import BaseVelocityCommand, Ros2Bridge, Transform, yaw_quaternion
from rtvla.timing import MONOTONIC

JS_HASH = "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
IMAGE_HASH = "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47"
COMPRESSED_HASH = "RIHS01_15640771531571185e2efc8a100baf923961a4d15d5569652e6cb6691e8e371a"
TF_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
STRING_HASH = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
TWIST_HASH = "RIHS01_9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a"

JS_KEY = f"0/joint_states/sensor_msgs::msg::dds_::JointState_/{JS_HASH}"
IMAGE_KEY = f"0/head/image_raw/sensor_msgs::msg::dds_::Image_/{IMAGE_HASH}"
COMPRESSED_KEY = f"0/head/image_raw/compressed/sensor_msgs::msg::dds_::CompressedImage_/{COMPRESSED_HASH}"
TF_KEY = f"0/tf/tf2_msgs::msg::dds_::TFMessage_/{TF_HASH}"
STATUS_KEY = f"0/rtvla/status/std_msgs::msg::dds_::String_/{STRING_HASH}"
CMD_VEL_KEY = f"0/cmd_vel/geometry_msgs::msg::dds_::Twist_/{TWIST_HASH}"
INSTRUCTION_KEY = f"0/rtvla/instruction/std_msgs::msg::dds_::String_/{STRING_HASH}"

JOINTS = ("shoulder", "elbow", "wrist")


class Inbox:
    def __init__(self) -> None:
        self.items: list = []
        self.cond = threading.Condition()

    def __call__(self, item) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 20.0) -> list:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, timeout), f"{len(self.items)} of {n}"
            return list(self.items)


@pytest.fixture
def world() -> Iterator[tuple[Ros2Bridge, RmwPeer, Inbox, Inbox]]:
    a, b, _ = open_pair()
    cmds, texts = Inbox(), Inbox()
    bridge = Ros2Bridge(a, joint_names=JOINTS, cameras=("head",), compressed=True, on_cmd_vel=cmds,
                        on_instruction=texts)
    peer = RmwPeer(b, "ros_side")
    try:
        yield bridge, peer, cmds, texts
    finally:
        bridge.close()
        a.close()
        b.close()


def test_peer_finds_rtvla_node_and_endpoints_in_the_graph(world) -> None:
    bridge, peer, _, _ = world
    zid = bridge.node.session_id
    key, _ = peer.wait_entity(kind="NN", node="rtvla", zid=zid)
    assert key == f"@ros2_lv/0/{zid}/0/0/NN/%/%/rtvla"
    for kind, topic, dds, h, qos in [
        ("MP", "/joint_states", "sensor_msgs::msg::dds_::JointState_", JS_HASH, "::,10:,:,:,,"),
        ("MP", "/head/image_raw", "sensor_msgs::msg::dds_::Image_", IMAGE_HASH, "2::,5:,:,:,,"),
        ("MP", "/head/image_raw/compressed", "sensor_msgs::msg::dds_::CompressedImage_", COMPRESSED_HASH,
         "2::,5:,:,:,,"),
        ("MP", "/tf", "tf2_msgs::msg::dds_::TFMessage_", TF_HASH, "::,10:,:,:,,"),
        ("MP", "/rtvla/status", "std_msgs::msg::dds_::String_", STRING_HASH, "::,10:,:,:,,"),
        ("MS", "/cmd_vel", "geometry_msgs::msg::dds_::Twist_", TWIST_HASH, "::,10:,:,:,,"),
        ("MS", "/rtvla/instruction", "std_msgs::msg::dds_::String_", STRING_HASH, "::,10:,:,:,,"),
    ]:
        _, fields = peer.wait_entity(kind=kind, topic=topic, zid=zid)
        assert (fields["type"], fields["hash"], fields["qos"], fields["node"]) == (dds, h, qos, "rtvla")
        assert fields["nid"] == "0" and fields["id"] != "0"
    ids = [validate_token(k)["id"] for k in peer.graph() if f"/{zid}/" in k]
    assert len(ids) == len(set(ids)) == 8  # node + 7 endpoints, each its own entity id


def test_peer_receives_joint_states_image_tf_and_status(world) -> None:
    bridge, peer, _, _ = world
    js = peer.record("/joint_states", JS_KEY, "sensor_msgs/msg/JointState",
                     "sensor_msgs::msg::dds_::JointState_", JS_HASH)
    img = peer.record("/head/image_raw", IMAGE_KEY, "sensor_msgs/msg/Image", "sensor_msgs::msg::dds_::Image_",
                      IMAGE_HASH)
    jpg = peer.record("/head/image_raw/compressed", COMPRESSED_KEY, "sensor_msgs/msg/CompressedImage",
                      "sensor_msgs::msg::dds_::CompressedImage_", COMPRESSED_HASH)
    tf = peer.record("/tf", TF_KEY, "tf2_msgs/msg/TFMessage", "tf2_msgs::msg::dds_::TFMessage_", TF_HASH)
    status = peer.record("/rtvla/status", STATUS_KEY, "std_msgs/msg/String", "std_msgs::msg::dds_::String_",
                         STRING_HASH)
    assert bridge.wait_matched(20.0), "the peer's subscribers were not matched"

    now = MONOTONIC.now_ns()
    for i in range(3):
        bridge.publish_joint_states(RobotState(stamp_ns=now, q=np.array([0.1, 0.2, 0.3]) * (i + 1),
                                               dq=np.array([0.0, 0.5, 0.0]), effort=np.zeros(3)))
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32] = (255, 0, 0)  # left half red, right half blue: survives JPEG
    frame[:, 32:] = (0, 0, 255)
    bridge.publish_image(frame, stamp_ns=now, camera="head")
    bridge.publish_tf([Transform("map", "base_link", (1.0, 2.0, 0.0), yaw_quaternion(np.pi / 2), now)])
    bridge.publish_status({"task": "pick red_cube", "state": "running", "lateness_ms": float("nan")})

    samples = js.wait(3)
    assert [s.seq for s in samples] == [1, 2, 3]  # rmw_zenoh numbers from 1
    assert len({s.gid for s in samples}) == 1 and len(samples[0].gid) == 16
    assert abs(samples[0].stamp_ns - time.time_ns()) < 30e9  # source timestamp: UNIX-epoch ns
    m = samples[-1].msg
    assert m.name == list(JOINTS)
    np.testing.assert_allclose(m.position, [0.3, 0.6, 0.9])
    np.testing.assert_allclose(m.velocity, [0.0, 0.5, 0.0])
    stamp_ns = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
    assert abs(stamp_ns - time.time_ns()) < 30e9  # ROS time, not the monotonic clock

    im = img.wait(1)[0].msg
    assert (im.height, im.width, im.encoding, im.step, im.is_bigendian) == (48, 64, "rgb8", 192, 0)
    assert im.header.frame_id == "head_optical_frame"
    np.testing.assert_array_equal(np.asarray(im.data).reshape(48, 64, 3), frame)
    cm = jpg.wait(1)[0].msg
    assert cm.format == "jpeg"
    decoded = cv2.imdecode(np.asarray(cm.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert decoded.shape == frame.shape
    assert np.abs(decoded.astype(int) - frame.astype(int)).mean() < 10

    t = tf.wait(1)[0].msg.transforms[0]
    assert (t.header.frame_id, t.child_frame_id) == ("map", "base_link")
    assert (t.transform.translation.x, t.transform.translation.y) == (1.0, 2.0)
    assert t.transform.rotation.z == pytest.approx(np.sin(np.pi / 4))

    assert json.loads(status.wait(1)[0].msg.data) == {"lateness_ms": None, "state": "running",
                                                      "task": "pick red_cube"}
    for rec in (js, img, jpg, tf, status):
        assert rec.rejected == 0 and all(s.attachment_size == 33 for s in rec.samples)


def test_cmd_vel_from_ros_becomes_a_stamped_base_velocity_setpoint(world) -> None:
    bridge, peer, cmds, _ = world
    store = peer.store
    pub = peer.publisher("/cmd_vel", CMD_VEL_KEY, "geometry_msgs/msg/Twist", "geometry_msgs::msg::dds_::Twist_",
                         TWIST_HASH)
    V = store.types["geometry_msgs/msg/Vector3"]
    twist = store.types["geometry_msgs/msg/Twist"](linear=V(x=0.2, y=-0.1, z=0.0), angular=V(x=0.0, y=0.0, z=0.3))
    assert pub.wait_matched(20.0), "cmd_vel subscriber never matched"
    before = MONOTONIC.now_ns()
    pub.publish(twist)
    cmd = cmds.wait(1)[0]
    assert isinstance(cmd, BaseVelocityCommand)
    np.testing.assert_allclose(cmd.base_vel, [0.2, -0.1, 0.3])
    assert before <= cmd.stamp_ns <= MONOTONIC.now_ns()  # stamped on arrival, on our clock
    assert cmd.seq == 1 and bridge.latest_cmd_vel() is cmd
    sp = Setpoint(**cmd.setpoint_fields())
    limits = RobotLimits(JOINTS, np.full(3, -3.0), np.full(3, 3.0), np.ones(3), np.ones(3), np.ones(3))
    assert check_setpoint(sp, limits) is None and sp.arm_q is None and sp.stamp_ns == cmd.stamp_ns

    pub.publish(twist, attachment=False)  # not what rmw_zenoh sends: dropped, counted
    pub.publish(twist, keyed=True)  # an older rmw_zenoh_cpp's attachment: accepted
    got = cmds.wait(2)
    assert bridge.cmd_vel.rejected == 1 and bridge.cmd_vel.received == 2
    assert bridge.cmd_vel.latest().sequence_number == 3 and got[1].seq == 2


def test_instruction_topic_calls_back_with_the_text(world) -> None:
    bridge, peer, _, texts = world
    String = peer.store.types["std_msgs/msg/String"]
    pub = peer.publisher("/rtvla/instruction", INSTRUCTION_KEY, "std_msgs/msg/String",
                         "std_msgs::msg::dds_::String_", STRING_HASH)
    assert pub.wait_matched(20.0), "instruction subscriber never matched"
    pub.publish(String(data="  "))  # empty: ignored
    pub.publish(String(data="put the red cube in the bin"))
    assert texts.wait(1) == ["put the red cube in the bin"]
    assert bridge.instructions_received == 1


def test_bad_input_is_refused(world) -> None:
    bridge, _, _, _ = world
    with pytest.raises(FrameError, match="uint8"):
        bridge.publish_image(np.zeros((4, 4), np.float32))
    with pytest.raises(Ros2Error, match="joint names"):
        bridge.publish_joint_states(RobotState(stamp_ns=0, q=np.zeros(2), dq=np.zeros(2), effort=np.zeros(2)))
    with pytest.raises(Ros2Error, match="unit quaternion"):
        bridge.publish_tf([Transform("map", "base", (0, 0, 0), (0, 0, 0, 2.0))])
    with pytest.raises(Ros2Error, match="joint_names"):
        Ros2Bridge(bridge.node.session, joint_names="shoulder")


def test_humble_node_publishes_without_type_hash() -> None:
    from rosbags.typesys import Stores

    from rtvla.ros2 import Ros2Node

    a, b, _ = open_pair()
    try:
        node = Ros2Node(a, "talker", distro="humble", domain_id=3)
        pub = node.publisher("chatter", "std_msgs/msg/String")
        assert pub.key == "3/chatter/std_msgs::msg::dds_::String_/TypeHashNotSupported"
        peer = RmwPeer(b, "listener", domain=3, store=Stores.ROS2_HUMBLE)
        _, fields = peer.wait_entity(kind="MP", topic="/chatter")
        assert fields["hash"] == "TypeHashNotSupported"
        rec = peer.record("/chatter", "3/chatter/std_msgs::msg::dds_::String_/TypeHashNotSupported",
                          "std_msgs/msg/String", "std_msgs::msg::dds_::String_", "TypeHashNotSupported")
        assert pub.wait_matched(20.0)
        pub.publish(node.types.make("std_msgs/msg/String", data="hello humble"))
        assert rec.wait(1)[0].msg.data == "hello humble"
        node.close()
    finally:
        a.close()
        b.close()
