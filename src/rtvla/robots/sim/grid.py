"""A 2D occupancy grid of the static scene, derived from the MuJoCo model's geoms, for A*.

Every geom welded to the world (walls, table, shelf, counter, bins; not the floor plane,
not the robot, not the free cubes) whose height range meets the robot's height band is
rasterised by its footprint (boxes as oriented rectangles, round shapes as discs), then
grown by ``inflate_m`` so that the robot's centre may go wherever a cell is free.

Layout (the navigation planner's convention): ``grid[row, col]`` = ``grid[y, x]``, True =
occupied; ``origin_xy`` is the world position of the lower-left corner of cell (0, 0).

Usage::

    og = occupancy_grid(resolution_m=0.05)                 # packaged scene, default inflation
    og.is_free(*scene.place("home").pose[:2])               # True
    row, col = og.world_to_cell(2.0, -0.5)                  # the table's centre cell
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mujoco  # MUJOCO_GL was set by rtvla.robots.sim.__init__ (imports _gl first)
import numpy as np

from rtvla.errors import ConfigError
from rtvla.robots.sim.scene import SceneConfig, load_scene

__all__ = ["OccupancyGrid", "occupancy_grid"]


@dataclass(frozen=True)
class OccupancyGrid:
    """An inflated occupancy grid plus the raw obstacle footprint it came from."""

    grid: np.ndarray  # bool [rows (y), cols (x)], True = the robot centre may not be here
    origin_xy: tuple[float, float]
    resolution: float
    obstacles: np.ndarray  # bool, the footprints before inflation
    inflate_m: float

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.grid.shape[0]), int(self.grid.shape[1]))

    def world_to_cell(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the cell containing world point (x, y) (may be out of bounds)."""
        col = math.floor((x - self.origin_xy[0]) / self.resolution)
        row = math.floor((y - self.origin_xy[1]) / self.resolution)
        return row, col

    def cell_to_world(self, row: int, col: int) -> tuple[float, float]:
        """World (x, y) of the centre of cell (row, col)."""
        return (
            self.origin_xy[0] + (col + 0.5) * self.resolution,
            self.origin_xy[1] + (row + 0.5) * self.resolution,
        )

    def in_bounds(self, row: int, col: int) -> bool:
        return 0 <= row < self.grid.shape[0] and 0 <= col < self.grid.shape[1]

    def is_free(self, x: float, y: float) -> bool:
        """Whether the robot's centre may be at world (x, y); outside the grid counts as occupied."""
        row, col = self.world_to_cell(x, y)
        return self.in_bounds(row, col) and not bool(self.grid[row, col])


