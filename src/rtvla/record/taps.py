"""``RecordTaps``: reads a running stack's parts at a fixed rate and feeds the run record.

A tap never reaches into a loop: it reads what the parts already publish (the camera's
newest frame, the detections channel, the robot's state, the navigator's path and goal,
the control loop's lateness ring) from its own thread, so wiring the record into a stack
changes none of the stack's loops. Everything is optional; give what the stack has.

Usage::

    taps = RecordTaps(record, video=video, camera=stack.camera, detections=stack.pipeline.channel,
                      robot=stack.robot, joint_names=stack.robot.limits.joint_names,
                      frames=SimFrames(model, stack.robot.qpos_snapshot, stack.robot.scene),
                      navigator=stack.navigator, control=stack.control)
    taps.start()
    ...
    taps.stop()                      # before record.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from rtvla.record.mcap import RunRecord
from rtvla.timing import Periodic

__all__ = ["RecordTaps"]

logger = logging.getLogger(__name__)


class RecordTaps:
    """Polls the stack's parts at ``rate_hz`` (default: the record's ``camera_hz``, at least 10).

    Args:
        record: the :class:`RunRecord` to feed.
        video: an ``EpisodeVideo`` that gets each new camera image (optional).
        camera / camera_name: a frame source with ``read()`` (SimCamera) and its name.
        detections: the perception pipeline's latest-value channel of ``Detections``.
        robot / joint_names: something with ``read_state()`` and the arm joint names.
        frames: ``SimFrames`` (or anything with ``transforms()``) for the arm and camera frames.
        navigator: has ``path`` (world ``(N, 2)`` or None) and ``state().goal``.
        control: a ``ControlLoop`` (``live_stats()["ticks"]``, ``lateness_samples_us()``);
            each tick's lateness goes to ``/control/timing`` (100 Hz), stamped by tick.
        control_hz: the control loop's rate (for the stamps of its samples).
    """

    def __init__(self, record: RunRecord, *, video: Any = None, camera: Any = None,
                 camera_name: str = "head", detections: Any = None, robot: Any = None,
                 joint_names: Sequence[str] | None = None, frames: Any = None, navigator: Any = None,
                 control: Any = None, control_hz: float = 100.0, rate_hz: float | None = None) -> None:
        self.record = record
        self.video = video
        self.camera, self.camera_name = camera, camera_name
        self.detections = detections
        self.robot = robot
        self.joint_names = list(joint_names or getattr(getattr(robot, "limits", None), "joint_names", ()))
        self.frames = frames
        self.navigator = navigator
        self.control = control
        self.control_period_ns = int(1e9 / control_hz)
        hz = rate_hz if rate_hz is not None else max(10.0, record.settings.camera_hz)
        self._worker = Periodic(1.0 / hz, self.tick, name="rtvla-record-taps")
        self._frame_seq = -1
        self._det_seq = -1
        self._path_id: int | None = None
        self._goal: Any = None
        self._ticks = 0
        self._lock = threading.Lock()
        self.cpu_s = 0.0
        self.errors = 0

    def start(self) -> None:
        if self.control is not None:
            self._ticks = int(self.control.live_stats()["ticks"])
        self._worker.start()

    def stop(self) -> None:
        """Stop polling and take a last sample (so the end of the run is in the record)."""
        self._worker.stop(timeout=5)
        self.tick()

    def tick(self) -> None:
        """One poll of every part (errors are counted and logged once, never raised)."""
        with self._lock:
            t0 = time.thread_time()
            for part in (self._camera, self._detections, self._state, self._navigation, self._control):
                try:
                    part()
                except Exception:
                    self.errors += 1
                    if self.errors == 1:
                        logger.exception("record tap %s failed", part.__name__)
            self.cpu_s += time.thread_time() - t0

    def _camera(self) -> None:
        if self.camera is None:
            return
        frame = self.camera.read()
        if frame is None or frame.seq == self._frame_seq:
            return
        self._frame_seq = frame.seq
        self.record.log_frame(self.camera_name, frame)
        if self.video is not None:
            self.video.update(self.camera_name, frame.image)

    def _detections(self) -> None:
        if self.detections is None:
            return
        sample = self.detections.latest()
        if sample is None or sample.seq == self._det_seq:
            return
        self._det_seq = sample.seq
        self.record.log_detections(self.camera_name, sample.value)

    def _state(self) -> None:
        if self.robot is not None:
            self.record.log_robot_state(self.robot.read_state(), self.joint_names)
        if self.frames is not None:
            # world -> base comes with the robot state; the rest of the tree from the model.
            tfs = [t for t in self.frames.transforms() if self.robot is None or t[1] != "base"]
            self.record.log_transforms(tfs)

    def _navigation(self) -> None:
        nav = self.navigator
        if nav is None:
            return
        path = nav.path
        if path is not None and id(path) != self._path_id:
            self._path_id = id(path)
            self.record.log_path(path)
        elif path is None and self._path_id is not None:
            self._path_id = None
            self.record.log_path(None)
        goal = nav.state().goal
        if goal is not None and goal != self._goal:
            self._goal = goal
            self.record.log_goal(goal)

    def _control(self) -> None:
        ctl = self.control
        if ctl is None:
            return
        ticks = int(ctl.live_stats()["ticks"])
        fresh = ticks - self._ticks
        if fresh <= 0:
            return
        samples = ctl.lateness_samples_us()
        fresh = min(fresh, len(samples))
        now = self.record.clock.now_ns()
        new = np.asarray(samples[len(samples) - fresh:], dtype=float)
        for k, late_us in enumerate(new):
            self.record.log_control(late_us / 1e6, tick=ticks - fresh + k,
                                    stamp_ns=now - (fresh - 1 - k) * self.control_period_ns)
        self._ticks = ticks
