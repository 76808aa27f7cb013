"""Action mapping: which dimensions of a policy's action are what, and the robot commands
they become. Every command goes through :func:`~rtvla.robots.base.validate_command`: a
non-finite or out-of-limit action raises :class:`~rtvla.errors.CommandRejected` and is
never executed.

Slices of the action vector, by kind:

* ``joint_position``: absolute arm joint targets (``size`` defaults to the arm's dof);
* ``joint_delta``: offsets added to the joint positions of the state the observation was
  taken from (openpi's delta actions are relative to that state, not cumulative);
* ``joint_velocity``: arm joint velocities (a velocity-mode command);
* ``gripper``: one value mapped from ``[low, high]`` to rtvla's ``[0 open, 1 closed]``
  (``threshold`` binarizes it, as DROID's example does at 0.5);
* ``base_velocity``: ``(vx, vy, wz)`` in the base frame.

Example table::

    [[policy.action.slice]]
    kind = "joint_position"
    start = 0
    [[policy.action.slice]]
    kind = "gripper"
    start = 6

Usage::

    decoded = mapping.decode(chunk, reference_state, limits)   # validates every row
    cmd = decoded.command(i, stamp_ns=now)                     # row i, validated again
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rtvla.config import format_validation_error
from rtvla.errors import CommandRejected, ConfigError, PolicyOutputError
from rtvla.robots.base import CommandMode, RobotCommand, RobotLimits, RobotState, validate_command

__all__ = ["ActionMapping", "ActionSlice", "DecodedChunk"]

ActionKind = Literal["joint_position", "joint_delta", "joint_velocity", "gripper", "base_velocity"]
_ARM_KINDS = ("joint_position", "joint_delta", "joint_velocity")


class ActionSlice(BaseModel):
    """A run of action dimensions of one kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ActionKind
    start: int = Field(ge=0)
    size: int | None = Field(default=None, gt=0, description="default: dof / 1 / 3 by kind")
    low: float = 0.0  # gripper: the policy's value for open
    high: float = 1.0  # gripper: the policy's value for closed
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="gripper: binarize")

    @model_validator(mode="after")
    def _check(self) -> ActionSlice:
        if self.kind == "gripper" and self.size not in (None, 1):
            raise ValueError(f"a gripper slice has size 1, got {self.size}")
        if self.kind == "base_velocity" and self.size not in (None, 3):
            raise ValueError(f"a base_velocity slice has size 3 (vx, vy, wz), got {self.size}")
        if self.kind == "gripper" and self.low == self.high:
            raise ValueError(f"gripper low and high must differ, both are {self.low}")
        return self

    def width(self, dof: int) -> int:
        if self.size is not None:
            return self.size
        return {"gripper": 1, "base_velocity": 3}.get(self.kind, dof)