def _static_footprints(
    model: Any, z_band: tuple[float, float]
) -> list[tuple[str, np.ndarray | tuple]]:
    """Footprints of world-welded geoms meeting ``z_band``: ("poly", corners) or ("disc", (x, y, r))."""
    import cv2  # imported here: the control process loads this module without needing it

    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    out: list[tuple[str, Any]] = []
    for g in range(model.ngeom):
        body = int(model.geom_bodyid[g])
        if int(model.body_weldid[body]) != 0:
            continue  # moves: robot links, free cubes
        gtype = int(model.geom_type[g])
        if gtype == mujoco.mjtGeom.mjGEOM_PLANE:
            continue  # the floor
        pos = data.geom_xpos[g]
        mat = data.geom_xmat[g].reshape(3, 3)
        size = model.geom_size[g]
        if gtype == mujoco.mjtGeom.mjGEOM_BOX:
            half_z = float(np.abs(mat[2]) @ size)
        elif gtype == mujoco.mjtGeom.mjGEOM_SPHERE:
            half_z = float(size[0])
        elif gtype in (mujoco.mjtGeom.mjGEOM_CYLINDER, mujoco.mjtGeom.mjGEOM_CAPSULE):
            half_z = float(abs(mat[2, 2]) * size[1] + size[0])
        else:  # meshes, ellipsoids: their bounding sphere
            half_z = float(model.geom_rbound[g])
        if pos[2] + half_z < z_band[0] or pos[2] - half_z > z_band[1]:
            continue
        if gtype == mujoco.mjtGeom.mjGEOM_BOX:
            corners = np.array(
                [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float
            )
            world = (corners * size) @ mat.T + pos
            hull = cv2.convexHull(world[:, :2].astype(np.float32)).reshape(-1, 2)
            out.append(("poly", hull.astype(float)))
        elif (
            gtype in (mujoco.mjtGeom.mjGEOM_CYLINDER, mujoco.mjtGeom.mjGEOM_CAPSULE)
            and abs(mat[2, 2]) > 0.999
        ):
            out.append(("disc", (float(pos[0]), float(pos[1]), float(size[0]))))
        else:
            out.append(("disc", (float(pos[0]), float(pos[1]), float(model.geom_rbound[g]))))
    return out


def occupancy_grid(
    source: SceneConfig | Any | None = None,
    *,
    resolution_m: float = 0.05,
    inflate_m: float | None = None,
    z_band: tuple[float, float] = (0.02, 1.6),
) -> OccupancyGrid:
    """The static scene as an inflated occupancy grid.

    ``source``: a :class:`SceneConfig`, a ``mujoco.MjModel`` or None (the packaged scene).
    ``inflate_m``: growth of every obstacle (default: the scene's ``robot_radius_m``; 0.3 m
    for a bare model). ``z_band``: heights (m) the robot occupies; geoms entirely above or
    below are ignored.
    """
    import cv2  # imported here: the control process loads this module without needing it

    if not (resolution_m > 0 and math.isfinite(resolution_m)):
        raise ConfigError(f"occupancy grid resolution_m must be > 0, got {resolution_m}")
    if source is None or isinstance(source, SceneConfig):
        scene = source if source is not None else load_scene()
        model = scene.load_model()
        default_inflate = scene.robot_radius_m
    else:
        model, default_inflate = source, 0.3
    inflate = default_inflate if inflate_m is None else float(inflate_m)
    if not (inflate >= 0 and math.isfinite(inflate)):
        raise ConfigError(f"occupancy grid inflate_m must be >= 0, got {inflate_m}")

    shapes = _static_footprints(model, z_band)
    if not shapes:
        raise ConfigError("occupancy grid: the model has no static geoms to map")
    pts = []
    for kind, s in shapes:
        if kind == "poly":
            pts.append(s)
        else:
            x, y, r = s
            pts.append(np.array([[x - r, y - r], [x + r, y + r]]))
    allpts = np.vstack(pts)
    lo = np.round(np.floor(allpts.min(axis=0) / resolution_m) * resolution_m, 9)
    hi = allpts.max(axis=0)
    cols = int(math.ceil((hi[0] - lo[0]) / resolution_m))
    rows = int(math.ceil((hi[1] - lo[1]) / resolution_m))
    img = np.zeros((rows, cols), dtype=np.uint8)

    def to_px(xy: np.ndarray) -> np.ndarray:
        # OpenCV fills pixel centres: x -> column, y -> row, in cell units
        return (xy - lo) / resolution_m - 0.5

    shift = 4  # sub-pixel precision bits for cv2 drawing
    for kind, s in shapes:
        if kind == "poly":
            poly = np.round(to_px(s) * (1 << shift)).astype(np.int32)
            cv2.fillConvexPoly(img, poly, 1, lineType=cv2.LINE_8, shift=shift)
        else:
            x, y, r = s
            c = np.round(to_px(np.array([x, y])) * (1 << shift)).astype(np.int32)
            cv2.circle(
                img,
                (int(c[0]), int(c[1])),
                int(round(r / resolution_m * (1 << shift))),
                1,
                -1,
                cv2.LINE_8,
                shift,
            )
    obstacles = img.astype(bool)
    if inflate > 0:
        free = np.where(obstacles, 0, 255).astype(np.uint8)
        dist = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * resolution_m
        grid = dist <= inflate
    else:
        grid = obstacles.copy()
    grid.setflags(write=False)
    obstacles.setflags(write=False)
    return OccupancyGrid(
        grid=grid,
        origin_xy=(float(lo[0]), float(lo[1])),
        resolution=float(resolution_m),
        obstacles=obstacles,
        inflate_m=inflate,
    )
