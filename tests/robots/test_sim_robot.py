from __future__ import annotations

import threading

import numpy as np
import pytest

from rtvla.errors import CommandRejected, RobotError
from rtvla.robots.base import CommandMode, Robot, RobotCommand
from rtvla.robots.sim import SceneConfig, SimRobot


def cmd(**kw) -> RobotCommand:
    return RobotCommand(stamp_ns=0, **kw)


def test_implements_robot_protocol_with_model_limits(robot: SimRobot) -> None:
    assert isinstance(robot, Robot)
    lim = robot.limits
    assert lim.dof == 5
    assert np.all(lim.q_min < lim.q_max)
    assert lim.q_min[0] == pytest.approx(-2.8) and lim.q_max[1] == pytest.approx(2.0)
    s = robot.read_state()
    assert s.q.shape == s.dq.shape == s.effort.shape == (5,)
    np.testing.assert_allclose(s.base_pose, robot.scene.place("home").pose, atol=1e-9)
    assert s.gripper == pytest.approx(0.0, abs=1e-6) and s.holding is None


def test_reaches_joint_position_targets(robot: SimRobot) -> None:
    target = np.array([0.5, 0.6, 1.4, 1.0, -0.3])
    robot.send_command(cmd(arm=target))
    robot.advance(2.0)
    s = robot.read_state()
    np.testing.assert_allclose(s.q, target, atol=0.01)
    assert np.all(np.abs(s.dq) < 0.05)


def test_velocity_mode_moves_joints_at_the_commanded_rate(robot: SimRobot) -> None:
    q0 = robot.read_state().q
    v = np.array([0.4, 0.0, 0.0, 0.0, -0.5])
    robot.send_command(cmd(mode=CommandMode.VELOCITY, arm=v))
    robot.advance(1.0)
    moved = robot.read_state().q - q0
    np.testing.assert_allclose(moved[[0, 4]], [0.4, -0.5], atol=0.05)
    assert np.all(np.abs(moved[1:4]) < 0.02)


def test_base_velocity_is_in_the_base_frame(robot: SimRobot) -> None:
    robot.teleport_base((-2.0, -2.0, np.pi / 2))  # facing +y: base-frame +x is world +y
    robot.send_command(cmd(base_vel=np.array([0.4, 0.0, 0.0])))
    robot.advance(1.0)
    s = robot.read_state()
    assert s.base_pose[1] - (-2.0) == pytest.approx(0.4, abs=0.05)
    assert abs(s.base_pose[0] - (-2.0)) < 0.01
    assert s.base_vel[0] == pytest.approx(0.4, abs=0.02)
    robot.send_command(cmd(base_vel=np.array([0.0, 0.0, 1.0])))
    robot.advance(0.5)
    assert robot.read_state().base_pose[2] - np.pi / 2 == pytest.approx(0.5, abs=0.05)


def test_stop_zeroes_base_velocity_and_holds_the_arm(robot: SimRobot) -> None:
    robot.send_command(
        cmd(base_vel=np.array([0.3, 0.2, 0.5]), arm=np.array([1.0, 0.5, 1.0, 1.0, 0.0]))
    )
    robot.advance(0.3)
    robot.stop()
    held = robot.read_state().q
    robot.advance(0.5)
    s = robot.read_state()
    assert np.all(np.abs(s.base_vel) < 0.01)
    np.testing.assert_allclose(s.q, held, atol=0.05)


@pytest.mark.parametrize(
    "bad",
    [
        dict(arm=np.array([np.nan, 0, 0, 0, 0])),
        dict(arm=np.array([0.0, 5.0, 0.0, 0.0, 0.0])),  # shoulder_pitch beyond 2.0
        dict(arm=np.zeros(4)),
        dict(mode=CommandMode.VELOCITY, arm=np.array([9.0, 0, 0, 0, 0])),
        dict(base_vel=np.array([2.0, 0.0, 0.0])),
        dict(base_vel=np.array([0.0, np.inf, 0.0])),
        dict(gripper=1.5),
    ],
)
def test_invalid_commands_are_rejected_and_not_applied(robot: SimRobot, bad: dict) -> None:
    before = robot.read_state()
    with pytest.raises(CommandRejected):
        # a valid part alongside the bad one must not be applied either
        robot.send_command(cmd(**{"gripper": 1.0, **bad} if "gripper" not in bad else bad))
    robot.advance(0.3)
    after = robot.read_state()
    np.testing.assert_allclose(after.q, before.q, atol=0.01)
    np.testing.assert_allclose(after.base_pose, before.base_pose, atol=1e-6)
    assert after.gripper == pytest.approx(before.gripper, abs=0.01)


def test_commands_need_a_connected_robot(scene: SceneConfig) -> None:
    r = SimRobot(scene, lockstep=True)
    with pytest.raises(RobotError, match="connect"):
        r.send_command(cmd(gripper=1.0))
    with pytest.raises(RobotError, match="lockstep"):
        SimRobot(scene).step(1)


def _move_to(robot: SimRobot, xyz, seconds: float = 1.5) -> None:
    q = robot.kinematics.ik(np.asarray(xyz, dtype=float), robot.read_state().q)
    robot.send_command(cmd(arm=q))
    robot.advance(seconds)


