"""The LeRobot v3.0 writer, read back with pyarrow and PyAV as lerobot would read it."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from rtvla.errors import RecordError
from rtvla.record.lerobot import LeRobotDatasetWriter

FPS = 30
CAMS = {"head": (48, 64)}
NAMES = ["j0", "j1", "j2", "gripper"]


def _record(root: Path, lengths: list[int], tasks: list[str], *, seed: int = 0,
            discard_after: int | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    states = []
    w = LeRobotDatasetWriter(root, fps=FPS, state_names=NAMES, action_names=NAMES, cameras=CAMS,
                             robot_type="rtvla_sim")
    for ep, (n, task) in enumerate(zip(lengths, tasks, strict=True)):
        ep_states = rng.normal(size=(n, 4)).astype(np.float32)
        for i in range(n):
            img = np.zeros((48, 64, 3), np.uint8)
            img[:, :, 1] = (i * 7) % 256
            w.add_frame(ep_states[i], ep_states[i] * 2, {"head": img}, task=task)
        if discard_after is not None and ep == discard_after:
            w.discard_episode()
        else:
            w.save_episode()
            states.append(ep_states)
    w.close()
    return states


def _layout(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _video_frames(path: Path) -> tuple[int, list[float]]:
    with av.open(str(path)) as f:
        s = f.streams.video[0]
        times = [float(fr.pts * s.time_base) for fr in f.decode(s)]
    return len(times), times


def test_layout_info_and_episode_metadata_are_lerobot_v30(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    states = _record(root, [20, 25, 5], ["pick", "place", "pick"], discard_after=2)
    assert _layout(root) == {
        "meta/info.json", "meta/stats.json", "meta/tasks.parquet",
        "meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet",
        "videos/observation.images.head/chunk-000/file-000.mp4",
    }
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS and info["robot_type"] == "rtvla_sim"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 45, 2)
    assert info["chunks_size"] == 1000 and info["splits"] == {"train": "0:2"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    assert list(feats) == ["observation.state", "action", "observation.images.head", "timestamp",
                           "frame_index", "episode_index", "index", "task_index"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [4], "names": NAMES}
    video = feats["observation.images.head"]
    assert video["dtype"] == "video" and video["shape"] == [48, 64, 3]
    assert video["info"]["video.codec"] == "h264" and video["info"]["video.fps"] == FPS
    assert video["info"]["video.pix_fmt"] == "yuv420p" and video["info"]["has_audio"] is False
    assert feats["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}

    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "task"]
    assert dict(zip(tasks.column("task").to_pylist(), tasks.column("task_index").to_pylist(),
                    strict=True)) == {"pick": 0, "place": 1}
    assert b"pandas" in tasks.schema.metadata

    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in eps] == [0, 1] and [e["length"] for e in eps] == [20, 25]
    assert eps[1]["tasks"] == ["place"]
    assert (eps[1]["dataset_from_index"], eps[1]["dataset_to_index"]) == (20, 45)
    assert eps[1]["data/chunk_index"] == 0 and eps[1]["data/file_index"] == 0
    assert eps[1]["meta/episodes/chunk_index"] == 0 and eps[1]["meta/episodes/file_index"] == 0
    key = "videos/observation.images.head"
    assert eps[1][f"{key}/from_timestamp"] == pytest.approx(20 / FPS)
    assert eps[1][f"{key}/to_timestamp"] == pytest.approx(45 / FPS)
    assert eps[0]["stats/observation.state/mean"] == pytest.approx(states[0].mean(0).tolist(), rel=1e-5)
    assert np.array(eps[0]["stats/observation.images.head/mean"]).shape == (3, 1, 1)


def test_frames_agree_between_parquet_and_video_and_stats_match(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    states = _record(root, [20, 25], ["pick", "place"])
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data.column_names == ["observation.state", "action", "timestamp", "frame_index",
                                 "episode_index", "index", "task_index"]
    assert str(data.schema.field("observation.state").type) == "fixed_size_list<element: float>[4]"
    assert json.loads(data.schema.metadata[b"huggingface"])["info"]["features"]["timestamp"] == \
        {"dtype": "float32", "_type": "Value"}
    n_video, video_times = _video_frames(root / "videos/observation.images.head/chunk-000/file-000.mp4")
    assert n_video == data.num_rows == 45
    ts = np.array(data.column("timestamp").to_pylist())
    ep = np.array(data.column("episode_index").to_pylist())
    for e, start in ((0, 0), (1, 20)):
        assert np.allclose(np.diff(ts[ep == e]), 1 / FPS, atol=1e-6) and ts[ep == e][0] == 0
        # the episode's frames sit in the video at from_timestamp + timestamp
        assert video_times[start + 3] == pytest.approx(start / FPS + ts[ep == e][3], abs=1e-3)
    assert data.column("index").to_pylist() == list(range(45))
    assert data.column("task_index").to_pylist() == [0] * 20 + [1] * 25
    st = np.stack(data.column("observation.state").to_numpy(zero_copy_only=False))
    assert np.allclose(st, np.concatenate(states))

    stats = json.loads((root / "meta/stats.json").read_text())
    s = stats["observation.state"]
    assert np.allclose(s["mean"], st.mean(0), atol=1e-5) and np.allclose(s["std"], st.std(0), atol=1e-5)
    assert np.allclose(s["min"], st.min(0)) and np.allclose(s["max"], st.max(0))
    assert s["count"] == [45]
    assert set(s) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    act = np.stack(data.column("action").to_numpy(zero_copy_only=False))
    assert np.allclose(stats["action"]["mean"], act.mean(0), atol=1e-5)
    assert stats["frame_index"]["max"] == [24] and stats["index"]["max"] == [44]
    img = stats["observation.images.head"]
    assert np.array(img["mean"]).shape == (3, 1, 1)
    green = np.array([(i * 7) % 256 for i in range(20)] + [(i * 7) % 256 for i in range(25)]) / 255
    assert img["mean"][1][0][0] == pytest.approx(green.mean(), abs=1e-6)
    assert img["mean"][0][0][0] == 0 and img["max"][1][0][0] == pytest.approx(green.max())


def test_appending_continues_indices_in_the_next_file(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    first = _record(root, [10], ["pick"])
    second = _record(root, [12, 8], ["place", "pick"], seed=1)
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 30, 2)
    assert {"data/chunk-000/file-001.parquet", "meta/episodes/chunk-000/file-001.parquet",
            "videos/observation.images.head/chunk-000/file-001.mp4"} <= _layout(root)
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-001.parquet").to_pylist()
    assert [e["episode_index"] for e in eps] == [1, 2]
    assert eps[0]["dataset_from_index"] == 10 and eps[1]["dataset_to_index"] == 30
    assert eps[0]["data/file_index"] == 1 and eps[0]["videos/observation.images.head/from_timestamp"] == 0
    data = pq.read_table(root / "data/chunk-000/file-001.parquet")
    assert data.column("index").to_pylist() == list(range(10, 30))
    assert data.column("task_index").to_pylist() == [1] * 12 + [0] * 8
    assert _video_frames(root / "videos/observation.images.head/chunk-000/file-001.mp4")[0] == 20
    stats = json.loads((root / "meta/stats.json").read_text())
    every = np.concatenate(first + second)
    assert np.allclose(stats["observation.state"]["mean"], every.mean(0), atol=1e-5)
    assert np.allclose(stats["observation.state"]["std"], every.std(0), atol=1e-5)
    assert stats["observation.state"]["count"] == [30]


def test_incompatible_appends_and_bad_frames_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _record(root, [3], ["pick"])
    with pytest.raises(RecordError, match="fps"):
        LeRobotDatasetWriter(root, fps=10, state_names=NAMES, action_names=NAMES, cameras=CAMS)
    with pytest.raises(RecordError, match=r"observation\.state"):
        LeRobotDatasetWriter(root, fps=FPS, state_names=NAMES[:2], action_names=NAMES, cameras=CAMS)
    w = LeRobotDatasetWriter(tmp_path / "other", fps=FPS, state_names=NAMES, action_names=NAMES, cameras=CAMS)
    try:
        with pytest.raises(RecordError, match="action needs 4"):
            w.add_frame(np.zeros(4), np.zeros(3), {"head": np.zeros((48, 64, 3), np.uint8)}, task="t")
        with pytest.raises(RecordError, match="48x64x3"):
            w.add_frame(np.zeros(4), np.zeros(4), {"head": np.zeros((10, 64, 3), np.uint8)}, task="t")
        with pytest.raises(RecordError, match="no frames"):
            w.save_episode()
    finally:
        w.close()
