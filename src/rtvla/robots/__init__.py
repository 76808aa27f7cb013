"""Robots: the ``Robot`` protocol and, in ``robots.sim``, the MuJoCo mobile manipulator."""

from __future__ import annotations

from rtvla.robots.base import (
    CommandMode,
    Robot,
    RobotCommand,
    RobotLimits,
    RobotState,
    validate_command,
)

__all__ = ["CommandMode", "Robot", "RobotCommand", "RobotLimits", "RobotState", "validate_command"]
