from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from rtvla.perception.frames import Frame


@dataclass
class SimLikeFrame:
    """Shaped like the MuJoCo SimCamera's frame, without importing anything of perception."""

    image: np.ndarray
    stamp_ns: int
    seq: int
    depth: np.ndarray | None = None
    intrinsics: Any = None
    camera: str = "head"


class ScriptedSource:
    """A FrameSource whose newest frame the test sets by hand."""

    def __init__(self) -> None:
        self.frame: Any = None
        self.opened = 0
        self.closed = 0
        self.lock = threading.Lock()

    def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1

    def read(self) -> Any:
        return self.frame

    def put(self, image: np.ndarray, seq: int, stamp_ns: int = 0, **kw: Any) -> None:
        self.frame = Frame(image, stamp_ns, seq, **kw)


def scene(width: int = 640, height: int = 480) -> np.ndarray:
    """Grey background with a red, a green and a blue square at known places."""
    img = np.full((height, width, 3), 110, np.uint8)
    sx, sy = width / 640, height / 480
    for (x1, y1, x2, y2), rgb in (
        ((100, 100, 160, 160), (230, 20, 20)),
        ((300, 200, 340, 260), (20, 200, 40)),
        ((480, 320, 560, 400), (20, 40, 230)),
    ):
        img[int(y1 * sy):int(y2 * sy), int(x1 * sx):int(x2 * sx)] = rgb
    return img


@pytest.fixture
def scripted() -> ScriptedSource:
    return ScriptedSource()
