"""The ``[record]`` table: what a run records and how much of it.

Usage::

    settings = RecordSettings.from_section(cfg.section("record"))
    if settings.enabled:
        record = RunRecord(run_dir / "run.mcap", settings=settings)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.config import format_validation_error
from rtvla.errors import ConfigError

__all__ = ["RecordSettings"]


class RecordSettings(BaseModel):
    """How ``run.mcap`` and ``episode.mp4`` are written (frozen; validated once)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="write run.mcap beside report.json")
    camera_hz: float = Field(10.0, gt=0, le=120, description="JPEG frames per second per camera")
    jpeg_quality: int = Field(80, ge=10, le=100)
    depth_hz: float = Field(2.0, ge=0, le=60, description="depth images per second (0: none)")
    timing_hz: float = Field(2.0, gt=0, le=50, description="per-component timing rows per second")
    max_mb: float = Field(500.0, gt=0, description="camera images stop once the file reaches this")
    queue_size: int = Field(2048, ge=16, le=1_000_000,
                            description="messages waiting for the writer; beyond it they are dropped")
    live: bool = Field(False, description="also serve the channels to the Foxglove app over WebSocket")
    live_port: int = Field(8765, ge=0, le=65535, description="0 picks a free port")
    live_host: str = Field("127.0.0.1", description="the live view binds loopback unless told otherwise")
    video: bool = Field(True, description="write episode.mp4 (H.264) of the cameras and scene view")
    video_fps: float = Field(5.0, gt=0, le=60, description="episode.mp4 frame rate (its cost scales with it)")
    video_crf: int = Field(28, ge=0, le=51, description="H.264 quality (lower is better, larger)")
    scene_view: bool = Field(True, description="add a fixed third-person view of the simulated scene")
    scene_view_hz: float = Field(1.0, gt=0, le=60, description="scene view renders per second "
                                 "(software GL makes it the dearest part of the video)")
    scene_view_size: tuple[int, int] = Field((320, 240), description="width, height of the scene view")
    close_timeout_s: float = Field(5.0, gt=0, le=300, description="longest a run waits for run.mcap and "
                                   "episode.mp4 to be finished when it ends (a stuck writer is left behind)")

    @classmethod
    def from_section(cls, data: dict[str, Any] | None) -> RecordSettings:
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise ConfigError(format_validation_error("record", exc)) from None
