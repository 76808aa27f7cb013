from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from rtvla.errors import ConfigError, SourceError
from rtvla.perception import (
    FrameSource,
    OpenCVSource,
    SourceKind,
    SourceStatus,
    SyntheticSource,
    parse_source,
)


def write_video(path, n=6, size=(64, 48), fps=30.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened()
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, :, 2] = 200  # BGR red
        img[:2, :2, 1] = i * 30
        w.write(img)
    w.release()
    return path


def wait_for(cond, timeout=5.0):
    ev = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return True
        ev.wait(0.01)
    return cond()


def test_parse_source():
    assert parse_source(0) == (SourceKind.CAMERA, 0)
    assert parse_source("2") == (SourceKind.CAMERA, 2)
    assert parse_source("rtsp://cam/1") == (SourceKind.STREAM, "rtsp://cam/1")
    assert parse_source("clip.mp4") == (SourceKind.FILE, "clip.mp4")
    with pytest.raises(ConfigError, match="camera index must be >= 0"):
        parse_source(-1)
    with pytest.raises(ConfigError, match="empty"):
        parse_source("  ")


def test_file_source_reads_rgb_and_ends(tmp_path):
    path = write_video(tmp_path / "clip.avi")
    src = OpenCVSource(path, pace=False)
    assert isinstance(src, FrameSource)
    with src:
        assert wait_for(lambda: src.status is SourceStatus.ENDED)
        f = src.read()
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        assert f.image[20, 20, 0] > 150 and f.image[20, 20, 2] < 60  # RGB, not BGR
        assert f.seq == 6 == src.frames_captured
    assert src.status is SourceStatus.CLOSED


def test_file_source_loops_and_paces(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=3, fps=100.0)
    with OpenCVSource(path, loop=True, pace=True) as src:
        assert src.fps == pytest.approx(100.0)
        assert wait_for(lambda: src.loops >= 2)
        f = src.wait_newer(src.read().seq, timeout=2.0)
        assert f is not None and src.status is SourceStatus.RUNNING
        stamps = []
        seq = 0
        for _ in range(4):
            f = src.wait_newer(seq, timeout=2.0)
            seq = f.seq
            stamps.append(f.stamp_ns)
        gaps = np.diff(stamps) / 1e6
        assert gaps.mean() > 5.0  # paced near 10 ms, not decoded flat out


def test_unreadable_sources(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        OpenCVSource(tmp_path / "none.mp4").open()
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(SourceError, match=r"junk\.avi"):
        OpenCVSource(junk).open()
    with pytest.raises(SourceError, match="cannot open stream"):
        OpenCVSource("rtsp://127.0.0.1:1/none", capture_factory=lambda t: None).open()


class FlakyCapture:
    """Delivers ``frames`` frames, then fails like an unplugged camera."""

    def __init__(self, frames: int, opened: bool = True):
        self.left, self.opened, self.released = frames, opened, False

    def isOpened(self):
        return self.opened

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full((8, 8, 3), 50, np.uint8)

    def set(self, *a):
        return True

    def get(self, *a):
        return 0.0

    def release(self):
        self.released = True


def test_live_source_reconnects_with_backoff():
    script = [FlakyCapture(3), FlakyCapture(0, opened=False), FlakyCapture(0, opened=False),
              FlakyCapture(1000)]
    calls = []

    def factory(target):
        calls.append(target)
        return script[min(len(calls) - 1, len(script) - 1)]

    src = OpenCVSource(0, backoff_s=(0.01, 0.02), capture_factory=factory)
    with src:
        assert wait_for(lambda: src.reconnects == 1)
        assert src.status is SourceStatus.RUNNING
        assert len(calls) == 4 and script[0].released
        assert src.wait_newer(src.read().seq, timeout=2.0) is not None


def test_synthetic_source_paced_with_depth():
    with SyntheticSource(160, 120, fps=50, depth=True) as src:
        f = src.wait_newer(0, timeout=2.0)
        assert f.image.shape == (120, 160, 3) and f.depth.shape == (120, 160)
        assert f.intrinsics.width == 160
        assert set(np.unique(f.depth)) == {np.float32(1.0), np.float32(2.0)}
        f2 = src.wait_newer(f.seq, timeout=2.0)
        assert f2.seq == f.seq + 1 and f2.stamp_ns > f.stamp_ns
