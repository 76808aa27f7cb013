"""``rtvla.action``: the control loop, trajectories, action chunks, navigation and the task
executor.

Setpoints (:class:`Setpoint`) are the contract between planners (the navigator, the task
executor's skills, VLA policies) and the 100 Hz control loop.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; imported on first use (PEP 562) so that the control process, which
# imports rtvla.action.control_process, does not pull in navigation, OpenCV and the rest.
_EXPORTS = {
    "ActionChunkQueue": "rtvla.action.chunks",
    "ArmTrajectory": "rtvla.action.trajectory",
    "ChunkError": "rtvla.action.chunks",
    "ChunkRequest": "rtvla.action.chunks",
    "ChunkScheduler": "rtvla.action.chunk_scheduler",
    "ControlLoop": "rtvla.action.control",
    "ControlSettings": "rtvla.action.control",
    "ControlStats": "rtvla.action.control",
    "DWAConfig": "rtvla.action.dwa",
    "DWAPlanner": "rtvla.action.dwa",
    "DWAResult": "rtvla.action.dwa",
    "ExecStatus": "rtvla.action.executor",
    "ExecutionResult": "rtvla.action.executor",
    "GridMap": "rtvla.action.grid",
    "GroundTruthPerception": "rtvla.action.world",
    "LockstepDriver": "rtvla.action.executor",
    "MergeStrategy": "rtvla.action.chunks",
    "NavState": "rtvla.action.navigation",
    "NavStatus": "rtvla.action.navigation",
    "Navigator": "rtvla.action.navigation",
    "NavigatorConfig": "rtvla.action.navigation",
    "ObjectEstimate": "rtvla.action.world",
    "PolicyLink": "rtvla.action.chunk_scheduler",
    "Progress": "rtvla.action.executor",
    "SKILLS": "rtvla.action.skills",
    "SampledTrajectory": "rtvla.action.trajectory",
    "SchedStatus": "rtvla.action.chunk_scheduler",
    "SchedulerSettings": "rtvla.action.chunk_scheduler",
    "SceneInfo": "rtvla.action.skills",
    "Setpoint": "rtvla.action.setpoints",
    "SetpointWriter": "rtvla.action.skills",
    "SkillContext": "rtvla.action.skills",
    "SkillSettings": "rtvla.action.skills",
    "StepResult": "rtvla.action.executor",
    "TaskExecutor": "rtvla.action.executor",
    "TrajStatus": "rtvla.action.trajectory",
    "WorldModel": "rtvla.action.world",
    "as_grid_map": "rtvla.action.grid",
    "check_goal": "rtvla.action.trajectory",
    "check_setpoint": "rtvla.action.control",
    "labels_for_scene": "rtvla.action.world",
    "plan_path": "rtvla.action.grid",
    "plan_trajectory": "rtvla.action.trajectory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'rtvla.action' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
