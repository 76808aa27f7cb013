"""Fixtures for navigation and executor tests: synthetic maps and a kinematic holonomic base."""

from __future__ import annotations

import numpy as np
import pytest

from rtvla.action.grid import GridMap


def room_with_wall(
    *, size_m: float = 6.0, res: float = 0.05, wall_x: float = 0.0, gap_y: float | None = 2.0
) -> GridMap:
    """A square room centred on the origin, bordered by walls, with an internal wall at
    ``wall_x`` spanning y from the bottom wall up to ``gap_y`` (None: the full height)."""
    n = round(size_m / res)
    occ = np.zeros((n, n), dtype=bool)
    occ[:2, :] = occ[-2:, :] = True
    occ[:, :2] = occ[:, -2:] = True
    origin = (-size_m / 2, -size_m / 2)
    c = int((wall_x - origin[0]) / res)
    top = n if gap_y is None else int((gap_y - origin[1]) / res)
    occ[:top, c - 2 : c + 2] = True
    return GridMap.from_array(occ, origin_xy=origin, resolution=res)


@pytest.fixture
def wall_map() -> GridMap:
    return room_with_wall()


@pytest.fixture
def make_room():
    """The :func:`room_with_wall` factory."""
    return room_with_wall


@pytest.fixture
def kinematic_base():
    """The :class:`KinematicBase` class."""
    return KinematicBase


class KinematicBase:
    """Integrates base-frame velocity commands exactly (a perfect holonomic base)."""

    def __init__(self, pose: tuple[float, float, float]) -> None:
        self.pose = np.array(pose, dtype=float)

    def apply(self, vel: np.ndarray, dt: float) -> None:
        from rtvla.action.dwa import rollout

        self.pose = rollout(self.pose, np.asarray(vel, dtype=float)[None, :], np.array([dt]))[0, 0]
