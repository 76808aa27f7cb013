"""Fixtures for the policy tests: a tiny real ONNX policy and robot limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtvla.robots.base import RobotLimits, RobotState
from rtvla.testing.policy_server import build_linear_policy


@pytest.fixture(scope="session")
def linear_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """state [8] + image 64x64x3 -> [10, 7] chunk, metadata declares LIBERO-style keys."""
    return build_linear_policy(tmp_path_factory.mktemp("onnx") / "linear.onnx", state_dim=8, horizon=10,
                               action_dim=7, image=(64, 64), rate_hz=10.0)


@pytest.fixture
def linear_obs() -> dict:
    rng = np.random.default_rng(1)
    return {"observation/state": rng.standard_normal(8).astype(np.float32),
            "observation/image": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
            "prompt": "pick up the red cube"}


def arm_limits(dof: int = 6) -> RobotLimits:
    return RobotLimits(
        joint_names=tuple(f"j{i}" for i in range(dof)),
        q_min=np.full(dof, -2.0), q_max=np.full(dof, 2.0), dq_max=np.full(dof, 1.5),
        ddq_max=np.full(dof, 5.0), jerk_max=np.full(dof, 50.0))


def arm_state(dof: int = 6, q: float = 0.1, gripper: float = 0.25) -> RobotState:
    return RobotState(stamp_ns=0, q=np.full(dof, q), dq=np.zeros(dof), effort=np.zeros(dof),
                      base_pose=np.array([1.0, 2.0, 0.5]), gripper=gripper)
