from __future__ import annotations

import numpy as np
import pytest

from rtvla.errors import ConfigError
from rtvla.robots.sim.settings import build_sim_camera, build_sim_robot, parse_sim_settings


def test_defaults_build_a_realtime_robot_and_a_vga_camera() -> None:
    s = parse_sim_settings({})
    assert s.kind == "sim" and not s.lockstep and s.camera.width == 640 and s.camera.rate_hz == 30
    robot = build_sim_robot(s)
    assert not robot.lockstep
    np.testing.assert_allclose(robot.limits.dq_max, robot.scene.robot.dq_max)


def test_overrides_reach_the_limits_and_camera() -> None:
    s = parse_sim_settings(
        {
            "lockstep": True,
            "dq_max": [1, 1, 1, 1, 1],
            "base_lin_vel_max": 0.3,
            "camera": {"width": 160, "height": 120, "depth": False, "threaded": False},
        }
    )
    robot = build_sim_robot(s)
    assert robot.lockstep
    np.testing.assert_allclose(robot.limits.dq_max, 1.0)
    assert robot.limits.base_lin_vel_max == 0.3
    with robot, build_sim_camera(robot, s) as cam:
        frame = cam.read()
        assert frame.image.shape == (120, 160, 3) and frame.depth is None


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"realtime_factor": 0}, r"robot\.realtime_factor"),
        ({"camera": {"width": -1}}, r"robot\.camera\.width"),
        ({"colour": "red"}, r"robot\.colour: unknown key"),
        ({"kind": "ur5"}, r"robot\.kind"),
    ],
)
def test_bad_settings_name_the_field(raw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_sim_settings(raw)


def test_limit_override_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ConfigError, match="dq_max needs 5 entries"):
        build_sim_robot(parse_sim_settings({"dq_max": [1, 2]}))
