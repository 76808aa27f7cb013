"""Typed settings for the simulated robot and camera, from the config's ``[robot]`` section.

The runtime passes ``cfg.section("robot")`` (a raw dict) to :func:`parse_sim_settings`;
the result builds the robot and camera with :func:`build_sim_robot` / :func:`build_sim_camera`.

Example ``rtvla.toml``::

    [robot]
    kind = "sim"
    lockstep = false
    realtime_factor = 1.0
    dq_max = [1.0, 1.0, 1.0, 1.5, 2.0]     # optional: overrides the scene's limits

    [robot.camera]
    width = 320
    height = 240
    rate_hz = 30
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.config import format_validation_error
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder
from rtvla.robots.sim.camera import SimCamera
from rtvla.robots.sim.robot import SimRobot
from rtvla.robots.sim.scene import RobotWiring, SceneConfig, load_scene
from rtvla.timing import MONOTONIC, Clock

__all__ = [
    "SimCameraSettings",
    "SimSettings",
    "build_sim_camera",
    "build_sim_robot",
    "parse_sim_settings",
    "scene_with_overrides",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class SimCameraSettings(BaseModel):
    model_config = _FROZEN
    width: int = Field(640, gt=0, le=1280)
    height: int = Field(480, gt=0, le=960)
    rate_hz: float = Field(30.0, gt=0.0, le=240.0)
    depth: bool = True
    threaded: bool = True


class SimSettings(BaseModel):
    model_config = _FROZEN
    kind: Literal["sim"] = "sim"
    scene: Path | None = None  # a scene TOML; default: the packaged room
    lockstep: bool = False
    realtime_factor: float = Field(1.0, gt=0.0)
    physics_period_s: float = Field(0.005, gt=0.0, le=0.1)
    max_lag_s: float = Field(0.1, gt=0.0)
    dq_max: tuple[float, ...] | None = None
    ddq_max: tuple[float, ...] | None = None
    jerk_max: tuple[float, ...] | None = None
    base_lin_vel_max: float | None = Field(None, gt=0.0)
    base_ang_vel_max: float | None = Field(None, gt=0.0)
    camera: SimCameraSettings = SimCameraSettings()


def parse_sim_settings(raw: Mapping[str, Any] | None) -> SimSettings:
    """Validate the ``[robot]`` section; :class:`ConfigError` names ``robot.<field>`` and the value."""
    try:
        return SimSettings.model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error("robot", exc)) from None


def scene_with_overrides(settings: SimSettings) -> SceneConfig:
    """The scene named by ``settings`` with its robot limits overridden where set."""
    scene = load_scene(settings.scene)
    over = {
        k: v
        for k in ("dq_max", "ddq_max", "jerk_max", "base_lin_vel_max", "base_ang_vel_max")
        if (v := getattr(settings, k)) is not None
    }
    if not over:
        return scene
    try:
        wiring = RobotWiring.model_validate({**scene.robot.model_dump(), **over})
    except ValidationError as exc:
        msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"robot limits override: {msg}") from None
    return scene.model_copy(update={"robot": wiring})


def build_sim_robot(
    settings: SimSettings, *, clock: Clock = MONOTONIC, recorder: Recorder | None = None
) -> SimRobot:
    """A :class:`SimRobot` (not yet connected) as ``settings`` describe."""
    return SimRobot(
        scene_with_overrides(settings),
        lockstep=settings.lockstep,
        clock=clock,
        recorder=recorder,
        realtime_factor=settings.realtime_factor,
        physics_period_s=settings.physics_period_s,
        max_lag_s=settings.max_lag_s,
    )


def build_sim_camera(
    robot: SimRobot,
    settings: SimSettings,
    *,
    clock: Clock = MONOTONIC,
    recorder: Recorder | None = None,
) -> SimCamera:
    """The robot's head camera (not yet open) as ``settings.camera`` describe."""
    c = settings.camera
    return SimCamera(
        robot,
        width=c.width,
        height=c.height,
        rate_hz=c.rate_hz,
        depth=c.depth,
        threaded=c.threaded,
        clock=clock,
        recorder=recorder,
    )
