"""The run recorder: MCAP with Foxglove schemas, live view, episode video, LeRobot datasets.

``RunRecord`` writes ``run.mcap`` (and serves it live); ``VideoWriter`` encodes
``episode.mp4``; ``LeRobotDatasetWriter`` writes LeRobot v3.0 datasets; ``summarize_mcap``
reads a record back; ``RunRecording`` wires all of them to a runtime stack, and
``RunCapture`` (``rtvla.record.capture``) is what ``rtvla run`` drives: the recording and a
dataset episode, failing soft and closing in bounded time.
``rtvla.record.sim_view`` (MuJoCo) and ``rtvla.record.episodes`` (the lock-step recorder
behind ``rtvla record``) are imported on demand.
"""

from __future__ import annotations

from rtvla.record.capture import RunCapture
from rtvla.record.lerobot import LeRobotDatasetWriter, read_info
from rtvla.record.mcap import RunRecord
from rtvla.record.run import RunRecording
from rtvla.record.settings import RecordSettings
from rtvla.record.summary import render_mcap_summary, summarize_mcap
from rtvla.record.video import VideoWriter

__all__ = [
    "LeRobotDatasetWriter",
    "RecordSettings",
    "RunCapture",
    "RunRecord",
    "RunRecording",
    "VideoWriter",
    "read_info",
    "render_mcap_summary",
    "summarize_mcap",
]
