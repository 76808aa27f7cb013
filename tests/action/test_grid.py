from __future__ import annotations

import itertools

import numpy as np
import pytest

from rtvla.action.grid import GridMap, as_grid_map, astar, line_of_sight, plan_path, prune_path
from rtvla.errors import NavigationError


def _path_is_free(gm: GridMap, path: np.ndarray, step: float = 0.01) -> bool:
    for a, b in itertools.pairwise(path):
        n = max(2, int(np.linalg.norm(b - a) / step))
        for t in np.linspace(0, 1, n):
            if not gm.is_free(*(a + t * (b - a))):
                return False
    return True


def test_astar_goes_around_the_wall(wall_map: GridMap) -> None:
    path = plan_path(wall_map, (-2.0, -2.0), (2.0, -2.0))
    assert np.allclose(path[0], (-2.0, -2.0)) and np.allclose(path[-1], (2.0, -2.0))
    # the wall spans y < 2 at x = 0: the path must pass above it
    assert path[:, 1].max() > 2.0
    assert _path_is_free(wall_map, path)
    # pruning leaves few waypoints
    assert len(path) <= 6


def test_astar_is_optimal_on_an_open_grid() -> None:
    occ = np.zeros((50, 50), dtype=bool)
    cells = astar(occ, (0, 0), (30, 10))
    assert cells is not None
    steps = np.diff(np.array(cells), axis=0)
    length = np.sum(np.where(np.abs(steps).sum(1) == 2, np.sqrt(2), 1.0))
    assert length == pytest.approx(10 * np.sqrt(2) + 20)


def test_blocked_goal_is_refused(wall_map: GridMap) -> None:
    with pytest.raises(NavigationError, match=r"goal .* blocked"):
        plan_path(wall_map, (-2.0, -2.0), (0.0, -1.0))  # inside the wall


def test_blocked_start_is_refused(wall_map: GridMap) -> None:
    with pytest.raises(NavigationError, match=r"start .* blocked"):
        plan_path(wall_map, (0.0, -1.0), (2.0, -2.0))


def test_goal_outside_map_is_refused(wall_map: GridMap) -> None:
    with pytest.raises(NavigationError, match="outside the map"):
        plan_path(wall_map, (-2.0, -2.0), (9.0, 0.0))


def test_enclosed_goal_has_no_path(make_room) -> None:
    gm = make_room(gap_y=None)  # the wall splits the room in two
    with pytest.raises(NavigationError, match="no path"):
        plan_path(gm, (-2.0, -2.0), (2.0, -2.0))


def test_snap_moves_a_blocked_goal_to_the_nearest_free_cell(wall_map: GridMap) -> None:
    path = plan_path(wall_map, (-2.0, -2.0), (-0.12, -1.0), snap_radius_m=0.2)
    assert np.allclose(path[-1], (-0.12, -1.0))
    assert wall_map.is_free(*path[-2])


def test_line_of_sight_and_pruning() -> None:
    occ = np.zeros((20, 20), dtype=bool)
    occ[5:15, 10] = True
    assert line_of_sight(occ, (0, 0), (19, 0))
    assert not line_of_sight(occ, (10, 0), (10, 19))
    straight = [(0, c) for c in range(20)]
    assert prune_path(occ, straight) == [(0, 0), (0, 19)]


def test_signed_distance_field(wall_map: GridMap) -> None:
    # the internal wall spans x in [-0.1, 0.1): 0.5 m to its right the clearance is ~0.4 m
    assert wall_map.clearance(np.array([[0.5, -1.0]]))[0] == pytest.approx(0.4, abs=0.03)
    assert wall_map.clearance(np.array([[0.0, -1.0]]))[0] < 0
    assert wall_map.clearance(np.array([[50.0, 0.0]]))[0] < -100  # off the map


def test_as_grid_map_accepts_simulator_style_objects() -> None:
    class SimGrid:
        grid = np.zeros((10, 10), dtype=bool)
        origin_xy = np.array([1.0, 2.0])
        resolution = 0.1

    gm = as_grid_map(SimGrid())
    assert gm.world_to_cell(1.05, 2.95) == (9, 0)
    with pytest.raises(NavigationError, match="lacks attribute"):
        as_grid_map(object())
    with pytest.raises(NavigationError, match="resolution"):
        GridMap.from_array(np.zeros((3, 3)), origin_xy=(0, 0), resolution=0.0)
