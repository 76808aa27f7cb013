"""``rtvla.action``: the control loop, trajectories, action chunks, navigation and the task
executor.

Setpoints (:class:`Setpoint`) are the contract between planners (the navigator, the task
executor's skills, VLA policies) and the 100 Hz control loop.
"""

from __future__ import annotations

from rtvla.action.chunks import ActionChunkQueue, ChunkError, ChunkRequest, MergeStrategy
from rtvla.action.control import ControlLoop, ControlSettings, ControlStats, check_setpoint
from rtvla.action.dwa import DWAConfig, DWAPlanner, DWAResult
from rtvla.action.executor import (
    ExecStatus,
    ExecutionResult,
    LockstepDriver,
    Progress,
    StepResult,
    TaskExecutor,
)
from rtvla.action.grid import GridMap, as_grid_map, plan_path
from rtvla.action.navigation import Navigator, NavigatorConfig, NavState, NavStatus
from rtvla.action.setpoints import Setpoint
from rtvla.action.skills import SKILLS, SceneInfo, SetpointWriter, SkillContext, SkillSettings
from rtvla.action.trajectory import (
    ArmTrajectory,
    SampledTrajectory,
    TrajStatus,
    check_goal,
    plan_trajectory,
)
from rtvla.action.world import GroundTruthPerception, ObjectEstimate, WorldModel, labels_for_scene

__all__ = [
    "SKILLS",
    "ActionChunkQueue",
    "ArmTrajectory",
    "ChunkError",
    "ChunkRequest",
    "ControlLoop",
    "ControlSettings",
    "ControlStats",
    "DWAConfig",
    "DWAPlanner",
    "DWAResult",
    "ExecStatus",
    "ExecutionResult",
    "GridMap",
    "GroundTruthPerception",
    "LockstepDriver",
    "MergeStrategy",
    "NavState",
    "NavStatus",
    "Navigator",
    "NavigatorConfig",
    "ObjectEstimate",
    "Progress",
    "SampledTrajectory",
    "SceneInfo",
    "Setpoint",
    "SetpointWriter",
    "SkillContext",
    "SkillSettings",
    "StepResult",
    "TaskExecutor",
    "TrajStatus",
    "WorldModel",
    "as_grid_map",
    "check_goal",
    "check_setpoint",
    "labels_for_scene",
    "plan_path",
    "plan_trajectory",
]
