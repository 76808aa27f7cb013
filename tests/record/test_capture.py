"""RunCapture: the main job's recording fails soft (events, not crashes) and ends in bounded time."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from rtvla.errors import RecordError
from rtvla.metrics import Recorder
from rtvla.record import RecordSettings, summarize_mcap
from rtvla.record.capture import RunCapture, check_dataset_folder, run_bounded


def _stack(recorder: Recorder) -> NS:
    """A stack with nothing to tap but its recorder (no GL needed)."""
    return NS(recorder=recorder, cameras=[], pipelines=[], robot=None, navigator=None, control=None)


def _events(recorder: Recorder, kind: str) -> list[str]:
    return [e.message for e in recorder.events if e.component == "record" and e.kind == kind]


def test_a_recording_that_cannot_start_is_an_event_and_the_run_goes_on(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        recorder = Recorder()
        capture = RunCapture(tmp_path, RecordSettings(), recorder=recorder, live=True, live_port=port)
        capture.attach(_stack(recorder), instruction="go")
        assert capture.recording is None and capture.live_url is None
        out = capture.close(success=True)
    finally:
        busy.close()
    failed = _events(recorder, "failed")
    assert len(failed) == 1 and "the run record could not start" in failed[0] and str(port) in failed[0]
    assert out["errors"] == failed and out["enabled"] is True and "mcap" not in out


def test_closing_is_bounded_when_a_writer_hangs(tmp_path: Path) -> None:
    recorder = Recorder()
    capture = RunCapture(tmp_path, RecordSettings(close_timeout_s=0.5), recorder=recorder)
    capture.attach(_stack(recorder), instruction="go")
    assert capture.recording is not None
    hang = threading.Event()
    real_close = capture.recording.close
    capture.recording.close = lambda **kw: hang.wait()  # a writer that never finishes
    t0 = time.monotonic()
    out = capture.close(success=False)
    took = time.monotonic() - t0
    hang.set()
    assert took < 5.0, f"close took {took:.1f} s with a 0.5 s bound"
    assert any("not finished after" in e for e in out["errors"]) and _events(recorder, "failed")
    real_close()  # the file is still finished by whoever waits for it


def test_a_record_closed_by_the_capture_is_indexed_and_counts_its_cost(tmp_path: Path) -> None:
    recorder = Recorder()
    capture = RunCapture(tmp_path, RecordSettings(timing_hz=20), recorder=recorder)
    capture.attach(_stack(recorder), instruction="go")
    for i in range(50):
        recorder.latency("control", 0.0002)
        capture.log_event("runtime", "note", f"line {i}")
    steps = []
    capture.wrap_progress(steps.append)(NS(index=0, count=1, name="wait", status=NS(value="running"),
                                           phase="", reason=""))
    out = capture.close(success=True)
    assert len(steps) == 1 and out["errors"] == []
    info = summarize_mcap(tmp_path)
    assert info["indexed"] and out["files"] == {"run.mcap": info["bytes"]}
    counts = {c["topic"]: c["messages"] for c in info["channels"]}
    assert counts["/log"] >= 50 and counts["/plan/step"] == 1 and counts["/timing/control"] >= 1
    assert out["messages"] == info["message_count"] and out["cpu_s"] >= 0 and out["close_s"] < 5
    assert capture.close(success=True) is out  # idempotent


def test_an_unwritable_run_folder_stops_the_record_but_not_the_run(tmp_path: Path) -> None:
    recorder = Recorder()
    capture = RunCapture(tmp_path, RecordSettings(), recorder=recorder)
    capture.attach(_stack(recorder), instruction="go")
    capture.log_event("runtime", "note", "before")
    capture.folder_unwritable(28)
    capture.log_event("runtime", "note", "after")  # nothing more is recorded
    out = capture.close(success=False)
    assert _events(recorder, "degraded") and "refuses writes" in _events(recorder, "degraded")[0]
    assert out["errors"] == []
    logs = [c for c in summarize_mcap(tmp_path)["channels"] if c["topic"] == "/log"]
    assert logs and logs[0]["messages"] >= 1


def test_no_record_and_no_dataset_writes_nothing(tmp_path: Path) -> None:
    recorder = Recorder()
    capture = RunCapture(tmp_path, RecordSettings(), recorder=recorder, record=False)
    capture.attach(_stack(recorder), instruction="go")
    out = capture.close(success=True)
    assert out["enabled"] is False and out["files"] == {} and out["dataset"] is None
    assert list(tmp_path.iterdir()) == []


def test_a_dataset_folder_must_be_empty_missing_or_a_dataset(tmp_path: Path) -> None:
    assert check_dataset_folder(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_dataset_folder(tmp_path / "empty")
    (tmp_path / "ds" / "meta").mkdir(parents=True)
    (tmp_path / "ds" / "meta" / "info.json").write_text("{}")
    check_dataset_folder(tmp_path / "ds")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(RecordError, match="neither empty nor a LeRobot dataset"):
        check_dataset_folder(tmp_path / "other")
    with pytest.raises(RecordError, match="is a file"):
        check_dataset_folder(tmp_path / "other" / "x.txt")
    with pytest.raises(RecordError, match="live port"):
        RunCapture(tmp_path, recorder=None, live_port=70000)


def test_run_bounded_returns_at_its_deadline_and_hands_back_errors() -> None:
    gate = threading.Event()
    t0 = time.monotonic()
    assert run_bounded(gate.wait, 0.2, name="t") == (False, None, None)
    assert time.monotonic() - t0 < 2.0
    gate.set()
    done, result, err = run_bounded(lambda: 1 / 0, 5.0, name="t")
    assert done and result is None and isinstance(err, ZeroDivisionError)
    assert run_bounded(lambda: 42, 5.0, name="t") == (True, 42, None)
