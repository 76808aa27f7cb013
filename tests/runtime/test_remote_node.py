"""Parts on other hosts: `rtvla node` processes on 127.0.0.1 feeding a stack through Zenoh."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zenoh")

from rtvla.channels import ZenohChannel
from rtvla.config import load_config, parse_config
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder, build_report
from rtvla.metrics.report import merge_remote
from rtvla.perception.detections import Detection, Detections
from rtvla.runtime.remote_parts import (
    RemoteCameraSource,
    RemoteLink,
    RemoteSettings,
    decode_detections,
    encode_detections,
)
from rtvla.timing import MONOTONIC

N = 300  # messages the publisher process sends

# A second process: frames (dicts holding arrays) and detections on two keys, as a node sends.
_PUBLISHER = """
import sys, time
import numpy as np
from rtvla.channels import ZenohChannel
from rtvla.perception.detections import Detection, Detections
from rtvla.runtime.remote_parts import encode_detections

port, n = sys.argv[1], int(sys.argv[2])
frames = ZenohChannel("rtvla/t/camera/head", connect=[f"tcp/127.0.0.1:{port}"])
dets = ZenohChannel("rtvla/t/detections", session=frames._session)
if not (frames.wait_matched(30) and dets.wait_matched(30)):
    sys.exit(3)
print("matched", flush=True)
for i in range(1, n + 1):
    img = np.full((240, 320, 3), i % 256, np.uint8)
    frames.publish({"image": img, "depth": np.full((240, 320), i, np.float32), "stamp_ns": i, "seq": i})
    d = Detections((Detection((1.0, 2.0, 3.0, 4.0), "red_cube", 0.9, 0, (0.1, 0.2, float(i))),), i, i,
                   0.004, (320, 240), (320, 240), "color")
    dets.publish(encode_detections(d, np.eye(4) * i, "head"))
    time.sleep(0.002)  # a camera's pace, faster than any reader needs
sys.stdin.read()
frames.close()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_frames_and_detections_cross_between_two_processes() -> None:
    port = _free_port()
    frames = ZenohChannel("rtvla/t/camera/head", listen=[f"tcp/127.0.0.1:{port}"])
    dets = ZenohChannel("rtvla/t/detections", session=frames._session)
    child = subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(port), str(N)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert child.stdout.readline().strip() == "matched"
        # Same assertions as the local channels: newest only, never back, all accounted for.
        last_i, seq = 0, 0
        while last_i < N:
            s = frames.wait_newer(seq, timeout=20.0)
            assert s is not None, f"frames stalled at {last_i}"
            v = s.value
            i = int(v["seq"])
            assert i > last_i and s.seq > seq
            assert v["image"].shape == (240, 320, 3) and v["image"].dtype == np.uint8
            assert int(v["image"][0, 0, 0]) == i % 256 and float(v["depth"][5, 5]) == i
            last_i, seq = i, s.seq
        assert frames.received + frames.missed == N
        s = dets.wait_newer(0, timeout=20.0)
        assert s is not None
        while s.value["frame_seq"] < N:
            s = dets.wait_newer(s.seq, timeout=20.0)
            assert s is not None
        got, pose = decode_detections(s.value, lambda t: t + 1000, frame_seq=7)
        assert got.frame_seq == 7 and got.frame_stamp_ns == N + 1000  # stamp moved to this clock
        assert got.items[0].label == "red_cube" and got.items[0].position == (0.1, 0.2, float(N))
        np.testing.assert_array_equal(pose, np.eye(4) * N)
        assert dets.wait_newer(s.seq, timeout=0.2) is None  # nothing newer: a timeout, not a backlog
    finally:
        child.stdin.close()
        child.wait(20)
        dets.close()
        frames.close()


def test_detections_payload_round_trip() -> None:
    d = Detections((Detection((1, 2, 3, 4), "blue_bin", 0.5, 2, None),), 3, 99, 0.01, (64, 48), (32, 24),
                   "color", stale=True)
    back, pose = decode_detections(encode_detections(d, None, "head"), lambda t: t)
    assert back == d and pose is None


