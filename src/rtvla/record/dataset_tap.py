"""``DatasetTap``: a normal real-time run recorded as one episode of a LeRobot dataset.

``rtvla run --dataset DIR`` appends the run to ``DIR`` (created when missing) with the
same writer as ``rtvla record``: every ``1 / fps`` a thread takes the camera's newest
frame, the robot's state and the action the robot is following, and adds a frame. At the
end the episode is saved when the task succeeded (or always, with ``keep_failures``).

``observation.state`` = arm joints, gripper, base (x, y, yaw); ``action`` = arm joint goal,
gripper, base velocity of the newest setpoint (``action_fn``, returning a ``Setpoint`` or a
channel sample; its ``None`` parts keep the previous action's); without one (a control
process whose setpoints are write-only from here) the action is the arm position, gripper
and base velocity the robot reports, and ``actions_from_setpoints`` in the result says so.

Usage::

    tap = DatasetTap("datasets/runs", task, camera=stack.cameras[0].source, robot=stack.robot,
                     action_fn=lambda: getattr(stack.setpoints, "latest", lambda: None)())
    tap.start()
    ...
    tap.close(success=execution.success)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.errors import RecordError
from rtvla.record.lerobot import LeRobotDatasetWriter
from rtvla.timing import Periodic

__all__ = ["DatasetTap"]

logger = logging.getLogger(__name__)


class DatasetTap:
    """Samples a running stack into a LeRobot episode at ``fps``. See the module docstring."""

    def __init__(self, root: str | Path, task: str, *, camera: Any, robot: Any, camera_name: str = "head",
                 fps: int = 30, action_fn: Callable[[], Any] | None = None, keep_failures: bool = False,
                 robot_type: str = "rtvla") -> None:
        width, height = int(getattr(camera, "width", 0)), int(getattr(camera, "height", 0))
        if not (width and height):
            raise RecordError(f"dataset camera {camera_name!r} does not say its width and height")
        joints = list(robot.limits.joint_names)
        self.dof = len(joints)
        self.writer = LeRobotDatasetWriter(
            root, fps=fps, robot_type=robot_type, cameras={camera_name: (height, width)},
            state_names=[*joints, "gripper", "base_x", "base_y", "base_yaw"],
            action_names=[*joints, "gripper", "base_vx", "base_vy", "base_wz"])
        self.task, self.camera, self.robot = task, camera, robot
        self.camera_name = camera_name
        self.action_fn = action_fn
        self.keep_failures = keep_failures
        self.size = (width, height)
        self._action: np.ndarray | None = None
        self.actions_from_setpoints = 0
        self.frames_missing = 0
        self.cpu_s = 0.0
        self._worker = Periodic(1.0 / fps, self._tick, name="rtvla-dataset-tap")
        self._closed = False

    def start(self) -> None:
        self._worker.start()

    def _tick(self) -> None:
        t0 = time.thread_time()
        frame = self.camera.read()
        if frame is None:
            self.frames_missing += 1
            return
        s = self.robot.read_state()
        state = np.concatenate([s.q, [s.gripper], s.base_pose])
        held = np.concatenate([s.q, [s.gripper], np.asarray(s.base_vel, dtype=float)])
        action = self._action if self._action is not None else held
        sp = self.action_fn() if self.action_fn is not None else None
        sp = getattr(sp, "value", sp)  # a channel Sample or a Setpoint
        if sp is not None:
            action = action.copy()
            if sp.arm_q is not None:
                action[:self.dof] = sp.arm_q
            if sp.gripper is not None:
                action[self.dof] = sp.gripper
            if sp.base_vel is not None:  # None: unchanged, as the control loop reads it
                action[self.dof + 1:] = sp.base_vel
            self.actions_from_setpoints += 1
        self._action = action
        image = np.asarray(frame.image)
        if image.shape[:2] != (self.size[1], self.size[0]):
            self.frames_missing += 1  # a resolution change mid-run: not a valid dataset frame
            return
        self.writer.add_frame(state, action, {self.camera_name: image}, task=self.task)
        self.cpu_s += time.thread_time() - t0

    def stop(self) -> None:
        """Stop sampling (before the stack's parts stop); :meth:`close` saves. Idempotent."""
        self._worker.stop(timeout=5)

    def close(self, *, success: bool) -> dict[str, Any]:
        """Stop sampling; save the episode (success or ``keep_failures``) or drop it."""
        if self._closed:
            return {}
        self._closed = True
        self.stop()
        frames = self.writer.frames
        kept = (success or self.keep_failures) and frames > 0
        row = None
        try:
            if kept:
                row = self.writer.save_episode()
            else:
                self.writer.discard_episode()
        finally:
            info = self.writer.close()
        logger.info("dataset %s: run %s (%d frames)", self.writer.root, "saved" if kept else "not kept", frames)
        return {"dataset": str(self.writer.root), "kept": kept, "frames": frames,
                "episode_index": None if row is None else row["episode_index"],
                "actions_from_setpoints": self.actions_from_setpoints, "frames_missing": self.frames_missing,
                "cpu_s": self.cpu_s, "total_episodes": info.get("total_episodes")}
