from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rtvla.action.chunks import ChunkRequest
from rtvla.bench.control import (
    MLPChunkPolicy,
    choose_robot,
    default_limits,
    navigation_workload,
    perception_workload,
)
from rtvla.errors import ConfigError
from rtvla.timing import Tick


def test_workloads_do_real_work():
    tick = Tick(0, 0, 0, 0, 0.01)
    perception_workload()(tick)
    navigation_workload()(tick)
    lim = default_limits(6)
    policy = MLPChunkPolicy(6, 30, limits=lim, hidden=32, layers=1, repeats=1)
    chunk = policy(ChunkRequest(1, 0, 0, None))
    assert chunk.shape == (30, 6)
    assert np.all(chunk >= lim.q_min) and np.all(chunk <= lim.q_max)
    assert np.ptp(chunk[:, 0]) > 0.01  # a moving reach, not a constant


def test_choose_robot_validates():
    assert choose_robot("kinematic").label.startswith("KinematicRobot")
    with pytest.raises(ConfigError, match="robot must be"):
        choose_robot("hexapod")


def test_cli_bench_control_short_run(tmp_path):
    from rtvla.cli.main import app

    out = tmp_path / "control.json"
    png = tmp_path / "control.png"
    res = CliRunner().invoke(app, ["bench", "control", "--seconds", "1", "--robot", "kinematic",
                                   "--json", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["placement"] for r in rows] == ["thread", "process", "chunks"]
    for r in rows:
        assert set(r["lateness_us"]) == {"p50", "p99", "max"}
        assert r["ticks"] >= 50 and r["missed"] >= 0 and r["starved_ticks"] >= 0
        assert r["robot"].startswith("KinematicRobot")
    assert rows[2]["policy_hz"] > 0
    assert png.stat().st_size > 0
    assert "KinematicRobot" in res.output


def test_cli_bench_control_rejects_bad_options():
    from rtvla.cli.main import app

    res = CliRunner().invoke(app, ["bench", "control", "--placements", "gpu"])
    assert res.exit_code != 0 and "unknown placement" in res.output
