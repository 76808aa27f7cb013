"""``rtvla run --policy``: the learned pick runs the plan's ``manipulate(pick ...)`` steps."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rtvla.cli.main import app
from rtvla.runtime.main_job import EXIT_ERROR, RunOptions, run_task

pytestmark = pytest.mark.slow


def test_a_policy_that_cannot_be_loaded_stops_the_run_before_anything_starts(tmp_path):
    res = CliRunner().invoke(app, ["run", "--no-dashboard", "--no-record", "--out", str(tmp_path / "run"),
                                   "--policy", str(tmp_path / "missing.onnx")])
    assert res.exit_code == EXIT_ERROR, res.output
    assert "missing.onnx" in res.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["components"].get("control", {}).get("count", 0) == 0  # nothing ran


def test_the_default_task_with_the_learned_pick(tmp_path):
    from rtvla.config import load_config

    outcome = run_task(load_config(None), RunOptions(out_dir=tmp_path / "run", dashboard=False, record=False,
                                                     policy="builtin:pick"))
    report = outcome.report
    assert report["task"]["success"] is True, outcome.reason
    policy = report["policy"]
    assert {k: policy[k] for k in ("source", "runs")} == {"source": "builtin:pick", "runs": "manipulate(pick ...)"}
    assert policy["placement"] == "control process"  # chunks scheduled on the control loop's tick
    assert policy["scheduler"]["starvation_stops"] == 0
    steps = report["task"]["execution"]["steps"]
    picks = [s for s in steps if s["type"] == "manipulate" and s["name"].startswith("manipulate(pick")]
    assert picks and all(s["status"] == "succeeded" for s in picks)