@pytest.mark.parametrize(("table", "match"), [
    ({"perception": {"endpoint": "127.0.0.1:7447"}}, "must look like 'tcp/127.0.0.1:7447'"),
    ({"planner": {"endpoint": "tcp/127.0.0.1:7447"}}, "unknown remote part 'planner'"),
    ({"perception": {"endpoint": "tcp/a:1"}, "camera": {"endpoint": "tcp/a:2"}}, "cannot both be remote"),
    ({"mode": "router"}, "remote.mode"),
    ({"tls": {"cert": "x"}}, "unknown tls option"),
    ({"perception": {"critical": "maybe"}}, "remote.parts.perception.critical"),
    ({"perception": {"lost_timeout_s": 0}}, "lost_timeout_s"),
])
def test_bad_remote_tables_are_refused_naming_the_field(table, match) -> None:
    with pytest.raises(ConfigError, match=match):
        RemoteSettings.from_section(table)


def test_remote_settings_defaults() -> None:
    s = RemoteSettings.from_section({"perception": {"endpoint": "tcp/10.0.0.5:7447"}})
    assert s.parts["perception"].endpoint == ["tcp/10.0.0.5:7447"] and s.parts["perception"].critical
    assert s.mode == "peer" and not s.multicast_scouting and s.listen == []


