"""OpenCV frame source: camera index, video file or stream URL, newest frame only.

A grab thread reads from ``cv2.VideoCapture`` as fast as the device delivers and keeps only
the newest frame (converted to RGB, stamped with the monotonic clock at capture); readers
never see a backlog. A live source (camera, stream) that stops delivering is reopened with
exponential backoff; a file can loop and can pace itself to its native frame rate.

Usage::

    with OpenCVSource(0, width=640, height=480) as cam:       # or "clip.mp4", "rtsp://..."
        frame = cam.wait_newer(0, timeout=2.0)
        print(frame.seq, frame.image.shape, cam.status)
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtvla.errors import ConfigError, SourceError
from rtvla.perception.frames import Frame
from rtvla.timing import MONOTONIC, Clock

__all__ = ["OpenCVSource", "SourceKind", "SourceStatus", "parse_source"]

logger = logging.getLogger(__name__)

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceKind(str, Enum):
    CAMERA = "camera"
    FILE = "file"
    STREAM = "stream"


class SourceStatus(str, Enum):
    CLOSED = "closed"
    RUNNING = "running"
    RECONNECTING = "reconnecting"  # a live source dropped; reopening with backoff
    ENDED = "ended"  # a non-looping file reached its end


def parse_source(source: int | str | Path) -> tuple[SourceKind, int | str]:
    """Classify ``source``: an int or digit string is a camera index, ``scheme://`` a
    stream URL, anything else a file path."""
    if isinstance(source, bool):
        raise ConfigError(f"frame source must be a camera index, file or URL, got {source!r}")
    if isinstance(source, int):
        if source < 0:
            raise ConfigError(f"camera index must be >= 0, got {source}")
        return SourceKind.CAMERA, source
    text = str(source).strip()
    if not text:
        raise ConfigError("frame source is empty; give a camera index, a file or a URL")
    if text.isdigit():
        return SourceKind.CAMERA, int(text)
    if _URL.match(text) and not text.startswith("file://"):
        return SourceKind.STREAM, text
    return SourceKind.FILE, text.removeprefix("file://")


CaptureFactory = Callable[[int | str], Any]


def _default_capture(target: int | str) -> Any:
    return cv2.VideoCapture(target)


class OpenCVSource:
    """Frames from ``cv2.VideoCapture``; see the module docstring.

    Args:
        source: camera index, file path or stream URL.
        loop: restart a file at its end (files only).
        pace: deliver a file's frames at its native fps (else as fast as decoded).
        fps: pacing rate when the file does not report one (or to override it).
        width, height: requested capture size for cameras (the device may refuse).
        backoff_s: first and largest delay between reopen attempts of a live source.
        capture_factory: builds the capture object (tests inject a scripted one).
        clock: stamps frames (monotonic ns).
    """

    def __init__(
        self,
        source: int | str | Path,
        *,
        loop: bool = False,
        pace: bool = True,
        fps: float | None = None,
        width: int | None = None,
        height: int | None = None,
        backoff_s: tuple[float, float] = (0.1, 2.0),
        capture_factory: CaptureFactory = _default_capture,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.kind, self.target = parse_source(source)
        if fps is not None and not fps > 0:
            raise ConfigError(f"fps must be > 0, got {fps}")
        if not 0 < backoff_s[0] <= backoff_s[1]:
            raise ConfigError(f"backoff_s must be 0 < first <= max, got {backoff_s}")
        self.loop = loop
        self.pace = pace
        self.fps = fps
        self.width, self.height = width, height
        self.backoff_s = backoff_s
        self.capture_factory = capture_factory
        self.clock = clock
        self.status = SourceStatus.CLOSED
        self.reconnects = 0
        self.loops = 0
        self.frames_captured = 0
        self._cap: Any = None
        self._frame: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0

    @property
    def live(self) -> bool:
        return self.kind is not SourceKind.FILE

    def describe(self) -> str:
        return f"{self.kind.value} {self.target!r}"

    # -- lifecycle ------------------------------------------------------------------------

    def _open_capture(self) -> Any:
        cap = self.capture_factory(self.target)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        if self.kind is SourceKind.CAMERA:
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        return cap

    def open(self) -> None:
        """Open the source and start the grab thread; ``SourceError`` if unreadable."""
        if self._thread is not None:
            return
        if self.kind is SourceKind.FILE and not Path(str(self.target)).is_file():
            raise SourceError(f"cannot open {self.describe()}: no such file")
        cap = self._open_capture()
        if cap is None:
            raise SourceError(f"cannot open {self.describe()}: OpenCV could not open it "
                              "(missing device, unsupported format or unreachable URL)")
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError(f"cannot read from {self.describe()}: no frame could be decoded")
        if self.fps is None and self.kind is SourceKind.FILE:
            native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.fps = native if 0 < native < 1000 else 30.0
        self._cap = cap
        self._stop.clear()
        self.status = SourceStatus.RUNNING
        self._publish(first)
        self._thread = threading.Thread(target=self._grab_loop, name=f"grab-{self.target}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self.status = SourceStatus.CLOSED

    def __enter__(self) -> OpenCVSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------

    def read(self) -> Frame | None:
        """The newest frame (None before the first, and while a live source is down)."""
        if self.status is SourceStatus.RECONNECTING:
            return None
        return self._frame

    def wait_newer(self, seq: int, timeout: float | None = None) -> Frame | None:
        """Block until a frame with a sequence number above ``seq`` exists (None on timeout)."""
        with self._cond:
            self._cond.wait_for(
                lambda: (self._frame is not None and self._frame.seq > seq) or self._stop.is_set()
                or self.status is SourceStatus.ENDED,
                timeout,
            )
            f = self._frame
        return f if f is not None and f.seq > seq else None

    # -- grab thread ----------------------------------------------------------------------

    def _publish(self, bgr: np.ndarray) -> None:
        stamp = self.clock.now_ns()
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        elif bgr.shape[2] == 4:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._seq += 1
        frame = Frame(rgb, stamp, self._seq)
        with self._cond:
            self._frame = frame
            self.frames_captured += 1
            self._cond.notify_all()

    def _grab_loop(self) -> None:
        period_ns = int(1e9 / self.fps) if (self.pace and self.fps and not self.live) else 0
        next_ns = self.clock.now_ns() + period_ns
        while not self._stop.is_set():
            if period_ns:
                wait = (next_ns - self.clock.now_ns()) / 1e9
                if wait > 0 and self._stop.wait(wait):
                    break
                next_ns = max(next_ns + period_ns, self.clock.now_ns() - period_ns)
            ok, bgr = self._cap.read()
            if ok and bgr is not None:
                self._publish(bgr)
                continue
            if not self.live:
                if self.loop and self._rewind():
                    continue
                logger.info("%s reached its end", self.describe())
                with self._cond:
                    self.status = SourceStatus.ENDED
                    self._cond.notify_all()
                return
            self._reconnect()

    def _rewind(self) -> bool:
        self.loops += 1
        if self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            ok, bgr = self._cap.read()
            if ok and bgr is not None:
                self._publish(bgr)
                return True
        self._cap.release()  # some containers cannot seek: reopen instead
        self._cap = self._open_capture()
        return self._cap is not None

    def _reconnect(self) -> None:
        self.status = SourceStatus.RECONNECTING
        logger.warning("%s stopped delivering frames; reopening", self.describe())
        self._cap.release()
        delay, max_delay = self.backoff_s
        while not self._stop.wait(delay):
            cap = self._open_capture()
            if cap is not None:
                ok, bgr = cap.read()
                if ok and bgr is not None:
                    self._cap = cap
                    self.reconnects += 1
                    self.status = SourceStatus.RUNNING
                    logger.warning("%s is back after reconnect %d", self.describe(),
                                   self.reconnects)
                    self._publish(bgr)
                    return
                cap.release()
            delay = min(max_delay, delay * 2)
        self._cap = _Released()


class _Released:
    """Stands in for a released capture after close() interrupted a reconnect."""

    def read(self) -> tuple[bool, None]:
        return False, None

    def release(self) -> None:
        return None

    def isOpened(self) -> bool:
        return False
