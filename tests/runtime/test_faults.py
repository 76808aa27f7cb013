"""``rtvla run --inject``: each fault happens for real and is handled as DESIGN.md says; the
report lists it with its outcome."""

from __future__ import annotations

import json

import pytest

from rtvla.config import load_config
from rtvla.errors import ConfigError
from rtvla.runtime.faults import FAULTS, parse_faults
from rtvla.runtime.main_job import EXIT_FAILED, RunOptions, run_task

pytestmark = pytest.mark.slow


def _run(tmp_path, inject: str, duration_s: float | None = None):
    cfg = load_config(environ={}, search_cwd=False)
    out = tmp_path / "run"
    outcome = run_task(cfg, RunOptions(out_dir=out, dashboard=False, inject=inject, duration_s=duration_s))
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return outcome, report


def _fault(report: dict, kind: str) -> dict:
    rows = [f for f in report["faults"] if f["fault"] == kind]
    assert len(rows) == 1, report["faults"]
    assert rows[0]["injected_at_s"] is not None, rows[0]
    return rows[0]


def test_parse_faults_names_what_is_wrong():
    assert [(f.kind, f.at_s) for f in parse_faults("camera-drop@2.5, control-kill@1")] == [
        ("control-kill", 1.0), ("camera-drop", 2.5)]
    with pytest.raises(ConfigError, match=r"unknown fault 'cpu-melt'.*control-kill"):
        parse_faults("cpu-melt@3")
    with pytest.raises(ConfigError, match="needs a time"):
        parse_faults("control-kill")
    with pytest.raises(ConfigError, match="must be a number"):
        parse_faults("control-kill@soon")
    assert set(FAULTS) == {"control-kill", "control-hang", "perception-crash", "detector-hang",
                           "camera-drop", "llm-hang", "llm-garbage", "disk-full"}


@pytest.mark.parametrize("kind", ["control-kill", "control-hang"])
def test_lost_control_stops_the_robot_and_ends_the_run(tmp_path, kind):
    outcome, report = _run(tmp_path, f"{kind}@3")
    assert outcome.exit_code == EXIT_FAILED, outcome.reason
    expected = "killed by signal 9" if kind == "control-kill" else "control loop hung"
    assert expected in outcome.reason
    row = _fault(report, kind)
    assert row["outcome"].startswith("control lost") and expected in row["outcome"]
    assert report["wall_time_s"] < 3 + 30  # ended promptly after the fault, not at the deadline
    stopped = [e for e in report["events"] if e["kind"] == "stopped" and e["component"] == "runtime"]
    assert stopped and stopped[0]["detail"]["total_s"] < 5.0


def test_perception_crash_is_restarted(tmp_path):
    _outcome, report = _run(tmp_path, "perception-crash@2", duration_s=6)
    row = _fault(report, "perception-crash")
    assert report["supervisor"]["perception"]["restarts"] == 1
    assert row["outcome"] == "perception restarted (1 restart)"
    kinds = {(e["component"], e["kind"]) for e in report["degradations"]}
    assert ("perception", "fault") in kinds and ("perception", "restart") in kinds


def test_detector_hang_publishes_stale_detections_and_keeps_the_loop(tmp_path):
    _outcome, report = _run(tmp_path, "detector-hang@2", duration_s=8)
    _fault(report, "detector-hang")
    assert report["perception"]["timeouts"] >= 1
    # The loop kept its rate through the 3 s hang (critical: rate, not freshness).
    assert report["components"]["perception"]["achieved_hz"] > 15  # generous: 2 noisy cores


def test_camera_drop_degrades_then_recovers(tmp_path):
    _outcome, report = _run(tmp_path, "camera-drop@2", duration_s=8)
    row = _fault(report, "camera-drop")
    kinds = [e["kind"] for e in report["events"] if e["component"] == "perception"]
    assert "degraded" in kinds and "recovered" in kinds
    assert kinds.index("degraded") < kinds.index("recovered")
    assert "recovered" in row["outcome"]


@pytest.mark.parametrize("kind", ["llm-hang", "llm-garbage"])
def test_broken_llm_degrades_to_the_fallback_planner(tmp_path, kind):
    _outcome, report = _run(tmp_path, f"{kind}@0", duration_s=7)
    row = _fault(report, kind)
    assert report["task"]["plan_source"] == "fallback"
    assert report["task"]["degraded_reason"]
    assert row["outcome"].startswith("plan from fallback")
    if kind == "llm-hang":  # the answer came by the deadline, not later
        assert report["task"]["plan_latency_s"] < 5.5


def test_disk_full_sends_the_report_to_stderr_and_ends_cleanly(tmp_path, capfd):
    outcome, _report = _run(tmp_path, "disk-full@2", duration_s=5)
    err = capfd.readouterr().err
    assert "cannot write" in err and "No space left on device" in err
    # Whatever the folder holds, the report is whole on stderr.
    body = err[err.index("{"):]
    printed = json.loads(body[: body.rindex("}") + 1])
    assert printed["exit"]["report_write_error"]
    row = [f for f in printed["faults"] if f["fault"] == "disk-full"][0]
    assert row["injected_at_s"] is not None
    assert outcome.exit_code == EXIT_FAILED  # the task ran out of time; nothing crashed
