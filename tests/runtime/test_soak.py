"""``rtvla bench soak``'s row: one stack, tasks back to back with a reset in between."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow


def test_soak_row_has_what_the_goals_need(tmp_path):
    from rtvla.cli.main import app

    out = tmp_path / "soak.json"
    res = CliRunner().invoke(app, ["bench", "soak", "--minutes", "0.01", "--json", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text())
    assert {"minutes", "tasks", "succeeded", "rss_growth_mb", "control_missed", "threads",
            "open_files"} <= set(row)
    assert row["tasks"] == 1 and row["succeeded"] == 1, row["per_task"]
    assert set(row["threads"]) == {"before", "after"} and set(row["open_files"]) == {"before", "after"}
    # Everything the stack needs exists once it started: the first task creates no thread.
    assert row["threads"]["after"] == row["threads"]["before"]
