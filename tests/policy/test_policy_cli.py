"""``rtvla policy info`` and ``rtvla serve-policy`` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from typer.testing import CliRunner

from rtvla.cli.main import app
from rtvla.policy import OnnxPolicy, PolicyServer, WebsocketPolicy
from rtvla.testing.policy_server import Behaviour, ScriptedPolicyServer, build_linear_policy

runner = CliRunner()


def test_info_onnx_file_json(linear_onnx, tmp_path):
    out = tmp_path / "info.json"
    res = runner.invoke(app, ["policy", "info", str(linear_onnx), "--json", str(out), "--prompt", "pick"])
    assert res.exit_code == 0, res.output
    assert "actions valid" in res.output and "(10, 7)" in res.output
    info = json.loads(out.read_text())
    assert info["kind"] == "onnx" and info["valid"] is True
    assert info["metadata"]["horizon"] == 10 and info["metadata"]["action_dim"] == 7
    assert info["actions"] == {**info["actions"], "shape": [10, 7], "dtype": "float32", "finite": True}
    assert info["observation"]["observation/image"] == {"shape": [64, 64, 3], "dtype": "uint8"}
    assert info["observation_issues"] == [] and info["policy_timing"]["infer_ms"] > 0


def test_info_with_a_preset_reports_mismatches(linear_onnx):
    res = runner.invoke(app, ["policy", "info", str(linear_onnx), "--preset", "libero", "--json", "-"])
    # LIBERO's image is 224x224; this model takes 64x64: the inference itself fails, clearly.
    assert res.exit_code == 2
    assert "observation/image" in res.output and "takes [1, 64, 64, 3]" in res.output


def test_info_ws_server_json_stdout(linear_onnx):
    with PolicyServer(OnnxPolicy(linear_onnx), delay_s=0.02) as srv:
        res = runner.invoke(app, ["policy", "info", srv.url, "--json", "-", "-o", "timeout_s=5"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["kind"] == "websocket" and info["valid"]
    assert info["actions"]["shape"] == [10, 7] and info["actions"]["finite"]
    assert info["server_timing"]["delay_ms"] == pytest.approx(20.0) and info["round_trip_ms"] >= 20.0


def test_info_ws_openpi_style_server_needs_a_preset(tmp_path):
    """An openpi server's metadata declares no keys: a preset supplies the layout."""
    path = build_linear_policy(tmp_path / "droidish.onnx", state_dim=7, image=None,
                               state_key="observation/joint_position")
    with PolicyServer(OnnxPolicy(path), metadata={"reset_pose": [0, -1.5, 1.5, 0, 0, 0]}) as srv:
        res = runner.invoke(app, ["policy", "info", srv.url])
        assert res.exit_code == 2 and "--preset" in res.output
        res = runner.invoke(app, ["policy", "info", srv.url, "--preset", "droid", "--json", "-"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["metadata"]["extra"] == {"reset_pose": [0, -1.5, 1.5, 0, 0, 0]}
    assert info["metadata"]["horizon"] == 10  # learned from the first chunk
    assert set(info["observation"]) >= {"observation/joint_position", "observation/wrist_image_left", "prompt"}


def test_info_rejected_actions_exit_1(linear_onnx):
    with ScriptedPolicyServer(OnnxPolicy(linear_onnx), default=Behaviour.nan()) as srv:
        res = runner.invoke(app, ["policy", "info", srv.url, "--json", "-"])
    assert res.exit_code == 1
    info = json.loads(res.output)
    assert info["valid"] is False and "not finite" in info["error"] and info["actions"]["finite"] is False


def test_info_in_its_own_process(linear_onnx):
    res = runner.invoke(app, ["policy", "info", str(linear_onnx), "--process", "--json", "-"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["kind"] == "onnx (own process)"


def test_info_errors():
    res = runner.invoke(app, ["policy", "info", "ws://127.0.0.1:9", "-o", "connect_timeout_s=0.5"])
    assert res.exit_code == 2 and "cannot connect" in res.output
    res = runner.invoke(app, ["policy", "info", "builtin:does-not-exist"])
    assert res.exit_code == 2 and "unknown built-in policy" in res.output
    res = runner.invoke(app, ["policy", "info", "x.onnx", "-o", "novalue"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_policy_subprocess(linear_onnx, stop_signal):
    env = {**os.environ, "RTVLA_TEST_SERVE_KEY": "k3y"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtvla.cli", "serve-policy", str(linear_onnx), "--port", "0",
         "--delay-ms", "30", "--api-key-env", "RTVLA_TEST_SERVE_KEY"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"on (ws://127\.0\.0\.1:(\d+))", line)
        assert m, line + proc.stderr.read()
        url, port = m.group(1), int(m.group(2))
        assert "k3y" not in line  # the key itself is never printed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.read() == b"OK\n"
        os.environ["RTVLA_TEST_SERVE_KEY"] = "k3y"
        try:
            with WebsocketPolicy(url, api_key_env="RTVLA_TEST_SERVE_KEY") as client:
                import numpy as np

                out = client.infer({"observation/state": np.zeros(8, np.float32),
                                    "observation/image": np.zeros((64, 64, 3), np.uint8)})
        finally:
            del os.environ["RTVLA_TEST_SERVE_KEY"]
        assert out["actions"].shape == (10, 7) and out["server_timing"]["delay_ms"] == pytest.approx(30.0)
        res = runner.invoke(app, ["policy", "info", url])
        assert res.exit_code == 2 and "HTTP 401" in res.output
    finally:
        proc.send_signal(stop_signal)
        try:
            rc = proc.wait(timeout=10)
        finally:
            proc.kill()
    assert rc == 0 and "stopped" in proc.stdout.read()


def test_serve_policy_refuses_bad_sources():
    res = runner.invoke(app, ["serve-policy", "ws://127.0.0.1:9"])
    assert res.exit_code == 2 and "not another server" in res.output
    res = runner.invoke(app, ["serve-policy", "builtin:x", "--api-key-env", "RTVLA_TEST_UNSET"])
    assert res.exit_code == 2 and "RTVLA_TEST_UNSET" in res.output
