"""``rtvla bench soak``'s row: one stack, tasks back to back with a reset in between."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_soak_row_has_what_the_goals_need(tmp_path):
    # Its own process, as a user runs it: in pytest's process, threads that earlier tests left
    # in other libraries' pools (Zenoh's runtime, for one) may come and go and would be counted.
    out = tmp_path / "soak.json"
    res = subprocess.run([sys.executable, "-m", "rtvla.cli", "bench", "soak", "--minutes", "0.01",
                          "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    row = json.loads(out.read_text())
    assert {"minutes", "tasks", "succeeded", "rss_growth_mb", "control_missed", "threads",
            "open_files"} <= set(row)
    assert row["tasks"] == 1 and row["succeeded"] == 1, row["per_task"]
    assert {"before", "after"} <= set(row["threads"]) and set(row["open_files"]) == {"before", "after"}
    # Everything the stack needs exists once it started: the first task creates no thread.
    assert row["threads"]["after"] == row["threads"]["before"], row["threads"]
