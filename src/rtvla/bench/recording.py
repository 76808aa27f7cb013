"""``rtvla bench recording``: what the run recorder costs, against the same run without it.

The workload is the simulator's real-time data path: ``SimRobot`` with its physics
thread, the head camera rendering RGB-D at 30 Hz (320x240, as ``rtvla run`` does), and the
100 Hz ``ControlLoop`` in a thread driving the arm between two poses. The same workload
runs with recording off and on; "on" adds everything ``rtvla run`` records: ``run.mcap``
(JPEG frames at 10 Hz, depth, joint states, the transform tree, control lateness at
100 Hz, per-component timing) through :class:`RecordTaps`, and ``episode.mp4`` (camera
and a third-person scene view) through :class:`EpisodeVideo`.

Figures per configuration: process CPU as percent of one core, MB/s written, and the
control loop's wake-up lateness p50/p99. The recording's cost is the difference of
process CPU (and, less noisy, the CPU time of its own threads); the goal is at most 5 %
of one core with control lateness unchanged within noise (the spread between runs of
the same configuration, when ``repeats`` > 1).

Usage::

    result = bench_recording(seconds=10, directory="rtvla-bench/recording")
    result["summary"]["cost_cpu_percent"], result["summary"]["lateness_p99_us"]
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.action.control import ControlLoop
from rtvla.action.setpoints import Setpoint
from rtvla.channels import LatestValue
from rtvla.errors import RenderError
from rtvla.metrics import Recorder
from rtvla.record import RecordSettings, RunRecord
from rtvla.record.taps import RecordTaps
from rtvla.record.video import EpisodeVideo
from rtvla.timing import Periodic

__all__ = ["WORKLOADS", "bench_recording", "run_stack_workload", "run_workload"]

logger = logging.getLogger(__name__)


def run_workload(seconds: float, *, record_dir: Path | None, settings: RecordSettings | None = None,
                 camera_size: tuple[int, int] = (320, 240)) -> dict[str, Any]:
    """The sim + camera + control workload for ``seconds``; recorded into ``record_dir`` when given."""
    from rtvla.record.sim_view import SceneView, SimFrames
    from rtvla.robots.sim import SimCamera, SimRobot

    settings = settings or RecordSettings()
    recorder = Recorder()
    robot = SimRobot(recorder=recorder)
    robot.connect()
    setpoints = LatestValue("setpoints")
    control = ControlLoop(robot, setpoints, recorder=recorder)
    w, h = camera_size
    camera = SimCamera(robot, width=w, height=h, rate_hz=30.0, depth=True, recorder=recorder)
    record = video = taps = None
    home = robot.read_state().q.copy()
    poses = [home, np.clip(home + 0.4, robot.limits.q_min + 0.05, robot.limits.q_max - 0.05)]
    flip = {"i": 0}

    def move() -> None:  # keep the arm (and so the images and joint states) changing
        flip["i"] ^= 1
        setpoints.publish(Setpoint(stamp_ns=time.monotonic_ns(), arm_q=poses[flip["i"]], gripper=0.0))

    mover = Periodic(1.5, move, name="bench-mover")
    thread: threading.Thread | None = None
    try:
        camera.open()
        if record_dir is not None:
            record_dir.mkdir(parents=True, exist_ok=True)
            record = RunRecord(record_dir / "run.mcap", settings=settings, recorder=recorder, overwrite=True)
            renderers: dict[str, Callable[[], np.ndarray]] = {}
            if settings.scene_view:
                sw, sh = settings.scene_view_size
                renderers["scene"] = SceneView(robot.model, robot.qpos_snapshot, width=sw, height=sh)
            video = EpisodeVideo(record_dir / "episode.mp4", sources=["head"], renderers=renderers,
                                 fps=settings.video_fps, height=h, crf=settings.video_crf,
                                 render_hz=settings.scene_view_hz) \
                if settings.video else None
            taps = RecordTaps(record, video=video, camera=camera, robot=robot,
                              frames=SimFrames(robot.model, robot.qpos_snapshot, robot.scene),
                              control=control)
        move()
        cpu0, t0 = time.process_time(), time.monotonic()
        thread = control.start_thread(duration_s=seconds)
        if taps is not None:
            taps.start()
        mover.start()
        thread.join(seconds + 30)
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
    finally:
        mover.stop(timeout=2)
        if taps is not None:
            taps.stop()
        rec_stats = record.close() if record is not None else None
        video_stats = video.close() if video is not None else None
        camera.close()
        robot.close()
    stats = control.stats_obj()
    out: dict[str, Any] = {
        "workload": "sim", "recording": record_dir is not None, "seconds": wall,
        "cpu_percent": 100.0 * cpu / wall,
        "control_hz": stats.achieved_hz, "missed": stats.missed,
        "lateness_p50_us": stats.lateness_p50_us, "lateness_p99_us": stats.lateness_p99_us,
        "lateness_max_us": stats.lateness_max_us, "camera_frames": camera.frames_rendered,
        "bytes": 0, "mb_per_s": 0.0, "recorder_threads_cpu_percent": 0.0,
    }
    if rec_stats is not None:
        own = rec_stats["writer_cpu_s"] + (taps.cpu_s if taps is not None else 0.0)
        vbytes = 0
        if video_stats is not None:
            own += video_stats["encode_cpu_s"] + video_stats["compose_cpu_s"]
            vbytes = video_stats["bytes"]
        out.update(
            bytes=rec_stats["bytes"] + vbytes, mcap_bytes=rec_stats["bytes"], mp4_bytes=vbytes,
            mb_per_s=(rec_stats["bytes"] + vbytes) / 1e6 / wall,
            recorder_threads_cpu_percent=100.0 * own / wall,
            mcap_messages=rec_stats["messages"], dropped=rec_stats["dropped_queue"] + rec_stats["dropped_size"],
            video_frames=video_stats["frames_written"] if video_stats else 0,
            video_dropped=video_stats["frames_dropped"] if video_stats else 0,
            cost_breakdown_cpu_percent={
                "mcap_writer": 100.0 * rec_stats["writer_cpu_s"] / wall,
                "taps": 100.0 * (taps.cpu_s if taps is not None else 0.0) / wall,
                "video_encode": 100.0 * (video_stats["encode_cpu_s"] if video_stats else 0.0) / wall,
                "video_compose_and_scene_view": 100.0 * (video_stats["compose_cpu_s"] if video_stats else 0.0) / wall,
            })
    return out


def run_stack_workload(seconds: float, *, record_dir: Path | None,
                       settings: RecordSettings | None = None) -> dict[str, Any]:
    """The default ``rtvla run`` stack (control in its own process, camera, perception at
    30 Hz, navigation, monitor), idle for ``seconds``, recorded into ``record_dir`` when given.

    CPU is this (main) process's, where the recorder runs; lateness is the control
    process's own measurement.
    """
    from rtvla.config import load_config
    from rtvla.record.run import RunRecording
    from rtvla.runtime.stack import Stack

    settings = settings or RecordSettings()
    recorder = Recorder()
    stack = Stack.build(load_config(), recorder)
    recording = None
    rec_stats: dict[str, Any] | None = None
    try:
        stack.start()
        if record_dir is not None:
            record_dir.mkdir(parents=True, exist_ok=True)
            recording = RunRecording.for_stack(stack, record_dir, settings)
            recording.start()
        cpu0, t0 = time.process_time(), time.monotonic()
        stack.stop_event.wait(seconds)
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
    finally:
        if recording is not None:
            recording.stop()
        stack.stop()
        if recording is not None:
            rec_stats = recording.close(control_final=stack.control_final)
    ctl = stack.control_stats()
    out: dict[str, Any] = {
        "workload": "stack", "recording": record_dir is not None, "seconds": wall,
        "cpu_percent": 100.0 * cpu / wall, "control_placement": ctl.get("placement"),
        "control_hz": float(ctl.get("achieved_hz") or 0.0), "missed": int(ctl.get("missed") or 0),
        "lateness_p50_us": float(ctl.get("lateness_p50_us") or 0.0),
        "lateness_p99_us": float(ctl.get("lateness_p99_us") or 0.0),
        "lateness_max_us": float(ctl.get("lateness_max_us") or 0.0),
        "bytes": 0, "mb_per_s": 0.0, "recorder_threads_cpu_percent": 0.0,
    }
    if rec_stats is not None:
        m, v = rec_stats["mcap"], rec_stats["video"] or {}
        enc, comp = float(v.get("encode_cpu_s", 0.0)), float(v.get("compose_cpu_s", 0.0))
        own = m["writer_cpu_s"] + rec_stats["taps_cpu_s"] + enc + comp
        vbytes = int(v.get("bytes", 0))
        out.update(
            bytes=m["bytes"] + vbytes, mcap_bytes=m["bytes"], mp4_bytes=vbytes,
            mb_per_s=(m["bytes"] + vbytes) / 1e6 / wall, recorder_threads_cpu_percent=100.0 * own / wall,
            mcap_messages=m["messages"], dropped=m["dropped_queue"] + m["dropped_size"],
            video_frames=int(v.get("frames_written", 0)), video_dropped=int(v.get("frames_dropped", 0)),
            cost_breakdown_cpu_percent={
                "mcap_writer": 100.0 * m["writer_cpu_s"] / wall,
                "taps": 100.0 * rec_stats["taps_cpu_s"] / wall,
                "video_encode": 100.0 * enc / wall,
                "video_compose_and_scene_view": 100.0 * comp / wall,
            })
    return out


WORKLOADS = {"stack": run_stack_workload, "sim": run_workload}


def bench_recording(*, seconds: float = 10.0, repeats: int = 1, directory: str | Path = "rtvla-bench/recording",
                    settings: RecordSettings | None = None, workload: str = "stack",
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Off/on pairs of a workload (``repeats`` of each, interleaved) and the summary.

    ``workload``: ``stack`` (the default ``rtvla run`` stack, control in its own process)
    or ``sim`` (:func:`run_workload`: the control loop in a thread beside the recorder).
    """
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {sorted(WORKLOADS)}, got {workload!r}")
    run = WORKLOADS[workload]
    directory = Path(directory)
    rows: list[dict[str, Any]] = []
    for r in range(repeats):
        for on in (False, True):
            label = f"recording {'on' if on else 'off'} ({r + 1}/{repeats})"
            if progress is not None:
                progress(label)
            target = directory / f"run-{r}" if on else None
            if target is not None and target.exists():
                shutil.rmtree(target)
            try:
                rows.append(run(seconds, record_dir=target, settings=settings))
            except RenderError as exc:
                raise RenderError(f"bench recording needs offscreen rendering: {exc}") from exc
    off = [x for x in rows if not x["recording"]]
    on = [x for x in rows if x["recording"]]

    def mean(xs: list[dict[str, Any]], key: str) -> float:
        return float(np.mean([x[key] for x in xs]))

    p99_off = [x["lateness_p99_us"] for x in off]
    summary = {
        "cpu_percent_off": mean(off, "cpu_percent"), "cpu_percent_on": mean(on, "cpu_percent"),
        "cost_cpu_percent": mean(on, "cpu_percent") - mean(off, "cpu_percent"),
        "recorder_threads_cpu_percent": mean(on, "recorder_threads_cpu_percent"),
        "mb_per_s": mean(on, "mb_per_s"),
        "lateness_p99_us_off": mean(off, "lateness_p99_us"), "lateness_p99_us_on": mean(on, "lateness_p99_us"),
        "lateness_p99_spread_us_off": float(max(p99_off) - min(p99_off)) if len(p99_off) > 1 else None,
        "missed_off": int(sum(x["missed"] for x in off)), "missed_on": int(sum(x["missed"] for x in on)),
        "goal_cpu_percent": 5.0,
    }
    summary["within_goal"] = summary["recorder_threads_cpu_percent"] <= 5.0
    return {"workload": workload, "seconds": seconds, "repeats": repeats, "rows": rows,
            "summary": summary, "directory": str(directory)}
