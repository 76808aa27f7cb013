from __future__ import annotations

import pytest

from rtvla.errors import ConfigError
from rtvla.robots.sim import SceneConfig, SimRobot, occupancy_grid


@pytest.fixture(scope="module")
def og(scene: SceneConfig):
    return occupancy_grid(scene, resolution_m=0.05)


def test_table_shelf_counter_and_walls_are_occupied_places_are_free(og, scene: SceneConfig) -> None:
    assert not og.is_free(2.0, -0.5)  # table
    assert not og.is_free(-0.5, -2.0)  # shelf block
    assert not og.is_free(-2.0, 3.45)  # counter with the bins
    assert not og.is_free(0.0, 3.99) and not og.is_free(-3.99, 0.0)  # walls
    assert not og.is_free(10.0, 0.0)  # outside the map
    for name, place in scene.places.items():
        assert og.is_free(*place.pose[:2]), f"place {name} is inside an obstacle"
    assert og.is_free(0.0, 1.0)  # open floor north of the shelf


def test_layout_is_row_y_col_x_with_lower_left_origin(og) -> None:
    assert og.resolution == 0.05
    assert og.origin_xy == pytest.approx((-4.1, -4.1))
    row, col = og.world_to_cell(2.0, -0.5)
    assert og.grid[row, col]
    x, y = og.cell_to_world(row, col)
    assert abs(x - 2.0) <= 0.025 + 1e-9 and abs(y + 0.5) <= 0.025 + 1e-9
    assert og.world_to_cell(*og.cell_to_world(7, 11)) == (7, 11)
    assert og.world_to_cell(og.origin_xy[0] + 1e-6, og.origin_xy[1] + 1e-6) == (0, 0)


def test_obstacles_are_inflated_by_the_radius(og) -> None:
    # 0.2 m west of the table's edge (x = 1.65): free before inflation, occupied after
    assert og.inflate_m == pytest.approx(0.30)
    row, col = og.world_to_cell(1.45, -0.5)
    assert not og.obstacles[row, col] and og.grid[row, col]
    row, col = og.world_to_cell(1.30, -0.5)
    assert not og.grid[row, col]
    bare = occupancy_grid(
        og_model := SimRobot(lockstep=True).model, resolution_m=0.1, inflate_m=0.0
    )
    assert og_model is not None and bare.grid.sum() == bare.obstacles.sum()


def test_robot_convenience_and_bad_arguments(robot: SimRobot) -> None:
    g = robot.occupancy_grid(resolution_m=0.1)
    assert g.shape == (82, 82) and g.is_free(-2.5, -2.5)
    with pytest.raises(ConfigError, match="resolution_m"):
        occupancy_grid(robot.model, resolution_m=0)
    with pytest.raises(ConfigError, match="inflate_m"):
        occupancy_grid(robot.model, inflate_m=-1)
