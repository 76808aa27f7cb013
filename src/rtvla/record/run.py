"""``RunRecording``: everything a run records, wired to a stack in a few lines.

It owns the run's :class:`RunRecord` (``run.mcap``, optionally served live), its
:class:`EpisodeVideo` (``episode.mp4``: every camera side by side, plus a fixed third-person
view of the simulated scene) and the :class:`RecordTaps` that read the stack's parts. It
reads the stack by duck typing (``recorder``, ``cameras``, ``pipelines``, ``robot``,
``navigator``, ``control``), so ``rtvla.record`` does not import the runtime.

Usage (``runtime.main_job``)::

    recording = RunRecording.for_stack(stack, run_dir, settings, metadata={"task": task})
    recording.start()                                # after stack.start()
    stack.on_progress = recording.wrap_progress(stack.on_progress)
    recording.log_plan(task, result)                 # the planning service's PlanResult
    ...
    recording.stop()                                 # in the finally, before stack.stop()
    stack.stop()
    report["recording"] = recording.close(control_final=stack.control_final)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.record.mcap import RunRecord
from rtvla.record.settings import RecordSettings
from rtvla.record.taps import RecordTaps
from rtvla.record.video import EpisodeVideo

__all__ = ["RunRecording"]

logger = logging.getLogger(__name__)


def _sim_view_source(cameras: list[Any]) -> tuple[Any, Any, Callable[[], np.ndarray]] | None:
    """(model, scene, qpos function) of a simulated camera among ``cameras``, if any."""
    for cam in cameras:
        src = getattr(cam, "source", cam)
        qpos = getattr(src, "qpos_fn", None) or getattr(src, "_qpos_fn", None)
        if getattr(src, "model", None) is not None and getattr(src, "scene", None) is not None and qpos:
            return src.model, src.scene, qpos
    return None


class RunRecording:
    """The record, the episode video and the taps of one run. See the module docstring.

    Args:
        run_dir: the run folder (``run.mcap`` and ``episode.mp4`` go there).
        settings: the ``[record]`` table.
        recorder: the run's metrics ``Recorder`` (timing, events, violations into the record).
        cameras: ``(name, source)`` pairs; each source has ``read()`` returning frames.
        detections: ``name -> latest-value channel of Detections`` (per camera).
        robot, navigator, control: the stack's parts (any may be None).
        sim: ``(model, scene, qpos_fn)`` of a simulator, for the scene view and the arm frames.
    """

    def __init__(self, run_dir: str | Path, settings: RecordSettings | None = None, *,
                 recorder: Any = None, cameras: list[tuple[str, Any]] | None = None,
                 detections: dict[str, Any] | None = None, robot: Any = None, navigator: Any = None,
                 control: Any = None, sim: tuple[Any, Any, Callable[[], np.ndarray]] | None = None,
                 metadata: dict[str, str] | None = None, live: bool | None = None,
                 live_port: int | None = None) -> None:
        self.settings = s = settings or RecordSettings()
        self.run_dir = Path(run_dir)
        self.record = RunRecord(self.run_dir / "run.mcap", settings=s, recorder=recorder, live=live,
                                live_port=live_port, metadata=metadata, overwrite=True)
        cameras = list(cameras or [])
        self.video: EpisodeVideo | None = None
        frames = None
        try:
            renderers: dict[str, Callable[[], np.ndarray]] = {}
            if sim is not None:
                from rtvla.record.sim_view import SceneView, SimFrames

                model, scene, qpos_fn = sim
                frames = SimFrames(model, qpos_fn, scene)
                if s.video and s.scene_view:
                    w, h = s.scene_view_size
                    renderers["scene"] = SceneView(model, qpos_fn, width=w, height=h)
            if s.video and (cameras or renderers):
                height = int(getattr(cameras[0][1], "height", 240)) if cameras else s.scene_view_size[1]
                self.video = EpisodeVideo(self.run_dir / "episode.mp4", sources=[n for n, _ in cameras],
                                          renderers=renderers, fps=s.video_fps, height=height,
                                          crf=s.video_crf, render_hz=s.scene_view_hz)
        except BaseException:
            self.record.close()
            raise
        detections = detections or {}
        self.taps = [
            RecordTaps(self.record, video=self.video, camera=src, camera_name=name,
                       detections=detections.get(name),
                       robot=robot if i == 0 else None, frames=frames if i == 0 else None,
                       navigator=navigator if i == 0 else None,
                       control=control if i == 0 and hasattr(control, "lateness_samples_us") else None)
            for i, (name, src) in enumerate(cameras or [("", None)])
        ]
        self._closed = False
        self._stopped = False

    @classmethod
    def for_stack(cls, stack: Any, run_dir: str | Path, settings: RecordSettings | None = None,
                  **kwargs: Any) -> RunRecording:
        """Everything from a runtime ``Stack`` (its cameras, pipelines, robot, navigator, control)."""
        cams = list(getattr(stack, "cameras", []) or [])
        pipes = list(getattr(stack, "pipelines", []) or [])
        cameras = [(c.name, c.source) for c in cams]
        detections = {c.name: p.channel for c, p in zip(cams, pipes, strict=False)}
        return cls(run_dir, settings, recorder=stack.recorder, cameras=cameras, detections=detections,
                   robot=stack.robot, navigator=getattr(stack, "navigator", None),
                   control=getattr(stack, "control", None), sim=_sim_view_source(cams), **kwargs)

    @property
    def live_port(self) -> int | None:
        return self.record.live_port

    def start(self) -> None:
        for tap in self.taps:
            tap.start()

    def log_plan(self, instruction: str, result: Any) -> None:
        """A planning service ``PlanResult`` (``plan``, ``source``, ``degraded``, ``reason``, ``latency_s``)."""
        self.record.log_plan(instruction, list(result.plan.actions), source=str(result.source),
                             degraded=bool(result.degraded), reason=result.reason,
                             latency_s=result.latency_s)

    def wrap_progress(self, inner: Callable[[Any], None] | None) -> Callable[[Any], None]:
        """An executor progress callback that records each step's status, then calls ``inner``."""
        def on_progress(p: Any) -> None:
            self.record.log_step(p)
            if inner is not None:
                inner(p)
        return on_progress

    def stop(self) -> None:
        """Stop reading the stack (call it before the stack stops, so the last reads find
        every part alive). Idempotent; :meth:`close` calls it too."""
        if self._stopped:
            return
        self._stopped = True
        for tap in self.taps:
            try:
                tap.stop()
            except Exception:
                logger.exception("stopping a record tap failed")

    def close(self, *, control_final: dict[str, Any] | None = None,
              timeout_s: float | None = None) -> dict[str, Any]:
        """Stop the taps, add the control process's lateness series (process placement), finish
        ``episode.mp4`` and ``run.mcap``; returns what was recorded and what it cost.

        ``timeout_s`` (default: the settings' ``close_timeout_s``) bounds the wait for the
        video encoder and the record's writer together; the record gets at least half of it.
        Raises :class:`RecordError` when ``run.mcap`` could not be finished."""
        if self._closed:
            return self._stats
        self._closed = True
        budget = self.settings.close_timeout_s if timeout_s is None else float(timeout_s)
        t_end = time.monotonic() + budget
        self.stop()
        if control_final and control_final.get("lateness_us") and not any(t.control for t in self.taps):
            self.record.log_control_series(control_final["lateness_us"],
                                           rate_hz=float(control_final.get("rate_hz") or 100.0))
        video = None
        if self.video is not None:
            try:
                video = self.video.close(timeout_s=budget / 2)
            except Exception as exc:  # the record must still be finished
                logger.error("episode video failed: %s", exc)
                video = {"error": str(exc)}
        record = self.record.close(timeout_s=max(budget / 2, t_end - time.monotonic()))
        taps_cpu = sum(t.cpu_s for t in self.taps)
        self._stats = {"mcap": record, "video": video, "taps_cpu_s": taps_cpu,
                       "taps_errors": sum(t.errors for t in self.taps)}
        return self._stats
