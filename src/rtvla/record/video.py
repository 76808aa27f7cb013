"""H.264 video off the critical path: ``VideoWriter`` (frames in, mp4 out) and ``EpisodeVideo``
(the run's ``episode.mp4``: every camera and the scene view side by side).

``VideoWriter`` encodes with PyAV (libx264) in its own thread. ``write()`` puts the frame
on a bounded queue and returns at once; when the queue is full the frame is dropped and
counted (``block=True`` waits instead, for lock-step recording where every frame
belongs to a dataset row). Frames are numbered at a constant rate, frame ``i`` at
``i / fps`` seconds. Its cost (encode CPU seconds, frames written and dropped) is in
:meth:`VideoWriter.stats` for the report.

``EpisodeVideo`` keeps the newest image of each source (``update()`` is one dictionary
store) and, on its own thread at ``fps``, tiles them into one frame, adds the outputs of
its renderers (the third-person scene view, which must render on that thread because it
owns the GL context), and writes it.

Usage::

    with VideoWriter("episode.mp4", fps=30) as video:
        for image in frames:
            video.write(image)                    # HxWx3 uint8 RGB
    video.stats()["frames_written"]
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from rtvla.errors import RecordError

__all__ = ["EpisodeVideo", "VideoWriter", "tile"]

logger = logging.getLogger(__name__)

_STOP = object()


class VideoWriter:
    """Encodes RGB frames into an H.264 mp4 on a thread. See the module docstring.

    Args:
        path: the ``.mp4`` to write (replaced if it exists).
        fps: frames per second of the file (integer rates keep players and LeRobot exact).
        crf: x264 constant rate factor (0 lossless .. 51 worst; 23 is x264's default).
        preset: x264 speed preset; ``ultrafast`` costs the least CPU.
        queue_size: frames waiting for the encoder before ``write`` drops (or blocks).
        block: wait for room instead of dropping (lock-step dataset recording).
        gop: keyframe interval in frames (short GOPs make seeking in a dataset cheap).
        threads: encoder threads (1 keeps encoding to one core beside the control loop).
    """

    def __init__(self, path: str | Path, fps: float = 30.0, *, crf: int = 23, preset: str = "ultrafast",
                 queue_size: int = 64, block: bool = False, gop: int | None = None,
                 threads: int = 1, pix_fmt: str = "yuv420p") -> None:
        if not fps > 0:
            raise RecordError(f"video fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self.crf = int(crf)
        self.preset = preset
        self.block = block
        self.gop = gop
        self.threads = threads
        self.pix_fmt = pix_fmt
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self.frames_written = 0
        self.frames_dropped = 0
        self.encode_cpu_s = 0.0
        self.size: tuple[int, int] | None = None  # (width, height) of the file, from the first frame
        self._error: BaseException | None = None
        self._closed = False
        self._container: Any = None
        self._stream: Any = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="rtvla-video", daemon=True)
        self._thread.start()

    def write(self, image: np.ndarray) -> bool:
        """Queue one ``HxWx3`` uint8 RGB frame; False when it was dropped (or after close)."""
        if self._closed:
            return False
        if self._error is not None:
            raise RecordError(f"video {self.path}: encoding failed: {self._error}") from self._error
        try:
            if self.block:
                self._queue.put(image, timeout=30.0)
            else:
                self._queue.put_nowait(image)
        except queue.Full:
            self.frames_dropped += 1
            return False
        return True

    def _open(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        # yuv420p needs even sizes; odd frames are padded by one pixel on the right/bottom.
        self.size = (w + (w & 1), h + (h & 1))
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(self.fps).limit_denominator(1001)
        options = {"crf": str(self.crf), "preset": self.preset}
        if self.gop is not None:
            options["g"] = str(self.gop)
        stream = self._container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height = self.size
        stream.pix_fmt = self.pix_fmt
        stream.codec_context.thread_count = self.threads
        self._stream = stream

    def _encode(self, image: np.ndarray) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise RecordError(f"video frames must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
        if self._stream is None:
            self._open(image)
        assert self.size is not None
        w, h = self.size
        if image.shape[1] != w or image.shape[0] != h:
            if abs(image.shape[1] - w) <= 1 and abs(image.shape[0] - h) <= 1:
                image = cv2.copyMakeBorder(image, 0, h - image.shape[0], 0, w - image.shape[1],
                                           cv2.BORDER_REPLICATE)
            else:
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = Fraction(1) / self._stream.codec_context.framerate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def _run(self) -> None:
        cpu0 = time.thread_time()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if self._error is None:
                    self._encode(item)
                self.encode_cpu_s = time.thread_time() - cpu0
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        except Exception as exc:
            logger.exception("video %s: encoding failed", self.path)
            self._error = exc
        finally:
            if self._container is not None:
                try:
                    self._container.close()
                except Exception as exc:
                    self._error = self._error or exc
            self.encode_cpu_s = time.thread_time() - cpu0

    def close(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Encode what is queued and finish the file (moov atom); returns :meth:`stats`."""
        if not self._closed:
            self._closed = True
            t_end = time.monotonic() + timeout_s
            # A stuck encoder leaves the queue full: the join below still ends in time.
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout_s)
            self._thread.join(max(0.0, t_end - time.monotonic()))
            if self._thread.is_alive():
                logger.error("video %s: encoder did not finish within %.0f s", self.path, timeout_s)
        if self._error is not None:
            raise RecordError(f"video {self.path}: encoding failed: {self._error}") from self._error
        return self.stats()

    def stats(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "frames_written": self.frames_written,
            "frames_dropped": self.frames_dropped, "encode_cpu_s": self.encode_cpu_s,
            "fps": self.fps, "size": list(self.size) if self.size else None,
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
        }

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tile(images: list[np.ndarray], height: int) -> np.ndarray:
    """Images scaled to ``height`` (keeping their aspect) and placed side by side."""
    parts = []
    for img in images:
        if img.ndim == 2:  # a grey or depth image: shown as grey
            img = np.repeat(img[:, :, None], 3, axis=2)
        h, w = img.shape[:2]
        if h != height:
            img = cv2.resize(img, (max(2, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
        parts.append(img)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


class EpisodeVideo:
    """The run's ``episode.mp4``: cameras and rendered views side by side at ``fps``.

    Args:
        path: the mp4 to write.
        sources: names of the camera images to expect (their order in the frame).
        renderers: ``name -> callable`` returning an RGB image; called on this object's own
            thread (a MuJoCo renderer owns its GL context there), after the cameras. A
            renderer with a ``close()`` is closed on that thread at the end.
        fps: video frame rate; height: every tile is scaled to it.
        render_hz: how often the renderers run (default: every video frame).
    """

    def __init__(self, path: str | Path, *, sources: list[str] | None = None,
                 renderers: dict[str, Callable[[], np.ndarray]] | None = None,
                 fps: float = 10.0, height: int = 240, crf: int = 28,
                 render_hz: float | None = None) -> None:
        self.sources = list(sources or [])
        self.renderers = dict(renderers or {})
        # Software GL makes a rendered view the dearest part of the video: it may be
        # rendered less often than the video's rate (the last image is reused between).
        self._render_period = 1.0 / render_hz if render_hz else 0.0
        self._next_render = 0.0
        self._rendered: dict[str, np.ndarray] = {}
        self.height = height
        self.fps = fps
        self.writer = VideoWriter(path, fps=fps, crf=crf, queue_size=8)
        self._latest: dict[str, np.ndarray] = {}
        self._stop = threading.Event()
        self.render_cpu_s = 0.0
        self.render_errors = 0
        self.ready = threading.Event()  # the renderers are prepared (see wait_ready)
        self._thread = threading.Thread(target=self._run, name="rtvla-episode-video", daemon=True)
        self._thread.start()

    def update(self, source: str, image: np.ndarray) -> None:
        """The newest image of ``source`` (no copy: pass images nobody modifies later)."""
        if source not in self.sources:
            self.sources.append(source)
        self._latest[source] = image

    def _frame(self) -> np.ndarray | None:
        # The first frame fixes the file's size: wait until every declared camera has
        # delivered, so the layout does not change (and squash) when one comes late.
        if any(s not in self._latest for s in self.sources):
            return None
        images = [self._latest[s] for s in self.sources]
        now = time.monotonic()
        due = now >= self._next_render
        if due:
            self._next_render = now + self._render_period
        for name, render in self.renderers.items():
            if due or name not in self._rendered:
                try:
                    self._rendered[name] = render()
                except Exception:
                    self.render_errors += 1
                    if self.render_errors == 1:
                        logger.exception("episode video: renderer %s failed", name)
            if name in self._rendered:
                images.append(self._rendered[name])
        return tile(images, self.height) if images else None

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Until the renderers' GL contexts exist (made in the video thread, which owns them)."""
        return self.ready.wait(timeout)

    def _prepare(self) -> None:
        for name, render in self.renderers.items():
            prepare = getattr(render, "prepare", None)
            if prepare is None:
                continue
            try:
                prepare()
            except Exception:
                self.render_errors += 1
                logger.exception("episode video: renderer %s could not be prepared", name)
        self.ready.set()

    def _run(self) -> None:
        cpu0 = time.thread_time()
        period = 1.0 / self.fps
        try:
            self._prepare()
            next_t = time.monotonic()
            while not self._stop.wait(max(0.0, next_t - time.monotonic())):
                next_t += period
                if next_t < time.monotonic():  # fell behind: next slot, not a burst
                    next_t = time.monotonic() + period
                frame = self._frame()
                if frame is not None:
                    self.writer.write(frame)
                self.render_cpu_s = time.thread_time() - cpu0
        finally:
            for render in self.renderers.values():
                close = getattr(render, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:
                        logger.exception("episode video: closing a renderer failed")
            self.render_cpu_s = time.thread_time() - cpu0

    def close(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop sampling, finish the file; returns the cost and counts for the report.

        Takes at most about ``timeout_s`` (a hung renderer or encoder is left behind and
        logged; the file then lacks its index)."""
        t_end = time.monotonic() + timeout_s
        self._stop.set()
        self._thread.join(min(10.0, timeout_s))
        stats = self.writer.close(max(0.1, t_end - time.monotonic()))
        stats["compose_cpu_s"] = self.render_cpu_s
        stats["render_errors"] = self.render_errors
        stats["sources"] = [*self.sources, *self.renderers]
        return stats

    def __enter__(self) -> EpisodeVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
