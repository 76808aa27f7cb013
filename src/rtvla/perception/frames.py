"""Frames and the ``FrameSource`` protocol every camera, file, stream or simulator satisfies.

A frame is an ``HxWx3`` ``uint8`` RGB image with a capture stamp (monotonic ns, the clock
the rest of rtvla uses), a sequence number that grows by one per captured frame (a gap
means frames were dropped before anyone read them), and optionally a depth image in metres
and pinhole intrinsics. The protocols are structural (``typing.Protocol``): the MuJoCo
``SimCamera`` satisfies them without importing perception.

Usage::

    with OpenCVSource("clip.mp4", loop=True) as src:
        frame = src.read()                   # newest frame or None
        if frame is not None:
            check_image(frame.image)         # FrameError on a wrong shape or dtype
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rtvla.errors import FrameError

__all__ = [
    "Frame",
    "FrameLike",
    "FrameSource",
    "Intrinsics",
    "IntrinsicsLike",
    "check_depth",
    "check_image",
]


@runtime_checkable
class IntrinsicsLike(Protocol):
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Intrinsics:
    """Pinhole camera intrinsics (pixels). :meth:`scaled` follows a resize."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise FrameError(f"intrinsics fx, fy must be > 0, got fx={self.fx}, fy={self.fy}")
        if not (self.width > 0 and self.height > 0):
            raise FrameError(
                f"intrinsics width, height must be > 0, got {self.width}x{self.height}"
            )

    @classmethod
    def from_fov(cls, width: int, height: int, fovy_deg: float) -> Intrinsics:
        """Square-pixel intrinsics from a vertical field of view (as MuJoCo cameras give)."""
        f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2.0)
        return cls(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    @classmethod
    def of(cls, k: IntrinsicsLike) -> Intrinsics:
        return k if isinstance(k, Intrinsics) else cls(
            float(k.fx), float(k.fy), float(k.cx), float(k.cy), int(k.width), int(k.height)
        )

    def scaled(self, width: int, height: int) -> Intrinsics:
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)


@runtime_checkable
class FrameLike(Protocol):
    """What perception reads from a frame (``Frame`` and the sim camera's frames)."""

    image: np.ndarray
    stamp_ns: int
    seq: int
    depth: np.ndarray | None
    intrinsics: Any


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame. ``image`` is RGB ``uint8`` ``HxWx3``; ``depth`` is ``HxW`` metres.

    Frames are shared between threads without copying: never mutate one after creating it.
    """

    image: np.ndarray = field(repr=False)
    stamp_ns: int
    seq: int
    depth: np.ndarray | None = field(default=None, repr=False)
    intrinsics: IntrinsicsLike | None = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@runtime_checkable
class FrameSource(Protocol):
    """A camera, video file, stream or simulator that always offers its newest frame.

    ``read()`` never blocks for long and never returns a backlog: it returns the newest
    frame captured so far (possibly the same one as last time; compare ``seq``) or None
    when no frame exists yet or the source is down.
    """

    def open(self) -> None:
        """Start capturing; raises ``SourceError`` naming the source when it cannot."""
        ...

    def close(self) -> None:
        """Stop capturing and release the device."""
        ...

    def read(self) -> FrameLike | None:
        """The newest frame, or None."""
        ...


def check_image(image: Any, *, what: str = "frame image") -> np.ndarray:
    """Return ``image`` if it is an ``HxWx3`` ``uint8`` array, else raise ``FrameError``."""
    if not isinstance(image, np.ndarray):
        raise FrameError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise FrameError(f"{what} must have dtype uint8, got {image.dtype} (shape {image.shape})")
    if image.ndim != 3 or image.shape[2] != 3:
        raise FrameError(f"{what} must have shape HxWx3, got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise FrameError(f"{what} is empty: shape {image.shape}")
    return image


def check_depth(depth: Any, image_shape: tuple[int, ...]) -> np.ndarray:
    """Return ``depth`` if it is a float ``HxW`` array matching the image, else ``FrameError``."""
    if not isinstance(depth, np.ndarray):
        raise FrameError(f"depth must be a numpy array, got {type(depth).__name__}")
    if depth.dtype.kind != "f":
        raise FrameError(f"depth must be a float array in metres, got dtype {depth.dtype}")
    if depth.shape != tuple(image_shape[:2]):
        raise FrameError(
            f"depth shape {depth.shape} does not match image shape {tuple(image_shape[:2])}"
        )
    return depth
