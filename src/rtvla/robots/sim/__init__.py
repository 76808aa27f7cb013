"""The MuJoCo simulated mobile manipulator: scene, robot, camera, kinematics, occupancy grid.

``MUJOCO_GL`` defaults to ``egl`` (set before MuJoCo is first imported) so rendering works
headless. Usage::

    from rtvla.robots.sim import SimRobot, SimCamera, load_scene, occupancy_grid

    with SimRobot() as robot, SimCamera(robot) as cam:
        frame = cam.wait_frame(timeout=2.0)
"""

from __future__ import annotations

from rtvla.robots.sim import _gl  # noqa: F401  (must run before mujoco is imported)
from rtvla.robots.sim.camera import CameraIntrinsics, CameraUnavailable, SimCamera, SimFrame
from rtvla.robots.sim.grid import OccupancyGrid, occupancy_grid
from rtvla.robots.sim.kinematics import SimKinematics
from rtvla.robots.sim.robot import SimRobot, SimStats
from rtvla.robots.sim.scene import (
    ObjectSpec,
    Place,
    ReceptacleSpec,
    RobotWiring,
    SceneConfig,
    assets_dir,
    load_scene,
)
from rtvla.robots.sim.settings import (
    SimCameraSettings,
    SimSettings,
    build_sim_camera,
    build_sim_robot,
    parse_sim_settings,
)

__all__ = [
    "CameraIntrinsics",
    "CameraUnavailable",
    "ObjectSpec",
    "OccupancyGrid",
    "Place",
    "ReceptacleSpec",
    "RobotWiring",
    "SceneConfig",
    "SimCamera",
    "SimCameraSettings",
    "SimFrame",
    "SimKinematics",
    "SimRobot",
    "SimSettings",
    "SimStats",
    "assets_dir",
    "build_sim_camera",
    "build_sim_robot",
    "load_scene",
    "occupancy_grid",
    "parse_sim_settings",
]
