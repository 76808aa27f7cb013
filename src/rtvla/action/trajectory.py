"""Jerk-limited online arm trajectories through ruckig.

:class:`ArmTrajectory` follows a joint-position goal one control period at a time. A new goal
during a motion is followed smoothly: the generator starts from the current *kinematic*
state (position, velocity, acceleration it produced last tick), so velocity and acceleration
stay continuous and within the robot's ``dq_max``/``ddq_max``/``jerk_max``.

The hot path (:meth:`ArmTrajectory.step`) returns a :class:`TrajStatus` value, never raises,
and reuses preallocated ruckig ``InputParameter``/``OutputParameter`` objects.

Usage::

    traj = ArmTrajectory(robot.limits, period_s=0.01)
    traj.reset(robot.read_state().q)
    traj.set_goal(np.array([0.3, -0.5, 0.8, 0.0, 0.2, 0.0]))
    while traj.step() is TrajStatus.WORKING:
        robot.send_command(RobotCommand(stamp_ns=..., arm=traj.position.copy()))

:func:`plan_trajectory` computes a whole trajectory offline (for previews and tests).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

import numpy as np
from ruckig import InputParameter, OutputParameter, Result, Ruckig, RuckigError, Trajectory

from rtvla.errors import TrajectoryError
from rtvla.robots.base import RobotLimits

__all__ = ["ArmTrajectory", "SampledTrajectory", "TrajStatus", "check_goal", "plan_trajectory"]

logger = logging.getLogger(__name__)


class TrajStatus(str, Enum):
    """What one :meth:`ArmTrajectory.step` did."""

    IDLE = "idle"  # no goal yet: holding the reset position
    WORKING = "working"  # moving toward the goal
    FINISHED = "finished"  # at the goal (position reached, velocity zero)
    ERROR = "error"  # ruckig refused the input; the state was left unchanged


def check_goal(goal: np.ndarray, limits: RobotLimits, *, tol: float = 1e-9) -> str | None:
    """Why ``goal`` is not a valid arm position goal, or None when it is (no exception)."""
    g = np.asarray(goal, dtype=float)
    if g.shape != (limits.dof,):
        return f"arm goal must have shape ({limits.dof},), got {g.shape}"
    if not np.all(np.isfinite(g)):
        return f"arm goal is not finite: {g.tolist()}"
    bad = np.flatnonzero((g < limits.q_min - tol) | (g > limits.q_max + tol))
    if bad.size:
        j = int(bad[0])
        return (
            f"arm goal {limits.joint_names[j]} = {g[j]:.4f} outside "
            f"[{limits.q_min[j]:.4f}, {limits.q_max[j]:.4f}]"
        )
    return None


def _check_limits(limits: RobotLimits) -> None:
    for field in ("dq_max", "ddq_max", "jerk_max"):
        arr = np.asarray(getattr(limits, field), dtype=float)
        if arr.shape != (limits.dof,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise TrajectoryError(
                f"limits.{field} must be {limits.dof} finite values > 0, got {arr.tolist()}"
            )


class ArmTrajectory:
    """Online jerk-limited trajectory for the arm joints.

    Args:
        limits: the robot's joint limits (velocity, acceleration, jerk and position).
        period_s: the control period; one :meth:`step` advances the trajectory by it.
        speed_scale: fraction (0, 1] of the velocity limit to use (a margin for tracking).
    """

    def __init__(self, limits: RobotLimits, period_s: float, *, speed_scale: float = 1.0) -> None:
        if not (period_s > 0 and np.isfinite(period_s)):
            raise TrajectoryError(f"period_s must be a finite number > 0, got {period_s}")
        if not 0 < speed_scale <= 1:
            raise TrajectoryError(f"speed_scale must be in (0, 1], got {speed_scale}")
        _check_limits(limits)
        self.limits = limits
        self.dof = limits.dof
        self.period_s = float(period_s)
        self._otg = Ruckig(self.dof, self.period_s)
        self._inp = InputParameter(self.dof)
        self._out = OutputParameter(self.dof)
        inp = self._inp
        inp.max_velocity = (np.asarray(limits.dq_max, dtype=float) * speed_scale).tolist()
        inp.max_acceleration = np.asarray(limits.ddq_max, dtype=float).tolist()
        inp.max_jerk = np.asarray(limits.jerk_max, dtype=float).tolist()
        inp.min_position = np.asarray(limits.q_min, dtype=float).tolist()
        inp.max_position = np.asarray(limits.q_max, dtype=float).tolist()
        self.position = np.zeros(self.dof)
        self.velocity = np.zeros(self.dof)
        self.acceleration = np.zeros(self.dof)
        self.goal: np.ndarray | None = None
        self.status = TrajStatus.IDLE
        self.calculation_us = 0.0  # ruckig's own calculation time of the last step
        self.last_error = ""
        self._initialised = False
        self._zeros = [0.0] * self.dof
        self._moving_target = False
        # Target velocities stay a little inside the limit in use (ruckig refuses more).
        self._v_target_max = np.asarray(limits.dq_max, dtype=float) * speed_scale * 0.95
        self._limit_margin = 1e-3

    # -- setup (may raise) -----------------------------------------------------------------

    def reset(self, q: np.ndarray, dq: np.ndarray | None = None, ddq: np.ndarray | None = None) -> None:
        """Restart from a measured state (after a stop or at start); drops the goal."""
        q = np.asarray(q, dtype=float)
        if q.shape != (self.dof,) or not np.all(np.isfinite(q)):
            raise TrajectoryError(f"reset position must be {self.dof} finite values, got {q.tolist()}")
        dq = np.zeros(self.dof) if dq is None else np.asarray(dq, dtype=float)
        ddq = np.zeros(self.dof) if ddq is None else np.asarray(ddq, dtype=float)
        if not (np.all(np.isfinite(dq)) and np.all(np.isfinite(ddq))):
            raise TrajectoryError("reset velocity/acceleration must be finite")
        # A measured position a hair outside the limits must not make ruckig refuse.
        q = np.clip(q, self.limits.q_min, self.limits.q_max)
        self.position[:] = q
        self.velocity[:] = dq
        self.acceleration[:] = ddq
        inp = self._inp
        inp.current_position = q.tolist()
        inp.current_velocity = dq.tolist()
        inp.current_acceleration = ddq.tolist()
        inp.target_position = q.tolist()
        inp.target_velocity = [0.0] * self.dof
        inp.target_acceleration = [0.0] * self.dof
        self._moving_target = False
        self.goal = None
        self.status = TrajStatus.IDLE
        self._initialised = True

    def set_goal(self, goal: np.ndarray) -> None:
        """Move toward ``goal`` from wherever the trajectory is now; raises on a bad goal."""
        why = self.try_set_goal(goal)
        if why is not None:
            raise TrajectoryError(why)

    # -- hot path (status values) ----------------------------------------------------------

    def try_set_goal(self, goal: np.ndarray, velocity: np.ndarray | None = None) -> str | None:
        """Like :meth:`set_goal` but returns the reason instead of raising (for hot loops).

        ``velocity``: the velocity to pass through ``goal`` with (following a policy's chunk:
        the arm moves through its waypoints instead of stopping at each). It is clipped to
        the velocity limit in use, and to zero where it would carry a joint past a position
        limit; None or omitted: arrive at rest.
        """
        if not self._initialised:
            return "trajectory not reset to a measured state yet"
        why = check_goal(goal, self.limits)
        if why is not None:
            return why
        g = np.asarray(goal, dtype=float)
        if self.goal is None:
            self.goal = g.copy()
        else:
            self.goal[:] = g
        inp = self._inp
        inp.target_position = self.goal.tolist()
        if velocity is None:
            if self._moving_target:
                inp.target_velocity = self._zeros
                self._moving_target = False
        else:
            v = np.asarray(velocity, dtype=float)
            if v.shape != (self.dof,) or not np.all(np.isfinite(v)):
                return f"target velocity must be {self.dof} finite values, got {v.tolist()}"
            v = np.clip(v, -self._v_target_max, self._v_target_max)
            lim = self.limits
            # Near a position limit, arrive at rest: ruckig cannot pass it with speed left.
            v[((g >= lim.q_max - self._limit_margin) & (v > 0)) | ((g <= lim.q_min + self._limit_margin) & (v < 0))] = 0.0
            inp.target_velocity = v.tolist()
            self._moving_target = True
        self.status = TrajStatus.WORKING
        return None

    def step(self) -> TrajStatus:
        """Advance one period toward the goal; updates position/velocity/acceleration."""
        if not self._initialised or self.goal is None:
            return self.status
        if self.status is TrajStatus.FINISHED:
            return self.status
        try:
            result = self._otg.update(self._inp, self._out)
        except RuckigError as exc:  # invalid input that slipped past the checks
            self.last_error = str(exc).strip()
            self.status = TrajStatus.ERROR
            return self.status
        out = self._out
        if result == Result.Working or result == Result.Finished:
            self.position[:] = out.new_position
            self.velocity[:] = out.new_velocity
            self.acceleration[:] = out.new_acceleration
            self.calculation_us = out.calculation_duration
            out.pass_to_input(self._inp)
            self.status = TrajStatus.FINISHED if result == Result.Finished else TrajStatus.WORKING
        else:
            self.last_error = f"ruckig {result}"
            self.status = TrajStatus.ERROR
        return self.status

    @property
    def moving(self) -> bool:
        return self.status is TrajStatus.WORKING


@dataclass(frozen=True)
class SampledTrajectory:
    """A whole trajectory sampled at a fixed period: arrays of shape [n, dof]."""

    t: np.ndarray
    q: np.ndarray
    dq: np.ndarray
    ddq: np.ndarray
    duration_s: float


def plan_trajectory(
    start: np.ndarray, goal: np.ndarray, limits: RobotLimits, period_s: float
) -> SampledTrajectory:
    """The time-optimal jerk-limited trajectory from rest at ``start`` to rest at ``goal``."""
    _check_limits(limits)
    for name, value in (("start", start), ("goal", goal)):
        why = check_goal(value, limits)
        if why is not None:
            raise TrajectoryError(f"{name}: {why}")
    if not (period_s > 0 and np.isfinite(period_s)):
        raise TrajectoryError(f"period_s must be a finite number > 0, got {period_s}")
    dof = limits.dof
    inp = InputParameter(dof)
    inp.current_position = np.asarray(start, dtype=float).tolist()
    inp.target_position = np.asarray(goal, dtype=float).tolist()
    inp.max_velocity = np.asarray(limits.dq_max, dtype=float).tolist()
    inp.max_acceleration = np.asarray(limits.ddq_max, dtype=float).tolist()
    inp.max_jerk = np.asarray(limits.jerk_max, dtype=float).tolist()
    traj = Trajectory(dof)
    try:
        result = Ruckig(dof).calculate(inp, traj)
    except RuckigError as exc:
        raise TrajectoryError(f"ruckig refused the trajectory: {str(exc).strip()}") from None
    if result not in (Result.Working, Result.Finished):
        raise TrajectoryError(f"ruckig could not calculate the trajectory: {result}")
    duration = float(traj.duration)
    t = np.arange(0.0, duration + period_s, period_s)
    t[-1] = min(t[-1], duration)
    q = np.empty((len(t), dof))
    dq = np.empty_like(q)
    ddq = np.empty_like(q)
    for i, ti in enumerate(t):
        p, v, a = traj.at_time(float(ti))
        q[i], dq[i], ddq[i] = p, v, a
    return SampledTrajectory(t=t, q=q, dq=dq, ddq=ddq, duration_s=duration)
