"""VideoWriter / EpisodeVideo: H.264 mp4 off the caller's thread, read back with PyAV."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from rtvla.errors import RecordError, RenderError
from rtvla.record.video import EpisodeVideo, VideoWriter, tile


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as f:
        return [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]


def test_frames_are_encoded_as_h264_at_the_given_rate(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    with VideoWriter(path, fps=15, block=True, crf=18) as video:
        for i in range(30):
            img = np.zeros((120, 160, 3), np.uint8)
            img[:, :, 0] = 8 * i  # red ramps up frame by frame
            assert video.write(img)
    stats = video.stats()
    assert stats["frames_written"] == 30 and stats["frames_dropped"] == 0 and stats["encode_cpu_s"] > 0
    with av.open(str(path)) as f:
        s = f.streams.video[0]
        assert s.codec_context.name == "h264" and s.average_rate == 15
        assert (s.width, s.height) == (160, 120)
    frames = _frames(path)
    assert len(frames) == 30
    assert abs(int(frames[20][60, 80, 0]) - 160) < 12  # the content survived
    assert not video.write(np.zeros((120, 160, 3), np.uint8))  # closed


def test_a_busy_encoder_drops_frames_instead_of_slowing_the_caller(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    video = VideoWriter(tmp_path / "v.mp4", fps=30, queue_size=2)
    accepted = sum(video.write(noise) for _ in range(200))
    stats = video.close()
    assert stats["frames_dropped"] > 0
    assert stats["frames_written"] == accepted and accepted + stats["frames_dropped"] == 200
    assert len(_frames(tmp_path / "v.mp4")) == accepted


def test_bad_frames_are_named(tmp_path: Path) -> None:
    video = VideoWriter(tmp_path / "v.mp4", fps=10, block=True)
    video.write(np.zeros((10, 10), np.float32))
    with pytest.raises(RecordError, match="HxWx3 uint8"):
        video.close()
    with pytest.raises(RecordError, match="fps"):
        VideoWriter(tmp_path / "w.mp4", fps=0)


def test_episode_video_tiles_cameras_and_rendered_views(tmp_path: Path) -> None:
    calls: list[int] = []

    class View:
        closed = False

        def __call__(self) -> np.ndarray:
            calls.append(1)
            return np.full((60, 80, 3), 255, np.uint8)

        def close(self) -> None:
            View.closed = True

    video = EpisodeVideo(tmp_path / "episode.mp4", sources=["head"], renderers={"scene": View()},
                         fps=20, height=120)
    video.update("head", np.zeros((240, 320, 3), np.uint8))
    deadline = time.monotonic() + 20
    while video.writer.frames_written < 5 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    stats = video.close()
    assert View.closed and stats["frames_written"] >= 3
    frames = _frames(tmp_path / "episode.mp4")
    assert frames[0].shape == (120, 160 + 160, 3)  # 320x240 -> 160x120 beside 80x60 -> 160x120
    assert frames[-1][60, 40].max() < 40 and frames[-1][60, 240].min() > 215


def test_tile_scales_to_one_height() -> None:
    out = tile([np.zeros((100, 200, 3), np.uint8), np.zeros((50, 50), np.uint8)], height=50)
    assert out.shape == (50, 100 + 50, 3)


def test_scene_view_renders_the_simulated_room(tmp_path: Path) -> None:
    from rtvla.record.sim_view import SceneView, SimFrames
    from rtvla.robots.sim import SimRobot

    with SimRobot(lockstep=True) as robot:
        view = SceneView(robot.model, robot.qpos_snapshot, width=160, height=120)
        try:
            image = view()
        except RenderError as exc:
            pytest.skip(f"no offscreen rendering here: {exc}")
        finally:
            view.close()
        assert image.shape == (120, 160, 3) and image.std() > 5  # not a blank frame
        frames = SimFrames(robot.model, robot.qpos_snapshot, robot.scene).transforms()
    names = {(p, c) for p, c, _ in frames}
    assert ("world", "base") in names and ("base", "camera/head") in names and ("base", "hand") in names
    assert any(c == "object/red_cube" for _, c, _ in frames)
    base = next(m for p, c, m in frames if c == "base")
    assert np.allclose(base[:3, 3][:2], robot.read_state().base_pose[:2], atol=1e-6)
