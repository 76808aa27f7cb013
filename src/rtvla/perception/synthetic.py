"""A synthetic camera: colored shapes moving over a textured background, paced in real time.

For the benchmark and for trying the pipeline without a camera (``rtvla perceive
synthetic``). A producer thread renders frames at ``fps`` on absolute deadlines and keeps
only the newest (``read``); listeners registered with :meth:`subscribe` also get every
frame as it is produced (the reference design's frame callback). With ``depth=True`` each
frame carries a depth image (background at ``background_m``, shapes at ``object_m``) and
intrinsics, so 3D positions can be checked against known values.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import cv2
import numpy as np

from rtvla.errors import ConfigError
from rtvla.perception.frames import Frame, Intrinsics
from rtvla.timing import MONOTONIC, Clock

__all__ = ["SHAPE_COLORS", "SyntheticSource"]

#: RGB of the moving shapes, by the label the default color detector gives them.
SHAPE_COLORS = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (20, 40, 230)}


class SyntheticSource:
    """Paced synthetic frames; see the module docstring.

    Args:
        width, height: frame size. fps: production rate.
        depth: also produce a depth image and intrinsics (fovy 60 degrees).
        background_m, object_m: depths of the background and of the shapes.
        seed: texture seed. clock: stamps and pacing.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        *,
        depth: bool = False,
        background_m: float = 2.0,
        object_m: float = 1.0,
        seed: int = 0,
        clock: Clock = MONOTONIC,
    ) -> None:
        if width < 32 or height < 32:
            raise ConfigError(f"synthetic frame must be at least 32x32, got {width}x{height}")
        if not fps > 0:
            raise ConfigError(f"synthetic fps must be > 0, got {fps}")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.clock = clock
        self.with_depth = depth
        self.background_m, self.object_m = background_m, object_m
        self.intrinsics = Intrinsics.from_fov(self.width, self.height, 60.0) if depth else None
        rng = np.random.default_rng(seed)
        # A muted, low-saturation texture: detail for the resizer, nothing for the detector.
        noise = rng.integers(70, 150, (height // 8 + 1, width // 8 + 1), dtype=np.uint8)
        tex = cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)
        grid = ((np.indices((height, width)).sum(axis=0) // 16) % 2 * 20).astype(np.uint8)
        gray = cv2.add(tex, grid)
        self._background = np.dstack([gray, gray, (gray * 0.9).astype(np.uint8)])
        self._size = max(12, min(width, height) // 10)
        self._frame: Frame | None = None
        self._seq = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[Frame], None]] = []
        self.frames_produced = 0

    def subscribe(self, callback: Callable[[Frame], None]) -> None:
        """Call ``callback(frame)`` from the producer thread for every new frame."""
        self._listeners.append(callback)

    def positions(self, t: float) -> dict[str, tuple[int, int]]:
        """Centre (x, y) of each shape at ``t`` seconds: three Lissajous paths."""
        w, h, s = self.width, self.height, self._size
        ax, ay = (w - 2 * s) / 2, (h - 2 * s) / 2
        out = {}
        for i, name in enumerate(SHAPE_COLORS):
            ph = i * 2.1
            out[name] = (int(w / 2 + ax * math.sin(0.7 * t + ph)),
                         int(h / 2 + ay * math.sin(0.5 * t + 1.3 * ph)))
        return out

    def render(self, t: float, seq: int, stamp_ns: int) -> Frame:
        """The frame at ``t`` seconds (also usable without the producer thread)."""
        img = self._background.copy()
        depth = None
        if self.with_depth:
            depth = np.full((self.height, self.width), self.background_m, np.float32)
        s = self._size
        for i, (name, (x, y)) in enumerate(self.positions(t).items()):
            color = SHAPE_COLORS[name]
            if i == 1:
                cv2.circle(img, (x, y), s // 2, color, thickness=-1)
                if depth is not None:
                    cv2.circle(depth, (x, y), s // 2, self.object_m, thickness=-1)
            else:
                cv2.rectangle(img, (x - s // 2, y - s // 2), (x + s // 2, y + s // 2), color, -1)
                if depth is not None:
                    depth[max(0, y - s // 2):y + s // 2 + 1,
                          max(0, x - s // 2):x + s // 2 + 1] = self.object_m
        return Frame(img, stamp_ns, seq, depth, self.intrinsics)

    # -- FrameSource ----------------------------------------------------------------------

    def open(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._produce, name="synthetic-camera",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> SyntheticSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> Frame | None:
        return self._frame

    def wait_newer(self, seq: int, timeout: float | None = None) -> Frame | None:
        with self._cond:
            self._cond.wait_for(
                lambda: (self._frame is not None and self._frame.seq > seq)
                or self._stop.is_set(), timeout)
            f = self._frame
        return f if f is not None and f.seq > seq else None

    @property
    def latest_seq(self) -> int:
        return self._seq

    def _produce(self) -> None:
        period = int(1e9 / self.fps)
        start = self.clock.now_ns()
        slot = 0
        while not self._stop.is_set():
            deadline = start + slot * period
            wait = (deadline - self.clock.now_ns()) / 1e9
            if wait > 0 and self._stop.wait(wait):
                break
            now = self.clock.now_ns()
            self._seq += 1
            frame = self.render((now - start) / 1e9, self._seq, now)
            with self._cond:
                self._frame = frame
                self.frames_produced += 1
                self._cond.notify_all()
            for cb in self._listeners:
                cb(frame)
            # Skip slots that passed while rendering (a late camera drops, it does not burst).
            slot = max(slot + 1, (self.clock.now_ns() - start) // period)
