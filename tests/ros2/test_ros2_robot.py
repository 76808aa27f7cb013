"""Ros2Robot against a fake ROS 2 driver: a real Zenoh session behaving like an rmw_zenoh node
that publishes ``/joint_states`` and records the commands it receives (see _rmw_peer.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("zenoh")

import zenoh
from _rmw_peer import RmwPeer, free_port

from rtvla import parts
from rtvla.channels.zenoh_channel import zenoh_config
from rtvla.errors import CommandRejected, PartError, RobotError
from rtvla.robots.base import CommandMode, Robot, RobotCommand
from rtvla.robots.ros2 import Ros2Robot, Ros2RobotOptions, make_robot
from rtvla.timing import MONOTONIC, FakeClock

JS_HASH = "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
TRAJ_HASH = "RIHS01_179b33eba59d676f6d967ac71fe35e7ca2f64b2f3928f4a018cec115e213796e"
F64_HASH = "RIHS01_1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f"
TWIST_HASH = "RIHS01_9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a"
JS_KEY = f"0/joint_states/sensor_msgs::msg::dds_::JointState_/{JS_HASH}"
TRAJ_KEY = f"0/joint_trajectory_controller/joint_trajectory/trajectory_msgs::msg::dds_::JointTrajectory_/{TRAJ_HASH}"
F64_KEY = f"0/forward_position_controller/commands/std_msgs::msg::dds_::Float64MultiArray_/{F64_HASH}"
TWIST_KEY = f"0/cmd_vel/geometry_msgs::msg::dds_::Twist_/{TWIST_HASH}"

JOINTS = ["joint1", "joint2", "joint3"]


class FakeDriver:
    """A ROS 2 driver node: publishes joint_states at 50 Hz (joints in its own order, plus a
    gripper joint rtvla does not drive) and follows the position commands it receives."""

    def __init__(self, session, *, float64: bool = False) -> None:
        self.peer = RmwPeer(session, "fake_driver")
        self.q = {"joint3": 0.3, "gripper_joint": 0.01, "joint1": 0.1, "joint2": 0.2}
        self.js = self.peer.publisher("/joint_states", JS_KEY, "sensor_msgs/msg/JointState",
                                      "sensor_msgs::msg::dds_::JointState_", JS_HASH)
        if float64:
            self.commands = self.peer.record("/forward_position_controller/commands", F64_KEY,
                                             "std_msgs/msg/Float64MultiArray",
                                             "std_msgs::msg::dds_::Float64MultiArray_", F64_HASH)
        else:
            self.commands = self.peer.record("/joint_trajectory_controller/joint_trajectory", TRAJ_KEY,
                                             "trajectory_msgs/msg/JointTrajectory",
                                             "trajectory_msgs::msg::dds_::JointTrajectory_", TRAJ_HASH)
        self.twists = self.peer.record("/cmd_vel", TWIST_KEY, "geometry_msgs/msg/Twist",
                                       "geometry_msgs::msg::dds_::Twist_", TWIST_HASH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        T = self.peer.store.types
        while not self._stop.wait(0.02):
            names = list(self.q)
            msg = T["sensor_msgs/msg/JointState"](
                header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                                frame_id=""),
                name=names, position=np.array([self.q[n] for n in names]), velocity=np.zeros(len(names)),
                effort=np.zeros(len(names)))
            self.js.publish(msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def driver_port() -> Iterator[tuple[object, int]]:
    for _ in range(5):
        port = free_port()
        try:
            session = zenoh.open(zenoh_config(listen=[f"tcp/127.0.0.1:{port}"]))
            break
        except Exception:
            continue
    else:
        raise RuntimeError("no free port")
    try:
        yield session, port
    finally:
        session.close()


def _options(port: int, **kw) -> Ros2RobotOptions:
    return Ros2RobotOptions(joint_names=JOINTS, q_min=[-1, -1, -1], q_max=[1, 1, 1],
                            connect=[f"tcp/127.0.0.1:{port}"], state_timeout_s=20.0, **kw)


def test_reads_joint_states_and_sends_trajectories_and_twists(driver_port) -> None:
    session, port = driver_port
    driver = FakeDriver(session)
    robot = Ros2Robot(_options(port))
    try:
        assert isinstance(robot, Robot)
        before = MONOTONIC.now_ns()
        robot.connect()
        state = robot.read_state()
        np.testing.assert_allclose(state.q, [0.1, 0.2, 0.3])  # configured order, extra joint dropped
        assert state.stamp_ns >= before - 1_000_000_000 and state.stamp_ns <= MONOTONIC.now_ns()

        robot.send_command(RobotCommand(stamp_ns=0, arm=np.array([0.5, -0.5, 0.0]), base_vel=np.array([0.1, 0, 0.2])))
        with pytest.raises(CommandRejected, match="joint2"):
            robot.send_command(RobotCommand(stamp_ns=0, arm=np.array([0.0, 1.5, 0.0])))
        with pytest.raises(CommandRejected, match="base_vel"):
            robot.send_command(RobotCommand(stamp_ns=0, base_vel=np.array([5.0, 0, 0])))
        with pytest.raises(CommandRejected, match="not finite"):
            robot.send_command(RobotCommand(stamp_ns=0, arm=np.array([np.nan, 0, 0])))
        robot.send_command(RobotCommand(stamp_ns=0, arm=np.array([0.6, -0.4, 0.1])))

        cmds = driver.commands.wait(2)
        assert [c.seq for c in cmds] == [1, 2]  # nothing was published for the refused commands
        traj = cmds[0].msg
        assert traj.joint_names == JOINTS and len(traj.points) == 1
        np.testing.assert_allclose(traj.points[0].positions, [0.5, -0.5, 0.0])
        assert traj.points[0].time_from_start.nanosec == 100_000_000
        np.testing.assert_allclose(cmds[1].msg.points[0].positions, [0.6, -0.4, 0.1])
        tw = driver.twists.wait(1)[0].msg
        assert (tw.linear.x, tw.angular.z) == (0.1, 0.2)
        assert driver.commands.rejected == 0 and driver.twists.rejected == 0
    finally:
        robot.close()
        driver.close()


def test_stop_latches_until_reset(driver_port) -> None:
    session, port = driver_port
    driver = FakeDriver(session)
    robot = Ros2Robot(_options(port))
    try:
        robot.connect()
        robot.send_command(RobotCommand(stamp_ns=0, arm=np.array([0.1, 0.2, 0.3]), base_vel=np.array([0.3, 0, 0])))
        driver.twists.wait(1)
        driver.q.update(joint1=0.15, joint2=0.25, joint3=0.35)  # the arm moved
        seen = robot._states.seq
        assert robot._states.wait_newer(seen + 1, timeout=20.0) is not None  # a fresh state arrived
        robot.stop()
        assert robot.stopped
        twists = driver.twists.wait(2)
        assert (twists[-1].msg.linear.x, twists[-1].msg.angular.z) == (0.0, 0.0)  # zero velocity
        hold = driver.commands.wait(2)[-1].msg
        np.testing.assert_allclose(hold.points[0].positions, [0.15, 0.25, 0.35])  # holds where it is
        for cmd in (RobotCommand(stamp_ns=0, arm=np.array([0.0, 0.0, 0.0])),
                    RobotCommand(stamp_ns=0, base_vel=np.array([0.1, 0, 0]))):
            with pytest.raises(CommandRejected, match="latched"):
                robot.send_command(cmd)
        assert robot.commands_refused == 2
        robot.reset_stop()
        robot.send_command(RobotCommand(stamp_ns=0, arm=np.array([0.0, 0.0, 0.0])))
        cmds = driver.commands.wait(3)
        assert [c.seq for c in cmds] == [1, 2, 3]  # first, hold, after reset: nothing in between
        np.testing.assert_allclose(cmds[-1].msg.points[0].positions, [0.0, 0.0, 0.0])
    finally:
        robot.close()
        driver.close()


def test_forward_controller_float64_multiarray(driver_port) -> None:
    session, port = driver_port
    driver = FakeDriver(session, float64=True)
    robot = parts.build("robot", "ros2", {
        "joint_names": JOINTS, "q_min": [-1, -1, -1], "q_max": [1, 1, 1], "has_base": False,
        "attachment": "keyed",  # as an older rmw_zenoh_cpp sends it; the driver reads either
        "connect": [f"tcp/127.0.0.1:{port}"], "state_timeout_s": 20.0,
        "command_topic": "/forward_position_controller/commands",
        "command_type": "std_msgs/msg/Float64MultiArray"})
    assert isinstance(robot, Ros2Robot)
    try:
        robot.connect()
        # The control loop always sends a base velocity; zero is fine for a robot without a base.
        robot.send_command(RobotCommand(stamp_ns=0, arm=np.array([0.2, 0.1, 0.0]), base_vel=np.zeros(3)))
        with pytest.raises(CommandRejected, match="no base"):
            robot.send_command(RobotCommand(stamp_ns=0, base_vel=np.array([0.1, 0, 0])))
        with pytest.raises(CommandRejected, match="position"):
            robot.send_command(RobotCommand(stamp_ns=0, mode=CommandMode.VELOCITY, arm=np.zeros(3)))
        first = driver.commands.wait(1)[0]
        np.testing.assert_allclose(first.msg.data, [0.2, 0.1, 0.0])
        assert first.attachment_size == 77 and first.seq == 1  # the keyed layout
    finally:
        robot.close()
        driver.close()


def test_connect_fails_clearly_without_a_driver(driver_port) -> None:
    _, port = driver_port
    robot = Ros2Robot(_options(port).model_copy(update={"state_timeout_s": 0.5}))
    with pytest.raises(RobotError, match="no /joint_states"):
        robot.connect()
    with pytest.raises(RobotError, match="before connect"):
        robot.read_state()


def test_options_are_validated_naming_the_field() -> None:
    with pytest.raises(PartError, match="q_min"):
        parts.build("robot", "ros2", {"joint_names": JOINTS, "q_min": [0.0]})
    with pytest.raises(PartError, match="distro"):
        parts.build("robot", "ros2", {"joint_names": JOINTS, "distro": "iron"})
    with pytest.raises(PartError, match="command_interface"):
        parts.build("robot", "ros2", {"joint_names": JOINTS, "command_interface": "velocity"})
    with pytest.raises(PartError, match="cmd_vel_topic"):
        parts.build("robot", "ros2", {"joint_names": JOINTS, "cmd_vel_topic": "cmd-vel"})
    with pytest.raises(PartError, match="bogus: unknown key"):
        parts.build("robot", "ros2", {"joint_names": JOINTS, "bogus": 1})
    robot = make_robot(joint_names=JOINTS, domain_id=7, distro="humble")
    assert robot.limits.dof == 3 and robot.options.domain_id == 7


def test_a_quiet_driver_makes_read_state_fail(driver_port) -> None:
    session, port = driver_port
    driver = FakeDriver(session)
    clock = FakeClock(1_000_000_000)
    robot = Ros2Robot(_options(port, stale_after_s=0.5), clock=clock)
    try:
        robot.connect()
        driver.close()  # the driver stops publishing
        robot.read_state()  # the newest state is fresh on the robot's clock
        clock.advance(2_000_000_000)
        with pytest.raises(RobotError, match="old"):
            robot.read_state()
    finally:
        robot.close()
        driver.close()


def test_embodiment_builds_the_robot_in_another_process_from_the_same_options() -> None:
    from rtvla.robots.ros2 import make_embodiment

    emb = make_embodiment(joint_names=JOINTS, has_base=False, domain_id=4)
    assert emb.has_arm and not emb.has_base and emb.process_safe and emb.dof == 3
    twin = emb.process_factory()  # what the control process does: import, validate, build
    assert isinstance(twin, Ros2Robot) and twin.options == emb.robot.options
