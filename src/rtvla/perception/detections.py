"""Detections, the ``Detector`` protocol, filtering, and 3D positions from depth.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the *original* frame (the pipeline maps them
back from its processing resolution). Positions are in the camera's optical frame, metres:
x right, y down, z forward along the optical axis (OpenCV convention).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rtvla.perception.frames import Intrinsics, IntrinsicsLike

__all__ = [
    "Detection",
    "Detections",
    "Detector",
    "StagedDetector",
    "deproject",
    "filter_detections",
    "locate",
    "scale_detections",
]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    label: str
    score: float
    class_id: int = 0
    position: tuple[float, float, float] | None = None  # camera frame, metres

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 2) for v in self.box],
            "label": self.label,
            "score": round(self.score, 4),
            "class_id": self.class_id,
            "position": None if self.position is None else [round(v, 4) for v in self.position],
        }


@dataclass(frozen=True, slots=True)
class Detections:
    """What the pipeline publishes for one processed frame.

    ``stale`` is True when this result is older than the newest frame the pipeline knows of
    (detection timed out, or the source went quiet): consumers should not act on it as if
    it were current. ``image`` holds the processed frame only when the pipeline was asked
    to keep it (for annotation); it is never copied.
    """

    items: tuple[Detection, ...]
    frame_seq: int
    frame_stamp_ns: int
    processing_s: float
    frame_size: tuple[int, int]  # width, height of the original frame
    resolution: tuple[int, int]  # width, height the detector saw
    detector: str
    stale: bool = False
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def labels(self) -> list[str]:
        return [d.label for d in self.items]

    def as_stale(self) -> Detections:
        return replace(self, stale=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "frame_seq": self.frame_seq,
            "frame_stamp_ns": self.frame_stamp_ns,
            "processing_ms": round(self.processing_s * 1e3, 3),
            "frame_size": list(self.frame_size),
            "resolution": list(self.resolution),
            "detector": self.detector,
            "stale": self.stale,
            "detections": [d.as_dict() for d in self.items],
        }


@runtime_checkable
class Detector(Protocol):
    """Anything that finds objects in an RGB ``uint8`` image (boxes in that image's pixels)."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        ...


@runtime_checkable
class StagedDetector(Detector, Protocol):
    """A detector whose preprocessing can be timed apart from inference.

    ``detect(image)`` must equal ``infer(preprocess(image), image.shape)``.
    """

    def preprocess(self, image: np.ndarray) -> Any:
        ...

    def infer(self, prepared: Any, image_shape: tuple[int, ...]) -> list[Detection]:
        ...


def filter_detections(
    dets: Sequence[Detection],
    *,
    min_confidence: float = 0.0,
    max_detections: int | None = None,
    allow: Collection[str] | None = None,
) -> list[Detection]:
    """Keep detections at or above ``min_confidence`` whose label is allowed, best first."""
    kept = [
        d for d in dets
        if d.score >= min_confidence and (allow is None or d.label in allow)
    ]
    kept.sort(key=lambda d: d.score, reverse=True)
    if max_detections is not None:
        del kept[max_detections:]
    return kept


def scale_detections(dets: Sequence[Detection], sx: float, sy: float) -> list[Detection]:
    """Boxes multiplied by ``(sx, sy)`` (processing resolution back to frame pixels)."""
    if sx == 1.0 and sy == 1.0:
        return list(dets)
    return [
        replace(d, box=(d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy))
        for d in dets
    ]


def deproject(u: float, v: float, z: float, k: IntrinsicsLike) -> tuple[float, float, float]:
    """Pixel ``(u, v)`` at depth ``z`` metres to a point in the camera's optical frame."""
    return (float((u - k.cx) * z / k.fx), float((v - k.cy) * z / k.fy), float(z))


def _median_depth(depth: np.ndarray, box: tuple[float, float, float, float],
                  mask: np.ndarray | None) -> float | None:
    h, w = depth.shape
    x1, y1, x2, y2 = box
    # The inner half of the box: edges often straddle the background.
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
    c0, c1 = max(0, int(cx - hw)), min(w, int(np.ceil(cx + hw)) + 1)
    r0, r1 = max(0, int(cy - hh)), min(h, int(np.ceil(cy + hh)) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    patch = depth[r0:r1, c0:c1]
    if mask is not None:
        m = mask[r0:r1, c0:c1] > 0
        patch = patch[m] if m.any() else patch.ravel()
    vals = patch[np.isfinite(patch) & (patch > 0)]
    if vals.size == 0:
        return None
    return float(np.median(vals))


def locate(
    dets: Sequence[Detection],
    depth: np.ndarray | None,
    intrinsics: IntrinsicsLike | None,
    *,
    masks: Sequence[np.ndarray | None] | None = None,
) -> list[Detection]:
    """Attach a 3D position (camera frame) to each detection from a depth image.

    Uses the median valid depth over the inner half of the box (restricted to ``masks[i]``
    when given) and back-projects the box centre. ``intrinsics`` refer to ``depth``'s size;
    boxes are in the same pixels. Detections without valid depth keep ``position=None``.
    """
    if depth is None or intrinsics is None:
        return list(dets)
    k = intrinsics
    if (int(k.width), int(k.height)) != (depth.shape[1], depth.shape[0]):
        k = Intrinsics.of(k).scaled(depth.shape[1], depth.shape[0])
    out = []
    for i, d in enumerate(dets):
        z = _median_depth(depth, d.box, None if masks is None else masks[i])
        if z is None:
            out.append(d)
            continue
        u, v = d.center
        out.append(replace(d, position=deproject(u, v, z, k)))
    return out
