"""``rtvla run --config examples/kinematic_arm/rtvla.toml``: the user's plug-in (found by its
entry point), in process placement, carries out a pick-and-place end to end."""

from __future__ import annotations

import json

import pytest

from rtvla.config import load_config
from rtvla.runtime.main_job import EXIT_BUDGET, EXIT_OK, RunOptions, run_task

from .conftest import EXAMPLE

pytestmark = pytest.mark.slow


def test_the_example_plugin_carries_out_a_task_in_process_placement(tmp_path):
    cfg = load_config(EXAMPLE / "rtvla.toml", environ={}, search_cwd=False)
    out = tmp_path / "run"
    outcome = run_task(cfg, RunOptions(out_dir=out, dashboard=False, task="put the red cube in the blue bin"))
    report = json.loads((out / "report.json").read_text())
    assert report["task"]["success"] is True, outcome.reason
    assert outcome.exit_code in (EXIT_OK, EXIT_BUDGET), outcome.reason
    assert report["embodiment"]["name"] == "kinematic_arm"
    assert report["control"]["placement"] == "process"
    assert report["components"]["control"]["count"] > 100
    assert report["simulation"] is None or "sim_time_s" not in (report["simulation"] or {})
