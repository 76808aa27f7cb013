"""``Embodiment``: what a robot plug-in returns — the robot, its cameras, what it knows.

A robot plug-in (the built-in simulator, a ROS 2 driver, a user's package) is a factory
that returns one :class:`Embodiment`. The runtime composes its protocols and never names
the concrete classes:

* ``robot``: the :class:`~rtvla.robots.base.Robot` the control loop drives;
* ``cameras``: name -> :class:`RobotCamera` (a frame source with its intrinsics, mounting
  frame and a pose function giving the camera-to-world transform per frame);
* ``world``: :class:`WorldKnowledge` — named places, objects, receptacles with drop
  points, surfaces with put-down heights, optionally an occupancy map for navigation;
* ``has_base`` / ``has_arm`` and the arm's ``kinematics`` (``ik(target_xyz, q_seed,
  base_pose) -> q``, what manipulation skills need), or None;
* ``process_safe`` and ``process_factory``: whether, and how (a picklable
  :class:`~rtvla.parts.FactoryRef`), the control process builds the same robot;
* ``telemetry``: extra state the control process mirrors back (a simulator's ``qpos``)
  so that the parent's cameras and views follow the robot that runs elsewhere.

Cameras are frame sources by shape (``open``/``close``/``read`` returning frames with
``image, stamp_ns, seq, depth, intrinsics``): ``robots`` comes before ``perception`` in
the package order, so nothing here imports it.

Usage::

    emb = parts.build("robot", "sim", {}, expect=Embodiment)
    emb.robot.connect()                                # thread placement
    head = emb.cameras["head"]; head.source.open()
    scene = SceneInfo(drop_points=emb.world.drop_points(), locations=emb.world.locations(),
                      surfaces=emb.world.put_down_points())
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rtvla.errors import ConfigError
from rtvla.parts import FactoryRef
from rtvla.robots.base import Robot

__all__ = [
    "CameraSource",
    "Embodiment",
    "KnownObject",
    "OccupancyMap",
    "Place",
    "Receptacle",
    "RobotCamera",
    "Surface",
    "Telemetry",
    "WorldKnowledge",
    "as_embodiment",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class CameraSource(Protocol):
    """perception's ``FrameSource`` by shape: ``read()`` returns the newest frame or None."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self) -> Any: ...


def _vec(value: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what} must be {n} finite numbers, got {value!r}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class RobotCamera:
    """A camera the robot carries.

    ``source``: the frame source (``open``/``close``/``read``). ``intrinsics``: pinhole
    intrinsics of full-size frames (``fx, fy, cx, cy, width, height``). ``frame``: the
    robot link it is mounted on. ``pose_fn(seq=None)``: 4x4 camera-to-world transform in
    OpenCV axes (x right, y down, z forward) — of frame ``seq`` if the source remembers it.
    """

    name: str
    source: Any
    intrinsics: Any
    frame: str
    pose_fn: Callable[..., np.ndarray]
    rate_hz: float | None = None
    depth: bool = False

    def pose(self, seq: int | None = None) -> np.ndarray:
        return np.asarray(self.pose_fn() if seq is None else self.pose_fn(seq=seq), dtype=float)


@dataclass(frozen=True)
class Place:
    """A standing pose of the base: ``pose`` = (x, y, yaw) in the world frame."""

    name: str
    pose: tuple[float, float, float]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pose", tuple(float(v) for v in _vec(self.pose, 3, f"places.{self.name}.pose")))


@dataclass(frozen=True)
class KnownObject:
    """A graspable object: where it is reached from, its colour and size, where it started."""

    name: str
    place: str | None = None
    color: str | None = None
    size_m: float = 0.04
    position: np.ndarray | None = None  # world xyz of its centre at start, if known

    def __post_init__(self) -> None:
        if not (self.size_m > 0 and math.isfinite(self.size_m)):
            raise ConfigError(f"objects.{self.name}.size_m must be > 0, got {self.size_m}")
        if self.position is not None:
            object.__setattr__(self, "position", _vec(self.position, 3, f"objects.{self.name}.position"))


@dataclass(frozen=True)
class Receptacle:
    """Somewhere to put objects into: ``drop_point`` is world xyz just above its opening."""

    name: str
    drop_point: np.ndarray
    place: str | None = None
    color: str | None = None
    radius_m: float = 0.08  # how far from the drop point counts as inside

    def __post_init__(self) -> None:
        object.__setattr__(self, "drop_point", _vec(self.drop_point, 3, f"receptacles.{self.name}.drop_point"))