def test_grasp_weld_holds_a_cube_while_the_arm_lifts(robot: SimRobot) -> None:
    robot.teleport_base(robot.scene.place("table").pose)
    cube = robot.object_position("red_cube")
    _move_to(robot, cube + np.array([0, 0, 0.10]))
    _move_to(robot, cube)
    robot.send_command(cmd(gripper=1.0))
    robot.advance(0.5)
    assert robot.read_state().holding == "red_cube"
    assert robot.read_state().gripper > 0.9
    _move_to(robot, cube + np.array([0, 0, 0.15]))
    lifted = robot.object_position("red_cube")
    assert lifted[2] - cube[2] == pytest.approx(0.15, abs=0.01)
    np.testing.assert_allclose(lifted, robot.grasp_position(), atol=0.01)
    # the other cubes stayed where they were
    assert robot.object_position("green_cube")[2] == pytest.approx(cube[2], abs=0.005)
    # releasing drops it back onto the table
    robot.send_command(cmd(gripper=0.0))
    robot.advance(1.0)
    assert robot.read_state().holding is None
    assert robot.object_position("red_cube")[2] == pytest.approx(cube[2], abs=0.01)


def test_closing_on_nothing_grasps_nothing(robot: SimRobot) -> None:
    robot.send_command(cmd(gripper=1.0))
    robot.advance(0.5)
    s = robot.read_state()
    assert s.gripper > 0.9 and s.holding is None


def test_reset_restores_the_keyframe(robot: SimRobot) -> None:
    robot.send_command(cmd(base_vel=np.array([0.3, 0.0, 0.0])))
    robot.advance(0.5)
    robot.reset()
    np.testing.assert_allclose(
        robot.read_state().base_pose, robot.scene.place("home").pose, atol=1e-9
    )
    assert robot.sim_time == 0.0


def test_realtime_thread_follows_the_clock(scene: SceneConfig) -> None:
    with SimRobot(scene) as r:
        r.send_command(cmd(base_vel=np.array([0.3, 0.0, 0.0])))
        done = threading.Event()
        # wait on a condition (simulated time), not a fixed sleep
        for _ in range(200):
            if r.sim_time >= 0.5:
                done.set()
                break
            done.wait(0.01)
        assert done.is_set(), f"physics thread stalled at {r.sim_time} s"
        x = r.read_state().base_pose[0]
        assert x > -2.5 + 0.05
        st = r.stats()
        assert st.steps > 0 and st.lag_s < 0.2
    assert not r.connected


def test_pick_red_cube_and_place_it_in_the_blue_bin(robot: SimRobot) -> None:
    robot.teleport_base(robot.scene.place_for("red_cube").pose)
    cube = robot.object_position("red_cube")
    _move_to(robot, cube + np.array([0, 0, 0.10]))
    _move_to(robot, cube)
    robot.send_command(cmd(gripper=1.0))
    robot.advance(0.5)
    _move_to(robot, cube + np.array([0, 0, 0.15]))
    assert robot.holding == "red_cube"
    # the held cube travels with the hand when the base is moved
    robot.teleport_base(robot.scene.place_for("blue_bin").pose)
    robot.advance(0.2)
    np.testing.assert_allclose(robot.object_position("red_cube"), robot.grasp_position(), atol=0.01)
    drop = robot.frame_pose(robot.scene.receptacles["blue_bin"].drop_site, kind="site")[:3, 3]
    _move_to(robot, drop, seconds=2.5)
    robot.send_command(cmd(gripper=0.0))
    robot.advance(1.5)
    assert robot.holding is None
    bin_xy = robot.frame_pose("blue_bin", kind="body")[:2, 3]
    final = robot.object_position("red_cube")
    assert np.all(np.abs(final[:2] - bin_xy) < 0.08), f"cube at {final}, bin at {bin_xy}"
    assert 0.40 < final[2] < 0.45  # resting on the bin's floor (counter top 0.40 + 1 cm floor)


def test_state_is_a_read_only_snapshot_updated_by_physics(robot: SimRobot) -> None:
    s0 = robot.read_state()
    assert robot.read_state() is s0  # no physics since: the same snapshot, no locking
    with pytest.raises(ValueError):
        s0.q[0] = 1.0
    robot.step(1)
    s1 = robot.read_state()
    assert s1 is not s0 and s1.stamp_ns >= s0.stamp_ns


def test_realtime_thread_reports_rtf_to_the_recorder(scene: SceneConfig) -> None:
    from rtvla.metrics import Recorder
    from rtvla.timing import FakeClock

    rec = Recorder()
    clock = FakeClock()
    # a fake clock that jumps 10 ms per wait: the thread must step 5 physics steps each time
    with SimRobot(scene, clock=clock, recorder=rec, physics_period_s=0.001) as r:
        waited = threading.Event()
        for _ in range(2000):
            clock.advance(0.01)
            if rec.snapshot().get("sim", {}).get("gauges", {}).get("rtf"):
                waited.set()
                break
            waited.wait(0.002)
        assert waited.is_set(), "no rtf gauge after simulated seconds"
        assert r.stats().steps > 0
