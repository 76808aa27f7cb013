"""``rtvla run`` records every run: run.mcap (indexed, on every way out), episode.mp4, the live
view, a LeRobot episode; ``rtvla report`` reads the record back. Real runs of the CLI, as few as
the checks allow (each is tens of seconds on these machines)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from mcap.reader import make_reader
from typer.testing import CliRunner
from websockets.sync.client import connect

from rtvla.bench.exits import PtyRun
from rtvla.cli.main import app
from rtvla.record import summarize_mcap
from rtvla.runtime.main_job import EXIT_FAILED, EXIT_INTERRUPTED

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
STOP_BOUND_S = 5.0  # README: every way out ends within 5 s with a complete report
EXPECTED_TOPICS = {"/camera/head/image", "/camera/head/annotations", "/detections", "/joint_states", "/tf",
                   "/navigation/path", "/plan", "/plan/step", "/log", "/control/timing", "/timing/control",
                   "/timing/perception"}


def _rtvla(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtvla.cli", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


def _read_mcap(path: Path) -> tuple[object, dict[str, list[bytes]]]:
    """The summary and every message's data by topic, through the mcap package's reader."""
    with path.open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        by_topic: dict[str, list[bytes]] = {}
        for _schema, channel, message in reader.iter_messages():
            by_topic.setdefault(channel.topic, []).append(message.data)
    return summary, by_topic


def _video_frames(path: Path) -> tuple[str, int]:
    with av.open(str(path)) as f:
        codec = f.streams.video[0].codec_context.name
        return codec, sum(1 for _ in f.decode(video=0))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """One real default ``rtvla run``, also appending itself to a new dataset."""
    base = tmp_path_factory.mktemp("default-run")
    out, ds = base / "run", base / "dataset"
    res = _rtvla("run", "--no-dashboard", "--out", str(out), "--dataset", str(ds), cwd=base)
    assert (out / "report.json").is_file(), res.stdout + res.stderr
    report = json.loads((out / "report.json").read_text())
    assert res.returncode == report["exit"]["code"], res.stdout + res.stderr
    print(res.stdout[-1500:])
    return out, ds, report


def test_a_default_run_leaves_an_indexed_run_mcap_and_an_h264_episode(default_run) -> None:
    out, _, report = default_run
    summary, by_topic = _read_mcap(out / "run.mcap")
    assert summary is not None and summary.statistics is not None  # closed: summary and index
    assert summary.chunk_indexes, "no chunk index"
    missing = EXPECTED_TOPICS - set(by_topic)
    assert not missing, f"topics missing: {missing}; have {sorted(by_topic)}"
    assert summary.statistics.message_count == sum(len(v) for v in by_topic.values())
    # The plan, as the planner gave it, and the executor's steps.
    plan = json.loads(by_topic["/plan"][0])
    assert plan["instruction"] == report["task"]["instruction"] and plan["source"] == "rules"
    assert [s["type"] for s in plan["steps"]] == [a["type"] for a in report["task"]["plans"][0]["plan"]["actions"]]
    statuses = {json.loads(m)["status"] for m in by_topic["/plan/step"]}
    assert "running" in statuses and statuses & {"succeeded", "failed"}
    # The control process's own lateness series, one message per tick (~100 Hz).
    ticks = len(by_topic["/control/timing"])
    assert ticks > 50 * (report["task"]["duration_s"] or 1), ticks
    # The episode video: H.264, about video_fps frames per recorded second.
    codec, frames = _video_frames(out / "episode.mp4")
    assert codec == "h264" and frames > 0
    rec = report["recording"]
    assert rec["enabled"] and rec["errors"] == []
    assert rec["files"] == {"run.mcap": (out / "run.mcap").stat().st_size,
                            "episode.mp4": (out / "episode.mp4").stat().st_size}
    assert rec["messages"] == summary.statistics.message_count
    assert rec["video"]["frames_written"] == frames
    assert rec["cpu_s"] > 0 and 0 < rec["cpu_percent"] < 100
    assert rec["close_s"] < STOP_BOUND_S
    assert set(rec["dropped"]) == {"queue", "size", "video_frames"}
    print(f"default run: run.mcap {rec['files']['run.mcap'] / 1e6:.2f} MB ({rec['messages']} messages), "
          f"episode.mp4 {rec['files']['episode.mp4'] / 1e6:.2f} MB ({frames} frames) over "
          f"{rec['recorded_s']:.1f} s; recording CPU {rec['cpu_percent']:.1f} % of a core")


def test_rtvla_report_shows_the_record_and_its_json_includes_it(default_run) -> None:
    out, _, report = default_run
    res = _rtvla("report", str(out), "--json", cwd=out.parent, timeout=120)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    mcap = data["mcap"]
    assert mcap["indexed"] is True and not mcap["truncated"]
    assert mcap["message_count"] == report["recording"]["messages"]
    assert {c["topic"] for c in mcap["channels"]} >= EXPECTED_TOPICS
    assert mcap["duration_s"] > 5 and mcap["end_ns"] > mcap["start_ns"]
    assert data["recording"] == report["recording"]
    res = _rtvla("report", str(out), "--no-plots", cwd=out.parent, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "/control/timing" in res.stdout and "foxglove.CompressedImage" in res.stdout
    assert re.search(r"run\.mcap time range: \d{4}-\d\d-\d\d .* UTC \(\d+\.\d s\)", res.stdout), res.stdout


def test_no_record_writes_neither_file_and_a_second_run_appends_to_the_dataset(default_run, tmp_path) -> None:
    _, ds, first = default_run
    before = json.loads((ds / "meta/info.json").read_text())["total_episodes"]
    assert before == (1 if first["task"]["success"] else 0)
    out = tmp_path / "run"
    # A short run that cannot finish the task: kept all the same (--keep-failures).
    res = _rtvla("run", "--no-dashboard", "--out", str(out), "--no-record", "--duration", "6",
                 "--dataset", str(ds), "--keep-failures", cwd=tmp_path)
    assert res.returncode == EXIT_FAILED, res.stdout + res.stderr
    assert not (out / "run.mcap").exists() and not (out / "episode.mp4").exists()
    report = json.loads((out / "report.json").read_text())
    rec = report["recording"]
    assert rec["enabled"] is False and rec["files"] == {}
    assert rec["dataset"]["kept"] is True and rec["dataset"]["frames"] > 0
    info = json.loads((ds / "meta/info.json").read_text())
    assert info["total_episodes"] == before + 1
    # Read back with pyarrow: this session wrote the next data file, indices continue.
    files = sorted((ds / "data").glob("chunk-*/file-*.parquet"))
    assert len(files) == before + 1
    table = pq.read_table(files[-1])
    assert set(table.column("episode_index").to_pylist()) == {before}
    assert table.num_rows == rec["dataset"]["frames"] == info["total_frames"] - (
        first["recording"]["dataset"]["frames"] if before else 0)
    state = np.stack(table.column("observation.state").to_numpy(zero_copy_only=False))
    action = np.stack(table.column("action").to_numpy(zero_copy_only=False))
    assert state.shape == action.shape == (table.num_rows, len(info["features"]["action"]["names"]))
    assert np.isfinite(state).all() and np.isfinite(action).all()
    # Actions are the setpoints sent to the control process, read back from its channel.
    assert rec["dataset"]["actions_from_setpoints"] > 0
    video = sorted((ds / "videos/observation.images.head").glob("chunk-*/file-*.mp4"))[-1]
    assert _video_frames(video)[1] == table.num_rows


def _PtyRun(cwd, *extra: str) -> PtyRun:
    """``rtvla run`` on a pseudo-terminal; a run that misbehaves fails the test."""
    return PtyRun(cwd, *extra, on_error=pytest.fail)


def test_ctrl_c_mid_run_leaves_an_indexed_record_and_a_report_and_the_live_view_served(tmp_path) -> None:
    run = _PtyRun(tmp_path, "--live", "--live-port", "0")
    try:
        port = int(run.wait_for("live view address", lambda t: (m := re.search(
            r"live view: ws://127\.0\.0\.1:(\d+)", t)) and m.group(1)))
        # A Foxglove client sees the run's channels advertised.
        topics: set[str] = set()
        with connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"], open_timeout=10) as ws:
            end = time.monotonic() + 30
            while "/joint_states" not in topics and time.monotonic() < end:
                msg = ws.recv(timeout=max(0.1, end - time.monotonic()))
                if isinstance(msg, str) and json.loads(msg).get("op") == "advertise":
                    topics |= {c["topic"] for c in json.loads(msg)["channels"]}
        assert "/joint_states" in topics, topics
        # Until the task is executing: the record is then being written.
        run.wait_for("execution", lambda t: (run.out / "metrics.jsonl").exists()
                     and len((run.out / "metrics.jsonl").read_text().splitlines()) >= 3)
        os.killpg(run.proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        took = run.wait_exit(STOP_BOUND_S + 15)
        assert run.proc.returncode == EXIT_INTERRUPTED, run.drain()
        assert took < STOP_BOUND_S + 3, f"stopping took {took:.1f} s"
    finally:
        run.close()
    report = json.loads((run.out / "report.json").read_text())
    assert report["exit"]["code"] == EXIT_INTERRUPTED
    rec = report["recording"]
    assert rec["errors"] == [] and rec["live"]["port"] == port
    summary, by_topic = _read_mcap(run.out / "run.mcap")
    assert summary is not None and summary.statistics is not None and summary.chunk_indexes
    assert {"/joint_states", "/tf", "/control/timing", "/timing/control", "/camera/head/image"} <= set(by_topic)
    assert summarize_mcap(run.out)["indexed"] is True
    codec, frames = _video_frames(run.out / "episode.mp4")
    assert codec == "h264" and frames > 0
    print(f"Ctrl-C: exited in {took:.2f} s; recording closed in {rec['close_s']:.2f} s; "
          f"run.mcap {rec['files']['run.mcap'] / 1e6:.2f} MB indexed")


def test_a_full_disk_ends_the_run_cleanly_and_the_recording_stops(tmp_path) -> None:
    out = tmp_path / "run"
    res = _rtvla("run", "--no-dashboard", "--out", str(out), "--duration", "6", "--inject", "disk-full@2",
                 cwd=tmp_path)
    assert res.returncode == EXIT_FAILED, res.stdout + res.stderr
    assert not (out / "report.json").exists()
    report = json.loads(res.stderr[res.stderr.index("{"):])  # the report went to stderr whole
    rec = report["recording"]
    assert rec["errors"] == [] and rec["files"]["run.mcap"] > 0
    stopped = [e for e in report["events"] if e["component"] == "record" and e["kind"] == "degraded"]
    assert stopped and "refuses writes" in stopped[0]["message"]
    assert summarize_mcap(out / "run.mcap")["indexed"] is True


def test_bad_recording_options_are_refused_before_anything_runs(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--no-record", "--live", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "--live needs the run record" in res.output
    res = runner.invoke(app, ["run", "--keep-failures", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--keep-failures" in res.output and "--dataset" in res.output
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a dataset")
    res = runner.invoke(app, ["run", "--dataset", str(junk), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "neither empty nor a LeRobot dataset" in res.output
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))


def test_a_crash_mid_run_still_leaves_an_indexed_record_beside_the_report(tmp_path) -> None:
    from rtvla.config import load_config
    from rtvla.runtime.main_job import EXIT_ERROR, RunOptions, run_task

    def crash(capture) -> None:  # runs on the main job's thread once the recording records
        capture.log_event("test", "note", "about to crash")
        raise RuntimeError("injected crash")

    out = tmp_path / "run"
    outcome = run_task(load_config(environ={}, search_cwd=False), RunOptions(out_dir=out, dashboard=False),
                       on_recording=crash)
    assert outcome.exit_code == EXIT_ERROR and "unexpected RuntimeError: injected crash" in outcome.reason
    report = json.loads((out / "report.json").read_text())
    assert report["recording"]["errors"] == [] and report["recording"]["files"]["run.mcap"] > 0
    info = summarize_mcap(out)
    assert info["indexed"] is True and info["metadata"]["rtvla.run"]["task"] == report["task"]["instruction"]
