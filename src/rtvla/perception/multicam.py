"""Multi-camera optimizer: per-use-case camera modes and resource estimates from measurement.

The reference chapter picks a mode per use case (object detection 640x480 at 30 fps,
navigation 320x240 at 15 fps, detailed inspection 1280x960 at 10 fps) and estimates
resources with a magic factor. Here the factor is measured: :func:`calibrate` times this
machine's perception pipeline (resize + detect + filter with the given detector) on
synthetic frames at several resolutions and fits seconds per pixel; the result is cached on
disk (``$XDG_CACHE_HOME/rtvla`` or ``~/.cache/rtvla``, overridable) keyed by detector and
machine, so it is measured once. Then, for a mode of ``W x H`` at ``fps``:

* ``cpu_cores = W * H * fps * cost_per_pixel_s``
* ``memory_mb = buffered_frames * frame_bytes / 2**20`` (RGB, plus float32 depth if any)
* ``bandwidth_mbps = frame_bytes * fps * 8 / 1e6`` (megabits per second)

Usage::

    opt = MultiCameraOptimizer(calibration=load_or_calibrate())
    plans = opt.optimize({"head": CameraRequest(("object_detection",)),
                          "base": CameraRequest(("navigation",))})
    plans["head"].estimate.cpu_cores
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from rtvla.errors import ConfigError, ResourceError
from rtvla.perception.detections import Detector
from rtvla.perception.synthetic import SyntheticSource
from rtvla.timing import MONOTONIC, Clock

__all__ = [
    "DEFAULT_USE_CASES",
    "Calibration",
    "CameraMode",
    "CameraPlan",
    "CameraRequest",
    "MultiCameraOptimizer",
    "ResourceAllocatorLike",
    "ResourceEstimate",
    "calibrate",
    "default_cache_dir",
    "load_or_calibrate",
]

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "perception_calibration.json"


@dataclass(frozen=True, slots=True)
class CameraMode:
    """A camera's resolution and rate."""

    width: int
    height: int
    fps: float
    depth: bool = False

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ConfigError(f"camera resolution must be positive, got {self.width}x{self.height}")
        if not self.fps > 0:
            raise ConfigError(f"camera fps must be > 0, got {self.fps}")

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def frame_bytes(self) -> int:
        return self.pixels * 3 + (self.pixels * 4 if self.depth else 0)


DEFAULT_USE_CASES: dict[str, CameraMode] = {
    "object_detection": CameraMode(640, 480, 30),
    "navigation": CameraMode(320, 240, 15),
    "detailed_inspection": CameraMode(1280, 960, 10),
}


@dataclass(frozen=True, slots=True)
class ResourceEstimate:
    """What a camera's perception needs; the resource allocator's request."""

    cpu_cores: float
    memory_mb: float
    bandwidth_mbps: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def to_request(self, **kw: Any) -> Any:
        """The :class:`~rtvla.resources.ResourceRequest` for this estimate (CPU and memory;
        bandwidth is not an allocator resource). ``kw``: priority, critical, ..."""
        from rtvla.resources import ResourceRequest

        return ResourceRequest(cpu_cores=self.cpu_cores, memory_mb=self.memory_mb, **kw)


@dataclass(frozen=True, slots=True)
class CameraRequest:
    """A camera and what it is for; ``mode`` is used when no use case is known."""

    use_cases: tuple[str, ...] = ()
    mode: CameraMode | None = None
    depth: bool = False


@dataclass(frozen=True)
class CameraPlan:
    """The chosen mode, its estimate and whatever the allocator granted (None without one)."""

    camera: str
    use_case: str | None
    mode: CameraMode
    estimate: ResourceEstimate
    allocation: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"camera": self.camera, "use_case": self.use_case, "mode": asdict(self.mode),
                "estimate": self.estimate.as_dict(),
                "allocation": None if self.allocation is None else repr(self.allocation)}


class ResourceAllocatorLike(Protocol):
    """What the optimizer needs from the resource allocator (``rtvla.resources``)."""

    def request(self, component: str, req: Any) -> Any:
        ...


@dataclass(frozen=True)
class Calibration:
    """Measured pipeline cost: ``cost_per_pixel_s`` seconds of one core per pixel."""

    cost_per_pixel_s: float
    key: str
    detector: str
    measured_at: float  # wall-clock epoch seconds (for humans, not for timing)
    samples: list[tuple[int, float]] = field(default_factory=list)  # (pixels, seconds)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rtvla"


