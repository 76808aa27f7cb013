from __future__ import annotations

import numpy as np
import pytest

from rtvla.action.trajectory import ArmTrajectory, TrajStatus, check_goal, plan_trajectory
from rtvla.bench.control import default_limits
from rtvla.errors import TrajectoryError

DT = 0.01


def run_online(traj: ArmTrajectory, ticks: int, switch: dict[int, np.ndarray] | None = None):
    qs, vs, accs = [], [], []
    for k in range(ticks):
        if switch and k in switch:
            traj.set_goal(switch[k])
        status = traj.step()
        assert status is not TrajStatus.ERROR, traj.last_error
        qs.append(traj.position.copy())
        vs.append(traj.velocity.copy())
        accs.append(traj.acceleration.copy())
    return np.array(qs), np.array(vs), np.array(accs)


def test_online_reaches_goal_within_limits():
    lim = default_limits(6)
    traj = ArmTrajectory(lim, DT)
    traj.reset(np.zeros(6))
    goal = np.array([1.0, -0.8, 0.5, 2.0, -2.0, 0.1])
    traj.set_goal(goal)
    q, v, a = run_online(traj, 400)
    assert traj.status is TrajStatus.FINISHED
    np.testing.assert_allclose(q[-1], goal, atol=1e-9)
    assert np.all(np.abs(v) <= lim.dq_max + 1e-9)
    assert np.all(np.abs(a) <= lim.ddq_max + 1e-9)
    # Finite differences of the produced positions obey the limits too.
    fd_v = np.diff(np.vstack([np.zeros(6), q]), axis=0) / DT
    assert np.all(np.abs(fd_v) <= lim.dq_max * (1 + 1e-6))
    fd_a = np.diff(v, axis=0) / DT
    assert np.all(np.abs(fd_a) <= lim.ddq_max * (1 + 1e-6))


def test_new_goal_mid_motion_keeps_velocity_continuous():
    lim = default_limits(3)
    traj = ArmTrajectory(lim, DT)
    traj.reset(np.zeros(3))
    traj.set_goal(np.array([2.0, 2.0, 2.0]))
    # Reverse mid-motion, at full speed.
    q, v, a = run_online(traj, 600, switch={80: np.array([-1.0, 0.5, -2.0])})
    assert np.abs(v[79]).max() > 1.0  # really moving when the goal changed
    dv = np.abs(np.diff(v, axis=0))
    assert dv.max() <= lim.ddq_max.max() * DT * (1 + 1e-6)  # no jump in velocity
    da = np.abs(np.diff(a, axis=0))
    assert da.max() <= lim.jerk_max.max() * DT * (1 + 1e-6)  # nor in acceleration beyond jerk
    np.testing.assert_allclose(q[-1], [-1.0, 0.5, -2.0], atol=1e-9)


def test_speed_scale_limits_velocity():
    lim = default_limits(2)
    traj = ArmTrajectory(lim, DT, speed_scale=0.5)
    traj.reset(np.zeros(2))
    traj.set_goal(np.array([2.5, -2.5]))
    _, v, _ = run_online(traj, 800)
    assert np.abs(v).max() <= 0.5 * lim.dq_max.max() + 1e-9
    assert np.abs(v).max() > 0.45 * lim.dq_max.max()


def test_idle_before_goal_and_bad_goals_refused():
    lim = default_limits(2)
    traj = ArmTrajectory(lim, DT)
    assert traj.try_set_goal(np.zeros(2)) is not None  # not reset yet
    traj.reset(np.array([0.1, 0.2]))
    assert traj.step() is TrajStatus.IDLE
    np.testing.assert_allclose(traj.position, [0.1, 0.2])
    with pytest.raises(TrajectoryError, match="not finite"):
        traj.set_goal(np.array([np.nan, 0.0]))
    with pytest.raises(TrajectoryError, match=r"joint2 = 9\.0000 outside"):
        traj.set_goal(np.array([0.0, 9.0]))
    with pytest.raises(TrajectoryError, match="shape"):
        traj.set_goal(np.zeros(3))
    assert check_goal(np.array([0.0, 0.0]), lim) is None


def test_bad_construction():
    lim = default_limits(2)
    with pytest.raises(TrajectoryError, match="period_s"):
        ArmTrajectory(lim, 0.0)
    with pytest.raises(TrajectoryError, match="speed_scale"):
        ArmTrajectory(lim, DT, speed_scale=1.5)
    bad = type(lim)(lim.joint_names, lim.q_min, lim.q_max, np.array([1.0, -1.0]), lim.ddq_max,
                    lim.jerk_max)
    with pytest.raises(TrajectoryError, match="dq_max"):
        ArmTrajectory(bad, DT)


def test_plan_trajectory_offline_matches_limits():
    lim = default_limits(4)
    goal = np.array([1.0, 0.0, -1.5, 0.7])
    tr = plan_trajectory(np.zeros(4), goal, lim, DT)
    np.testing.assert_allclose(tr.q[-1], goal, atol=1e-9)
    np.testing.assert_allclose(tr.q[0], np.zeros(4), atol=1e-12)
    assert np.abs(tr.dq).max() <= lim.dq_max.max() + 1e-9
    assert np.abs(tr.ddq).max() <= lim.ddq_max.max() + 1e-9
    assert tr.duration_s == pytest.approx(tr.t[-1])
    with pytest.raises(TrajectoryError, match="goal"):
        plan_trajectory(np.zeros(4), np.full(4, 5.0), lim, DT)