@dataclass(frozen=True)
class Surface:
    """A flat top things can be set down on (a table, a shelf board).

    ``point``: world xyz on the top surface where the arm puts things down from ``place``;
    ``height_m`` is its z. :meth:`put_down_point` is where an object's centre rests there.
    """

    name: str
    point: np.ndarray
    place: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "point", _vec(self.point, 3, f"surfaces.{self.name}.point"))

    @property
    def height_m(self) -> float:
        return float(self.point[2])

    def put_down_point(self, size_m: float = 0.04) -> np.ndarray:
        """World xyz of the centre of an object of side ``size_m`` resting at :attr:`point`."""
        return self.point + np.array((0.0, 0.0, size_m / 2.0))


@dataclass(frozen=True)
class OccupancyMap:
    """A 2D occupancy grid for navigation: ``grid[row, col]`` = ``[y, x]``, True = the
    robot's centre may not be there (obstacles already inflated by the robot's radius);
    ``origin_xy`` is the world position of the lower-left corner of cell (0, 0)."""

    grid: np.ndarray
    origin_xy: tuple[float, float]
    resolution: float
    inflate_m: float = 0.0

    def __post_init__(self) -> None:
        g = np.asarray(self.grid, dtype=bool)
        if g.ndim != 2 or g.size == 0:
            raise ConfigError(f"map.grid must be a non-empty 2D array, got shape {g.shape}")
        if not (self.resolution > 0 and math.isfinite(self.resolution)):
            raise ConfigError(f"map.resolution must be > 0 metres, got {self.resolution}")
        g.setflags(write=False)
        object.__setattr__(self, "grid", g)
        object.__setattr__(self, "origin_xy", tuple(float(v) for v in _vec(self.origin_xy, 2, "map.origin_xy")))

    @classmethod
    def of(cls, grid_like: Any) -> OccupancyMap:
        """From anything with ``grid``, ``origin_xy`` and ``resolution`` (a sim grid...)."""
        if isinstance(grid_like, OccupancyMap):
            return grid_like
        return cls(np.asarray(grid_like.grid, dtype=bool), tuple(grid_like.origin_xy),
                   float(grid_like.resolution), float(getattr(grid_like, "inflate_m", 0.0)))

    def free_bounds(self) -> tuple[float, float, float, float] | None:
        """(x_min, x_max, y_min, y_max) of the free cells' centres, None if none is free."""
        rows, cols = np.nonzero(~self.grid)
        if rows.size == 0:
            return None
        r, (ox, oy) = self.resolution, self.origin_xy
        return (float(ox + (cols.min() + 0.5) * r), float(ox + (cols.max() + 0.5) * r),
                float(oy + (rows.min() + 0.5) * r), float(oy + (rows.max() + 0.5) * r))

    def is_free(self, x: float, y: float) -> bool:
        col = math.floor((x - self.origin_xy[0]) / self.resolution)
        row = math.floor((y - self.origin_xy[1]) / self.resolution)
        h, w = self.grid.shape
        return 0 <= row < h and 0 <= col < w and not bool(self.grid[row, col])


def _by_name(items: Any, kind: str) -> dict[str, Any]:
    if isinstance(items, Mapping):
        out = dict(items)
        for name, item in out.items():
            if getattr(item, "name", name) != name:
                raise ConfigError(f"{kind}[{name!r}] is named {item.name!r}")
        return out
    return {item.name: item for item in (items or ())}