def machine_key(detector: str) -> str:
    """What a calibration depends on: detector, CPU, core count, OpenCV and numpy."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{detector}|{cpu}|{os.cpu_count()}|cv2 {cv2.__version__}|numpy {np.__version__}"


def calibrate(
    detector: Detector,
    *,
    resolutions: Sequence[tuple[int, int]] = ((320, 240), (640, 480), (1280, 960)),
    repeats: int = 15,
    clock: Clock = MONOTONIC,
) -> Calibration:
    """Time resize + detect + filter on synthetic frames; fit seconds per pixel.

    Each resolution is timed ``repeats`` times and its median kept (robust to a loaded
    machine); the fit is least squares through the origin.
    """
    from rtvla.perception.pipeline import PipelineSettings, VisionPipeline

    if repeats < 1:
        raise ConfigError(f"calibration repeats must be >= 1, got {repeats}")
    samples: list[tuple[int, float]] = []
    for w, h in resolutions:
        src = SyntheticSource(w, h, 30.0)
        pipe = VisionPipeline(src, detector, settings=PipelineSettings(resolutions=((w, h),)),
                              rate_hz=30.0, own_source=False)
        frames = [src.render(i / 30.0, i + 1, 0) for i in range(min(repeats, 8))]
        pipe.process(frames[0])  # warm-up (allocations, lazy init)
        times = []
        for i in range(repeats):
            t0 = clock.now_ns()
            pipe.process(frames[i % len(frames)])
            times.append((clock.now_ns() - t0) / 1e9)
        samples.append((w * h, float(np.median(times))))
    px = np.array([p for p, _ in samples], np.float64)
    sec = np.array([s for _, s in samples], np.float64)
    cost = float(px @ sec / (px @ px))
    return Calibration(cost, machine_key(detector.name), detector.name, time.time(), samples)


def load_or_calibrate(
    detector: Detector | None = None,
    *,
    cache_dir: str | Path | None = None,
    refresh: bool = False,
    measure: Callable[[Detector], Calibration] = calibrate,
) -> Calibration:
    """The cached calibration for this detector and machine, measuring it if absent."""
    if detector is None:
        from rtvla.perception.color import ColorDetector

        detector = ColorDetector()
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    file = path / CALIBRATION_FILE
    key = machine_key(detector.name)
    entries: dict[str, Any] = {}
    if file.is_file():
        try:
            entries = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("ignoring unreadable calibration cache %s: %s", file, exc)
            entries = {}
    if not refresh and key in entries:
        try:
            e = entries[key]
            return Calibration(float(e["cost_per_pixel_s"]), key, e["detector"],
                               float(e["measured_at"]),
                               [(int(p), float(s)) for p, s in e.get("samples", [])])
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("ignoring malformed calibration entry in %s: %s", file, exc)
    logger.info("measuring perception cost per pixel for %s", key)
    cal = measure(detector)
    entries[key] = cal.as_dict()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=2), encoding="utf-8")
        tmp.replace(file)
    except OSError as exc:
        logger.warning("could not cache the calibration in %s: %s", file, exc)
    return cal


class MultiCameraOptimizer:
    """Chooses each camera's mode by use case and estimates its resources.

    Args:
        calibration: the measured cost (see :func:`load_or_calibrate`).
        use_cases: use case -> mode; the reference chapter's defaults.
        priority: which use case wins when a camera lists several (first match);
            default: the order of ``use_cases``.
        buffered_frames: frames held per camera (source slot + frame in processing).
        allocator: optional :class:`~rtvla.resources.ResourceAllocator`; each camera's
            estimate is requested through it as ``camera:<name>`` with ``request_options``
            (for example ``{"priority": 7}``); a refusal raises ``ResourceError`` naming
            the camera.
    """

    def __init__(
        self,
        calibration: Calibration,
        *,
        use_cases: Mapping[str, CameraMode] | None = None,
        priority: Sequence[str] | None = None,
        buffered_frames: int = 2,
        allocator: ResourceAllocatorLike | None = None,
        request_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not calibration.cost_per_pixel_s > 0:
            raise ConfigError(
                f"calibration cost_per_pixel_s must be > 0, got {calibration.cost_per_pixel_s}")
        if buffered_frames < 1:
            raise ConfigError(f"buffered_frames must be >= 1, got {buffered_frames}")
        self.calibration = calibration
        self.use_cases = dict(use_cases if use_cases is not None else DEFAULT_USE_CASES)
        self.priority = tuple(priority) if priority is not None else tuple(self.use_cases)
        for u in self.priority:
            if u not in self.use_cases:
                raise ConfigError(f"priority names unknown use case {u!r}; known: "
                                  f"{sorted(self.use_cases)}")
        self.buffered_frames = buffered_frames
        self.allocator = allocator
        self.request_options = dict(request_options or {})

    def choose(self, camera: str, request: CameraRequest) -> tuple[str | None, CameraMode]:
        unknown = [u for u in request.use_cases if u not in self.use_cases]
        if unknown:
            raise ConfigError(f"camera {camera!r}: unknown use case {unknown[0]!r}; known: "
                              f"{sorted(self.use_cases)}")
        for u in self.priority:
            if u in request.use_cases:
                m = self.use_cases[u]
                return u, CameraMode(m.width, m.height, m.fps, request.depth or m.depth)
        if request.mode is None:
            raise ConfigError(f"camera {camera!r} has neither a known use case nor a mode")
        return None, request.mode

    def estimate(self, mode: CameraMode) -> ResourceEstimate:
        cpu = mode.pixels * mode.fps * self.calibration.cost_per_pixel_s
        mem = self.buffered_frames * mode.frame_bytes / 2**20
        bw = mode.frame_bytes * mode.fps * 8 / 1e6
        return ResourceEstimate(cpu_cores=cpu, memory_mb=mem, bandwidth_mbps=bw)

    def optimize(self, cameras: Mapping[str, CameraRequest]) -> dict[str, CameraPlan]:
        """A plan per camera; estimates go through the allocator when there is one."""
        plans = {}
        for name, req in cameras.items():
            use_case, mode = self.choose(name, req)
            est = self.estimate(mode)
            alloc = None
            if self.allocator is not None:
                try:
                    alloc = self.allocator.request(f"camera:{name}",
                                                   est.to_request(**self.request_options))
                except ResourceError as exc:
                    raise ResourceError(f"camera {name!r} ({use_case or 'custom mode'}, "
                                        f"{mode.width}x{mode.height} at {mode.fps:g} fps): "
                                        f"{exc}") from exc
            plans[name] = CameraPlan(name, use_case, mode, est, alloc)
        return plans

    def total(self, plans: Mapping[str, CameraPlan]) -> ResourceEstimate:
        return ResourceEstimate(
            sum(p.estimate.cpu_cores for p in plans.values()),
            sum(p.estimate.memory_mb for p in plans.values()),
            sum(p.estimate.bandwidth_mbps for p in plans.values()),
        )
