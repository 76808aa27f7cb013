from __future__ import annotations

import json

import numpy as np
import pytest

from rtvla.errors import ConfigError, PolicyError, PolicyOutputError
from rtvla.policy import OnnxPolicy, check_output, default_providers, infer_chunk
from rtvla.testing.policy_server import build_linear_policy


def _reference(path, obs):
    """The linear map computed with numpy from the model's own weights."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    w = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    flat = obs["observation/state"].astype(np.float32) @ w["W"] + w["B"]
    if "C" in w:
        flat = flat + obs["observation/image"].astype(np.float32).mean() * w["C"][0]
    return flat.reshape(10, 7)


def test_metadata_from_model_props(linear_onnx):
    p = OnnxPolicy(linear_onnx)
    m = p.metadata
    assert (m.name, m.action_dim, m.horizon, m.rate_hz) == ("linear", 7, 10, 10.0)
    specs = {s.text: (s.shape, s.dtype) for s in m.observation}
    assert specs == {"observation/state": ((8,), "float32"), "observation/image": ((64, 64, 3), "uint8")}
    assert p.providers == default_providers() and "CPUExecutionProvider" in p.providers


def test_infer_matches_the_linear_map(linear_onnx, linear_obs):
    p = OnnxPolicy(linear_onnx)
    out = p.infer(linear_obs)
    assert out["actions"].shape == (10, 7) and out["actions"].dtype == np.float32
    np.testing.assert_allclose(out["actions"], _reference(linear_onnx, linear_obs), rtol=1e-5, atol=1e-6)
    assert out["policy_timing"]["infer_ms"] > 0
    chunk = infer_chunk(p, linear_obs)
    assert chunk.actions.dtype == np.float64 and chunk.round_trip_s > 0
    assert set(chunk.info) == {"policy_timing"}


def test_options_override_metadata(linear_onnx, linear_obs):
    p = OnnxPolicy(linear_onnx, rate_hz=50.0, inputs={"state": ["obs", "state"]})
    assert p.metadata.rate_hz == 50.0
    obs = {"obs": {"state": linear_obs["observation/state"]}, "observation/image": linear_obs["observation/image"]}
    assert p.infer(obs)["actions"].shape == (10, 7)
    wrong = OnnxPolicy(linear_onnx, horizon=12)
    with pytest.raises(PolicyOutputError, match="expected horizon 12"):
        check_output(wrong.infer(linear_obs), wrong.metadata)


def test_missing_and_misshapen_inputs(linear_onnx, linear_obs):
    p = OnnxPolicy(linear_onnx)
    with pytest.raises(PolicyError, match=r"no 'observation/image' \(input 'image'\)"):
        p.infer({"observation/state": linear_obs["observation/state"]})
    with pytest.raises(PolicyError, match=r"shape \(5,\); input 'state' takes \[1, 8\]"):
        p.infer({**linear_obs, "observation/state": np.zeros(5, np.float32)})
    with pytest.raises(PolicyError, match="dtype <U"):
        p.infer({**linear_obs, "observation/state": np.array(["a"] * 8)})


def test_bad_files_and_options(tmp_path, linear_onnx):
    with pytest.raises(ConfigError, match="ONNX file not found"):
        OnnxPolicy(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(PolicyError, match="cannot load ONNX policy"):
        OnnxPolicy(junk)
    with pytest.raises(ConfigError, match="no input 'nope'"):
        OnnxPolicy(linear_onnx, inputs={"nope": "x"})
    with pytest.raises(PolicyError, match="no output 'other'"):
        OnnxPolicy(linear_onnx, output="other")


def test_metadata_tables_and_capabilities(tmp_path):
    path = build_linear_policy(tmp_path / "m.onnx", image=None, rate_hz=None, metadata={
        "rtvla.capabilities": json.dumps(["real_time_chunking"]),
        "rtvla.observation": "libero",
        "rtvla.action": json.dumps({"slice": [{"kind": "joint_position", "start": 0, "size": 6},
                                              {"kind": "gripper", "start": 6}]}),
        "rtvla.horizon": "10"})
    m = OnnxPolicy(path).metadata
    assert m.real_time_chunking and m.rate_hz is None
    assert m.observation_mapping == {"preset": "libero"}
    assert m.action_mapping["slice"][1]["kind"] == "gripper"
    bad = build_linear_policy(tmp_path / "bad.onnx", metadata={"rtvla.horizon": "ten"})
    with pytest.raises(PolicyError, match=r"rtvla.horizon must be a int, got 'ten'"):
        OnnxPolicy(bad)
