"""RecordTaps feed a run record from a running (real-time) simulated stack's parts."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from rtvla.action.control import ControlLoop
from rtvla.channels import LatestValue
from rtvla.errors import RenderError
from rtvla.record import RecordSettings, RunRecord, summarize_mcap
from rtvla.record.sim_view import SceneView, SimFrames
from rtvla.record.taps import RecordTaps
from rtvla.record.video import EpisodeVideo
from rtvla.robots.sim import SimCamera, SimRobot


def test_taps_record_camera_state_frames_navigation_and_control(tmp_path: Path) -> None:
    robot = SimRobot()
    robot.connect()
    camera = SimCamera(robot, width=160, height=120, rate_hz=15)
    try:
        camera.open()
    except RenderError as exc:
        robot.close()
        pytest.skip(f"no offscreen rendering here: {exc}")
    setpoints = LatestValue("setpoints")
    control = ControlLoop(robot, setpoints)
    nav = NS(path=np.array([[0.0, 0.0], [1.0, 1.0]]), state=lambda: NS(goal=(1.0, 1.0, 0.0)))
    record = RunRecord(tmp_path / "run.mcap", settings=RecordSettings(camera_hz=10))
    video = EpisodeVideo(tmp_path / "episode.mp4", sources=["head"], fps=5, height=120,
                         renderers={"scene": SceneView(robot.model, robot.qpos_snapshot, width=160, height=120)})
    taps = RecordTaps(record, video=video, camera=camera, robot=robot,
                      frames=SimFrames(robot.model, robot.qpos_snapshot, robot.scene), navigator=nav,
                      control=control)
    taps.start()  # from here on every control tick is recorded
    thread = control.start_thread(duration_s=1.5)
    thread.join(20)
    deadline = time.monotonic() + 10
    while video.writer.frames_written < 3 and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    taps.stop()
    ticks = control.stats_obj().ticks
    stats = record.close()
    vstats = video.close()
    camera.close()
    robot.close()
    assert taps.errors == 0 and stats["errors"] == 0
    counts = {c["topic"]: c["messages"] for c in summarize_mcap(tmp_path / "run.mcap")["channels"]}
    assert counts["/control/timing"] == ticks  # every tick's lateness, none twice
    assert 5 <= counts["/camera/head/image"] <= 25
    assert counts["/joint_states"] >= 10 and counts["/tf"] >= 20
    assert counts["/navigation/path"] == 1 and counts["/navigation/goal"] == 1
    assert vstats["frames_written"] >= 3 and vstats["size"] == [320, 120]
