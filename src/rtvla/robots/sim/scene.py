"""The simulated room's configuration: named places, objects, receptacles and robot wiring.

``assets/scene.toml`` sits beside ``assets/scene.xml`` (the MJCF). :func:`load_scene` reads
and validates it once into a frozen :class:`SceneConfig`; everything else receives that.

Usage::

    scene = load_scene()                      # the packaged room
    scene.place("table").pose                 # (1.3, -0.5, 0.0)
    scene.place_for("red_cube").name          # "table": where the arm reaches it from
    model = scene.load_model()                # mujoco.MjModel of scene.xml
"""

from __future__ import annotations

import math
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rtvla.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_SCENE_TOML",
    "ObjectSpec",
    "Place",
    "ReceptacleSpec",
    "RobotWiring",
    "SceneConfig",
    "assets_dir",
    "load_scene",
]


def assets_dir() -> Path:
    """The folder holding the packaged ``scene.xml`` and ``scene.toml``."""
    return Path(str(resources.files("rtvla.robots.sim").joinpath("assets")))


DEFAULT_SCENE_TOML = "scene.toml"

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Place(BaseModel):
    """A standing pose of the robot base: ``pose`` = (x, y, yaw) in the world frame."""

    model_config = _FROZEN
    name: str = ""
    pose: tuple[float, float, float]
    description: str = ""

    @field_validator("pose")
    @classmethod
    def _finite(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"pose must be finite, got {v}")
        return v


class ObjectSpec(BaseModel):
    """A graspable object: its MuJoCo body, colour, size and the place it is reached from."""

    model_config = _FROZEN
    name: str = ""
    body: str
    place: str
    color: str
    size_m: float = Field(gt=0.0)


class ReceptacleSpec(BaseModel):
    """Somewhere to put objects: its body, colour, drop site and the place it is reached from."""

    model_config = _FROZEN
    name: str = ""
    body: str
    place: str
    color: str
    drop_site: str


class RobotWiring(BaseModel):
    """Which MJCF joints, actuators and sites make up the robot, and its motion limits."""

    model_config = _FROZEN
    arm_joints: tuple[str, ...] = Field(min_length=4, max_length=6)
    arm_actuators: tuple[str, ...]
    base_joints: tuple[str, str, str]
    base_actuators: tuple[str, str, str]
    finger_joints: tuple[str, ...] = Field(min_length=1)
    finger_actuators: tuple[str, ...]
    finger_open_m: float
    finger_closed_m: float
    grasp_site: str
    hand_body: str
    camera: str
    grasp_radius_m: float = Field(gt=0.0, le=0.2)
    dq_max: tuple[float, ...]
    ddq_max: tuple[float, ...]
    jerk_max: tuple[float, ...]
    base_lin_vel_max: float = Field(gt=0.0)
    base_ang_vel_max: float = Field(gt=0.0)

    @model_validator(mode="after")
    def _shapes(self) -> RobotWiring:
        n = len(self.arm_joints)
        for field in ("arm_actuators", "dq_max", "ddq_max", "jerk_max"):
            value = getattr(self, field)
            if len(value) != n:
                raise ValueError(
                    f"robot.{field} needs {n} entries (one per arm joint), got {len(value)}"
                )
        for field in ("dq_max", "ddq_max", "jerk_max"):
            if any(not (x > 0 and math.isfinite(x)) for x in getattr(self, field)):
                raise ValueError(
                    f"robot.{field} must be positive and finite, got {getattr(self, field)}"
                )
        if len(self.finger_actuators) != len(self.finger_joints):
            raise ValueError("robot.finger_actuators needs one entry per finger joint")
        if self.finger_open_m == self.finger_closed_m:
            raise ValueError("robot.finger_open_m and finger_closed_m must differ")
        return self


class SceneConfig(BaseModel):
    """The validated scene configuration (frozen). ``mjcf`` is resolved to an absolute path."""

    model_config = _FROZEN
    mjcf: Path
    keyframe: str = "home"
    robot_radius_m: float = Field(gt=0.0)
    places: dict[str, Place]
    objects: dict[str, ObjectSpec]
    receptacles: dict[str, ReceptacleSpec]
    robot: RobotWiring

    @model_validator(mode="before")
    @classmethod
    def _name_entries(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("places", "objects", "receptacles"):
                table = data.get(key)
                if isinstance(table, dict):
                    data[key] = {
                        name: ({**entry, "name": name} if isinstance(entry, dict) else entry)
                        for name, entry in table.items()
                    }
        return data

    @model_validator(mode="after")
    def _references(self) -> SceneConfig:
        for kind, table in (("objects", self.objects), ("receptacles", self.receptacles)):
            for name, spec in table.items():
                if spec.place not in self.places:
                    raise ValueError(
                        f"{kind}.{name}.place = {spec.place!r} is not a place; "
                        f"known: {', '.join(sorted(self.places))}"
                    )
        if not self.places:
            raise ValueError("places: at least one place is needed")
        return self

    def place(self, name: str) -> Place:
        """The named place; ``KeyError`` lists the known ones."""
        try:
            return self.places[name]
        except KeyError:
            raise KeyError(
                f"unknown place {name!r}; known: {', '.join(sorted(self.places))}"
            ) from None

    def place_for(self, target: str) -> Place:
        """Where the robot stands to reach ``target`` (an object, receptacle or place name)."""
        if target in self.objects:
            return self.places[self.objects[target].place]
        if target in self.receptacles:
            return self.places[self.receptacles[target].place]
        if target in self.places:
            return self.places[target]
        known = sorted([*self.places, *self.objects, *self.receptacles])
        raise KeyError(f"unknown target {target!r}; known: {', '.join(known)}")

    def load_model(self) -> Any:
        """Compile the MJCF into a fresh ``mujoco.MjModel``."""
        import mujoco

        try:
            return mujoco.MjModel.from_xml_path(str(self.mjcf))
        except ValueError as exc:
            raise ConfigError(f"scene MJCF {self.mjcf}: {exc}") from None


def _format(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc or 'scene'}: {msg} (got {err.get('input')!r})")
    return f"{source}: " + "; ".join(parts)


def load_scene(
    path: str | Path | None = None, *, data: dict[str, Any] | None = None
) -> SceneConfig:
    """Load and validate a scene TOML (default: the packaged one) or an already parsed ``data``.

    A relative ``mjcf`` is resolved against the TOML's folder. Raises :class:`ConfigError`
    naming the file, field and bad value.
    """
    if data is None:
        toml_path = Path(path) if path is not None else assets_dir() / DEFAULT_SCENE_TOML
        if not toml_path.is_file():
            raise ConfigError(f"scene config {toml_path} does not exist")
        try:
            data = tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: invalid TOML: {exc}") from None
        base = toml_path.parent
        source = str(toml_path)
    else:
        base = assets_dir()
        source = "scene data"
    data = dict(data)
    mjcf = Path(str(data.get("mjcf", "scene.xml")))
    data["mjcf"] = mjcf if mjcf.is_absolute() else base / mjcf
    try:
        scene = SceneConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None
    if not scene.mjcf.is_file():
        raise ConfigError(f"{source}: mjcf file {scene.mjcf} does not exist")
    return scene