def _start_node(part: str, config: Path, cwd: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "rtvla.cli", "node", part, "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=cwd)
    return proc


def _wait_up(proc: subprocess.Popen, timeout: float = 90.0) -> str:
    out: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            out.append(line)
            if "up on" in line:
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    assert any("up on" in line for line in out), f"node did not come up: {''.join(out)}"
    return "".join(out)


def test_remote_camera_node_delivers_frames_with_local_stamps_and_poses(tmp_path) -> None:
    port = _free_port()
    node_cfg = tmp_path / "node.toml"
    node_cfg.write_text(f'[remote]\nlisten = ["tcp/127.0.0.1:{port}"]\n')
    node = _start_node("camera", node_cfg, tmp_path)
    settings = RemoteSettings.from_section({"camera": {"endpoint": f"tcp/127.0.0.1:{port}",
                                                       "lost_timeout_s": 1.0, "stop_robot": True}})
    recorder = Recorder()
    failures: list[tuple[str, str]] = []
    changes: list[tuple[str, str]] = []
    link = RemoteLink(settings, recorder, robot="sim", on_critical_failure=lambda *a: failures.append(a),
                      on_change=lambda name, status, _msg: changes.append((name, status)))
    try:
        _wait_up(node)
        link.start()
        src = RemoteCameraSource(link, link.keys.camera("head"))
        src.open()
        end = time.monotonic() + 30
        frames = []
        while len(frames) < 5 and time.monotonic() < end:
            f = src.read()
            if f is not None and (not frames or f.seq != frames[-1].seq):
                frames.append(f)
            time.sleep(0.01)
        assert len(frames) >= 5, "no frames from the camera node"
        f = frames[-1]
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.depth is not None
        assert f.intrinsics is not None and f.intrinsics.width == f.image.shape[1]
        age = (MONOTONIC.now_ns() - f.stamp_ns) / 1e9
        assert -0.05 < age < 2.0  # on this host's clock, corrected by the measured offset
        assert [a.seq for a in frames] == sorted({a.seq for a in frames})
        assert src.pose(f.seq).shape == (4, 4)
        rep = link.report()["parts"]["camera"]
        assert rep["alive"] and rep["clock"]["uncertainty_ns"] >= abs(rep["clock"]["offset_ns"])
        node.send_signal(signal.SIGTERM)  # a clean exit within seconds, the stack sees it go
        assert node.wait(15) == 0
        end = time.monotonic() + 15
        while (link.alive("camera") or len(changes) < 2) and time.monotonic() < end:
            time.sleep(0.05)
        assert not link.alive("camera") and changes == [("camera", "running"), ("camera", "lost")]
        # A critical part that stays away longer than lost_timeout_s fails the run.
        while not failures and time.monotonic() < end:
            time.sleep(0.05)
        assert failures and failures[0][0] == "camera" and "lost for more than 1 s" in failures[0][1]
        kinds = [e.kind for e in recorder.events if e.component == "camera"]
        assert kinds == ["remote", "degraded", "failed"]
        assert src.read() is f  # the last frame, not a new one
    finally:
        link.stop()
        if node.poll() is None:
            node.kill()
            node.wait(10)


def test_remote_perception_node_feeds_the_default_task_through_a_kill_and_restart(tmp_path) -> None:
    from rtvla.runtime.main_job import RunOptions, run_task

    port = _free_port()
    node_cfg = tmp_path / "node.toml"
    node_cfg.write_text(f'[remote]\nlisten = ["tcp/127.0.0.1:{port}"]\n')
    stack_cfg = tmp_path / "stack.toml"
    # The perceive step waits for perception for up to 60 s (a restart on 2 busy cores).
    stack_cfg.write_text(f'[remote.perception]\nendpoint = "tcp/127.0.0.1:{port}"\nlost_timeout_s = 60\n'
                         '[executor.timeouts_s]\nperceive = 60\n')
    node = _start_node("perception", node_cfg, tmp_path)
    nodes = [node]
    stacks = []
    restarted = threading.Event()

    def chaos() -> None:
        """Once the stack uses the node: kill -9 it, see it lost, start it again."""
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if stacks and stacks[0].pipeline.received > 30:
                break
            time.sleep(0.05)
        else:
            return
        nodes[0].kill()
        nodes[0].wait(10)
        rec = stacks[0].recorder
        while time.monotonic() < end and not any(e.kind == "degraded" for e in rec.events):
            time.sleep(0.05)
        nodes.append(_start_node("perception", node_cfg, tmp_path))
        restarted.set()

    try:
        _wait_up(node)
        killer = threading.Thread(target=chaos, daemon=True)
        killer.start()
        cfg = load_config(stack_cfg, environ={}, search_cwd=False)
        out = tmp_path / "run"
        outcome = run_task(cfg, RunOptions(out_dir=out, dashboard=False, record=False), on_stack=stacks.append)
        assert restarted.is_set(), "the node was never killed"
        report = json.loads((out / "report.json").read_text())
        assert report["task"]["success"] is True, outcome.reason
        events = [(e["component"], e["kind"]) for e in report["degradations"]]
        assert ("perception", "degraded") in events and ("perception", "recovered") in events
        assert events.index(("perception", "degraded")) < events.index(("perception", "recovered"))
        remote = stacks[0].remote_report()
        part = remote["parts"]["perception"]
        assert part["lost"] == 1 and part["recovered"] == 1 and not part["failed"]
        sup = report["supervisor"]["perception"]  # its relay unit: lost, then running again
        assert sup["status"] == "stopped" and any("is gone" in f for f in sup["faults"])
        clock = part["clock"]
        assert abs(clock["offset_ns"]) <= clock["uncertainty_ns"] < 100_000_000  # one host: truth is 0
        row = report["components"]["perception"]
        assert row["count"] > 100 and "frame_age" in row["stages_ms"] and "transport" in row["stages_ms"]
        assert report["perception"]["remote"] is True
        # report.json itself: the remote section (offset and uncertainty) and the marked row.
        assert report["remote"]["parts"]["perception"]["clock"]["uncertainty_ns"] == clock["uncertainty_ns"]
        assert row["remote"]["host"] == part["host"] and row["remote"]["node"]["count"] > 0
        merged = merge_remote(build_report(stacks[0].recorder), remote)
        assert merged["components"]["perception"]["remote"]["host"] == part["host"]
        assert merged["components"]["perception"]["remote"]["node"]["count"] > 0
        print(f"loopback clock offset {clock['offset_ns'] / 1e3:+.1f} us +- {clock['uncertainty_ns'] / 1e3:.1f} us;"
              f" transport p50 {row['stages_ms']['transport']['p50']:.2f} ms, frame age p50 "
              f"{row['stages_ms']['frame_age']['p50']:.1f} ms")
        last = nodes[-1]
        last.send_signal(signal.SIGINT)
        assert last.wait(15) == 0
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_a_stack_without_its_remote_node_says_what_is_missing(tmp_path) -> None:
    from rtvla.runtime.main_job import EXIT_ERROR, RunOptions, run_task

    port = _free_port()
    cfg = parse_config({"remote": {"perception": {"endpoint": f"tcp/127.0.0.1:{port}"}},
                        "runtime": {"startup_timeout_s": 3}, "control": {"placement": "thread"}})
    outcome = run_task(cfg, RunOptions(out_dir=tmp_path / "run", dashboard=False, record=False))
    assert outcome.exit_code == EXIT_ERROR
    assert "rtvla node perception" in outcome.reason and str(port) in outcome.reason


def test_a_node_or_part_nobody_can_reach_is_refused() -> None:
    from rtvla.runtime.node import Node

    with pytest.raises(ConfigError, match=r"remote\.perception\.endpoint: give the node's endpoint"):
        RemoteSettings.from_section({"perception": {"critical": True}})
    with pytest.raises(ConfigError, match="nothing could reach it"):
        Node("perception", parse_config({}))
    with pytest.raises(ConfigError, match=r"unknown part 'planner'.*serve-policy"):
        Node("planner", parse_config({"remote": {"listen": ["tcp/127.0.0.1:7447"]}}))


def test_a_stack_on_a_remote_camera_stops_the_robot_when_a_stop_robot_part_is_lost(tmp_path) -> None:
    from rtvla.runtime.stack import Stack

    port = _free_port()
    node_cfg = tmp_path / "node.toml"
    node_cfg.write_text(f'[remote]\nlisten = ["tcp/127.0.0.1:{port}"]\n')
    node = _start_node("camera", node_cfg, tmp_path)
    cfg = parse_config({"remote": {"camera": {"endpoint": f"tcp/127.0.0.1:{port}", "stop_robot": True}},
                        "control": {"placement": "thread"}, "adapt": {"enabled": False}})
    try:
        _wait_up(node)
        stack = Stack.from_config(cfg)
        with stack:
            assert isinstance(stack.cameras[0].source, RemoteCameraSource)
            # The local pipeline runs on the node's frames (start waited for its first result).
            s = stack.pipeline.channel.wait_newer(0, timeout=30.0)
            assert s is not None and s.value.frame_seq >= 1
            node.kill()
            node.wait(10)
            end = time.monotonic() + 20
            rec = stack.recorder
            while time.monotonic() < end and not any(e.component == "control" and e.kind == "stop"
                                                     for e in rec.events):
                time.sleep(0.05)
            kinds = [(e.component, e.kind) for e in rec.events]
            assert ("camera", "degraded") in kinds and ("camera", "stop") in kinds
            assert ("control", "stop") in kinds  # latched: it holds until reset
            assert stack.supervisor.states()["control"].status == "running"
            assert stack.remote_report()["parts"]["camera"]["lost"] == 1
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(10)


def test_rtvla_node_refuses_a_config_nothing_could_reach(tmp_path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text("[remote]\nmode = \"peer\"\n")
    res = subprocess.run([sys.executable, "-m", "rtvla.cli", "node", "perception", "--config", str(cfg)],
                         capture_output=True, text=True, env=_env(), timeout=120, cwd=tmp_path)
    assert res.returncode == 2
    assert "nothing could reach it" in res.stdout + res.stderr
