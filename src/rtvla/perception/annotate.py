"""Draw detections on a frame (for ``rtvla perceive --save-annotated`` and debugging)."""

from __future__ import annotations

import cv2
import numpy as np

from rtvla.perception.detections import Detections

__all__ = ["annotate", "save_annotated"]

_PALETTE = {"red": (255, 60, 60), "green": (60, 220, 60), "blue": (80, 120, 255)}


def _color(label: str) -> tuple[int, int, int]:
    for key, rgb in _PALETTE.items():
        if key in label:
            return rgb
    h = abs(hash(label)) % 180
    hsv = np.uint8([[[h, 200, 255]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def annotate(image: np.ndarray, dets: Detections) -> np.ndarray:
    """A copy of ``image`` (RGB) with boxes, labels, scores and the stale flag drawn."""
    out = image.copy()
    for d in dets.items:
        x1, y1, x2, y2 = (round(v) for v in d.box)
        c = _color(d.label)
        cv2.rectangle(out, (x1, y1), (x2, y2), c, 2)
        text = f"{d.label} {d.score:.2f}"
        if d.position is not None:
            text += f" z={d.position[2]:.2f}m"
        cv2.putText(out, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1,
                    cv2.LINE_AA)
    tag = f"#{dets.frame_seq} {dets.detector} {dets.resolution[0]}x{dets.resolution[1]}"
    tag += f" {dets.processing_s * 1e3:.1f} ms" + (" STALE" if dets.stale else "")
    cv2.putText(out, tag, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def save_annotated(path: str, image: np.ndarray, dets: Detections) -> bool:
    """Write the annotated frame (RGB in, written as an image file); False if it failed."""
    return bool(cv2.imwrite(path, cv2.cvtColor(annotate(image, dets), cv2.COLOR_RGB2BGR)))
