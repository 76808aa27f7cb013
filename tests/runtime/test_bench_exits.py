"""``rtvla bench exits``: the stop time of a way out of ``rtvla run``, measured for real."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rtvla.cli.main import app

pytestmark = pytest.mark.slow


def test_bench_exits_measures_sigterm_and_writes_json(tmp_path):
    out = tmp_path / "exits.json"
    res = CliRunner().invoke(app, ["bench", "exits", "--cases", "sigterm", "--repeats", "1",
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())["rows"]
    assert row["case"] == "sigterm" and row["exit_code"] == 130
    assert 0 < row["stop_s"] < 5.0
    assert row["report_complete"] is True and row["left_behind"] == 0
    assert "sigterm" in res.output


@pytest.mark.parametrize("args, message", [
    (["--cases", "ctrl-z"], "unknown ctrl-z"),
    (["--repeats", "0"], "--repeats must be >= 1"),
])
def test_bench_exits_refuses_bad_options(args, message):
    res = CliRunner().invoke(app, ["bench", "exits", *args])
    assert res.exit_code == 2 and message in res.output
