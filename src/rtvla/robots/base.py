"""The ``Robot`` protocol: what the control loop needs from any robot, simulated or real.

A robot is a context manager (``connect``/``close``) so that a crash still releases it.
``send_command`` validates before acting: a non-finite or out-of-limit command raises
:class:`~rtvla.errors.CommandRejected` and is not executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np

from rtvla.errors import CommandRejected

__all__ = ["CommandMode", "Robot", "RobotCommand", "RobotLimits", "RobotState", "validate_command"]


class CommandMode(str, Enum):
    POSITION = "position"  # arm joint position targets
    VELOCITY = "velocity"  # arm joint velocity targets


@dataclass(frozen=True)
class RobotLimits:
    """Joint and base limits. Arrays are per arm joint, in joint order."""

    joint_names: tuple[str, ...]
    q_min: np.ndarray
    q_max: np.ndarray
    dq_max: np.ndarray
    ddq_max: np.ndarray
    jerk_max: np.ndarray
    base_lin_vel_max: float = 0.5  # m/s, per axis
    base_ang_vel_max: float = 1.5  # rad/s

    @property
    def dof(self) -> int:
        return len(self.joint_names)


@dataclass(frozen=True)
class RobotState:
    """A snapshot of the robot. ``base_pose`` is (x, y, yaw) in the world frame."""

    stamp_ns: int
    q: np.ndarray
    dq: np.ndarray
    effort: np.ndarray
    base_pose: np.ndarray = field(default_factory=lambda: np.zeros(3))
    base_vel: np.ndarray = field(default_factory=lambda: np.zeros(3))
    gripper: float = 0.0  # 0 = open, 1 = closed
    holding: str | None = None  # name of the grasped object, if any


@dataclass(frozen=True)
class RobotCommand:
    """One command. ``None`` fields leave that part of the robot as it is."""

    stamp_ns: int
    mode: CommandMode = CommandMode.POSITION
    arm: np.ndarray | None = None  # positions or velocities, per ``mode``
    base_vel: np.ndarray | None = None  # (vx, vy, wz) in the base frame
    gripper: float | None = None  # 0 = open, 1 = closed


def validate_command(cmd: RobotCommand, limits: RobotLimits, *, tol: float = 1e-6) -> None:
    """Raise :class:`CommandRejected` naming the field if ``cmd`` is non-finite or out of limits."""
    if cmd.arm is not None:
        arm = np.asarray(cmd.arm, dtype=float)
        if arm.shape != (limits.dof,):
            raise CommandRejected(f"command.arm must have shape ({limits.dof},), got {arm.shape}")
        if not np.all(np.isfinite(arm)):
            raise CommandRejected(f"command.arm is not finite: {arm.tolist()}")
        if cmd.mode is CommandMode.POSITION:
            bad = np.flatnonzero((arm < limits.q_min - tol) | (arm > limits.q_max + tol))
            if bad.size:
                j = int(bad[0])
                raise CommandRejected(
                    f"command.arm[{limits.joint_names[j]}] = {arm[j]:.4f} outside "
                    f"[{limits.q_min[j]:.4f}, {limits.q_max[j]:.4f}]"
                )
        else:
            bad = np.flatnonzero(np.abs(arm) > limits.dq_max + tol)
            if bad.size:
                j = int(bad[0])
                raise CommandRejected(
                    f"command.arm velocity[{limits.joint_names[j]}] = {arm[j]:.4f} exceeds "
                    f"{limits.dq_max[j]:.4f}"
                )
    if cmd.base_vel is not None:
        v = np.asarray(cmd.base_vel, dtype=float)
        if v.shape != (3,) or not np.all(np.isfinite(v)):
            raise CommandRejected(f"command.base_vel must be 3 finite values, got {v.tolist()}")
        if abs(v[0]) > limits.base_lin_vel_max + tol or abs(v[1]) > limits.base_lin_vel_max + tol:
            raise CommandRejected(
                f"command.base_vel linear ({v[0]:.3f}, {v[1]:.3f}) exceeds {limits.base_lin_vel_max}"
            )
        if abs(v[2]) > limits.base_ang_vel_max + tol:
            raise CommandRejected(
                f"command.base_vel angular {v[2]:.3f} exceeds {limits.base_ang_vel_max}"
            )
    if cmd.gripper is not None and not (np.isfinite(cmd.gripper) and 0.0 <= cmd.gripper <= 1.0):
        raise CommandRejected(f"command.gripper must be in [0, 1], got {cmd.gripper}")


@runtime_checkable
class Robot(Protocol):
    """Any robot the control loop can drive."""

    limits: RobotLimits

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def read_state(self) -> RobotState:
        """The newest state (non-blocking)."""
        ...

    def send_command(self, cmd: RobotCommand) -> None:
        """Validate and apply ``cmd``; raises CommandRejected without applying a bad one."""
        ...

    def stop(self) -> None:
        """Safe stop: hold the arm where it is, zero base velocity."""
        ...
