from __future__ import annotations

import json

from typer.testing import CliRunner

from rtvla.cli.main import app

runner = CliRunner()


def test_config_show_and_json(tmp_path):
    out = tmp_path / "b.json"
    res = runner.invoke(app, ["config", "show", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "control" in res.output
    data = json.loads(out.read_text())
    assert data["budgets"]["perception"]["rate_hz"] == 30


def test_config_check_valid_and_invalid(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[budgets.navigation]\nrate_hz = 20\n")
    res = runner.invoke(app, ["config", "check", str(good)])
    assert res.exit_code == 0 and "valid" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[budgets.navigation]\nrate_hz = -20\n")
    res = runner.invoke(app, ["config", "check", str(bad)])
    assert res.exit_code == 2
    assert "rate_hz must be > 0, got -20" in res.output


def test_bench_loop_json_rows(tmp_path):
    out = tmp_path / "loop.json"
    res = runner.invoke(app, ["bench", "loop", "--seconds", "0.3", "--rates", "100",
                              "--loads", "idle,loaded", "--json", str(out),
                              "--plot", str(tmp_path / "loop.png")])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert {(r["loop"], r["load"]) for r in rows} == {
        (k, lo) for k in ("naive", "sleep", "spin") for lo in ("idle", "loaded")}
    for r in rows:
        assert set(r) >= {"loop", "rate_hz", "load", "achieved_hz", "lateness_us", "drift_ms", "missed"}
        assert set(r["lateness_us"]) == {"p50", "p99", "max"}
    assert (tmp_path / "loop.png").stat().st_size > 1000


def test_bench_record_json(tmp_path):
    out = tmp_path / "rec.json"
    res = runner.invoke(app, ["bench", "record", "--samples", "20000", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data) >= {"record_ns_median", "baseline_ns_median", "memory_bytes_after_1e7",
                         "baseline_memory_bytes_after_1e7"}
    assert data["memory_bytes_after_1e7"] < data["baseline_memory_bytes_after_1e7"]