class ActionMapping(BaseModel):
    """The meaning of each action dimension. See the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slice: tuple[ActionSlice, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _kinds(self) -> ActionMapping:
        kinds = [s.kind for s in self.slice]
        arm = [k for k in kinds if k in _ARM_KINDS]
        if len(arm) > 1:
            raise ValueError(f"at most one arm slice (joint_position, joint_delta or joint_velocity), got {arm}")
        for k in ("gripper", "base_velocity"):
            if kinds.count(k) > 1:
                raise ValueError(f"at most one {k} slice, got {kinds.count(k)}")
        return self

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None, *, where: str = "policy.action") -> ActionMapping:
        try:
            return cls.model_validate(dict(table or {}))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(where, exc)) from None

    @classmethod
    def joint_positions(cls, gripper: bool = True, dof: int | None = None) -> ActionMapping:
        """Absolute joint targets, then (optionally) the gripper: the usual layout."""
        slices = [ActionSlice(kind="joint_position", start=0, size=dof)]
        if gripper:
            if dof is None:
                raise ConfigError("ActionMapping.joint_positions(gripper=True) needs dof to place the gripper")
            slices.append(ActionSlice(kind="gripper", start=dof))
        return cls(slice=tuple(slices))

    def action_dim(self, dof: int) -> int:
        """The smallest action dimension this mapping reads."""
        return max(s.start + s.width(dof) for s in self.slice)

    def check(self, action_dim: int, dof: int) -> None:
        """Raise :class:`ConfigError` if the slices do not fit ``action_dim`` or overlap."""
        need = self.action_dim(dof)
        if need > action_dim:
            raise ConfigError(f"policy.action: the slices read {need} dimensions, the policy has "
                              f"action_dim {action_dim}")
        used: dict[int, str] = {}
        for s in self.slice:
            w = s.width(dof)
            if s.kind in _ARM_KINDS and w != dof:
                raise ConfigError(f"policy.action: the {s.kind} slice has size {w}, the arm has {dof} joints")
            for i in range(s.start, s.start + w):
                if i in used:
                    raise ConfigError(f"policy.action: dimension {i} is both {used[i]} and {s.kind}")
                used[i] = s.kind

    def decode(self, chunk: np.ndarray, reference: RobotState, limits: RobotLimits) -> DecodedChunk:
        """Turn a ``[H, A]`` chunk into per-row arm/gripper/base targets, all validated.

        ``reference``: the state the observation was built from (for ``joint_delta``).
        Raises :class:`CommandRejected` naming the row and field of the first bad action,
        :class:`PolicyOutputError` for a chunk of the wrong shape.
        """
        chunk = np.asarray(chunk, dtype=np.float64)
        dof = limits.dof
        if chunk.ndim != 2:
            raise PolicyOutputError(f"a chunk is [horizon, action_dim], got shape {chunk.shape}")
        self.check(chunk.shape[1], dof)
        h = chunk.shape[0]
        arm = gripper = base = None
        mode = CommandMode.POSITION
        for s in self.slice:
            cols = chunk[:, s.start:s.start + s.width(dof)]
            if s.kind == "joint_position":
                arm = cols.copy()
            elif s.kind == "joint_delta":
                arm = cols + np.asarray(reference.q, dtype=np.float64)[None, :]
            elif s.kind == "joint_velocity":
                arm, mode = cols.copy(), CommandMode.VELOCITY
            elif s.kind == "gripper":
                g = (cols[:, 0] - s.low) / (s.high - s.low)
                if s.threshold is not None:
                    g = np.where(g > s.threshold, 1.0, 0.0)
                # Rounding of a policy trained on [low, high] lands a hair outside [0, 1].
                gripper = np.where(np.abs(g - np.clip(g, 0, 1)) < 1e-6, np.clip(g, 0, 1), g)
            else:
                base = cols.copy()
        decoded = DecodedChunk(limits, mode, arm, gripper, base, h)
        for i in range(h):
            try:
                validate_command(decoded.command(i, 0, validate=False), limits)
            except CommandRejected as exc:
                raise CommandRejected(f"action {i} of the chunk: {exc}") from None
        return decoded


@dataclass(frozen=True)
class DecodedChunk:
    """Arm/gripper/base targets per row of a chunk; every row already passed validation."""

    limits: RobotLimits
    mode: CommandMode
    arm: np.ndarray | None  # [H, dof] positions or velocities
    gripper: np.ndarray | None  # [H] in [0, 1]
    base_vel: np.ndarray | None  # [H, 3]
    horizon: int

    def command(self, i: int, stamp_ns: int, *, validate: bool = True) -> RobotCommand:
        """Row ``i`` as a :class:`RobotCommand` (validated unless told otherwise)."""
        cmd = RobotCommand(
            stamp_ns=stamp_ns,
            mode=self.mode,
            arm=None if self.arm is None else self.arm[i].copy(),
            base_vel=None if self.base_vel is None else self.base_vel[i].copy(),
            gripper=None if self.gripper is None else float(self.gripper[i]),
        )
        if validate:
            validate_command(cmd, self.limits)
        return cmd