@dataclass(frozen=True)
class WorldKnowledge:
    """What planning and skills need to know about the robot's world.

    Duck-compatible with the simulator's scene config where the runtime reads one:
    ``places`` (entries with ``pose``), ``objects`` (with ``place``, ``color``,
    ``size_m``), ``receptacles`` (with ``place``, ``color``) and ``robot_radius_m``.
    ``workspace`` is (x_min, x_max, y_min, y_max) where the base may stand (default: the
    map's free area).
    """

    places: Mapping[str, Place] = field(default_factory=dict)
    objects: Mapping[str, KnownObject] = field(default_factory=dict)
    receptacles: Mapping[str, Receptacle] = field(default_factory=dict)
    surfaces: Mapping[str, Surface] = field(default_factory=dict)
    map: OccupancyMap | None = None
    robot_radius_m: float = 0.0
    workspace: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        for attr, kind in (("places", "places"), ("objects", "objects"),
                           ("receptacles", "receptacles"), ("surfaces", "surfaces")):
            object.__setattr__(self, attr, _by_name(getattr(self, attr), kind))
        seen: dict[str, str] = {}
        for kind in ("places", "objects", "receptacles"):
            for name in getattr(self, kind):
                if name in seen:
                    raise ConfigError(f"world: {name!r} is both in {seen[name]} and in {kind}")
                seen[name] = kind
        for kind in ("objects", "receptacles", "surfaces"):
            for name, item in getattr(self, kind).items():
                if item.place is not None and item.place not in self.places:
                    raise ConfigError(f"world {kind}.{name}.place = {item.place!r} is not a place; "
                                      f"known: {', '.join(sorted(self.places)) or 'none'}")
        if self.map is not None and not isinstance(self.map, OccupancyMap):
            object.__setattr__(self, "map", OccupancyMap.of(self.map))
        if self.workspace is None and self.map is not None:
            object.__setattr__(self, "workspace", self.map.free_bounds())

    @property
    def names(self) -> dict[str, str]:
        """Every known name -> ``place``, ``object`` or ``receptacle``."""
        out = dict.fromkeys(self.places, "place")
        out.update(dict.fromkeys(self.objects, "object"))
        out.update(dict.fromkeys(self.receptacles, "receptacle"))
        return out

    def locations(self) -> dict[str, str]:
        """Object or receptacle -> the place it is reached from (where known)."""
        out = {n: o.place for n, o in self.objects.items() if o.place is not None}
        out.update({n: r.place for n, r in self.receptacles.items() if r.place is not None})
        return out

    def drop_points(self) -> dict[str, np.ndarray]:
        return {n: r.drop_point.copy() for n, r in self.receptacles.items()}

    def put_down_points(self, size_m: float | None = None) -> dict[str, np.ndarray]:
        """Place -> where an object's centre rests on that place's surface (the skills'
        ``SceneInfo.surfaces``); ``size_m`` default: the largest known object."""
        size = size_m if size_m is not None else max((o.size_m for o in self.objects.values()), default=0.04)
        out: dict[str, np.ndarray] = {}
        for s in self.surfaces.values():
            key = s.place if s.place is not None else s.name
            out.setdefault(key, s.put_down_point(size))
        return out

    def place_for(self, target: str) -> Place:
        """Where the base stands to reach ``target`` (an object, receptacle or place)."""
        where = self.locations().get(target, target)
        if where in self.places:
            return self.places[where]
        known = sorted(self.names)
        raise KeyError(f"unknown target {target!r} or it has no place; known: {', '.join(known) or 'none'}")

    def summary(self) -> dict[str, Any]:
        """Plain data for reports and planner context."""
        return {
            "places": {n: list(p.pose) for n, p in self.places.items()},
            "objects": {n: {"place": o.place, "color": o.color, "size_m": o.size_m} for n, o in self.objects.items()},
            "receptacles": {n: {"place": r.place, "drop_point": r.drop_point.round(4).tolist()}
                            for n, r in self.receptacles.items()},
            "surfaces": {n: {"place": s.place, "height_m": round(s.height_m, 4),
                             "point": s.point.round(4).tolist()} for n, s in self.surfaces.items()},
            "map": None if self.map is None else {"shape": list(self.map.grid.shape),
                                                  "resolution": self.map.resolution,
                                                  "origin_xy": list(self.map.origin_xy)},
            "workspace": None if self.workspace is None else [round(v, 4) for v in self.workspace],
        }


@dataclass
class Telemetry:
    """Robot state beyond :class:`~rtvla.robots.base.RobotState` that the control process
    mirrors to the parent (a simulator's ``qpos``, object poses, what the gripper holds).

    ``write(robot, out)`` runs in the control process after every tick and fills ``out``
    (``size`` floats); it must be a module-level function (it is pickled to the child).
    In the parent, :meth:`attach` gives the embodiment's views (cameras, shadow models)
    the newest array; ``holding(arr)`` decodes the held object's name from one.
    """

    size: int
    write: Callable[[Any, np.ndarray], None]
    holding: Callable[[np.ndarray], str | None] | None = None
    _latest: Callable[[], np.ndarray | None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and self.size >= 1):
            raise ConfigError(f"telemetry size must be an integer >= 1, got {self.size!r}")

    def attach(self, latest: Callable[[], np.ndarray | None]) -> None:
        """Read telemetry from ``latest`` (the control process's shared-memory channel)."""
        self._latest = latest

    @property
    def attached(self) -> bool:
        return self._latest is not None

    def latest(self) -> np.ndarray | None:
        """The newest telemetry array, or None before attach or before the first tick."""
        return None if self._latest is None else self._latest()


