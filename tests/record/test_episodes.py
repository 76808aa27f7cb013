"""`rtvla record`: lock-step demonstrations with seeded placements, written as a LeRobot dataset."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rtvla.errors import RecordError, RenderError
from rtvla.record.episodes import place_objects, record_episodes
from rtvla.robots.sim import SimRobot


def test_placements_are_seeded_on_the_table_and_apart() -> None:
    seen = []
    for seed in (0, 0, 1):
        with SimRobot(lockstep=True) as robot:
            placed = place_objects(robot, np.random.default_rng([seed, 0]))
            for name, xyz in placed.items():
                assert np.allclose(robot.object_position(name), xyz, atol=1e-9)
                assert 1.74 <= xyz[0] <= 1.86 and -0.72 <= xyz[1] <= -0.28
            pts = np.array([v[:2] for v in placed.values()])
            gaps = [np.hypot(*(a - b)) for i, a in enumerate(pts) for b in pts[i + 1:]]
            assert min(gaps) >= 0.09
            robot.advance(0.5)  # they rest where they were put (no interpenetration kicks)
            for name, xyz in placed.items():
                assert np.linalg.norm(robot.object_position(name)[:2] - xyz[:2]) < 0.01
            seen.append(placed)
    assert seen[0] == seen[1] and seen[0] != seen[2]
    with SimRobot() as robot, pytest.raises(RecordError, match="lock-step"):
        place_objects(robot, np.random.default_rng(0))


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="episodes"):
        record_episodes(tmp_path / "d", "pick up the red cube", episodes=0)
    with pytest.raises(RecordError, match="fps"):
        record_episodes(tmp_path / "d", "pick up the red cube", episodes=1, fps=0)


def test_rtvla_record_writes_a_dataset_that_reads_back(tmp_path: Path) -> None:
    """One episode of the default task through the CLI: the real path (rendered camera,
    colour detector, world model, rule planner, skills), 10 fps to keep it short."""
    from rtvla.cli.main import app

    out, js = tmp_path / "ds", tmp_path / "summary.json"
    try:
        from rtvla.robots.sim import SimCamera

        with SimRobot(lockstep=True) as robot, SimCamera(robot, width=32, height=24, threaded=False):
            pass
    except RenderError as exc:
        pytest.skip(f"no offscreen rendering here: {exc}")
    result = CliRunner().invoke(app, ["record", "--episodes", "1", "--task", "put the red cube in the blue bin",
                                      "--out", str(out), "--fps", "10", "--seed", "3", "--json", str(js)])
    assert result.exit_code == 0, result.output
    summary = json.loads(js.read_text())
    ep = summary["episodes"][0]
    assert ep["success"] and ep["kept"] and summary["kept"] == 1
    info = json.loads((out / "meta/info.json").read_text())
    assert info["total_episodes"] == 1 and info["total_frames"] == ep["frames"] > 50
    assert info["features"]["observation.state"]["names"][-4:] == ["gripper", "base_x", "base_y", "base_yaw"]
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    with av.open(str(out / "videos/observation.images.head/chunk-000/file-000.mp4")) as f:
        frames = sum(1 for _ in f.decode(video=0))
    assert frames == data.num_rows == ep["frames"]
    ts = np.array(data.column("timestamp").to_pylist())
    assert np.allclose(np.diff(ts), 0.1, atol=1e-6)
    state = np.stack(data.column("observation.state").to_numpy(zero_copy_only=False))
    action = np.stack(data.column("action").to_numpy(zero_copy_only=False))
    assert np.ptp(state[:, -3], axis=0) > 1.0  # the base drove to the table and on to the bin
    assert action[:, 5].max() == 1.0 and action[-1, 5] == 0.0  # gripper closed, then opened
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.allclose(stats["observation.state"]["mean"], state.mean(0), atol=1e-4)
    assert "success" in result.output
