"""RunBridge (``[ros2] enabled``) against the rmw_zenoh-like peer, fed by a small stand-in stack.

The stand-in has what RunBridge reads from a Stack (robot state and limits, a camera, the
setpoint channel, the executor's status, a recorder): real channels and a real Recorder, so
this checks the bridge's own rules quickly; tests/runtime/test_run_ros2.py runs it inside a
real ``rtvla run``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zenoh")

import zenoh
from _rmw_peer import RmwPeer, free_port

from rtvla.action.setpoints import Setpoint
from rtvla.channels.inproc import LatestValue
from rtvla.channels.zenoh_channel import zenoh_config
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder
from rtvla.perception.frames import Frame
from rtvla.robots.base import RobotLimits, RobotState
from rtvla.runtime.ros2_bridge import BridgeSettings, RunBridge, check_bridge_topics
from rtvla.timing import MONOTONIC

JS_HASH = "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
IMAGE_HASH = "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47"
TF_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
STRING_HASH = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
TWIST_HASH = "RIHS01_9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a"
JOINTS = ("j1", "j2")


class _Robot:
    def __init__(self) -> None:
        self.limits = RobotLimits(JOINTS, np.full(2, -3.0), np.full(2, 3.0), np.ones(2), np.ones(2), np.ones(2))
        self.pose = np.array([1.0, 2.0, 0.5])

    def read_state(self) -> RobotState:
        return RobotState(stamp_ns=MONOTONIC.now_ns(), q=np.array([0.1, -0.2]), dq=np.zeros(2),
                          effort=np.zeros(2), base_pose=self.pose.copy())


class _Camera:
    def __init__(self) -> None:
        self.frame = Frame(np.full((24, 32, 3), 7, np.uint8), MONOTONIC.now_ns(), 1)

    def read(self) -> Frame:
        return self.frame


@dataclass
class _Stack:
    recorder: Recorder = field(default_factory=Recorder)
    robot: _Robot = field(default_factory=_Robot)
    setpoints: LatestValue = field(default_factory=lambda: LatestValue("setpoints"))
    executor: Any = field(default_factory=lambda: SimpleNamespace(status=SimpleNamespace(value="idle")))
    cameras: list = field(default_factory=lambda: [SimpleNamespace(name="head", source=_Camera())])
    critical_failure: str | None = None

    def set_status(self, value: str) -> None:
        self.executor.status = SimpleNamespace(value=value)


def _key(topic: str, dds: str, h: str) -> str:
    return f"0/{topic}/{dds}/{h}"


def _twist(store: Any, vx: float, wz: float) -> Any:
    V = store.types["geometry_msgs/msg/Vector3"]
    return store.types["geometry_msgs/msg/Twist"](linear=V(x=vx, y=0.0, z=0.0), angular=V(x=0.0, y=0.0, z=wz))


@pytest.fixture
def running() -> Any:
    port = free_port()
    stack = _Stack()
    bridge = RunBridge(stack, BridgeSettings(enabled=True, listen=[f"tcp/127.0.0.1:{port}"], connect=[],
                                             state_hz=50, image_hz=10)).start()
    session = zenoh.open(zenoh_config(connect=[f"tcp/127.0.0.1:{port}"]))
    try:
        yield stack, bridge, RmwPeer(session, "ros_side")
    finally:
        bridge.stop()
        session.close()


def test_bridge_publishes_state_and_status_changes(running) -> None:
    stack, bridge, peer = running
    zid = bridge.bridge.node.session_id
    peer.wait_entity(kind="NN", node="rtvla", zid=zid)
    js = peer.record("/joint_states", _key("joint_states", "sensor_msgs::msg::dds_::JointState_", JS_HASH),
                     "sensor_msgs/msg/JointState", "sensor_msgs::msg::dds_::JointState_", JS_HASH)
    tf = peer.record("/tf", _key("tf", "tf2_msgs::msg::dds_::TFMessage_", TF_HASH), "tf2_msgs/msg/TFMessage",
                     "tf2_msgs::msg::dds_::TFMessage_", TF_HASH)
    status = peer.record("/rtvla/status", _key("rtvla/status", "std_msgs::msg::dds_::String_", STRING_HASH),
                         "std_msgs/msg/String", "std_msgs::msg::dds_::String_", STRING_HASH)
    assert js.wait(3)[-1].msg.name == list(JOINTS)
    t = tf.wait(1)[-1].msg.transforms[0]
    assert (t.header.frame_id, t.child_frame_id) == ("world", "base_link")
    assert (t.transform.translation.x, t.transform.translation.y) == (1.0, 2.0)
    assert t.transform.rotation.z == pytest.approx(np.sin(0.25))
    n = len(status.wait(1))
    stack.set_status("running")  # a change is published at once, not at the next heartbeat
    seen = status.wait(n + 1, timeout=5.0)
    assert json.loads(seen[-1].msg.data)["executor"] == "running"
    end = time.monotonic() + 10
    while bridge.images_unmatched == 0 and time.monotonic() < end:
        time.sleep(0.01)
    assert bridge.images_unmatched > 0 and bridge.published["images"] == 0  # nobody asked for images
    img = peer.record("/head/image_raw", _key("head/image_raw", "sensor_msgs::msg::dds_::Image_", IMAGE_HASH),
                      "sensor_msgs/msg/Image", "sensor_msgs::msg::dds_::Image_", IMAGE_HASH)
    m = img.wait(1)[-1].msg
    assert (m.height, m.width, m.encoding) == (24, 32, "rgb8")


def test_cmd_vel_applies_when_idle_is_ignored_during_a_task_and_refused_once_stopping(running) -> None:
    stack, bridge, peer = running
    pub = peer.publisher("/cmd_vel", _key("cmd_vel", "geometry_msgs::msg::dds_::Twist_", TWIST_HASH),
                         "geometry_msgs/msg/Twist", "geometry_msgs::msg::dds_::Twist_", TWIST_HASH)
    assert pub.wait_matched(20.0)
    before = MONOTONIC.now_ns()
    pub.publish(_twist(peer.store, 0.2, 0.3))
    sample = stack.setpoints.wait_newer(0, timeout=10.0)
    assert sample is not None and isinstance(sample.value, Setpoint)
    sp = sample.value
    np.testing.assert_allclose(sp.base_vel, [0.2, 0.0, 0.3])
    assert sp.arm_q is None and before <= sp.stamp_ns <= MONOTONIC.now_ns()  # stamped on arrival

    stack.set_status("running")
    for _ in range(3):
        pub.publish(_twist(peer.store, 0.5, 0.0))
    end = time.monotonic() + 10
    while bridge.cmd_vel_ignored < 3 and time.monotonic() < end:
        time.sleep(0.01)
    assert bridge.cmd_vel_ignored == 3 and stack.setpoints.seq == 1  # navigation's channel untouched
    kinds = [(e.component, e.kind) for e in stack.recorder.events]
    assert kinds.count(("ros2", "cmd_vel_ignored")) == 1  # one event, not one per message

    stack.set_status("succeeded")
    report = bridge.stop()
    assert report["cmd_vel"] == {"applied": 1, "ignored_during_task": 3, "refused_stopping": 0, "received": 4,
                                 "rejected": 0, "decode_errors": 0}
    assert report["stop_s"] < 3.0
    assert ("ros2", "stopped") in [(e.component, e.kind) for e in stack.recorder.events]
    bridge._on_cmd_vel(SimpleNamespace(setpoint_fields=lambda: {}, base_vel=np.zeros(3)))
    assert bridge.cmd_vel_refused == 1 and stack.setpoints.seq == 1  # nothing after stop


def test_instructions_are_queued_for_the_python_api(running) -> None:
    stack, bridge, peer = running
    String = peer.store.types["std_msgs/msg/String"]
    pub = peer.publisher("/rtvla/instruction",
                         _key("rtvla/instruction", "std_msgs::msg::dds_::String_", STRING_HASH),
                         "std_msgs/msg/String", "std_msgs::msg::dds_::String_", STRING_HASH)
    assert pub.wait_matched(20.0)
    pub.publish(String(data="go to the kitchen"))
    pub.publish(String(data="say hello"))
    assert bridge.next_instruction(timeout=10.0) == "go to the kitchen"
    report = bridge.report()
    deadline = time.monotonic() + 10
    while len(report["instructions"]["received"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
        report = bridge.report()
    assert report["instructions"] == {"received": ["go to the kitchen", "say hello"], "pending": ["say hello"]}
    assert bridge.next_instruction(timeout=1.0) == "say hello"  # report() leaves the queue as it was
    assert bridge.next_instruction(timeout=0.05) is None
    assert [e.kind for e in stack.recorder.events if e.component == "ros2"].count("instruction") == 2


def test_settings_are_validated_and_name_the_field() -> None:
    s = BridgeSettings.from_section({"enabled": True, "namespace": "robot1"})
    assert s.namespace == "/robot1" and s.connect == ["tcp/127.0.0.1:7447"]  # the local rmw_zenohd
    for table, match in [
        ({"domain_id": 233}, "ros2.domain_id"),
        ({"namespace": "1robot"}, "ros2.namespace"),
        ({"node_name": "my/node"}, "ros2.node_name"),
        ({"connect": ["localhost:7447"]}, "ros2.connect"),
        ({"distro": "iron"}, "ros2.distro"),
        ({"mode": "router"}, "ros2.mode"),
        ({"state_hz": 0}, "ros2.state_hz"),
        ({"topics": {}}, "ros2.topics"),
    ]:
        with pytest.raises(ConfigError, match=match):
            BridgeSettings.from_section(table)


def test_a_bridge_on_the_ros2_robots_own_topics_is_refused() -> None:
    robot = {"type": "ros2", "options": {"joint_names": ["a", "b"]}}
    with pytest.raises(ConfigError, match=r"ros2.namespace: the bridge's /joint_states is the ROS 2 robot's"):
        check_bridge_topics(BridgeSettings(enabled=True), robot)
    check_bridge_topics(BridgeSettings(enabled=True, namespace="/rtvla"), robot)  # its own namespace
    check_bridge_topics(BridgeSettings(enabled=True, domain_id=3), robot)  # another domain
    check_bridge_topics(BridgeSettings(enabled=False), robot)
    check_bridge_topics(BridgeSettings(enabled=True), {})  # the simulator


def test_a_bridge_that_cannot_listen_says_why() -> None:
    port = free_port()
    blocker = zenoh.open(zenoh_config(listen=[f"tcp/127.0.0.1:{port}"]))
    try:
        bridge = RunBridge(_Stack(), BridgeSettings(enabled=True, listen=[f"tcp/127.0.0.1:{port}"], connect=[]))
        with pytest.raises(Exception, match="cannot open a Zenoh session"):
            bridge.start()
        assert bridge.stop()["stop_s"] is None  # nothing was started; stopping is harmless
    finally:
        blocker.close()


def test_stop_is_bounded_when_closing_hangs() -> None:
    stack = _Stack()
    bridge = RunBridge(stack, BridgeSettings(enabled=True, listen=[f"tcp/127.0.0.1:{free_port()}"], connect=[],
                                             stop_timeout_s=0.5)).start()
    real_close, release = bridge.session.close, threading.Event()

    class _Hung:
        def close(self) -> None:
            release.wait(30)

    session, bridge.session = bridge.session, _Hung()
    try:
        t0 = time.monotonic()
        bridge.stop()
        assert time.monotonic() - t0 < 2.0
        assert any(e.kind == "fault" and "did not close within 0.5 s" in e.message for e in stack.recorder.events)
    finally:
        release.set()
        session.close()
        del real_close