@dataclass
class Embodiment:
    """A robot as a plug-in delivers it. See the module docstring.

    In thread placement the runtime connects ``robot`` and drives it. In process
    placement (``process_safe`` with a ``process_factory``) the control process builds its
    own robot from ``process_factory``; ``robot`` here then serves as the parent's model
    of it (limits, kinematics) and :meth:`hosted` swaps in the runtime's proxy and attaches
    the telemetry that keeps cameras and views current.
    """

    robot: Robot
    cameras: dict[str, RobotCamera] = field(default_factory=dict)
    world: WorldKnowledge = field(default_factory=WorldKnowledge)
    kinematics: Any = None
    has_base: bool = False
    has_arm: bool = False
    process_safe: bool = False
    process_factory: FactoryRef | None = None
    telemetry: Telemetry | None = None
    name: str = ""
    closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _hosted: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        limits = getattr(self.robot, "limits", None)
        if limits is None:
            raise ConfigError(f"embodiment {self.name!r}: its robot has no limits (not a Robot)")
        if self.process_safe and self.process_factory is None:
            raise ConfigError(f"embodiment {self.name!r}: process_safe needs a process_factory")
        if self.process_factory is not None and not isinstance(self.process_factory, FactoryRef):
            raise ConfigError(f"embodiment {self.name!r}: process_factory must be a FactoryRef, "
                              f"got {type(self.process_factory).__name__}")
        for key, cam in self.cameras.items():
            if cam.name != key:
                raise ConfigError(f"embodiment cameras[{key!r}] is named {cam.name!r}")
            if not isinstance(cam.source, CameraSource):
                raise ConfigError(f"embodiment camera {key!r}: source {type(cam.source).__name__} "
                                  "lacks open/close/read")

    @property
    def dof(self) -> int:
        return int(self.robot.limits.dof)

    @property
    def can_navigate(self) -> bool:
        return self.has_base

    @property
    def is_hosted(self) -> bool:
        """True once :meth:`hosted` handed the robot to a control process."""
        return self._hosted

    def camera(self, name: str) -> RobotCamera:
        try:
            return self.cameras[name]
        except KeyError:
            raise KeyError(f"the robot carries no camera {name!r}; it has: "
                           f"{', '.join(self.cameras) or 'none'}") from None

    def hosted(self, robot: Robot, latest_telemetry: Callable[[], np.ndarray | None] | None = None) -> Embodiment:
        """This embodiment with ``robot`` (the runtime's proxy of the control process's robot)
        in place of the local one, its telemetry read from ``latest_telemetry``."""
        if self.telemetry is not None:
            if latest_telemetry is None:
                raise ConfigError(f"embodiment {self.name!r} mirrors telemetry: pass latest_telemetry")
            self.telemetry.attach(latest_telemetry)
        out = replace(self, robot=robot)
        out._hosted = True
        return out

    def close(self) -> None:
        """Close cameras, then the robot (unless hosted: the control process owns it), then
        whatever the plug-in registered in ``closers``. Errors are logged, not raised."""
        for cam in self.cameras.values():
            try:
                cam.source.close()
            except Exception as exc:
                logger.warning("camera %s close failed: %s", cam.name, exc)
        if not self._hosted:
            try:
                self.robot.close()
            except Exception as exc:
                logger.warning("robot close failed: %s", exc)
        for fn in self.closers:
            try:
                fn()
            except Exception as exc:
                logger.warning("embodiment closer failed: %s", exc)

    def describe(self) -> dict[str, Any]:
        """Plain data for `rtvla parts`, the report and the planner context."""
        lim = self.robot.limits
        return {
            "name": self.name, "has_base": self.has_base, "has_arm": self.has_arm,
            "dof": lim.dof, "joints": list(lim.joint_names), "kinematics": self.kinematics is not None,
            "process_safe": self.process_safe,
            "process_factory": None if self.process_factory is None else self.process_factory.target,
            "cameras": {n: {"frame": c.frame, "rate_hz": c.rate_hz, "depth": c.depth,
                            "size": [int(getattr(c.intrinsics, "width", 0)), int(getattr(c.intrinsics, "height", 0))]}
                        for n, c in self.cameras.items()},
            "world": self.world.summary(),
        }


def as_embodiment(obj: Any, *, name: str = "") -> Embodiment:
    """``obj`` if it is an :class:`Embodiment`; a bare ``Robot`` becomes one that knows
    nothing of its world (no base assumed, so plans that navigate are refused)."""
    if isinstance(obj, Embodiment):
        return obj
    if not isinstance(obj, Robot):
        raise ConfigError(f"a robot plug-in must return an Embodiment or a Robot, got {type(obj).__name__}")
    return Embodiment(robot=obj, has_arm=obj.limits.dof > 0, kinematics=getattr(obj, "kinematics", None),
                      name=name or type(obj).__name__)
