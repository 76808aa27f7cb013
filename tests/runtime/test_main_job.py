"""End to end: the main job on the simulated robot, in real time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from rtvla.config import load_config
from rtvla.runtime.main_job import EXIT_BUDGET, EXIT_INTERRUPTED, EXIT_OK, RunOptions, run_task

REPORT_KEYS = {"task", "components", "degradations", "adaptation", "violations", "events", "exit"}


def _check_report(report: dict) -> None:
    assert set(report) >= REPORT_KEYS
    assert {"instruction", "success", "duration_s", "plan_source"} <= set(report["task"])
    for name in ("control", "perception", "navigation"):
        row = report["components"][name]
        assert {"budget", "achieved_hz", "latency_ms", "missed", "cpu_percent", "memory_mb",
                "violations"} <= set(row)
        assert {"p50", "p99", "max"} <= set(row["latency_ms"])


def test_default_task_succeeds_and_a_crashing_component_is_restarted(tmp_path):
    cfg = load_config(environ={}, search_cwd=False)
    crashes = []

    def inject(stack):
        real_step = stack.pipeline.step

        def crashing_step(tick=None):
            if not crashes and tick is not None and tick.index == 20:
                crashes.append(tick.index)
                raise RuntimeError("injected perception fault")
            return real_step(tick)

        stack.pipeline.step = crashing_step

    out = tmp_path / "run"
    outcome = run_task(cfg, RunOptions(out_dir=out, dashboard=False), on_stack=inject)
    report = json.loads((out / "report.json").read_text())
    _check_report(report)
    assert report["task"]["success"] is True, outcome.reason
    assert report["task"]["plan_source"] == "rules"
    assert report["task"]["duration_s"] < 120
    # The task succeeded; the exit code is 0 unless a critical budget broke on this machine,
    # and then the reason names it.
    assert outcome.exit_code in (EXIT_OK, EXIT_BUDGET), outcome.reason
    if outcome.exit_code == EXIT_BUDGET:
        assert "critical budgets were violated" in outcome.reason
    # The injected crash was restarted and reported.
    assert crashes == [20]
    kinds = [(e["component"], e["kind"]) for e in report["degradations"]]
    assert ("perception", "fault") in kinds and ("perception", "restart") in kinds
    assert report["supervisor"]["perception"]["restarts"] == 1
    # The rest of the run folder.
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 5 and "control" in json.loads(lines[-1])["components"]
    for png in ("latency.png", "rate.png", "utilization.png"):
        assert (out / png).stat().st_size > 1000
    assert "plan succeeded" in (out / "run.log").read_text()


def test_sigint_still_writes_a_complete_report_and_leaves_no_process(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtvla.cli", "run", "--no-dashboard", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    try:
        metrics = out / "metrics.jsonl"
        end = time.monotonic() + 90
        while time.monotonic() < end and proc.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read().decode()
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = output.decode()
    assert proc.returncode == EXIT_INTERRUPTED, text
    report = json.loads((out / "report.json").read_text())
    _check_report(report)
    assert report["exit"]["code"] == EXIT_INTERRUPTED
    assert report["task"]["success"] is False
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {alive}"


@pytest.mark.parametrize(("bad", "code"), [
    ("[budgets.control]\nrate_hz = -1\n", 2),    # a bad config value: usage error
    ("[robot]\nkind = 'ur5'\n", 4),              # a part's bad option: the stack cannot be built
])
def test_broken_config_is_refused_before_anything_starts(tmp_path, bad, code):
    f = tmp_path / "rtvla.toml"
    f.write_text(bad)
    from typer.testing import CliRunner

    from rtvla.cli.main import app

    res = CliRunner().invoke(app, ["run", "--config", str(f), "--no-dashboard", "--out", str(tmp_path / "r")])
    assert res.exit_code == code, res.output
    assert not (tmp_path / "r").exists() or not (tmp_path / "r" / "report.json").exists()


def test_pressure_turns_perception_quality_down_and_the_report_says_so(tmp_path):
    """With thresholds every machine exceeds, the adaptive optimizer steps the perception
    resolution down (never a loop's rate) while the run goes on, and report.json lists it."""
    from rtvla.config import parse_config

    cfg = parse_config({
        "adapt": {"cpu_high": 2.0, "cpu_low": 1.0, "latency_high": 0.01, "latency_low": 0.005,
                  "degrade_after_s": 0.2, "min_dwell_s": 0.3, "window_s": 0.5, "period_s": 0.1},
        "runtime": {"linger_s": 4.0},
    })
    outcome = run_task(cfg, RunOptions(task="say hello", out_dir=tmp_path / "run", dashboard=False))
    report = outcome.report
    assert report["task"]["success"] is True, outcome.reason
    downs = [a for a in report["adaptation"] if a["to_level"] > a["from_level"]]
    assert downs, report["adaptation"]
    first = downs[0]["changes"][0]
    assert first["knob"] == "perception.resolution"
    assert tuple(first["new"]) == (240, 180) and tuple(first["old"]) == (320, 240)
    assert report["components"]["perception"]["budget"]["rate_hz"] == 30  # rate untouched
