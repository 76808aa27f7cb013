"""The plug-in's factories: the :class:`~rtvla.robots.embodiment.Embodiment` rtvla asks for,
and the bare robot its control process builds.

``make_embodiment`` is declared as the ``kinematic_arm`` entry point of group
``rtvla.robots``; its options (``[robot.options]``) are :class:`Options`, validated by rtvla
before anything starts. The embodiment is process-safe: the control process rebuilds the
robot from a picklable :class:`~rtvla.parts.FactoryRef` to :func:`make_robot`, and
:func:`arm_telemetry` mirrors the base, joints, gripper and cube positions back so that the
parent's camera draws the robot that runs there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rtvla.config import format_validation_error
from rtvla.errors import ConfigError
from rtvla.parts import FactoryRef
from rtvla.robots.embodiment import Embodiment, RobotCamera, Telemetry
from rtvla.timing import MONOTONIC, Clock

from rtvla_kinematic_arm.robot import ArmSnapshot, KinematicArm, snapshot_from_telemetry
from rtvla_kinematic_arm.scene import load_scene

__all__ = ["CameraOptions", "Options", "arm_telemetry", "make_embodiment", "make_robot"]


class CameraOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    width: int = Field(320, ge=16, le=1920)
    height: int = Field(240, ge=16, le=1440)
    rate_hz: float = Field(30.0, gt=0, le=240)
    depth: bool = True
    threaded: bool = True


class Options(BaseModel):
    """``[robot.options]`` of ``type = "kinematic_arm"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    scene: Path | None = Field(None, description="a scene TOML; default: the packaged room")
    rate_hz: float = Field(200.0, gt=0, le=2000, description="motion integration rate")
    lockstep: bool = Field(False, description="no motion thread: advance(seconds) moves time")
    servo_tau_s: float = Field(0.03, gt=0, le=1.0)
    camera: CameraOptions = CameraOptions()


def _options(options: dict[str, Any]) -> Options:
    try:
        return Options.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error("robot.options", exc)) from None


def make_robot(*, clock: Clock = MONOTONIC, **options: Any) -> KinematicArm:
    """The robot alone, not connected (what the control process builds)."""
    opts = _options(options)
    return KinematicArm(load_scene(opts.scene), rate_hz=opts.rate_hz, lockstep=opts.lockstep,
                        clock=clock, servo_tau_s=opts.servo_tau_s)


make_robot.Options = Options  # type: ignore[attr-defined]


def arm_telemetry(robot: KinematicArm, out: np.ndarray) -> None:
    """In the control process, after each tick (see ``KinematicArm.write_telemetry``)."""
    robot.write_telemetry(out)


class _View:
    """What the parent's camera draws: the local robot, or the mirrored one once hosted."""

    def __init__(self, robot: KinematicArm, telemetry: Telemetry) -> None:
        self.robot = robot
        self.telemetry = telemetry
        self.names = robot.object_names()

    def snapshot(self) -> ArmSnapshot:
        tel = self.telemetry.latest()
        if tel is None:
            return self.robot.snapshot()
        return snapshot_from_telemetry(tel, self.names)


def make_embodiment(*, clock: Clock = MONOTONIC, recorder: Any = None, **options: Any) -> Embodiment:
    """The kinematic arm for rtvla: robot (not connected), head camera (not open), what it
    knows of its room, and how the control process builds the same robot."""
    from rtvla_kinematic_arm.camera import SyntheticRGBDCamera

    opts = _options(options)
    robot = make_robot(clock=clock, **options)
    names = robot.object_names()
    telemetry = Telemetry(robot.telemetry_size(), arm_telemetry,
                          lambda tel: None if int(tel[9]) < 0 else names[int(tel[9])])
    view = _View(robot, telemetry)
    c = opts.camera
    cam = SyntheticRGBDCamera(robot.scene, view.snapshot, robot.kinematics, width=c.width, height=c.height,
                              rate_hz=c.rate_hz, depth=c.depth, threaded=c.threaded, clock=clock,
                              recorder=recorder, name="head")
    head = RobotCamera("head", cam, cam.intrinsics, "mast", cam.camera_pose_world, rate_hz=c.rate_hz, depth=c.depth)
    return Embodiment(
        robot=robot, cameras={"head": head}, world=robot.scene.world_knowledge(), kinematics=robot.kinematics,
        has_base=True, has_arm=True, process_safe=True,
        process_factory=FactoryRef("rtvla_kinematic_arm.embodiment:make_robot",
                                   opts.model_dump(mode="json", exclude_defaults=True), where="robot.options"),
        telemetry=telemetry, name="kinematic_arm",
    )


make_embodiment.Options = Options  # type: ignore[attr-defined]
