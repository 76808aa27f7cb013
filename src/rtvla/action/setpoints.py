"""``Setpoint``: what planners (navigation, task executor, policies) ask of the control loop.

Setpoints travel through a latest-value channel; the control loop takes the newest each
tick. Every setpoint carries its stamp so the control loop's watchdog can refuse stale ones.
``to_array``/``from_array`` give a fixed-size float64 layout for the shared-memory channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Setpoint"]


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
        return 3 + dof + 3 + 1

    def to_array(self, dof: int) -> np.ndarray:
        """Layout: [stamp_ns, seq, mask, arm_q(dof), base_vel(3), gripper].

        ``mask`` bits say which parts are present (1 arm, 2 base, 4 gripper), so a NaN
        value stays a NaN value (and is rejected downstream) instead of reading as absent.
        """
        out = np.zeros(self.array_size(dof))
        out[0] = float(self.stamp_ns)
        out[1] = float(self.seq)
        mask = 0
        if self.arm_q is not None:
            out[3 : 3 + dof] = self.arm_q
            mask |= 1
        if self.base_vel is not None:
            out[3 + dof : 6 + dof] = self.base_vel
            mask |= 2
        if self.gripper is not None:
            out[6 + dof] = self.gripper
            mask |= 4
        out[2] = float(mask)
        return out

    @classmethod
    def from_array(cls, arr: np.ndarray, dof: int) -> Setpoint:
        """Inverse of :meth:`to_array`."""
        mask = int(arr[2])
        return cls(
            stamp_ns=int(arr[0]),
            seq=int(arr[1]),
            arm_q=arr[3 : 3 + dof].copy() if mask & 1 else None,
            base_vel=arr[3 + dof : 6 + dof].copy() if mask & 2 else None,
            gripper=float(arr[6 + dof]) if mask & 4 else None,
        )
