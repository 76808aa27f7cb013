"""Global path planning: A* on a 2D occupancy grid, with line-of-sight path pruning.

The grid is any object with ``grid`` (bool array, True = occupied, indexed ``[row, col]`` =
``[y, x]``), ``origin_xy`` (world coordinates of the lower-left corner of cell (0, 0)) and
``resolution`` (metres per cell): the simulator's ``occupancy_grid()`` result, a map loaded
from disk, or a :class:`GridMap` built in a test. Obstacles are expected to be inflated by
the robot radius already, so the robot's centre may go wherever a cell is free.

Usage::

    gm = GridMap.from_array(occupied, origin_xy=(-4.0, -4.0), resolution=0.05)
    path = plan_path(gm, start_xy=(0.0, 0.0), goal_xy=(2.5, 1.0))   # (N, 2) world points
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from rtvla.errors import NavigationError

__all__ = [
    "GridLike",
    "GridMap",
    "as_grid_map",
    "astar",
    "line_of_sight",
    "plan_path",
    "prune_path",
]

_SQRT2 = math.sqrt(2.0)
# 8-connected moves: (drow, dcol, cost)
_MOVES = (
    (-1, 0, 1.0), (1, 0, 1.0), (0, -1, 1.0), (0, 1, 1.0),
    (-1, -1, _SQRT2), (-1, 1, _SQRT2), (1, -1, _SQRT2), (1, 1, _SQRT2),
)


@runtime_checkable
class GridLike(Protocol):
    """What the planners need from an occupancy grid."""

    grid: Any
    origin_xy: Any
    resolution: float


@dataclass(frozen=True)
class GridMap:
    """A 2D occupancy grid with world/cell conversions and its signed distance field.

    ``occupied[row, col]`` is True where the robot centre may not go. Cell ``(r, c)`` covers
    ``origin + [c, c+1) * res`` in x and ``origin + [r, r+1) * res`` in y.
    """

    occupied: np.ndarray
    origin_xy: tuple[float, float]
    resolution: float
    sdf: np.ndarray  # metres: distance to the nearest occupied cell, negative inside obstacles

    @classmethod
    def from_array(
        cls, occupied: np.ndarray, *, origin_xy: tuple[float, float] | np.ndarray, resolution: float
    ) -> GridMap:
        occ = np.asarray(occupied)
        if occ.ndim != 2 or occ.size == 0:
            raise NavigationError(f"occupancy grid must be a non-empty 2D array, got shape {occ.shape}")
        if not (np.isfinite(resolution) and resolution > 0):
            raise NavigationError(f"grid resolution must be > 0 metres, got {resolution}")
        origin = np.asarray(origin_xy, dtype=float).reshape(-1)
        if origin.shape != (2,) or not np.all(np.isfinite(origin)):
            raise NavigationError(f"grid origin_xy must be 2 finite numbers, got {origin_xy!r}")
        occ = np.ascontiguousarray(occ.astype(bool))
        occ.setflags(write=False)
        sdf = signed_distance(occ, float(resolution))
        sdf.setflags(write=False)
        return cls(occ, (float(origin[0]), float(origin[1])), float(resolution), sdf)

    # Attribute names of the simulator's grid, so a GridMap is itself GridLike.
    @property
    def grid(self) -> np.ndarray:
        return self.occupied

    @property
    def shape(self) -> tuple[int, int]:
        return self.occupied.shape  # type: ignore[return-value]

    def world_to_cell(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the cell holding world point (x, y); may be outside the grid."""
        c = math.floor((x - self.origin_xy[0]) / self.resolution)
        r = math.floor((y - self.origin_xy[1]) / self.resolution)
        return r, c

    def cell_to_world(self, r: int, c: int) -> tuple[float, float]:
        """World coordinates of the centre of cell (row, col)."""
        return (
            self.origin_xy[0] + (c + 0.5) * self.resolution,
            self.origin_xy[1] + (r + 0.5) * self.resolution,
        )

    def in_bounds(self, r: int, c: int) -> bool:
        h, w = self.occupied.shape
        return 0 <= r < h and 0 <= c < w

    def is_free_cell(self, r: int, c: int) -> bool:
        return self.in_bounds(r, c) and not bool(self.occupied[r, c])

    def is_free(self, x: float, y: float) -> bool:
        return self.is_free_cell(*self.world_to_cell(x, y))

    def clearance(self, xy: np.ndarray) -> np.ndarray:
        """Signed clearance (metres) at world points ``xy[..., 2]``; outside the grid counts as
        deep inside an obstacle."""
        pts = np.asarray(xy, dtype=float)
        c = np.floor((pts[..., 0] - self.origin_xy[0]) / self.resolution).astype(np.int64)
        r = np.floor((pts[..., 1] - self.origin_xy[1]) / self.resolution).astype(np.int64)
        h, w = self.occupied.shape
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        out = np.full(pts.shape[:-1], -1e3)
        out[inside] = self.sdf[r[inside], c[inside]]
        return out

    def nearest_free(self, r: int, c: int, max_cells: int) -> tuple[int, int] | None:
        """The free cell closest to (r, c) within ``max_cells`` (Euclidean), or None."""
        if self.is_free_cell(r, c):
            return r, c
        h, w = self.occupied.shape
        r0, r1 = max(0, r - max_cells), min(h, r + max_cells + 1)
        c0, c1 = max(0, c - max_cells), min(w, c + max_cells + 1)
        if r0 >= r1 or c0 >= c1:
            return None
        window = ~self.occupied[r0:r1, c0:c1]
        rr, cc = np.nonzero(window)
        if rr.size == 0:
            return None
        d2 = (rr + r0 - r) ** 2 + (cc + c0 - c) ** 2
        i = int(np.argmin(d2))
        if d2[i] > max_cells * max_cells:
            return None
        return int(rr[i] + r0), int(cc[i] + c0)


