"""RunRecord writes a run.mcap that the mcap reader reads back, on every way out."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest
from mcap.reader import make_reader

from rtvla.errors import RecordError
from rtvla.metrics import Recorder
from rtvla.record import RecordSettings, RunRecord, summarize_mcap
from rtvla.record.channels import pose_parts
from rtvla.timing import FakeClock

_INTR = NS(fx=200.0, fy=200.0, cx=159.5, cy=119.5, width=320, height=240)


def _image(i: int) -> np.ndarray:
    img = np.zeros((240, 320, 3), np.uint8)
    img[:, : 10 + i] = (200, 30, 30)
    return img


def _messages(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with path.open("rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            out.setdefault(channel.topic, []).append((schema, message))
    return out


def test_every_kind_of_message_reads_back(tmp_path: Path) -> None:
    clock = FakeClock(5_000_000_000)
    rec = Recorder(clock=clock)
    for _ in range(20):
        rec.latency("control", 0.001)
        rec.count("control")
    rec.latency("control", 0.5)  # a violation
    rec.event("llm", "degraded", "timeout after 5 s; fallback answered")
    path = tmp_path / "run.mcap"
    record = RunRecord(path, recorder=rec, clock=clock, metadata={"task": "pick"},
                       settings=RecordSettings(camera_hz=10, depth_hz=5))
    state = NS(stamp_ns=0, q=np.zeros(5), dq=np.zeros(5), effort=np.zeros(5),
               base_pose=np.array([1.0, 2.0, 0.5]), gripper=0.0)
    for i in range(20):  # 2 s at 10 Hz: every frame is due
        t = clock.advance(0.1)
        assert record.log_image("head", _image(i), t, depth=np.full((240, 320), 1.5, np.float32),
                                intrinsics=_INTR)
        assert not record.log_image("head", _image(i), t + 1_000_000)  # 1 ms later: skipped
        det = NS(box=(10, 20, 50, 60), label="red_cube", score=0.9, position=(0.1, 0.0, 1.2))
        record.log_detections("head", NS(items=(det,), frame_stamp_ns=t))
        record.log_robot_state(NS(**{**vars(state), "stamp_ns": t}), ["a", "b", "c", "d", "e"])
        record.log_control(0.00004, 0.0003, tick=i, stamp_ns=t)
    record.log_transforms([("base", "camera/head", np.eye(4)), ("base", "hand", ((0, 0, 1), (1, 0, 0, 0)))])
    record.log_path(np.array([[0.0, 0.0], [1.0, 0.5], [2.0, 1.0]]))
    record.log_goal((2.0, 1.0, 0.0))
    record.log_plan("put the red cube in the blue bin",
                    [{"type": "navigate", "parameters": {"target": "table"}}], source="rules")
    record.log_step(NS(index=0, count=1, name="navigate(table)", status=NS(value="failed"),
                       phase="driving", reason="blocked"))
    stats = record.close()
    assert record.close() == stats or record.closed  # idempotent
    assert stats["dropped_queue"] == 0 and stats["errors"] == 0 and stats["skipped_rate"] == 20

    msgs = _messages(path)
    assert len(msgs["/camera/head/image"]) == 20
    schema, m = msgs["/camera/head/image"][0]
    assert schema.name == "foxglove.CompressedImage" and schema.encoding == "protobuf"
    assert m.log_time == 5_100_000_000  # the record's clock, not wall time
    assert 0 < len(msgs["/camera/head/depth"]) <= 11  # at depth_hz
    assert [s.name for s, _ in msgs["/camera/head/calibration"]] == ["foxglove.CameraCalibration"]
    assert msgs["/camera/head/annotations"][0][0].name == "foxglove.ImageAnnotations"
    assert msgs["/detections"][0][0].name == "foxglove.SceneUpdate"
    assert msgs["/tf"][0][0].name == "foxglove.FrameTransforms" and len(msgs["/tf"]) == 21
    assert msgs["/joint_states"][0][0].name == "foxglove.JointStates"
    assert msgs["/navigation/path"][0][0].name == "foxglove.PosesInFrame"
    assert msgs["/navigation/goal"][0][0].name == "foxglove.PoseInFrame"
    control = [json.loads(m.data) for _, m in msgs["/control/timing"]]
    assert len(control) == 20 and control[3]["tick"] == 3 and control[0]["lateness_us"] == pytest.approx(40)
    plan_schema, plan = msgs["/plan"][0]
    assert plan_schema.name == "rtvla.Plan" and plan_schema.encoding == "jsonschema"
    assert json.loads(plan.data)["steps"][0]["type"] == "navigate"
    assert json.loads(msgs["/plan/step"][0][1].data)["status"] == "failed"
    timing = [json.loads(m.data) for _, m in msgs["/timing/control"]]
    assert timing[-1]["count"] == 20 and timing[-1]["budget_latency_ms"] == 10
    assert msgs["/log"][0][0].name == "foxglove.Log"
    assert len(msgs["/log"]) >= 3  # step failure, the recorder's event and its violation

    info = summarize_mcap(tmp_path)  # a run folder works too
    assert info["indexed"] and info["message_count"] == sum(len(v) for v in msgs.values())
    topics = {c["topic"]: c for c in info["channels"]}
    assert topics["/camera/head/image"]["messages"] == 20
    assert topics["/plan"]["schema"] == "rtvla.Plan"
    assert info["start_ns"] <= 5_100_000_000 and info["duration_s"] >= 1.9
    assert info["metadata"]["rtvla.run"] == {"task": "pick"}
    assert int(info["metadata"]["rtvla.clock"]["wall_offset_ns"]) == info["wall_offset_ns"]
    assert info["metadata"]["rtvla.record"]["dropped_queue"] == "0"


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    record = RunRecord(tmp_path / "run.mcap", settings=RecordSettings(queue_size=16, camera_hz=120))
    try:
        big = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        t = 0
        accepted = 0
        for _ in range(400):  # JPEG of noise takes ms; queuing takes microseconds
            t += 10_000_000
            accepted += record.log_image("head", big, t)
        assert record.dropped_queue > 0 and accepted + record.dropped_queue == 400
    finally:
        stats = record.close()
    assert stats["counts"]["/camera/head/image"] == accepted  # whatever was queued is written
    assert summarize_mcap(tmp_path / "run.mcap")["indexed"]


def test_camera_images_stop_at_the_size_bound(tmp_path: Path) -> None:
    record = RunRecord(tmp_path / "run.mcap", settings=RecordSettings(max_mb=0.05, camera_hz=120,
                                                                      queue_size=100_000))
    noise = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    for i in range(300):
        record.log_image("head", noise, (i + 1) * 10_000_000)
        record.log_control(0.0001, stamp_ns=(i + 1) * 10_000_000)
    stats = record.close()
    assert stats["dropped_size"] > 0
    assert stats["counts"]["/control/timing"] == 300  # small messages keep going
    assert stats["bytes"] < 3e6


def test_the_file_is_finished_when_the_process_dies_of_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "run.mcap"
    script = textwrap.dedent(f"""
        import numpy as np
        from rtvla.record import RunRecord
        record = RunRecord({str(path)!r})
        for i in range(50):
            record.log_control(0.0001, tick=i, stamp_ns=(i + 1) * 10_000_000)
        record.log_image("head", np.zeros((48, 64, 3), np.uint8), 1)
        raise RuntimeError("the stack crashed")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "the stack crashed" in out.stderr
    info = summarize_mcap(path)
    assert info["indexed"]
    counts = {c["topic"]: c["messages"] for c in info["channels"]}
    assert counts["/control/timing"] == 50 and counts["/camera/head/image"] == 1


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=r"exists|cannot create"):
        (tmp_path / "run.mcap").write_bytes(b"x")
        RunRecord(tmp_path / "run.mcap")
    with pytest.raises(RecordError, match="not a readable MCAP"):
        summarize_mcap(tmp_path / "run.mcap")
    with pytest.raises(RecordError, match="no MCAP file"):
        summarize_mcap(tmp_path / "missing.mcap")
    with RunRecord(tmp_path / "ok.mcap") as record, pytest.raises(RecordError, match="unknown JSON schema"):
        record.log_json("/x", "nope", {})
    with pytest.raises(ValueError, match="4x4"):
        pose_parts(np.zeros(5))


def test_pose_parts_reads_matrices_and_wxyz_pairs() -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = (1, 2, 3)
    xyz, q = pose_parts(m)
    assert np.allclose(xyz, (1, 2, 3)) and np.allclose(q, (np.cos(0.15), 0, 0, np.sin(0.15)))
    _, q2 = pose_parts(((1, 2, 3), (2, 0, 0, 0)))
    assert np.allclose(q2, (1, 0, 0, 0))


def test_a_killed_writer_leaves_every_finished_chunk_readable(tmp_path: Path) -> None:
    import signal

    path = tmp_path / "run.mcap"
    script = textwrap.dedent(f"""
        import sys
        import threading
        import numpy as np
        from rtvla.record import RecordSettings, RunRecord
        record = RunRecord({str(path)!r}, settings=RecordSettings(camera_hz=120, queue_size=100000))
        noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        for i in range(120):
            record.log_image("head", noise, (i + 1) * 10_000_000)
        while record.counts.get("/camera/head/image", 0) < 120:
            threading.Event().wait(0.01)
        print("written", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    info = summarize_mcap(path)
    assert not info["indexed"]
    assert info["message_count"] > 0  # the chunks finished before the kill
    assert info["metadata"]["rtvla.clock"]["time_unit"] == "ns"
