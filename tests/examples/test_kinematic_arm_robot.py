"""The example robot against rtvla's Robot protocol: commands, latched stop, kinematics, grasping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtvla.errors import CommandRejected, IKError, RobotError
from rtvla.robots.base import CommandMode, Robot, RobotCommand, RobotState


def _cmd(**kw) -> RobotCommand:
    return RobotCommand(stamp_ns=0, **kw)


def test_satisfies_the_robot_protocol(arm) -> None:
    assert isinstance(arm, Robot)
    st = arm.read_state()
    assert isinstance(st, RobotState) and st.q.shape == (5,) and arm.limits.dof == 5
    assert np.allclose(st.base_pose, arm.scene.places["home"].pose)
    assert not st.q.flags.writeable  # a published snapshot, never mutated


def test_invalid_commands_are_rejected_and_change_nothing(arm) -> None:
    before = arm.read_state().q.copy()
    q = before.copy()
    q[1] = 5.0
    with pytest.raises(CommandRejected, match=r"command\.arm\[shoulder_pitch\] = 5\.0000 outside"):
        arm.send_command(_cmd(arm=q))
    with pytest.raises(CommandRejected, match="not finite"):
        arm.send_command(_cmd(arm=np.full(5, np.nan)))
    with pytest.raises(CommandRejected, match="base_vel linear"):
        arm.send_command(_cmd(base_vel=np.array((2.0, 0, 0))))
    arm.advance(0.5)
    assert np.allclose(arm.read_state().q, before)


def test_commands_before_connect_fail(scene) -> None:
    from rtvla_kinematic_arm import KinematicArm

    with pytest.raises(RobotError, match="before connect"):
        KinematicArm(scene, lockstep=True).send_command(_cmd(gripper=1.0))


def test_stop_latches_until_reset(arm) -> None:
    arm.send_command(_cmd(base_vel=np.array((0.3, 0.0, 0.0))))
    arm.advance(0.5)
    assert arm.read_state().base_vel[0] > 0.2
    arm.stop()
    assert np.allclose(arm.read_state().base_vel, 0.0)
    pose = arm.read_state().base_pose.copy()
    with pytest.raises(RobotError, match=r"stopped \(latched\); call reset_stop\(\)"):
        arm.send_command(_cmd(base_vel=np.array((0.3, 0.0, 0.0))))
    arm.advance(0.5)
    assert np.allclose(arm.read_state().base_pose, pose)
    arm.reset_stop()
    arm.send_command(_cmd(base_vel=np.array((0.3, 0.0, 0.0))))
    arm.advance(0.5)
    assert arm.read_state().base_pose[0] > pose[0] + 0.05
    assert arm.stats()["commands_refused_while_stopped"] == 1


def test_joints_follow_position_and_velocity_commands_within_limits(arm) -> None:
    q0 = arm.read_state().q.copy()
    goal = q0.copy()
    goal[0] -= 1.5
    arm.send_command(_cmd(arm=goal))
    arm.advance(0.1)
    st = arm.read_state()
    assert abs(st.dq[0]) <= arm.limits.dq_max[0] + 1e-9  # capped at the velocity limit
    arm.advance(2.0)
    assert np.allclose(arm.read_state().q, goal, atol=1e-3)
    arm.send_command(_cmd(mode=CommandMode.VELOCITY, arm=np.array((0.5, 0, 0, 0, 0))))
    arm.advance(1.0)
    assert arm.read_state().q[0] == pytest.approx(goal[0] + 0.5, abs=0.03)


def test_base_drives_in_its_own_frame_and_stops_at_furniture(arm) -> None:
    arm.teleport_base((0.2, 0.0, math.pi / 2))  # facing +y
    arm.send_command(_cmd(base_vel=np.array((0.4, 0.0, 0.0))))
    arm.advance(1.0)
    x, y, _ = arm.read_state().base_pose
    assert abs(x - 0.2) < 1e-6 and y > 0.2
    arm.teleport_base((0.6, 0.0, 0.0))  # facing the table 0.5 m away
    arm.send_command(_cmd(base_vel=np.array((0.5, 0.0, 0.0))))
    arm.advance(3.0)
    assert arm.read_state().base_pose[0] < 1.1 - arm.scene.robot.base_half_m + 0.02  # the bumper
    assert arm.bumps > 0


def test_kinematics_round_trip_and_hand_down(arm) -> None:
    kin = arm.kinematics
    rng = np.random.default_rng(3)
    base = np.array((0.5, -0.3, 0.7))
    solved = 0
    for _ in range(200):
        target = np.array((base[0], base[1], 0.0)) + np.array((*rng.uniform(-0.7, 0.7, 2), rng.uniform(0.1, 1.0)))
        try:
            q = kin.ik(target, arm.read_state().q, base)
        except IKError as exc:
            assert "out of reach" in str(exc) or "breaks a limit" in str(exc)
            continue
        solved += 1
        assert np.all(q >= arm.limits.q_min - 1e-9) and np.all(q <= arm.limits.q_max + 1e-9)
        frame = kin.fk_frame(q, base)
        assert np.allclose(frame[:3, 3], target, atol=1e-9)
        assert frame[2, 2] < -0.89  # the hand points down (tilted at most 0.45 rad)
    assert solved > 50
    with pytest.raises(IKError, match="out of reach by"):
        kin.ik((3.0, 0.0, 0.5), arm.read_state().q, (0.0, 0.0, 0.0))


def test_gripper_grasps_a_cube_carries_it_and_drops_it_into_the_bin(arm) -> None:
    arm.teleport_base(arm.scene.places["table"].pose)
    kin, st = arm.kinematics, arm.read_state()
    cube = arm.object_position("red_cube")
    above = kin.ik(cube + np.array((0, 0, 0.1)), st.q, st.base_pose)
    arm.send_command(_cmd(arm=above, gripper=0.0))
    arm.advance(3.0)
    # closing while 10 cm above catches nothing
    arm.send_command(_cmd(gripper=1.0))
    arm.advance(0.5)
    assert arm.read_state().holding is None and arm.read_state().gripper == pytest.approx(1.0)
    arm.send_command(_cmd(gripper=0.0))
    arm.send_command(_cmd(arm=kin.ik(cube, above, st.base_pose)))
    arm.advance(2.0)
    arm.send_command(_cmd(gripper=1.0))
    arm.advance(0.5)
    assert arm.read_state().holding == "red_cube"
    drop = arm.scene.drop_point("blue_bin")
    arm.send_command(_cmd(arm=kin.ik(drop, above, st.base_pose)))
    arm.advance(3.0)
    assert np.allclose(arm.object_position("red_cube")[:2], drop[:2], atol=0.01)  # carried along
    arm.send_command(_cmd(gripper=0.0))
    arm.advance(0.2)
    assert arm.read_state().holding is None
    p = arm.object_position("red_cube")
    assert p[2] == pytest.approx(arm.scene.support_height(*drop[:2]) + 0.02)  # on the bin's floor
    assert arm.scene.support_height(*drop[:2]) == pytest.approx(0.41)


def test_the_motion_thread_runs_on_its_own(scene, until) -> None:
    from rtvla_kinematic_arm import KinematicArm

    with KinematicArm(scene, rate_hz=200) as arm:
        arm.send_command(_cmd(base_vel=np.array((0.2, 0.0, 0.0))))
        assert until(lambda: arm.read_state().base_pose[0] > scene.places["home"].pose[0] + 0.05, 5.0)
        assert until(lambda: arm.steps > 100, 5.0)
    assert arm.read_state().base_vel[0] == 0.0  # close() stopped it


def test_telemetry_round_trip(arm) -> None:
    from rtvla_kinematic_arm.robot import snapshot_from_telemetry

    arm.teleport_base((0.3, 0.2, 0.1))
    buf = np.zeros(arm.telemetry_size())
    arm.write_telemetry(buf)
    snap = snapshot_from_telemetry(buf, arm.object_names())
    want = arm.snapshot()
    assert np.allclose(snap.base_pose, want.base_pose) and np.allclose(snap.q, want.q)
    assert all(np.allclose(snap.objects[n], want.objects[n]) for n in want.objects)
    assert snap.holding is None
