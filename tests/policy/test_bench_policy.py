"""``rtvla bench policy``: a short real chunks run through ``rtvla serve-policy`` on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rtvla.bench.policy import (
    CARRY_Q,
    TARGETS,
    bench_chunks,
    build_reach_policy,
    pick_rows_or_reason,
)
from rtvla.cli.main import app
from rtvla.errors import ConfigError


def test_reach_policy_is_a_real_onnx_model_moving_toward_its_target(tmp_path: Path) -> None:
    from rtvla.policy.onnx import OnnxPolicy

    policy = OnnxPolicy(build_reach_policy(tmp_path / "reach.onnx"))
    q = np.asarray(CARRY_Q, np.float32)
    out = policy.infer({"observation/joint_position": q, "observation/target_position": np.asarray(TARGETS[0])})
    a = out["actions"]
    assert a.shape == (10, 6) and np.all(np.isfinite(a))
    step = np.abs(np.diff(np.vstack([q, a[:, :5]]), axis=0))
    assert step.max() <= 0.05 + 1e-6 and step[0].max() > 0.01  # moves, at most 0.05 rad a step
    assert np.all((a[:, 5] >= 0) & (a[:, 5] <= 1))


def test_chunks_rows_through_a_served_policy() -> None:
    labels: list[str] = []
    rows = bench_chunks((100.0,), ("rtvla", "sync"), seconds=3.0, follow_s=1.5, home_s=0.5,
                        progress=labels.append)
    assert [r["scheduler"] for r in rows] == ["none", "rtvla", "sync"]
    assert labels[0].startswith("no policy")
    for r in rows:
        assert r["bench"] == "chunks"
        assert set(r["lateness_us"]) == {"p50", "p99", "max"}
        assert set(r["boundary_jump_rad"]) == {"p50", "max"}
        assert r["ticks"] > 100 and r["duration_s"] > 0 and r["step_us"]["avg"] > 0
        assert isinstance(r["control_missed"], int) and isinstance(r["starved_ticks"], int)
    base, mine, sync = rows
    assert base["delay_ms"] is None and base["starved_ticks"] == 0
    for r in (mine, sync):
        assert r["delay_ms"] == 100.0
        assert r["chunks"] >= 2 and r["rejected_chunks"] == 0 and r["policy_errors"] == 0
        assert r["starvation_stops"] == 0 and r["watchdog_trips"] == 0
        assert r["inference_delay_ms"]["p50"] >= 90.0  # the server's added 100 ms, measured
    # sync holds while each chunk is computed; rtvla asks ahead of time
    assert sync["starved_ticks"] > mine["starved_ticks"]


def test_cli_refuses_bad_options() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "policy", "--delays", "0,fast", "--skip-pick"])
    assert res.exit_code == 2 and "--delays" in res.output
    res = runner.invoke(app, ["bench", "policy", "--schedulers", "greedy", "--skip-pick"])
    assert res.exit_code == 2 and "unknown scheduler 'greedy'" in res.output
    res = runner.invoke(app, ["bench", "policy", "--episodes", "0"])
    assert res.exit_code == 2 and "--episodes" in res.output
    with pytest.raises(ConfigError, match="delays"):
        bench_chunks((-5.0,))


def test_pick_rows_missing_is_said_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("rtvla.policy.pick.bench")
    monkeypatch.setitem(sys.modules, "rtvla.policy.pick.bench", fake)
    import rtvla.policy.pick as pick_pkg

    monkeypatch.setattr(pick_pkg, "bench", fake, raising=False)
    rows, why = pick_rows_or_reason(2)
    assert rows == [] and why is not None and "pick_rows" in why

    def pick_rows(episodes: int, seed0: int = 10_000, progress: object = None) -> list[dict]:
        return [{"bench": "pick", "controller": c, "episodes": episodes, "success_rate": 1.0,
                 "median_time_s": 1.0} for c in ("policy", "scripted")]

    fake.pick_rows = pick_rows  # type: ignore[attr-defined]
    rows, why = pick_rows_or_reason(2, 5)
    assert why is None and [r["controller"] for r in rows] == ["policy", "scripted"]


def test_cli_writes_json_with_pick_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("rtvla.policy.pick.bench")
    monkeypatch.setitem(sys.modules, "rtvla.policy.pick.bench", fake)
    import rtvla.policy.pick as pick_pkg

    monkeypatch.setattr(pick_pkg, "bench", fake, raising=False)
    out = tmp_path / "bp.json"
    res = CliRunner().invoke(app, ["bench", "policy", "--episodes", "1", "--skip-chunks", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "pick rows:" in res.output
    data = json.loads(out.read_text())
    assert data["rows"] == [] and "pick_rows" in data["notes"][0]
