"""Robots: the ``Robot`` protocol, the ``Embodiment`` a robot plug-in returns and, in
``robots.sim``, the MuJoCo mobile manipulator."""

from __future__ import annotations

from rtvla.robots.base import (
    CommandMode,
    Robot,
    RobotCommand,
    RobotLimits,
    RobotState,
    validate_command,
)
from rtvla.robots.embodiment import (
    Embodiment,
    KnownObject,
    OccupancyMap,
    Place,
    Receptacle,
    RobotCamera,
    Surface,
    Telemetry,
    WorldKnowledge,
    as_embodiment,
)

__all__ = [
    "CommandMode",
    "Embodiment",
    "KnownObject",
    "OccupancyMap",
    "Place",
    "Receptacle",
    "Robot",
    "RobotCamera",
    "RobotCommand",
    "RobotLimits",
    "RobotState",
    "Surface",
    "Telemetry",
    "WorldKnowledge",
    "as_embodiment",
    "validate_command",
]
