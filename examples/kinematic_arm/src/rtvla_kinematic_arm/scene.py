"""The room the kinematic arm lives in: furniture, cubes, a bin, places — and what follows.

``scene.toml`` (packaged) describes it; :func:`load_scene` validates it into a frozen
:class:`Scene`. From a scene follow the static boxes the camera draws, the support height
under any point (where a released cube comes to rest), the occupancy grid for navigation
and the :class:`~rtvla.robots.embodiment.WorldKnowledge` rtvla plans with.

Usage::

    scene = load_scene()                        # or load_scene("my_room.toml")
    scene.objects["red_cube"].start             # (1.25, -0.2, 0.42)
    scene.support_height(1.2, 0.25)             # the bin's floor
    world = scene.world_knowledge()
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rtvla.config import format_validation_error
from rtvla.errors import ConfigError
from rtvla.robots.embodiment import (
    KnownObject,
    OccupancyMap,
    Place,
    Receptacle,
    Surface,
    WorldKnowledge,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["Box", "Scene", "load_scene"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_BIN_WALL_M = 0.01
_BIN_FLOOR_M = 0.01
_DROP_ABOVE_FLOOR_M = 0.10  # drop point: this far above the bin's floor


@dataclass(frozen=True)
class Box:
    """An oriented box: centre (world), rotation (columns = box axes in world), half sizes, RGB."""

    name: str
    center: np.ndarray
    rot: np.ndarray
    half: np.ndarray
    rgb: tuple[int, int, int]

    @classmethod
    def upright(cls, name: str, x: float, y: float, z0: float, size: Any, rgb: Any) -> Box:
        """An axis-aligned box standing on height ``z0``."""
        sx, sy, sz = (float(v) for v in size)
        return cls(name, np.array((x, y, z0 + sz / 2)), np.eye(3), np.array((sx, sy, sz)) / 2,
                   tuple(int(c) for c in rgb))

    @property
    def top(self) -> float:
        return float(self.center[2] + np.abs(self.rot[2]) @ self.half)

    def contains_xy(self, x: float, y: float) -> bool:
        local = self.rot.T @ (np.array((x, y, self.center[2])) - self.center)
        return bool(abs(local[0]) <= self.half[0] and abs(local[1]) <= self.half[1])


class RobotGeometry(BaseModel):
    model_config = _FROZEN
    start: str = "home"
    base_half_m: float = Field(gt=0)
    base_height_m: float = Field(gt=0)
    shoulder: tuple[float, float, float]
    links_m: tuple[float, float, float]
    stow_q: tuple[float, float, float, float, float]
    grasp_radius_m: float = Field(gt=0, le=0.2)
    camera_mount: tuple[float, float, float]
    camera_pitch_rad: float = Field(ge=0, le=math.pi / 2)
    camera_fovy_rad: float = Field(gt=0.1, lt=2.5)

    @model_validator(mode="after")
    def _links(self) -> RobotGeometry:
        if any(v <= 0 for v in self.links_m):
            raise ValueError(f"robot.links_m must be positive, got {self.links_m}")
        return self


class Furniture(BaseModel):
    model_config = _FROZEN
    name: str
    center: tuple[float, float]
    size: tuple[float, float, float]
    rgb: tuple[int, int, int]


class PlaceSpec(BaseModel):
    model_config = _FROZEN
    pose: tuple[float, float, float]
    description: str = ""


class ObjectSpec(BaseModel):
    model_config = _FROZEN
    on: str
    xy: tuple[float, float]
    size_m: float = Field(gt=0, le=0.2)
    color: str
    rgb: tuple[int, int, int]
    place: str


class BinSpec(BaseModel):
    model_config = _FROZEN
    on: str
    xy: tuple[float, float]
    inner_m: float = Field(gt=0.02, le=0.5)
    wall_height_m: float = Field(gt=0, le=0.3)
    color: str
    rgb: tuple[int, int, int]
    place: str


class SurfaceSpec(BaseModel):
    model_config = _FROZEN
    on: str
    xy: tuple[float, float]
    place: str


class Scene(BaseModel):
    """The validated room (frozen)."""

    model_config = _FROZEN
    room_size_m: tuple[float, float]
    wall_height_m: float = Field(gt=0)
    robot_radius_m: float = Field(gt=0)
    map_resolution_m: float = Field(0.05, gt=0, le=0.5)
    robot: RobotGeometry
    furniture: tuple[Furniture, ...]
    places: dict[str, PlaceSpec]
    objects: dict[str, ObjectSpec]
    receptacles: dict[str, BinSpec] = Field(default_factory=dict)
    surfaces: dict[str, SurfaceSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _refs(self) -> Scene:
        tables = {f.name for f in self.furniture}
        for kind in ("objects", "receptacles", "surfaces"):
            for name, spec in getattr(self, kind).items():
                if spec.on not in tables:
                    raise ValueError(f"{kind}.{name}.on = {spec.on!r} is no furniture; known: {sorted(tables)}")
                if spec.place not in self.places:
                    raise ValueError(f"{kind}.{name}.place = {spec.place!r} is not a place; "
                                     f"known: {sorted(self.places)}")
        if self.robot.start not in self.places:
            raise ValueError(f"robot.start = {self.robot.start!r} is not a place")
        return self

    # -- geometry -----------------------------------------------------------------------

    def furniture_box(self, name: str) -> Box:
        f = next(f for f in self.furniture if f.name == name)
        return Box.upright(f.name, f.center[0], f.center[1], 0.0, f.size, f.rgb)

    def top_of(self, name: str) -> float:
        return self.furniture_box(name).top

    def bin_boxes(self, name: str) -> list[Box]:
        """A bin as five thin boxes: its floor and four walls."""
        b = self.receptacles[name]
        z0 = self.top_of(b.on)
        x, y = b.xy
        outer = b.inner_m + 2 * _BIN_WALL_M
        off = (b.inner_m + _BIN_WALL_M) / 2
        h = b.wall_height_m
        return [
            Box.upright(f"{name}_floor", x, y, z0, (outer, outer, _BIN_FLOOR_M), b.rgb),
            Box.upright(f"{name}_wall_n", x, y + off, z0, (outer, _BIN_WALL_M, h), b.rgb),
            Box.upright(f"{name}_wall_s", x, y - off, z0, (outer, _BIN_WALL_M, h), b.rgb),
            Box.upright(f"{name}_wall_e", x + off, y, z0, (_BIN_WALL_M, b.inner_m, h), b.rgb),
            Box.upright(f"{name}_wall_w", x - off, y, z0, (_BIN_WALL_M, b.inner_m, h), b.rgb),
        ]

    def static_boxes(self) -> list[Box]:
        """Everything that never moves: furniture and bins."""
        boxes = [self.furniture_box(f.name) for f in self.furniture]
        for name in self.receptacles:
            boxes.extend(self.bin_boxes(name))
        return boxes

    def object_start(self, name: str) -> np.ndarray:
        o = self.objects[name]
        return np.array((o.xy[0], o.xy[1], self.top_of(o.on) + o.size_m / 2))

    def support_height(self, x: float, y: float) -> float:
        """The highest static top under (x, y): where a released object comes to rest."""
        return max((b.top for b in self.static_boxes() if b.contains_xy(x, y)), default=0.0)

    def drop_point(self, name: str) -> np.ndarray:
        b = self.receptacles[name]
        return np.array((b.xy[0], b.xy[1], self.top_of(b.on) + _BIN_FLOOR_M + _DROP_ABOVE_FLOOR_M))

    def inside_room(self, x: float, y: float, margin: float = 0.0) -> bool:
        hx, hy = self.room_size_m[0] / 2 - margin, self.room_size_m[1] / 2 - margin
        return -hx <= x <= hx and -hy <= y <= hy

    def obstacles(self, resolution: float) -> tuple[np.ndarray, tuple[float, float]]:
        """Raw footprints (True = occupied) of walls and furniture, and the grid's origin."""
        hx, hy = self.room_size_m[0] / 2, self.room_size_m[1] / 2
        pad = 2 * resolution  # the wall itself, just outside the room
        origin = (-hx - pad, -hy - pad)
        cols = int(math.ceil((2 * hx + 2 * pad) / resolution))
        rows = int(math.ceil((2 * hy + 2 * pad) / resolution))
        xs = origin[0] + (np.arange(cols) + 0.5) * resolution
        ys = origin[1] + (np.arange(rows) + 0.5) * resolution
        gx, gy = np.meshgrid(xs, ys)
        occ = (np.abs(gx) > hx) | (np.abs(gy) > hy)
        for f in self.furniture:
            occ |= (np.abs(gx - f.center[0]) <= f.size[0] / 2) & (np.abs(gy - f.center[1]) <= f.size[1] / 2)
        return occ, origin

    def occupancy(self) -> OccupancyMap:
        """The navigation map: obstacles grown by the robot's radius."""
        res = self.map_resolution_m
        occ, origin = self.obstacles(res)
        free = np.where(occ, 0, 255).astype(np.uint8)
        dist = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * res
        return OccupancyMap(dist <= self.robot_radius_m, origin, res, self.robot_radius_m)

    def world_knowledge(self) -> WorldKnowledge:
        """What rtvla's planner and skills need to know of this room."""
        places = [Place(n, p.pose, p.description) for n, p in self.places.items()]
        objects = [KnownObject(n, o.place, o.color, o.size_m, self.object_start(n))
                   for n, o in self.objects.items()]
        bins = [Receptacle(n, self.drop_point(n), b.place, b.color, radius_m=b.inner_m / 2)
                for n, b in self.receptacles.items()]
        surfaces = [Surface(n, (s.xy[0], s.xy[1], self.top_of(s.on)), place=s.place)
                    for n, s in self.surfaces.items()]
        return WorldKnowledge(places=places, objects=objects, receptacles=bins, surfaces=surfaces,
                              map=self.occupancy(), robot_radius_m=self.robot_radius_m)


def load_scene(path: str | Path | None = None) -> Scene:
    """Load and validate a scene TOML (default: the packaged room); :class:`ConfigError`
    names the file and the field."""
    if path is None:
        text = resources.files("rtvla_kinematic_arm").joinpath("scene.toml").read_text()
        source = "kinematic_arm scene.toml"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"kinematic_arm scene {p} does not exist")
        text, source = p.read_text(), str(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        return Scene.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + format_validation_error("scene", exc)) from None
