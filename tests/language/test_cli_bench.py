from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from rtvla.bench.planner import bench_planner
from rtvla.cli import plan as plan_cli
from rtvla.testing.openai_server import ScriptedOpenAIServer


def make_app() -> typer.Typer:
    app = typer.Typer()
    bench = typer.Typer()
    app.add_typer(bench, name="bench")
    plan_cli.register(app, bench)
    return app


def test_plan_command_rules(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(make_app(), ["plan", "put the red cube in the blue bin", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["source"] == "rules" and data["degraded"] is False
    assert [a["type"] for a in data["plan"]["actions"]] == [
        "navigate", "perceive", "manipulate", "navigate", "manipulate"]


def test_plan_command_llm_and_refusal(tmp_path: Path) -> None:
    with ScriptedOpenAIServer() as srv:
        out = tmp_path / "p.json"
        res = CliRunner().invoke(make_app(), ["plan", "go to the kitchen", "--llm-url", srv.base_url,
                                              "--model", "scripted", "--json", str(out)])
        assert res.exit_code == 0, res.output
        assert json.loads(out.read_text())["source"] == "llm"
    res = CliRunner().invoke(make_app(), ["plan", "do not pick up the red cube"])
    assert res.exit_code == 1
    res = CliRunner().invoke(make_app(), ["plan", "go home", "--deadline", "-1"])
    assert res.exit_code == 2


def test_bench_planner_small(tmp_path: Path) -> None:
    res = bench_planner(cache_trials=50, overhead_trials=5, hung_trials=2, deadline_s=0.2)
    j = res.to_json()
    assert set(j) == {"cache_hit_us", "overhead_ms", "hung_server_answer_s", "deadline_s"}
    assert set(j["cache_hit_us"]) == {"p50", "p99"} and set(j["overhead_ms"]) == {"p50", "p99"}
    assert res.hung_sources == ["fallback", "fallback"]
    assert j["hung_server_answer_s"]["max"] <= 0.2 + 0.1
    assert 0 < j["cache_hit_us"]["p50"] < 5000
