from __future__ import annotations

import numpy as np
import pytest

from rtvla.errors import CommandRejected, ConfigError
from rtvla.policy import ActionMapping
from rtvla.robots.base import CommandMode

from .conftest import arm_limits, arm_state


def test_absolute_joints_and_gripper():
    m = ActionMapping.joint_positions(gripper=True, dof=6)
    chunk = np.tile(np.r_[np.linspace(-1, 1, 6), 1.0], (4, 1))
    d = m.decode(chunk, arm_state(), arm_limits())
    cmd = d.command(2, stamp_ns=123)
    assert cmd.mode is CommandMode.POSITION and cmd.stamp_ns == 123
    np.testing.assert_allclose(cmd.arm, np.linspace(-1, 1, 6))
    assert cmd.gripper == 1.0 and cmd.base_vel is None


def test_deltas_are_relative_to_the_observation_state():
    m = ActionMapping.from_table({"slice": [{"kind": "joint_delta", "start": 0}]})
    d = m.decode(np.full((3, 6), 0.05), arm_state(q=0.1), arm_limits())
    np.testing.assert_allclose(d.arm, 0.15)


def test_velocity_gripper_range_and_base():
    m = ActionMapping.from_table({"slice": [
        {"kind": "joint_velocity", "start": 0},
        {"kind": "gripper", "start": 6, "low": -1.0, "high": 1.0, "threshold": 0.5},
        {"kind": "base_velocity", "start": 7}]})
    chunk = np.array([[0.5] * 6 + [0.6, 0.1, 0.0, 0.2], [0.0] * 6 + [-0.8, 0.0, 0.0, 0.0]])
    d = m.decode(chunk, arm_state(), arm_limits())
    assert d.mode is CommandMode.VELOCITY
    assert d.gripper.tolist() == [1.0, 0.0]  # (0.6+1)/2 = 0.8 > 0.5; (-0.8+1)/2 = 0.1
    np.testing.assert_allclose(d.command(0, 0).base_vel, [0.1, 0.0, 0.2])


@pytest.mark.parametrize("row, match", [
    ([2.5, 0, 0, 0, 0, 0, 0.0], r"action 1 of the chunk: command.arm\[j0\] = 2.5000 outside"),
    ([np.nan, 0, 0, 0, 0, 0, 0.0], "action 1 of the chunk: command.arm is not finite"),
    ([0, 0, 0, 0, 0, 0, 1.5], r"action 1 of the chunk: command.gripper must be in \[0, 1\]"),
])
def test_out_of_limit_actions_rejected(row, match):
    m = ActionMapping.joint_positions(gripper=True, dof=6)
    chunk = np.array([[0.0] * 7, row, [0.0] * 7])
    with pytest.raises(CommandRejected, match=match):
        m.decode(chunk, arm_state(), arm_limits())


def test_velocity_and_base_limits():
    m = ActionMapping.from_table({"slice": [{"kind": "joint_velocity", "start": 0},
                                            {"kind": "base_velocity", "start": 6}]})
    with pytest.raises(CommandRejected, match=r"velocity\[j3\] = 3.0000 exceeds 1.5000"):
        m.decode(np.array([[0, 0, 0, 3.0, 0, 0, 0, 0, 0]]), arm_state(), arm_limits())
    with pytest.raises(CommandRejected, match="base_vel linear"):
        m.decode(np.array([[0] * 6 + [0.9, 0, 0]]), arm_state(), arm_limits())


def test_mapping_errors():
    with pytest.raises(ConfigError, match="at most one arm slice"):
        ActionMapping.from_table({"slice": [{"kind": "joint_position", "start": 0},
                                            {"kind": "joint_delta", "start": 6}]})
    m = ActionMapping.joint_positions(gripper=True, dof=6)
    with pytest.raises(ConfigError, match="the slices read 7 dimensions, the policy has action_dim 6"):
        m.decode(np.zeros((2, 6)), arm_state(), arm_limits())
    overlap = ActionMapping.from_table({"slice": [{"kind": "joint_position", "start": 0},
                                                  {"kind": "gripper", "start": 5}]})
    with pytest.raises(ConfigError, match="dimension 5 is both joint_position and gripper"):
        overlap.check(7, 6)
    with pytest.raises(ConfigError, match=r"policy.action.slice.0.kind"):
        ActionMapping.from_table({"slice": [{"kind": "torque", "start": 0}]})
