"""An rtvla robot plug-in written without rtvla's simulator: a kinematic mobile manipulator.

A holonomic base and a 5-joint arm integrated with numpy in their own thread, a gripper
that holds a cube when it closes around one, a room with a table, cubes and a bin, and a
synthetic RGB-D head camera drawn with OpenCV. rtvla finds it through the entry point
``kinematic_arm`` of group ``rtvla.robots`` (see ``pyproject.toml``)::

    [robot]
    type = "kinematic_arm"

The camera module (which imports ``rtvla.perception``) is imported only when an
embodiment is built, so the control process, which builds the bare robot, stays light.
"""

from __future__ import annotations

from rtvla_kinematic_arm.embodiment import Options, make_embodiment, make_robot
from rtvla_kinematic_arm.kinematics import ArmKinematics
from rtvla_kinematic_arm.robot import KinematicArm
from rtvla_kinematic_arm.scene import Scene, load_scene

__all__ = ["ArmKinematics", "KinematicArm", "Options", "Scene", "load_scene", "make_embodiment", "make_robot"]
__version__ = "0.1.0"
