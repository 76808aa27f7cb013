"""``Setpoint``: what planners (navigation, task executor, policies) ask of the control loop.

Setpoints travel through a latest-value channel; the control loop takes the newest each
tick. Every setpoint carries its stamp so the control loop's watchdog can refuse stale ones.
``to_array``/``from_array`` give a fixed-size float64 layout for the shared-memory channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Setpoint"]

_NAN = float("nan")


@dataclass(frozen=True)
class Setpoint:
    """A target for the control loop. ``None`` leaves that part unchanged.

    ``arm_q``: arm joint position goal (the control loop moves there on a jerk-limited
    trajectory). ``base_vel``: (vx, vy, wz) in the robot's base frame, held until the next
    setpoint or the watchdog timeout. ``gripper``: 0 open .. 1 closed.
    """

    stamp_ns: int
    arm_q: np.ndarray | None = None
    base_vel: np.ndarray | None = None
    gripper: float | None = None
    seq: int = 0

    @staticmethod
    def array_size(dof: int) -> int:
        return 2 + dof + 3 + 1

    def to_array(self, dof: int) -> np.ndarray:
        """Layout: [stamp_ns, seq, arm_q(dof) | NaN, base_vel(3) | NaN, gripper | NaN]."""
        out = np.full(self.array_size(dof), _NAN)
        out[0] = float(self.stamp_ns)
        out[1] = float(self.seq)
        if self.arm_q is not None:
            out[2 : 2 + dof] = self.arm_q
        if self.base_vel is not None:
            out[2 + dof : 5 + dof] = self.base_vel
        if self.gripper is not None:
            out[5 + dof] = self.gripper
        return out

    @classmethod
    def from_array(cls, arr: np.ndarray, dof: int) -> Setpoint:
        """Inverse of :meth:`to_array`. A part that is all-NaN is ``None``; a part with some
        NaN is kept as is, so the control loop's validation rejects it."""
        arm = arr[2 : 2 + dof]
        base = arr[2 + dof : 5 + dof]
        grip = arr[5 + dof]
        return cls(
            stamp_ns=int(arr[0]),
            seq=int(arr[1]),
            arm_q=None if np.all(np.isnan(arm)) else arm.copy(),
            base_vel=None if np.all(np.isnan(base)) else base.copy(),
            gripper=None if np.isnan(grip) else float(grip),
        )
