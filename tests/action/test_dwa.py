from __future__ import annotations

import time

import numpy as np
import pytest

from rtvla.action.dwa import DWAConfig, DWAPlanner, path_lookahead, rollout
from rtvla.action.grid import GridMap, plan_path
from rtvla.errors import ConfigError


def _drive(gm: GridMap, base, goal, *, path=None, ticks: int = 400, goal_yaw=None):
    dwa = DWAPlanner(DWAConfig(max_speed=0.5))
    if path is None:
        path = plan_path(gm, base.pose[:2], goal)
    vel = np.zeros(3)
    min_clear = np.inf
    for _ in range(ticks):
        out = dwa.plan(pose=base.pose, vel=vel, path=path, grid=gm, goal_yaw=goal_yaw)
        assert out.ok, "DWA found no collision-free trajectory"
        vel = out.velocity
        base.apply(vel, 0.1)
        min_clear = min(min_clear, float(gm.clearance(base.pose[None, :2])[0]))
        if np.linalg.norm(base.pose[:2] - goal) < 0.08:
            break
    return min_clear


def test_dwa_reaches_a_goal_around_an_obstacle(wall_map: GridMap, kinematic_base) -> None:
    base = kinematic_base((-2.0, -2.0, 0.0))
    goal = np.array([2.0, -2.0])
    min_clear = _drive(wall_map, base, goal)
    assert np.linalg.norm(base.pose[:2] - goal) < 0.08
    assert min_clear > 0.0  # never entered the (inflated) obstacle


def test_dwa_avoids_an_obstacle_the_path_ignores(make_room, kinematic_base) -> None:
    # A straight global path clipping a box's corner (an obstacle the global map did not
    # have): DWA must steer around it on its own.
    gm = make_room(gap_y=None)
    occ = np.zeros_like(gm.occupied)
    occ[:2, :] = occ[-2:, :] = occ[:, :2] = occ[:, -2:] = True
    r, c = gm.world_to_cell(0.0, 0.25)
    occ[r - 6 : r + 6, c - 6 : c + 6] = True  # 0.6 m box over y in [-0.05, 0.55]
    gm = GridMap.from_array(occ, origin_xy=gm.origin_xy, resolution=gm.resolution)
    base = kinematic_base((-1.5, 0.0, 0.0))
    goal = np.array([1.5, 0.0])
    min_clear = _drive(gm, base, goal, path=np.array([[-1.5, 0.0], [1.5, 0.0]]))
    assert np.linalg.norm(base.pose[:2] - goal) < 0.08
    assert min_clear > 0.0


def test_velocity_stays_in_the_dynamic_window(wall_map: GridMap) -> None:
    cfg = DWAConfig(max_speed=0.5, max_accel=1.0, period_s=0.1)
    dwa = DWAPlanner(cfg)
    out = dwa.plan(pose=(-2.0, -2.0, 0.0), vel=(0.0, 0.0, 0.0),
                   path=np.array([[-2.0, -2.0], [-1.0, -2.0]]), grid=wall_map)
    assert out.ok
    assert np.all(np.abs(out.velocity[:2]) <= 0.1 + 1e-9)
    assert out.velocity[0] > 0.05  # heads toward the path's end
    lo, hi = dwa.window(np.array([0.5, 0.0, 0.0]), max_speed=0.2)
    assert hi[0] == pytest.approx(0.2) and lo[0] == pytest.approx(0.1)


def test_no_valid_trajectory_brakes(make_room) -> None:
    gm = make_room()
    dwa = DWAPlanner()
    # Facing the right-hand wall at full speed, 5 cm away: everything collides.
    out = dwa.plan(pose=(2.8, 0.0, 0.0), vel=(0.5, 0.0, 0.0),
                   path=np.array([[2.8, 0.0], [3.5, 0.0]]), grid=gm)
    assert not out.ok
    assert out.velocity[0] < 0.5


def test_rollout_matches_numerical_integration() -> None:
    pose = np.array([0.3, -0.2, 0.7])
    vel = np.array([[0.4, -0.2, 0.9], [0.3, 0.1, 0.0]])
    exact = rollout(pose, vel, np.array([1.0]))[:, 0]
    for k in range(2):
        p = pose.copy()
        dt = 1e-4
        for _ in range(10000):
            c, s = np.cos(p[2]), np.sin(p[2])
            p += dt * np.array([c * vel[k, 0] - s * vel[k, 1], s * vel[k, 0] + c * vel[k, 1], vel[k, 2]])
        assert np.allclose(exact[k], p, atol=1e-3)


def test_lookahead_walks_along_the_path() -> None:
    path = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    p, seg = path_lookahead(path, np.array([0.5, 0.1]), 0.8)
    assert seg == 0 and np.allclose(p, (1.0, 0.3))
    p, _ = path_lookahead(path, np.array([1.0, 0.9]), 0.8)
    assert np.allclose(p, (1.0, 1.0))


def test_plan_takes_a_few_milliseconds(wall_map: GridMap) -> None:
    dwa = DWAPlanner()
    path = plan_path(wall_map, (-2.0, -2.0), (2.0, -2.0))
    dwa.plan(pose=(-2.0, -2.0, 0.0), vel=(0.2, 0.0, 0.0), path=path, grid=wall_map)
    t0 = time.perf_counter()
    for _ in range(20):
        dwa.plan(pose=(-2.0, -2.0, 0.0), vel=(0.2, 0.0, 0.0), path=path, grid=wall_map)
    per_plan = (time.perf_counter() - t0) / 20
    assert per_plan < 0.03  # ~2-5 ms unloaded; generous for a loaded 2-core machine


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_speed"):
        DWAConfig(max_speed=0.0)
    with pytest.raises(ConfigError, match="samples_vx"):
        DWAConfig(samples_vx=0)