def signed_distance(occupied: np.ndarray, resolution: float) -> np.ndarray:
    """Metres to the nearest occupied cell for free cells, minus metres to the nearest free
    cell for occupied ones (``cv2.distanceTransform``, exact Euclidean)."""
    free = (~occupied).astype(np.uint8)
    if not occupied.any():
        return np.full(occupied.shape, 1e3, dtype=np.float32)
    d_out = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if free.any():
        d_in = cv2.distanceTransform(1 - free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    else:
        d_in = np.full(occupied.shape, 1e3, dtype=np.float32)
    # distanceTransform gives the distance between cell centres; half a cell puts the
    # boundary on the cell edge.
    sdf = np.where(occupied, -(d_in - 0.5), d_out - 0.5) * resolution
    return sdf.astype(np.float32)


def as_grid_map(grid: Any) -> GridMap:
    """Convert any :class:`GridLike` (the simulator's grid, a GridMap) into a GridMap."""
    if isinstance(grid, GridMap):
        return grid
    missing = [a for a in ("grid", "origin_xy", "resolution") if not hasattr(grid, a)]
    if missing:
        raise NavigationError(
            f"occupancy grid {type(grid).__name__} lacks attribute(s) {missing}; expected "
            "grid (bool array), origin_xy and resolution"
        )
    return GridMap.from_array(grid.grid, origin_xy=grid.origin_xy, resolution=float(grid.resolution))


def astar(occupied: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]] | None:
    """8-connected A* with the octile heuristic; returns cells start..goal or None.

    Diagonal moves may not cut an occupied corner (both side cells must be free).
    """
    h, w = occupied.shape
    blocked = occupied.ravel().tolist()  # list indexing is much faster than numpy scalars
    sr, sc = start
    gr, gc = goal
    s, g = sr * w + sc, gr * w + gc
    if s == g:
        return [start]
    g_cost = {s: 0.0}
    parent = {s: -1}
    closed = bytearray(h * w)

    def heur(idx: int) -> float:
        dr = abs(idx // w - gr)
        dc = abs(idx % w - gc)
        return (dr + dc) + (_SQRT2 - 2.0) * min(dr, dc)

    heap: list[tuple[float, float, int]] = [(heur(s), 0.0, s)]
    push, pop = heapq.heappush, heapq.heappop
    while heap:
        _, gcur, cur = pop(heap)
        if closed[cur]:
            continue
        if cur == g:
            out = []
            while cur != -1:
                out.append((cur // w, cur % w))
                cur = parent[cur]
            out.reverse()
            return out
        closed[cur] = 1
        r, c = divmod(cur, w)
        for dr, dc, cost in _MOVES:
            nr, nc = r + dr, c + dc
            if nr < 0 or nr >= h or nc < 0 or nc >= w:
                continue
            n = nr * w + nc
            if blocked[n] or closed[n]:
                continue
            if dr and dc and (blocked[r * w + nc] or blocked[nr * w + c]):
                continue
            ng = gcur + cost
            if ng < g_cost.get(n, math.inf):
                g_cost[n] = ng
                parent[n] = cur
                push(heap, (ng + heur(n), ng, n))
    return None


def line_of_sight(occupied: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when every cell the segment between cell centres a and b touches is free
    (supercover traversal, so the segment never slips between two diagonal obstacles)."""
    r0, c0 = a
    r1, c1 = b
    h, w = occupied.shape
    dr, dc = r1 - r0, c1 - c0
    n = max(abs(dr), abs(dc))
    if n == 0:
        return 0 <= r0 < h and 0 <= c0 < w and not occupied[r0, c0]
    # Sample densely (4 per cell step) and also test both neighbours at corner crossings.
    t = np.linspace(0.0, 1.0, 4 * n + 1)
    rf = r0 + 0.5 + dr * t
    cf = c0 + 0.5 + dc * t
    rr = np.floor(rf).astype(np.int64)
    cc = np.floor(cf).astype(np.int64)
    rr2 = np.floor(rf - 1e-6 * np.sign(dr)).astype(np.int64)
    cc2 = np.floor(cf - 1e-6 * np.sign(dc)).astype(np.int64)
    rows = np.concatenate([rr, rr2, rr, rr2])
    cols = np.concatenate([cc, cc2, cc2, cc])
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= h or cols.max() >= w:
        return False
    return not bool(occupied[rows, cols].any())


def prune_path(occupied: np.ndarray, cells: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Drop waypoints the robot can skip: keep a waypoint only where the straight line from
    the previous kept one to the next would cross an occupied cell."""
    if len(cells) <= 2:
        return list(cells)
    out = [cells[0]]
    anchor = 0
    i = 2
    while i < len(cells):
        if not line_of_sight(occupied, cells[anchor], cells[i]):
            anchor = i - 1
            out.append(cells[anchor])
        i += 1
    out.append(cells[-1])
    return out


def plan_path(
    grid: Any,
    start_xy: tuple[float, float] | np.ndarray,
    goal_xy: tuple[float, float] | np.ndarray,
    *,
    snap_radius_m: float = 0.0,
    prune: bool = True,
) -> np.ndarray:
    """A world-frame path ``(N, 2)`` from ``start_xy`` to ``goal_xy`` (both included).

    ``snap_radius_m``: a start or goal inside an (inflated) obstacle is moved to the nearest
    free cell within this radius; beyond it, or with 0, it is refused.

    Raises:
        NavigationError: start or goal outside the grid or blocked, or no path exists.
    """
    gm = as_grid_map(grid)
    start = np.asarray(start_xy, dtype=float).reshape(-1)[:2]
    goal = np.asarray(goal_xy, dtype=float).reshape(-1)[:2]
    if not (np.all(np.isfinite(start)) and np.all(np.isfinite(goal))):
        raise NavigationError(f"start {start.tolist()} and goal {goal.tolist()} must be finite")
    snap_cells = math.ceil(max(0.0, snap_radius_m) / gm.resolution)
    cells = []
    for what, p in (("start", start), ("goal", goal)):
        r, c = gm.world_to_cell(float(p[0]), float(p[1]))
        if not gm.in_bounds(r, c):
            raise NavigationError(
                f"{what} ({p[0]:.2f}, {p[1]:.2f}) is outside the map "
                f"(origin {gm.origin_xy}, {gm.shape[1]}x{gm.shape[0]} cells of {gm.resolution} m)"
            )
        snapped = gm.nearest_free(r, c, snap_cells)
        if snapped is None:
            raise NavigationError(
                f"{what} ({p[0]:.2f}, {p[1]:.2f}) is blocked by an obstacle"
                + (f" (no free cell within {snap_radius_m:.2f} m)" if snap_cells else "")
            )
        cells.append(snapped)
    route = astar(gm.occupied, cells[0], cells[1])
    if route is None:
        raise NavigationError(
            f"no path from ({start[0]:.2f}, {start[1]:.2f}) to ({goal[0]:.2f}, {goal[1]:.2f}): "
            "the goal is enclosed by obstacles"
        )
    if prune:
        route = prune_path(gm.occupied, route)
    pts = np.array([gm.cell_to_world(r, c) for r, c in route], dtype=float)
    # Exact endpoints instead of cell centres (unless they were snapped out of an obstacle).
    if cells[0] == gm.world_to_cell(*start):
        pts[0] = start
    else:
        pts = np.vstack([start, pts])
    if cells[1] == gm.world_to_cell(*goal):
        pts[-1] = goal
    else:
        pts = np.vstack([pts, goal])
    return pts
