"""RunRecording: the record, episode video and taps of a run, wired from a stack's parts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace as NS

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from mcap.reader import make_reader

from rtvla.action.control import ControlLoop
from rtvla.action.setpoints import Setpoint
from rtvla.channels import LatestValue
from rtvla.errors import RenderError
from rtvla.metrics import Recorder
from rtvla.record import RecordSettings, RunRecord, RunRecording, summarize_mcap
from rtvla.record.dataset_tap import DatasetTap
from rtvla.robots.sim import SimCamera, SimRobot


def test_a_stack_like_run_leaves_run_mcap_and_episode_mp4(tmp_path: Path) -> None:
    recorder = Recorder()
    robot = SimRobot(recorder=recorder)
    robot.connect()
    camera = SimCamera(robot, width=160, height=120, rate_hz=15, recorder=recorder)
    try:
        camera.open()
    except RenderError as exc:
        robot.close()
        pytest.skip(f"no offscreen rendering here: {exc}")
    control = ControlLoop(robot, LatestValue("setpoints"), recorder=recorder)
    detections = LatestValue("detections")
    stack = NS(recorder=recorder, cameras=[NS(name="head", source=camera)], pipelines=[NS(channel=detections)],
               robot=robot, navigator=None, control=control)
    rec = RunRecording.for_stack(stack, tmp_path, RecordSettings(video_fps=5, scene_view_size=(160, 120)),
                                 metadata={"task": "test"})
    progress = []
    on_progress = rec.wrap_progress(progress.append)
    rec.start()
    thread = control.start_thread(duration_s=2.0)
    plan = NS(plan=NS(actions=[{"type": "navigate", "parameters": {"target": "table"}}]), source="rules",
              degraded=False, reason=None, latency_s=0.01)
    rec.log_plan("go to the table", plan)
    on_progress(NS(index=0, count=1, name="navigate(table)", status=NS(value="running"), phase="", reason=""))
    thread.join(20)
    deadline = time.monotonic() + 10
    while rec.video.writer.frames_written < 3 and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    stats = rec.close()
    assert rec.close() is stats or rec.close() == stats
    camera.close()
    robot.close()
    assert len(progress) == 1
    assert stats["mcap"]["errors"] == 0 and stats["video"]["frames_written"] >= 3
    assert stats["video"]["size"] == [320, 120]  # the camera beside the scene view
    info = summarize_mcap(tmp_path)
    counts = {c["topic"]: c["messages"] for c in info["channels"]}
    for topic in ("/camera/head/image", "/joint_states", "/tf", "/plan", "/plan/step", "/control/timing",
                  "/timing/control"):
        assert counts.get(topic, 0) > 0, topic
    assert info["metadata"]["rtvla.run"] == {"task": "test"}
    with av.open(str(tmp_path / "episode.mp4")) as f:
        assert f.streams.video[0].codec_context.name == "h264"


def test_a_control_process_lateness_series_is_stamped_back_from_its_end(tmp_path: Path) -> None:
    with RunRecord(tmp_path / "run.mcap") as record:
        record.log_control_series([5.0, 6.0, 7.0], rate_hz=100.0, end_ns=1_000_000_000)
    with (tmp_path / "run.mcap").open("rb") as f:
        msgs = [(m.log_time, json.loads(m.data)) for _, _, m in make_reader(f).iter_messages()]
    assert [t for t, _ in msgs] == [980_000_000, 990_000_000, 1_000_000_000]
    assert [(d["tick"], d["lateness_us"]) for _, d in msgs] == [(0, 5.0), (1, 6.0), (2, 7.0)]


def test_a_real_time_run_becomes_one_dataset_episode(tmp_path: Path) -> None:
    robot = SimRobot()
    robot.connect()
    camera = SimCamera(robot, width=64, height=48, rate_hz=30)
    try:
        camera.open()
    except RenderError as exc:
        robot.close()
        pytest.skip(f"no offscreen rendering here: {exc}")
    setpoints = LatestValue("setpoints")
    goal = robot.read_state().q + 0.1
    setpoints.publish(Setpoint(stamp_ns=0, arm_q=goal, gripper=1.0))
    try:
        for success, n in ((True, 1), (False, 1)):
            tap = DatasetTap(tmp_path / "ds", "hold still", camera=camera, robot=robot, fps=20,
                             action_fn=setpoints.latest)
            tap.start()
            deadline = time.monotonic() + 20
            while tap.writer.frames < 15 and time.monotonic() < deadline:
                threading.Event().wait(0.02)
            out = tap.close(success=success)
            assert out["kept"] is success and out["frames"] >= 15 and out["total_episodes"] == n
    finally:
        camera.close()
        robot.close()
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["total_episodes"] == 1 and info["fps"] == 20
    data = pq.read_table(tmp_path / "ds/data/chunk-000/file-000.parquet")
    action = np.stack(data.column("action").to_numpy(zero_copy_only=False))
    assert np.allclose(action[:, :5], goal, atol=1e-6) and np.all(action[:, 5] == 1.0)
    with av.open(str(tmp_path / "ds/videos/observation.images.head/chunk-000/file-000.mp4")) as f:
        assert sum(1 for _ in f.decode(video=0)) == data.num_rows
