"""``rtvla run`` with ``[ros2] enabled = true``, end to end, against a peer that behaves like
rmw_zenoh (tests/ros2/_rmw_peer.py: graph from liveliness tokens, exact data keys, attachment
required, CDR through rosbags). The run listens on 127.0.0.1; the peer connects, as a ROS 2
node would through its router.

One real run of the main job on the simulated robot ("go to the table"): the peer sees
rtvla's node and endpoints, receives /joint_states, /tf, /rtvla/status and the head camera;
a /cmd_vel it sends while the task executes is counted as ignored (navigation owns the base),
one it sends after the task, while the run lingers, turns the robot through the control
loop, and when it goes silent the watchdog stops the base. An instruction it sends is queued
and listed in the report. Plus ``rtvla config check`` on the [ros2] and [record] tables.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("zenoh")

import zenoh
from typer.testing import CliRunner

from rtvla.channels.zenoh_channel import zenoh_config
from rtvla.cli.main import app
from rtvla.config import parse_config
from rtvla.runtime.main_job import EXIT_BUDGET, EXIT_OK, RunOptions, run_task

pytestmark = pytest.mark.slow


def _load_peer() -> Any:
    """tests/ros2/_rmw_peer.py, the peer written from rmw_zenoh's documents (one module for both)."""
    mod = sys.modules.get("_rmw_peer")
    if mod is None:
        path = Path(__file__).resolve().parents[1] / "ros2" / "_rmw_peer.py"
        spec = importlib.util.spec_from_file_location("_rmw_peer", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_rmw_peer"] = mod
        spec.loader.exec_module(mod)
    return mod


_peer = _load_peer()
RmwPeer, free_port, validate_token = _peer.RmwPeer, _peer.free_port, _peer.validate_token

JS_HASH = "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
IMAGE_HASH = "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47"
TF_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
STRING_HASH = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
TWIST_HASH = "RIHS01_9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a"
JS = ("/joint_states", "sensor_msgs/msg/JointState", "sensor_msgs::msg::dds_::JointState_", JS_HASH)
TF = ("/tf", "tf2_msgs/msg/TFMessage", "tf2_msgs::msg::dds_::TFMessage_", TF_HASH)
STATUS = ("/rtvla/status", "std_msgs/msg/String", "std_msgs::msg::dds_::String_", STRING_HASH)
IMAGE = ("/head/image_raw", "sensor_msgs/msg/Image", "sensor_msgs::msg::dds_::Image_", IMAGE_HASH)
CMD_VEL = ("/cmd_vel", "geometry_msgs/msg/Twist", "geometry_msgs::msg::dds_::Twist_", TWIST_HASH)
INSTRUCTION = ("/rtvla/instruction", "std_msgs/msg/String", "std_msgs::msg::dds_::String_", STRING_HASH)
DONE = ("succeeded", "failed", "timed_out", "canceled")
TURN_RAD_S = 0.8
TURN_S = 1.5
LINGER_S = 6.0  # the run's idle time after the task: the peer teleoperates then


def _key(topic: str, dds: str, h: str) -> str:
    return f"0/{topic.lstrip('/')}/{dds}/{h}"


def _record(peer: RmwPeer, spec: tuple[str, str, str, str]) -> Any:
    topic, ros_type, dds, h = spec
    return peer.record(topic, _key(topic, dds, h), ros_type, dds, h)


def _publisher(peer: RmwPeer, spec: tuple[str, str, str, str]) -> Any:
    topic, ros_type, dds, h = spec
    return peer.publisher(topic, _key(topic, dds, h), ros_type, dds, h)


def _yaw(tf_msg: Any) -> float:
    q = tf_msg.transforms[0].transform.rotation
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def _wait(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class RosSide:
    """What a ROS 2 system does during the run, in a thread; findings in ``self.found``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.found: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="ros-side", daemon=True)

    def start(self, bridge: Any) -> None:
        self.found["bridge_zid"] = bridge.bridge.node.session_id
        self.found["joint_names"] = list(bridge.bridge.joint_names)
        self.thread.start()

    def _main(self) -> None:
        try:
            session = zenoh.open(zenoh_config(connect=[f"tcp/127.0.0.1:{self.port}"]))
            try:
                self._script(RmwPeer(session, "ros_side"))
            finally:
                session.close()
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    def _script(self, peer: RmwPeer) -> None:
        f = self.found
        zid = f["bridge_zid"]
        f["node_token"], _ = peer.wait_entity(kind="NN", node="rtvla", zid=zid)
        f["tokens"] = {(fields["kind"], fields["topic"]): (fields["type"], fields["hash"])
                       for fields in (validate_token(k) for k in peer.graph() if f"/{zid}/" in k)
                       if fields["kind"] != "NN"}
        for kind, spec in (("MP", JS), ("MP", TF), ("MP", STATUS), ("MS", CMD_VEL), ("MS", INSTRUCTION)):
            peer.wait_entity(kind=kind, topic=spec[0], zid=zid)
        js, tf, status, img = (_record(peer, s) for s in (JS, TF, STATUS, IMAGE))
        cmd, instruction = _publisher(peer, CMD_VEL), _publisher(peer, INSTRUCTION)
        assert cmd.wait_matched(20.0) and instruction.wait_matched(20.0)
        store = peer.store
        V = store.types["geometry_msgs/msg/Vector3"]
        turn = store.types["geometry_msgs/msg/Twist"](linear=V(x=0.0, y=0.0, z=0.0),
                                                      angular=V(x=0.0, y=0.0, z=TURN_RAD_S))

        def executor() -> str:
            return json.loads(status.samples[-1].msg.data)["executor"] if status.samples else ""

        # While the task executes: cmd_vel is ignored; an instruction is queued.
        _wait(lambda: executor() == "running" or executor() in DONE, 60, "the task to execute")
        f["saw_running"] = executor() == "running"
        if f["saw_running"]:
            for _ in range(5):
                cmd.publish(turn)
                time.sleep(0.05)
            f["sent_during_task"] = 5
        instruction.publish(store.types["std_msgs/msg/String"](data="say hello"))

        # After the task, while the run lingers: teleoperation turns the robot.
        _wait(lambda: executor() in DONE, 90, "the task to end")
        f["final_status"] = executor()
        n = len(tf.samples)
        _wait(lambda: len(tf.samples) > n, 5, "a /tf after the task")
        yaw0 = _yaw(tf.samples[-1].msg)
        t_end = time.monotonic() + TURN_S
        sent = 0
        while time.monotonic() < t_end:
            cmd.publish(turn)
            sent += 1
            time.sleep(0.05)
        f["sent_after_task"] = sent
        # Silent now, with the base turning: the watchdog must stop it.
        time.sleep(0.8)
        n = len(tf.samples)
        _wait(lambda: len(tf.samples) > n, 5, "a /tf after the turn")
        yaw1 = _yaw(tf.samples[-1].msg)
        time.sleep(0.5)
        n = len(tf.samples)
        _wait(lambda: len(tf.samples) > n, 5, "a later /tf")
        yaw2 = _yaw(tf.samples[-1].msg)
        f["turned_rad"] = math.remainder(yaw1 - yaw0, math.tau)
        f["turned_after_silence_rad"] = math.remainder(yaw2 - yaw1, math.tau)
        f["joint_states"] = js.samples[-1]
        f["joint_state_count"] = len(js.samples)
        f["tf"] = tf.samples[-1].msg
        f["images"] = [s.msg for s in img.samples]
        f["status_count"] = len(status.samples)
        f["rejected"] = {r.key: r.rejected for r in (js, tf, status, img)}
        f["attachment_sizes"] = {s.attachment_size for r in (js, tf, status) for s in r.samples}
        f["js_seqs"] = [s.seq for s in js.samples]


def test_rtvla_run_talks_to_ros2_through_the_rmw_zenoh_format(tmp_path: Path) -> None:
    port = free_port()
    cfg = parse_config({
        "ros2": {"enabled": True, "listen": [f"tcp/127.0.0.1:{port}"], "connect": [], "image_hz": 2.0},
        "runtime": {"linger_s": LINGER_S},
    })
    ros = RosSide(port)
    t0 = time.monotonic()
    outcome = run_task(cfg, RunOptions(task="go to the table", out_dir=tmp_path / "run", dashboard=False,
                                       record=False), on_bridge=ros.start)
    wall = time.monotonic() - t0
    ros.thread.join(timeout=30)
    assert not ros.thread.is_alive(), "the ROS side never finished"
    if ros.error is not None:
        raise ros.error
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    f = ros.found
    print(f"run {wall:.1f} s; turned {f['turned_rad']:.2f} rad; ros2 report: {json.dumps(report['ros2'])}")

    # The task ran undisturbed by the ignored cmd_vel.
    assert report["task"]["success"] is True, outcome.reason
    assert outcome.exit_code in (EXIT_OK, EXIT_BUDGET), outcome.reason
    assert f["final_status"] == "succeeded"

    # The graph: rtvla's node and its endpoints, as rmw_zenoh declares them.
    assert f["node_token"] == f"@ros2_lv/0/{f['bridge_zid']}/0/0/NN/%/%/rtvla"
    tokens = f["tokens"]
    assert tokens[("MP", "/joint_states")] == (JS[2], JS_HASH)
    assert tokens[("MP", "/tf")] == (TF[2], TF_HASH)
    assert tokens[("MP", "/head/image_raw")] == (IMAGE[2], IMAGE_HASH)
    assert tokens[("MS", "/cmd_vel")] == (CMD_VEL[2], TWIST_HASH)
    assert tokens[("MS", "/rtvla/instruction")] == (INSTRUCTION[2], STRING_HASH)

    # What the peer received deserializes with rosbags and carries rmw_zenoh's attachment.
    js = f["joint_states"].msg
    assert js.name == f["joint_names"] and len(js.position) == len(js.name)
    assert abs(js.header.stamp.sec + js.header.stamp.nanosec / 1e9 - time.time()) < 120  # ROS time
    assert f["js_seqs"] == sorted(f["js_seqs"]) and f["joint_state_count"] >= 20
    assert f["attachment_sizes"] == {33} and set(f["rejected"].values()) == {0}
    t = f["tf"].transforms[0]
    assert (t.header.frame_id, t.child_frame_id) == ("world", "base_link")
    assert f["images"], "no head camera image reached the peer"
    im = f["images"][-1]
    assert im.encoding == "rgb8" and im.height > 0 and im.step == im.width * 3
    assert len(im.data) == im.height * im.step

    # cmd_vel: ignored while the task executed, applied through the control loop afterwards,
    # and the watchdog stopped the base once the sender went silent.
    ros2 = report["ros2"]
    assert f["saw_running"], "the peer never saw the task executing"
    assert ros2["cmd_vel"]["ignored_during_task"] >= 1
    assert ros2["cmd_vel"]["applied"] >= f["sent_after_task"] // 2
    assert f["turned_rad"] > 0.3, f"the robot turned {f['turned_rad']:.3f} rad under /cmd_vel"
    assert abs(f["turned_after_silence_rad"]) < 0.05, "the base kept turning after cmd_vel went silent"
    control = report["control"]
    assert control["watchdog_trips"] >= 1, control
    events = control.get("events", []) + report["events"]
    assert any("setpoint timeout" in e["message"] for e in events if e["kind"] == "watchdog"), events

    # The instruction was queued, not run: rtvla run carries out its own task.
    assert ros2["instructions"] == {"received": ["say hello"], "pending": ["say hello"]}
    kinds = {(e["component"], e["kind"]) for e in report["events"]}
    assert {("ros2", "bridge"), ("ros2", "cmd_vel_ignored"), ("ros2", "cmd_vel"), ("ros2", "instruction"),
            ("ros2", "stopped")} <= kinds
    assert ros2["published"]["joint_states"] >= 20 and ros2["published"]["images"] >= 1
    assert ros2["stop_s"] is not None and ros2["stop_s"] < 3.0
    assert wall < 120


def _check(tmp_path: Path, text: str) -> Any:
    f = tmp_path / "rtvla.toml"
    f.write_text(text)
    return CliRunner().invoke(app, ["config", "check", str(f)])


def test_config_check_validates_the_ros2_and_record_tables(tmp_path: Path) -> None:
    ok = _check(tmp_path, '[ros2]\nenabled = true\nnamespace = "/robot1"\nconnect = ["tcp/10.0.0.2:7447"]\n'
                          '[record]\ncamera_hz = 5.0\n')
    assert ok.exit_code == 0, ok.output
    bad = _check(tmp_path, '[ros2]\nenabled = true\ndomain_id = 300\nlisten = ["127.0.0.1:7447"]\n'
                           '[record]\ncamera_hz = -1\n')
    assert bad.exit_code == 2, bad.output
    out = " ".join(bad.output.split())
    for field in ("ros2.domain_id", "ros2.listen", "record.camera_hz"):
        assert field in out, out
    clash = _check(tmp_path, '[robot]\ntype = "ros2"\n[robot.options]\njoint_names = ["a"]\n'
                             '[ros2]\nenabled = true\n')
    assert clash.exit_code != 0
    assert "ros2.namespace" in " ".join(clash.output.split()), clash.output


def test_a_bridge_that_cannot_start_is_an_event_and_the_run_goes_on(tmp_path: Path) -> None:
    port = free_port()
    blocker = zenoh.open(zenoh_config(listen=[f"tcp/127.0.0.1:{port}"]))  # holds the bridge's port
    try:
        cfg = parse_config({"ros2": {"enabled": True, "listen": [f"tcp/127.0.0.1:{port}"], "connect": []},
                            "runtime": {"linger_s": 0.0}})
        started: list[Any] = []
        outcome = run_task(cfg, RunOptions(task="say hello", out_dir=tmp_path / "run", dashboard=False,
                                           record=False), on_bridge=started.append)
    finally:
        blocker.close()
    report = outcome.report
    assert report["task"]["success"] is True, outcome.reason
    assert not started
    assert report["ros2"]["started"] is False
    assert "cannot open a Zenoh session" in report["ros2"]["error"]
    assert any(e["component"] == "ros2" and e["kind"] == "failed" for e in report["degradations"])
