"""Perception: frame sources, detectors, the real-time vision pipeline, multi-camera optimizer.

::

    from rtvla.perception import ColorDetector, OpenCVSource, VisionPipeline
    pipe = VisionPipeline(OpenCVSource("clip.mp4", loop=True), ColorDetector(), recorder=rec)
    pipe.run(duration_s=10)                      # 30 Hz (the perception budget's rate)
    pipe.channel.latest().value                  # Detections (boxes, labels, 3D positions)
"""

from __future__ import annotations

from rtvla.perception.annotate import annotate, save_annotated
from rtvla.perception.color import DEFAULT_COLORS, ColorClass, ColorDetector, HsvRange
from rtvla.perception.detections import (
    Detection,
    Detections,
    Detector,
    StagedDetector,
    deproject,
    filter_detections,
    locate,
)
from rtvla.perception.frames import (
    Frame,
    FrameLike,
    FrameSource,
    Intrinsics,
    IntrinsicsLike,
    check_depth,
    check_image,
)
from rtvla.perception.multicam import (
    DEFAULT_USE_CASES,
    Calibration,
    CameraMode,
    CameraPlan,
    CameraRequest,
    MultiCameraOptimizer,
    ResourceEstimate,
    calibrate,
    load_or_calibrate,
)
from rtvla.perception.onnx_detector import Letterbox, OnnxDetector, decode_yolo, letterbox
from rtvla.perception.pipeline import (
    DEFAULT_RESOLUTIONS,
    PipelineSettings,
    PipelineStatus,
    VisionPipeline,
)
from rtvla.perception.settings import CamerasConfig, PerceptionConfig, parse_resolution
from rtvla.perception.sources import OpenCVSource, SourceKind, SourceStatus, parse_source
from rtvla.perception.synthetic import SyntheticSource

__all__ = [
    "DEFAULT_COLORS",
    "DEFAULT_RESOLUTIONS",
    "DEFAULT_USE_CASES",
    "Calibration",
    "CameraMode",
    "CameraPlan",
    "CameraRequest",
    "CamerasConfig",
    "ColorClass",
    "ColorDetector",
    "Detection",
    "Detections",
    "Detector",
    "Frame",
    "FrameLike",
    "FrameSource",
    "HsvRange",
    "Intrinsics",
    "IntrinsicsLike",
    "Letterbox",
    "MultiCameraOptimizer",
    "OnnxDetector",
    "OpenCVSource",
    "PerceptionConfig",
    "PipelineSettings",
    "PipelineStatus",
    "ResourceEstimate",
    "SourceKind",
    "SourceStatus",
    "StagedDetector",
    "SyntheticSource",
    "VisionPipeline",
    "annotate",
    "calibrate",
    "check_depth",
    "check_image",
    "decode_yolo",
    "deproject",
    "filter_detections",
    "letterbox",
    "load_or_calibrate",
    "locate",
    "parse_resolution",
    "parse_source",
    "save_annotated",
]
