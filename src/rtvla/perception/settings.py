"""Typed ``[perception]`` and ``[cameras]`` configuration, validated once at the edge.

::

    [perception]
    detector = "color"                 # or "onnx" (then model = "path.onnx")
    min_confidence = 0.5
    resolutions = [[640, 480], [480, 360], [320, 240]]
    classes = ["red", "blue_bin"]      # allow-list; empty = everything
    [[perception.color_classes]]       # optional: name blobs by color and size; when
                                       # given, these replace the one-class-per-color default
    label = "blue_bin"
    color = "blue"
    min_area_fraction = 0.02

    [cameras.use_cases.navigation]     # override a use case's mode
    width = 320
    height = 240
    fps = 15
    [cameras.devices.head]
    use_cases = ["object_detection"]

Usage::

    pcfg = PerceptionConfig.from_section(cfg.section("perception"))
    pipe = VisionPipeline(source, pcfg.build_detectors(), settings=pcfg.pipeline_settings())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.config import format_validation_error
from rtvla.errors import ConfigError
from rtvla.perception.color import DEFAULT_COLORS, ColorClass, ColorDetector, HsvRange
from rtvla.perception.detections import Detector
from rtvla.perception.multicam import DEFAULT_USE_CASES, CameraMode, CameraRequest
from rtvla.perception.pipeline import DEFAULT_RESOLUTIONS, PipelineSettings

__all__ = ["CamerasConfig", "PerceptionConfig", "parse_resolution"]


def parse_resolution(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``; ``ConfigError`` naming the bad value otherwise."""
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"resolution must look like 640x480, got {text!r}")
    w, h = int(parts[0]), int(parts[1])
    if w < 16 or h < 16:
        raise ConfigError(f"resolution must be at least 16x16, got {text!r}")
    return w, h


class _ColorClassModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str
    color: str
    min_area_fraction: float | None = Field(default=None, ge=0, lt=1)
    max_area_fraction: float = Field(default=1.0, gt=0, le=1)
    min_size_m: float | None = Field(default=None, gt=0)
    max_size_m: float | None = Field(default=None, gt=0)


class PerceptionConfig(BaseModel):
    """The ``[perception]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: str = Field(default="color", description="color, onnx, an entry point of "
                          "rtvla.detectors or 'module:factory'")
    detector_options: dict[str, Any] = Field(default_factory=dict)
    model: Path | None = None
    class_names: list[str] | None = None
    input_size: tuple[int, int] | None = None
    conf_threshold: float = Field(default=0.25, ge=0, le=1)
    iou_threshold: float = Field(default=0.45, gt=0, le=1)
    threads: int = Field(default=1, ge=1)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    resolutions: list[tuple[int, int]] = Field(default_factory=lambda: list(DEFAULT_RESOLUTIONS))
    skip_frames: list[int] = Field(default_factory=lambda: [1, 2, 3])
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    max_detections: int = Field(default=20, ge=1)
    classes: list[str] = Field(default_factory=list)
    detect_timeout_s: float | None = Field(default=0.1, gt=0)
    source_timeout_s: float = Field(default=0.5, gt=0)
    grab_wait_s: float | None = Field(default=None, ge=0)
    min_area_fraction: float = Field(default=0.0002, ge=0, lt=1)
    colors: dict[str, list[tuple[tuple[int, int, int], tuple[int, int, int]]]] | None = None
    color_classes: list[_ColorClassModel] = Field(default_factory=list)
    rate_hz: float | None = Field(default=None, gt=0)

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> PerceptionConfig:
        try:
            cfg = cls.model_validate(section)
        except ValidationError as exc:
            raise ConfigError(format_validation_error("perception", exc)) from None
        if cfg.detector == "onnx" and cfg.model is None:
            raise ConfigError("perception.model is required when perception.detector = 'onnx'")
        return cfg

    def pipeline_settings(self, **overrides: Any) -> PipelineSettings:
        data: dict[str, Any] = dict(
            resolutions=tuple(tuple(r) for r in self.resolutions),
            skip_frames=tuple(self.skip_frames), min_confidence=self.min_confidence,
            max_detections=self.max_detections,
            allow=frozenset(self.classes) if self.classes else None,
            detect_timeout_s=self.detect_timeout_s, source_timeout_s=self.source_timeout_s,
            grab_wait_s=self.grab_wait_s,
        )
        data.update(overrides)
        return PipelineSettings(**data)

    def build_detectors(self) -> list[Detector]:
        """The configured detector (model files are opened here: ``ModelError`` if bad); any
        other name is a detector part (entry point or ``module:factory``) built with
        ``[perception.detector_options]``."""
        if self.detector not in ("color", "onnx"):
            from rtvla import parts

            det = parts.build("detector", self.detector, self.detector_options, expect=Detector)
            return [det]
        if self.detector == "onnx":
            from rtvla.perception.onnx_detector import OnnxDetector

            assert self.model is not None
            return [OnnxDetector(
                self.model, class_names=self.class_names, input_size=self.input_size,
                conf_threshold=self.conf_threshold, iou_threshold=self.iou_threshold,
                threads=self.threads, graph_optimization=self.graph_optimization,
            )]
        colors = DEFAULT_COLORS if self.colors is None else {
            name: tuple(HsvRange(tuple(lo), tuple(hi)) for lo, hi in ranges)
            for name, ranges in self.colors.items()
        }
        classes = [ColorClass(c.label, c.color, c.min_area_fraction, c.max_area_fraction,
                              c.min_size_m, c.max_size_m)
                   for c in self.color_classes] or None
        return [ColorDetector(colors, classes, min_area_fraction=self.min_area_fraction)]


class _ModeModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    fps: float = Field(gt=0)
    depth: bool = False


class _DeviceModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    use_cases: list[str] = Field(default_factory=list)
    mode: _ModeModel | None = None
    depth: bool = False


class CamerasConfig(BaseModel):
    """The ``[cameras]`` table: use-case modes, priority, buffering and the devices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_cases: dict[str, _ModeModel] = Field(default_factory=dict)
    # ``[[cameras]]`` entries (name, source, width, height, rate_hz), validated by the runtime.
    streams: list[dict[str, Any]] = Field(default_factory=list)
    priority: list[str] | None = None
    buffered_frames: int = Field(default=2, ge=1)
    devices: dict[str, _DeviceModel] = Field(default_factory=dict)

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> CamerasConfig:
        try:
            return cls.model_validate(section)
        except ValidationError as exc:
            raise ConfigError(format_validation_error("cameras", exc)) from None

    def modes(self) -> dict[str, CameraMode]:
        out = dict(DEFAULT_USE_CASES)
        out.update({k: CameraMode(**v.model_dump()) for k, v in self.use_cases.items()})
        return out

    def requests(self) -> dict[str, CameraRequest]:
        return {
            name: CameraRequest(tuple(d.use_cases),
                                None if d.mode is None else CameraMode(**d.mode.model_dump()),
                                d.depth)
            for name, d in self.devices.items()
        }
