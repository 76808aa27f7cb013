"""Color detector: HSV ranges per named color, contours, minimum area. No model download.

The embedded default detector. Its defaults find the saturated red, green and blue objects
of the simulated scene. What it emits: one :class:`Detection` per connected blob of a color
whose area is at least ``min_area_fraction`` of the image, with

* ``label``: the name of the first :class:`ColorClass` whose color matches and whose area
  bounds contain the blob (defaults: ``"red"``, ``"green"``, ``"blue"``; configure for
  example ``ColorClass("blue_bin", "blue", min_area_fraction=0.02)`` before
  ``ColorClass("blue_cube", "blue")`` to tell bins from cubes by size);
* ``score``: the blob's fill of its bounding box (contour area / box area, 0..1): a solid
  face scores near 1, a thin ring or a speckle much less;
* ``class_id``: the index of that class;
* ``position``: the 3D point in the camera frame when :meth:`ColorDetector.detect` gets a
  depth image and intrinsics (median depth over the blob's own pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from rtvla.errors import ConfigError
from rtvla.perception.detections import Detection, locate
from rtvla.perception.frames import IntrinsicsLike, check_depth, check_image

__all__ = ["DEFAULT_COLORS", "ColorClass", "ColorDetector", "HsvRange"]


@dataclass(frozen=True, slots=True)
class HsvRange:
    """An inclusive HSV box in OpenCV units (H 0..179, S and V 0..255)."""

    lower: tuple[int, int, int]
    upper: tuple[int, int, int]

    def __post_init__(self) -> None:
        for name, v in (("lower", self.lower), ("upper", self.upper)):
            if len(v) != 3:
                raise ConfigError(f"HSV {name} must have 3 values, got {v!r}")
            h, s, val = v
            if not (0 <= h <= 179 and 0 <= s <= 255 and 0 <= val <= 255):
                raise ConfigError(f"HSV {name} out of range (H 0..179, S/V 0..255): {v!r}")
        if any(lo > hi for lo, hi in zip(self.lower, self.upper)):
            raise ConfigError(f"HSV lower {self.lower} exceeds upper {self.upper}")


#: Saturated, reasonably bright primaries. Red wraps around hue 0, hence two ranges.
DEFAULT_COLORS: dict[str, tuple[HsvRange, ...]] = {
    "red": (HsvRange((0, 120, 70), (10, 255, 255)), HsvRange((170, 120, 70), (179, 255, 255))),
    "green": (HsvRange((40, 120, 70), (85, 255, 255)),),
    "blue": (HsvRange((100, 120, 70), (130, 255, 255)),),
}


@dataclass(frozen=True, slots=True)
class ColorClass:
    """Name blobs of ``color`` whose area fraction lies in ``[min, max]`` as ``label``.

    ``min_size_m``/``max_size_m`` bound the blob's metric size (the side of a square of the
    same area at the blob's median depth), so that a 4 cm cube and an 18 cm bin of the same
    colour get different labels at any distance. They apply only when depth and intrinsics
    come with the image; without depth a class with size bounds never matches.
    """

    label: str
    color: str
    min_area_fraction: float | None = None  # None: the detector's min_area_fraction
    max_area_fraction: float = 1.0
    min_size_m: float | None = None
    max_size_m: float | None = None

    @property
    def metric(self) -> bool:
        return self.min_size_m is not None or self.max_size_m is not None


class ColorDetector:
    """Find colored blobs with OpenCV: HSV threshold, morphological opening, contours.

    Args:
        colors: color name -> HSV ranges (a blob matches a color if any range holds it).
        classes: how blobs are named; default one class per color, labelled by the color.
        min_area_fraction: smallest blob, as a fraction of the image area (so the same
            setting works at every processing resolution); 0.0002 is 61 px at 640x480.
        open_kernel: side of the square opening kernel in pixels (0 disables it).
        name: detector variant name (reported in ``Detections.detector``).
    """

    def __init__(
        self,
        colors: dict[str, Sequence[HsvRange]] | None = None,
        classes: Sequence[ColorClass] | None = None,
        *,
        min_area_fraction: float = 0.0002,
        open_kernel: int = 3,
        name: str = "color",
    ) -> None:
        self.colors = {k: tuple(v) for k, v in (colors or DEFAULT_COLORS).items()}
        if not self.colors:
            raise ConfigError("color detector needs at least one color")
        for cname, ranges in self.colors.items():
            if not ranges:
                raise ConfigError(f"color {cname!r} has no HSV ranges")
        self.classes = tuple(classes) if classes else tuple(ColorClass(c, c) for c in self.colors)
        for c in self.classes:
            if c.color not in self.colors:
                raise ConfigError(
                    f"color class {c.label!r} names unknown color {c.color!r}; "
                    f"known: {sorted(self.colors)}"
                )
        if not 0 <= min_area_fraction < 1:
            raise ConfigError(f"min_area_fraction must be in [0, 1), got {min_area_fraction}")
        if open_kernel < 0:
            raise ConfigError(f"open_kernel must be >= 0, got {open_kernel}")
        self.min_area_fraction = float(min_area_fraction)
        self.name = name
        self.class_names = [c.label for c in self.classes]
        self._any_metric = any(c.metric for c in self.classes)
        self._kernel = (
            cv2.getStructuringElement(cv2.MORPH_RECT, (open_kernel, open_kernel))
            if open_kernel > 1 else None
        )
        self._bounds = {
            cname: [(np.array(r.lower, np.uint8), np.array(r.upper, np.uint8)) for r in ranges]
            for cname, ranges in self.colors.items()
        }

    # Staged interface: the pipeline times preprocess and inference apart.
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """RGB -> HSV."""
        return cv2.cvtColor(image, cv2.COLOR_RGB2HSV)

    def masks(self, hsv: np.ndarray) -> dict[str, np.ndarray]:
        """One binary mask per color (after opening)."""
        out = {}
        for cname, bounds in self._bounds.items():
            mask = cv2.inRange(hsv, bounds[0][0], bounds[0][1])
            for lo, hi in bounds[1:]:
                mask |= cv2.inRange(hsv, lo, hi)
            if self._kernel is not None:
                mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)
            out[cname] = mask
        return out

    def _classify(self, color: str, frac: float, size_m: float | None) -> tuple[int, str] | None:
        for i, c in enumerate(self.classes):
            lo = self.min_area_fraction if c.min_area_fraction is None else c.min_area_fraction
            if c.color != color or not lo <= frac <= c.max_area_fraction:
                continue
            if c.metric:
                if size_m is None:
                    continue
                if c.min_size_m is not None and size_m < c.min_size_m:
                    continue
                if c.max_size_m is not None and size_m > c.max_size_m:
                    continue
            return i, c.label
        return None

    def _blobs(self, hsv: np.ndarray, want_masks: bool, depth: np.ndarray | None = None,
               focal_px: float | None = None) -> tuple[list[Detection], list]:
        h, w = hsv.shape[:2]
        total = float(h * w)
        min_px = max(1.0, self.min_area_fraction * total)
        dets: list[Detection] = []
        blob_masks: list[np.ndarray | None] = []
        for cname, mask in self.masks(hsv).items():
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for cnt in contours:
                area = cv2.contourArea(cnt)
                if area < min_px:
                    continue
                x, y, bw, bh = cv2.boundingRect(cnt)
                size_m = None
                if depth is not None and focal_px and self._any_metric:
                    roi = depth[y : y + bh, x : x + bw][mask[y : y + bh, x : x + bw] > 0]
                    roi = roi[np.isfinite(roi) & (roi > 0)]
                    if roi.size:
                        size_m = float(np.sqrt(area) * np.median(roi) / focal_px)
                found = self._classify(cname, area / total, size_m)
                if found is None:
                    continue
                score = min(1.0, area / float(bw * bh)) if bw * bh else 0.0
                dets.append(Detection((float(x), float(y), float(x + bw), float(y + bh)),
                                      found[1], score, found[0]))
                if want_masks:
                    m = np.zeros((h, w), np.uint8)
                    cv2.drawContours(m, [cnt], -1, 255, thickness=cv2.FILLED)
                    blob_masks.append(m)
        return dets, blob_masks

    @property
    def needs_depth(self) -> bool:
        """True when some class is bounded by metric size (see :class:`ColorClass`)."""
        return self._any_metric

    def infer(self, prepared: np.ndarray, image_shape: tuple[int, ...] = (), *,
              depth: np.ndarray | None = None, focal_px: float | None = None) -> list[Detection]:
        """Blobs of a preprocessed image; ``depth`` (same size, metres) and ``focal_px`` let
        metric-size classes match."""
        dets, _ = self._blobs(prepared, False, depth, focal_px)
        dets.sort(key=lambda d: d.score, reverse=True)
        return dets

    def detect(
        self,
        image: np.ndarray,
        *,
        depth: np.ndarray | None = None,
        intrinsics: IntrinsicsLike | None = None,
    ) -> list[Detection]:
        """Blobs in ``image`` (RGB uint8), best fill first; with depth+intrinsics, 3D too."""
        check_image(image)
        hsv = self.preprocess(image)
        if depth is None or intrinsics is None:
            return self.infer(hsv, image.shape)
        check_depth(depth, image.shape)
        focal = float(np.sqrt(intrinsics.fx * intrinsics.fy))
        dets, masks = self._blobs(hsv, True, depth, focal)
        located = locate(dets, depth, intrinsics, masks=masks)
        order = sorted(range(len(located)), key=lambda i: located[i].score, reverse=True)
        return [located[i] for i in order]
