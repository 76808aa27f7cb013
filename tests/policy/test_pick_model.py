"""The shipped pick model: loads, documents itself, and onnxruntime equals the numpy twin."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from rtvla.errors import PolicyError
from rtvla.policy.pick.model import (
    ACTION_DIM,
    INPUT_NAMES,
    MODEL_FORMAT,
    OnnxPickModel,
    PickNet,
    read_metadata,
)
from rtvla.policy.pick.skill import builtin_model_path

MODEL = builtin_model_path("pick")


def _observations(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = np.array([0.0, -0.4, 2.6, 1.2, 0.0]) + rng.uniform(-0.8, 0.8, (n, 5))
    onehot = np.eye(3, dtype=np.float32)[rng.integers(3, size=n)]
    return {
        INPUT_NAMES[0]: q.astype(np.float32),
        INPUT_NAMES[1]: rng.uniform(0, 1, (n, 1)).astype(np.float32),
        INPUT_NAMES[2]: np.c_[rng.uniform(0.3, 0.8, n), rng.uniform(-0.4, 0.4, n),
                              np.full(n, 0.48)].astype(np.float32),
        INPUT_NAMES[3]: onehot,
    }


def test_shipped_model_is_small_and_documents_itself() -> None:
    assert MODEL.is_file(), f"{MODEL} is not shipped"
    assert MODEL.stat().st_size < 5 * 1024 * 1024
    meta = read_metadata(MODEL)
    assert meta["format"] == MODEL_FORMAT
    assert meta["action_dim"] == ACTION_DIM == 6
    assert meta["horizon"] >= 1 and meta["rate_hz"] == 10.0
    assert tuple(meta["input_names"]) == INPUT_NAMES
    assert meta["input_dims"] == [5, 1, 3, 3]
    assert meta["object_names"] == ["blue_cube", "green_cube", "red_cube"]
    assert meta["action_layout"][-1] == "gripper" and len(meta["action_layout"]) == 6
    assert len(meta["carry_q"]) == 5 and meta["frame"] == "base"
    # what rtvla.policy.OnnxPolicy reads
    assert meta["rtvla.horizon"] == str(meta["horizon"]) and meta["rtvla.output"] == "actions"
    assert json.loads(meta["rtvla.action"])["slice"][1] == {"kind": "gripper", "start": 5, "threshold": 0.5}


def test_onnxruntime_equals_the_numpy_forward_pass() -> None:
    net = PickNet.from_onnx(MODEL)
    model = OnnxPickModel(MODEL)
    obs = _observations(64)
    ort_out = model.infer(obs)["actions"]
    np_out = net.forward(obs)
    assert ort_out.shape == (64, net.horizon, ACTION_DIM) and ort_out.dtype == np.float32
    np.testing.assert_allclose(ort_out, np_out, atol=1e-4, rtol=0)
    # one observation without a batch axis gives one chunk without one
    single = {k: v[0] for k, v in obs.items()}
    np.testing.assert_allclose(model.infer(single)["actions"], ort_out[0], atol=1e-6)


def test_actions_are_finite_and_within_the_joint_limits() -> None:
    net = PickNet.from_onnx(MODEL)
    obs = _observations(256, seed=1)
    obs[INPUT_NAMES[0]][:8] = 10.0  # far outside the joint range: still clipped into it
    out = OnnxPickModel(MODEL).infer(obs)["actions"]
    assert np.all(np.isfinite(out))
    arm, grip = out[..., :5], out[..., 5]
    assert np.all(arm >= net.q_min - 1e-6) and np.all(arm <= net.q_max + 1e-6)
    assert np.all((grip >= 0.0) & (grip <= 1.0))


def test_bad_observations_and_files_are_refused(tmp_path) -> None:
    model = OnnxPickModel(MODEL)
    obs = _observations(1)
    with pytest.raises(PolicyError, match="object_onehot"):
        model.infer({k: v for k, v in obs.items() if k != INPUT_NAMES[3]})
    with pytest.raises(PolicyError, match="target_position must have 3"):
        model.infer({**obs, INPUT_NAMES[2]: np.zeros((1, 2), np.float32)})
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(PolicyError, match=r"junk\.onnx"):
        read_metadata(junk)


def test_numpy_net_round_trips_through_onnx(tmp_path) -> None:
    """A freshly built net exports, reloads and runs identically (the export path itself)."""
    rng = np.random.default_rng(3)
    sizes = [12, 16, 6 * 4]
    layers = [(rng.standard_normal((a, b)).astype(np.float32) * 0.3, rng.standard_normal(b).astype(np.float32))
              for a, b in itertools.pairwise(sizes)]
    net = PickNet(layers=layers, in_mean=rng.standard_normal(12).astype(np.float32),
                  in_std=rng.uniform(0.5, 2, 12).astype(np.float32),
                  out_mean=rng.standard_normal(24).astype(np.float32) * 0.1,
                  out_std=rng.uniform(0.1, 1, 24).astype(np.float32), horizon=4,
                  q_min=np.full(5, -2.0, np.float32), q_max=np.full(5, 2.0, np.float32),
                  joint_names=list("abcde"), object_names=["x", "y", "z"], carry_q=[0.0] * 5)
    path = net.save_onnx(tmp_path / "tiny.onnx")
    again = PickNet.from_onnx(path)
    obs = _observations(10)
    np.testing.assert_allclose(OnnxPickModel(path).infer(obs)["actions"], net.forward(obs), atol=1e-5)
    np.testing.assert_array_equal(again.forward(obs), net.forward(obs))
