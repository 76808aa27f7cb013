"""The plan schema, the robot's capabilities, and plan validation.

A :class:`Plan` is an ordered list of :class:`Action` s. Each action has a ``type``
(navigate | perceive | manipulate | communicate), typed ``parameters`` and a ``description``.
:func:`validate_plan` checks a plan against :class:`Capabilities` (known places, objects and
receptacles, speed limit, workspace bounds) and simulates what the robot holds and where it
is, so that nothing unvalidated reaches execution, whatever the instruction or the model said.

Usage::

    caps = Capabilities.default()
    plan = parse_plan({"actions": [{"type": "navigate", "parameters": {"target": "table"},
                                    "description": "go to the table"}]}, caps)
    validate_plan(plan, caps)          # raises PlanValidationError with the reason
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from rtvla.config import validate_table
from rtvla.errors import ConfigError, PlanValidationError

__all__ = [
    "ACTION_TYPES",
    "DEFAULT_SYNONYMS",
    "MAX_ACTIONS",
    "Action",
    "Capabilities",
    "CommunicateParams",
    "ManipulateParams",
    "NavigateParams",
    "PerceiveParams",
    "Plan",
    "PlanContext",
    "Pose2D",
    "Workspace",
    "parse_plan",
    "plan_json_schema",
    "validate_plan",
]

ACTION_TYPES = ("navigate", "perceive", "manipulate", "communicate")
MAX_ACTIONS = 32
MAX_TEXT = 500

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

#: Instruction words mapped to the words used in scene names.
DEFAULT_SYNONYMS: dict[str, str] = {
    "block": "cube", "box": "cube", "basket": "bin", "container": "bin", "bucket": "bin",
    "counter": "kitchen", "start": "home", "base": "home",
}


class Pose2D(BaseModel):
    """A base pose on the floor: metres and radians."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x: float
    y: float
    yaw: float = 0.0

    @field_validator("x", "y", "yaw")
    @classmethod
    def _finite(cls, value: float, info: Any) -> float:
        if not math.isfinite(value):
            raise ValueError(f"{info.field_name} must be finite, got {value}")
        return value


class Workspace(BaseModel):
    """Rectangle the base may be sent to (metres)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x_min: float = -5.0
    x_max: float = 5.0
    y_min: float = -5.0
    y_max: float = 5.0

    @model_validator(mode="after")
    def _ordered(self) -> Workspace:
        if not (self.x_min < self.x_max and self.y_min < self.y_max):
            raise ValueError(
                f"workspace needs x_min < x_max and y_min < y_max, got "
                f"x [{self.x_min}, {self.x_max}] y [{self.y_min}, {self.y_max}]"
            )
        return self

    def contains(self, x: float, y: float) -> bool:
        return self.x_min <= x <= self.x_max and self.y_min <= y <= self.y_max


def _words(name: str) -> str:
    return name.replace("_", " ")


class Capabilities(BaseModel):
    """What the robot knows and may do: the names a plan may use and the bounds it must keep.

    ``places`` maps a place name to its pose (None when only the navigation stack knows it);
    ``locations`` maps every object and receptacle to the place it is reached from;
    ``synonyms`` maps instruction words to the words used in names ("block" -> "cube").
    The runtime builds this from the scene config; :meth:`default` matches the sim scene.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    places: dict[str, Pose2D | None]
    objects: tuple[str, ...]
    receptacles: tuple[str, ...] = ()
    locations: dict[str, str] = Field(default_factory=dict)
    max_speed: float = Field(default=1.0, gt=0, description="max base speed, m/s")
    workspace: Workspace = Field(default_factory=Workspace)
    synonyms: dict[str, str] = Field(default_factory=dict)
    # What the embodiment can do: a robot without a base (or without a map to drive by)
    # cannot navigate, one without an arm cannot manipulate; the reason says why.
    can_navigate: bool = True
    navigate_reason: str = ""
    can_manipulate: bool = True
    manipulate_reason: str = ""

    _phrases: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Capabilities:
        if not self.places:
            raise ValueError("capabilities.places must name at least one place")
        seen: dict[str, str] = {}
        for kind, names in (("place", self.places), ("object", self.objects),
                            ("receptacle", self.receptacles)):
            for name in names:
                if not _NAME_RE.match(name):
                    raise ValueError(
                        f"capabilities {kind} name must be lower_snake_case, got {name!r}"
                    )
                if name in seen:
                    raise ValueError(f"capabilities name {name!r} is both a {seen[name]} and a {kind}")
                seen[name] = kind
        for thing, place in self.locations.items():
            if thing not in self.objects and thing not in self.receptacles:
                raise ValueError(f"capabilities.locations: {thing!r} is not a known object or receptacle")
            if place not in self.places:
                raise ValueError(f"capabilities.locations[{thing!r}]: unknown place {place!r}")
        for name, pose in self.places.items():
            if pose is not None and not self.workspace.contains(pose.x, pose.y):
                raise ValueError(
                    f"capabilities.places[{name!r}] at ({pose.x}, {pose.y}) is outside the workspace"
                )
        phrases: dict[str, str] = {}
        for name in seen:
            phrases[_words(name)] = name
        self._phrases = phrases
        return self

    @classmethod
    def default(cls) -> Capabilities:
        """The simulated room's names and poses (``robots/sim/assets/scene.toml``): places
        home, table, kitchen, shelf; the three cubes reached from the table; both bins on the
        kitchen counter; base speed 0.5 m/s; walls at +-4 m less the robot's radius."""
        return cls(
            places={
                "home": Pose2D(x=-2.5, y=-2.5, yaw=0.0),
                "table": Pose2D(x=1.3, y=-0.5, yaw=0.0),
                "kitchen": Pose2D(x=-2.0, y=2.85, yaw=1.5707963267948966),
                "shelf": Pose2D(x=-1.15, y=-1.5, yaw=0.0),
            },
            objects=("red_cube", "green_cube", "blue_cube"),
            receptacles=("blue_bin", "green_bin"),
            locations={
                "red_cube": "table", "green_cube": "table", "blue_cube": "table",
                "blue_bin": "kitchen", "green_bin": "kitchen",
            },
            max_speed=0.5,
            workspace=Workspace(x_min=-3.64, x_max=3.64, y_min=-3.64, y_max=3.64),
            synonyms=dict(DEFAULT_SYNONYMS),
        )

    @classmethod
    def from_scene(cls, scene: Any, *, workspace: Workspace | None = None,
                   synonyms: Mapping[str, str] | None = None) -> Capabilities:
        """Build from the sim scene's config: a ``SceneConfig`` (``robots.sim.load_scene()``)
        or the raw ``scene.toml`` mapping (``places.NAME.pose = [x, y, yaw]``,
        ``objects.NAME.place``, ``receptacles.NAME.place``, ``robot.base_lin_vel_max``)."""

        def get(obj: Any, key: str, default: Any = None) -> Any:
            if isinstance(obj, Mapping):
                return obj.get(key, default)
            return getattr(obj, key, default)

        places: dict[str, Pose2D | None] = {}
        for name, entry in dict(get(scene, "places", {}) or {}).items():
            pose = get(entry, "pose")
            places[name] = None if pose is None else Pose2D(
                x=float(pose[0]), y=float(pose[1]), yaw=float(pose[2]) if len(pose) > 2 else 0.0)
        locations: dict[str, str] = {}
        objects = dict(get(scene, "objects", {}) or {})
        receptacles = dict(get(scene, "receptacles", {}) or {})
        for table in (objects, receptacles):
            for name, entry in table.items():
                place = get(entry, "place")
                if place is not None:
                    locations[name] = str(place)
        robot = get(scene, "robot")
        speed = get(robot, "base_lin_vel_max", 1.0) if robot is not None else 1.0
        if workspace is None:
            radius = float(get(scene, "robot_radius_m", 0.0) or 0.0)
            half = get(scene, "room_half_extent_m", 4.0)
            workspace = Workspace(x_min=-half + radius, x_max=half - radius,
                                  y_min=-half + radius, y_max=half - radius)
        data = {
            "places": places, "objects": tuple(objects), "receptacles": tuple(receptacles),
            "locations": locations, "max_speed": float(speed), "workspace": workspace,
            "synonyms": dict(DEFAULT_SYNONYMS if synonyms is None else synonyms),
        }
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"scene capabilities: {_pydantic_reason(exc)}") from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "capabilities") -> Capabilities:
        """Validate a raw config table; errors name the key and the value."""
        return validate_table(cls, data, where)

    @cached_property
    def digest(self) -> str:
        """A short stable hash of everything here (part of the plan cache key)."""
        return hashlib.blake2b(self.model_dump_json().encode(), digest_size=12).hexdigest()

    @property
    def names(self) -> dict[str, str]:
        """Every known name -> its kind (place, object or receptacle)."""
        out = dict.fromkeys(self.places, "place")
        out.update(dict.fromkeys(self.objects, "object"))
        out.update(dict.fromkeys(self.receptacles, "receptacle"))
        return out

    def resolve(self, phrase: str) -> str | None:
        """The name an instruction phrase refers to ("the red block" -> ``red_cube``), or None."""
        words = [w for w in re.findall(r"[a-z0-9]+", phrase.lower())
                 if w not in ("the", "a", "an", "my", "that", "this", "some")]
        if not words:
            return None
        words = [self.synonyms.get(w, w) for w in words]
        key = " ".join(words)
        if key in self._phrases:
            return self._phrases[key]
        # A lone colour or noun is accepted only when it names exactly one thing.
        hits = {n for p, n in self._phrases.items() if set(words) <= set(p.split())}
        return hits.pop() if len(hits) == 1 else None

    def mentions(self, text: str) -> frozenset[str]:
        """The names a text mentions, by their phrase (used to guard the semantic cache)."""
        words = [self.synonyms.get(w, w) for w in re.findall(r"[a-z0-9]+", text.lower())]
        joined = " " + " ".join(words) + " "
        return frozenset(n for p, n in self._phrases.items() if f" {p} " in joined)

    def location_of(self, name: str) -> str | None:
        """The place from which an object or receptacle is reached (a place is its own)."""
        if name in self.places:
            return name
        return self.locations.get(name)


class PlanContext(BaseModel):
    """What changes the answer besides the instruction: capabilities and the robot's state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    capabilities: Capabilities = Field(default_factory=Capabilities.default)
    robot_place: str | None = None
    holding: str | None = None
    scene: dict[str, Any] = Field(default_factory=dict)
    # What the cameras see now: [{"label", "position": [x, y, z] | None, "age_s"}]. Not part
    # of the cache key: plans name things, they do not depend on where exactly they are.
    observations: list[dict[str, Any]] = Field(default_factory=list)
    # Why the previous plan failed, when this is a request for a new one.
    failure: str | None = None

    @model_validator(mode="after")
    def _check(self) -> PlanContext:
        caps = self.capabilities
        if self.robot_place is not None and self.robot_place not in caps.places:
            raise ValueError(f"context.robot_place: unknown place {self.robot_place!r}")
        if self.holding is not None and self.holding not in caps.objects:
            raise ValueError(f"context.holding: unknown object {self.holding!r}")
        return self

    @cached_property
    def digest(self) -> str:
        """Hash of capabilities, place, held object and scene: part of the cache key."""
        state = json.dumps([self.robot_place, self.holding, self.scene, self.failure], sort_keys=True,
                           default=str)
        return hashlib.blake2b((self.capabilities.digest + state).encode(),
                               digest_size=12).hexdigest()


# -- actions -------------------------------------------------------------------------------


class NavigateParams(BaseModel):
    """Go to a named place or to a pose, optionally capped in speed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str | None = None
    pose: Pose2D | None = None
    max_speed: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_goal(self) -> NavigateParams:
        if (self.target is None) == (self.pose is None):
            raise ValueError("navigate needs exactly one of 'target' (a place) or 'pose'")
        return self


class PerceiveParams(BaseModel):
    """Look for something."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str


class ManipulateParams(BaseModel):
    """Pick an object up, or place the held object into/onto a destination."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operation: Literal["pick", "place"]
    object: str
    destination: str | None = None

    @model_validator(mode="after")
    def _dest(self) -> ManipulateParams:
        if self.operation == "place" and not self.destination:
            raise ValueError("manipulate 'place' needs a 'destination'")
        return self


class CommunicateParams(BaseModel):
    """Say something to the people around."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT)


_PARAMS: dict[str, type[BaseModel]] = {
    "navigate": NavigateParams,
    "perceive": PerceiveParams,
    "manipulate": ManipulateParams,
    "communicate": CommunicateParams,
}

Params = NavigateParams | PerceiveParams | ManipulateParams | CommunicateParams


class Action(BaseModel):
    """One step of a plan; ``parameters`` are parsed into the type's own schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["navigate", "perceive", "manipulate", "communicate"]
    parameters: Params
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _typed_params(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError(f"an action must be an object, got {type(data).__name__}")
        kind = data.get("type")
        if kind not in _PARAMS:
            raise ValueError(f"unknown action type {kind!r}; known: {', '.join(ACTION_TYPES)}")
        params = data.get("parameters", {})
        if isinstance(params, BaseModel) and isinstance(params, _PARAMS[kind]):
            return data
        if not isinstance(params, Mapping):
            raise ValueError(f"{kind} parameters must be an object, got {params!r}")
        out = dict(data)
        out["parameters"] = _PARAMS[kind].model_validate(dict(params))
        return out

    def summary(self) -> str:
        """A one-line human reading: ``navigate(table)``, ``manipulate(pick red_cube)``."""
        p = self.parameters
        if isinstance(p, NavigateParams):
            goal = p.target if p.target is not None else f"x={p.pose.x:g} y={p.pose.y:g}"  # type: ignore[union-attr]
            return f"navigate({goal})"
        if isinstance(p, PerceiveParams):
            return f"perceive({p.target})"
        if isinstance(p, ManipulateParams):
            dest = f" -> {p.destination}" if p.destination else ""
            return f"manipulate({p.operation} {p.object}{dest})"
        return f"communicate({p.text!r})"  # type: ignore[union-attr]


class Plan(BaseModel):
    """An ordered list of actions plus an optional explanation from the planner."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actions: tuple[Action, ...]
    explanation: str | None = None

    def summary(self) -> str:
        return " -> ".join(a.summary() for a in self.actions)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# -- validation ----------------------------------------------------------------------------


def _pydantic_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).endswith("Params"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_plan(data: Any, capabilities: Capabilities | None = None, *,
               robot_place: str | None = None, holding: str | None = None) -> Plan:
    """Build a :class:`Plan` from parsed JSON (an object with ``actions`` or a bare list) and
    validate it; raises :class:`PlanValidationError` naming what was wrong."""
    if isinstance(data, list):
        data = {"actions": data}
    if not isinstance(data, Mapping):
        raise PlanValidationError(f"a plan must be an object with 'actions', got {type(data).__name__}")
    if "actions" not in data:
        raise PlanValidationError(f"a plan needs an 'actions' list; got keys {sorted(data)}")
    try:
        plan = Plan.model_validate(dict(data))
    except ValidationError as exc:
        raise PlanValidationError(f"plan does not match the schema: {_pydantic_reason(exc)}") from None
    if capabilities is not None:
        validate_plan(plan, capabilities, robot_place=robot_place, holding=holding)
    return plan


def validate_plan(plan: Plan, capabilities: Capabilities, *, robot_place: str | None = None,
                  holding: str | None = None) -> Plan:
    """Check every action against the capabilities and simulate place and gripper.

    Rejects: an empty or over-long plan, unknown places/objects/receptacles, speeds above the
    limit, poses outside the workspace, picking with a full gripper or away from the object,
    placing an object that is not held or away from the destination. Returns the plan.
    """
    caps = capabilities
    if not isinstance(plan, Plan):
        raise PlanValidationError(f"expected a Plan, got {type(plan).__name__}")
    if not plan.actions:
        raise PlanValidationError("plan is empty: it has no actions")
    if len(plan.actions) > MAX_ACTIONS:
        raise PlanValidationError(f"plan has {len(plan.actions)} actions; at most {MAX_ACTIONS} allowed")
    at = robot_place
    held = holding
    names = caps.names
    for i, action in enumerate(plan.actions):
        where = f"action {i} ({action.type})"
        p = action.parameters
        if isinstance(p, NavigateParams):
            if not caps.can_navigate:
                raise PlanValidationError(
                    f"{where}: this robot cannot navigate ({caps.navigate_reason or 'no mobile base'})"
                )
            if p.max_speed is not None and p.max_speed > caps.max_speed:
                raise PlanValidationError(
                    f"{where}: max_speed {p.max_speed} m/s exceeds the limit {caps.max_speed} m/s"
                )
            if p.target is not None:
                if p.target not in caps.places:
                    raise PlanValidationError(
                        f"{where}: unknown place {p.target!r}; known places: {', '.join(caps.places)}"
                    )
                at = p.target
            else:
                assert p.pose is not None
                if not caps.workspace.contains(p.pose.x, p.pose.y):
                    ws = caps.workspace
                    raise PlanValidationError(
                        f"{where}: pose ({p.pose.x}, {p.pose.y}) is outside the workspace "
                        f"x [{ws.x_min}, {ws.x_max}] y [{ws.y_min}, {ws.y_max}]"
                    )
                at = None
        elif isinstance(p, PerceiveParams):
            if p.target not in names:
                raise PlanValidationError(
                    f"{where}: unknown target {p.target!r}; known: {', '.join(names)}"
                )
        elif isinstance(p, ManipulateParams):
            if not caps.can_manipulate:
                raise PlanValidationError(
                    f"{where}: this robot cannot manipulate ({caps.manipulate_reason or 'no arm'})"
                )
            if p.object not in caps.objects:
                raise PlanValidationError(
                    f"{where}: unknown object {p.object!r}; known objects: {', '.join(caps.objects)}"
                )
            if p.operation == "pick":
                if held is not None:
                    raise PlanValidationError(
                        f"{where}: cannot pick {p.object!r} while holding {held!r}"
                    )
                loc = caps.location_of(p.object)
                if at is not None and loc is not None and at != loc:
                    raise PlanValidationError(
                        f"{where}: {p.object!r} is reached from {loc!r} but the robot is at {at!r}"
                    )
                held = p.object
            else:
                dest = p.destination
                if dest not in caps.receptacles and dest not in caps.places:
                    raise PlanValidationError(
                        f"{where}: unknown destination {dest!r}; known receptacles and places: "
                        f"{', '.join([*caps.receptacles, *caps.places])}"
                    )
                if held != p.object:
                    raise PlanValidationError(
                        f"{where}: cannot place {p.object!r}: it is not held"
                        + (f" (holding {held!r})" if held else " (the gripper is empty)")
                    )
                loc = caps.location_of(dest) if dest is not None else None
                if at is not None and loc is not None and at != loc:
                    raise PlanValidationError(
                        f"{where}: destination {dest!r} is reached from {loc!r} but the robot is at {at!r}"
                    )
                held = None
    return plan


def plan_json_schema(capabilities: Capabilities | None = None) -> dict[str, Any]:
    """The JSON schema of a plan, with the known names as enums when capabilities are given
    (for ``response_format`` and for the prompt)."""

    def enum(values: Any) -> dict[str, Any]:
        vals = list(values)
        return {"type": "string", "enum": vals} if vals else {"type": "string"}

    caps = capabilities
    places = enum(caps.places if caps else [])
    objects = enum(caps.objects if caps else [])
    things = enum([*caps.names] if caps else [])
    dests = enum([*caps.receptacles, *caps.places] if caps else [])
    pose = {
        "type": "object",
        "properties": {"x": {"type": "number"}, "y": {"type": "number"}, "yaw": {"type": "number"}},
        "required": ["x", "y"],
        "additionalProperties": False,
    }

    def action(kind: str, params: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "type": {"type": "string", "const": kind},
                "parameters": {"type": "object", "properties": params, "required": required,
                               "additionalProperties": False},
                "description": {"type": "string"},
            },
            "required": ["type", "parameters", "description"],
            "additionalProperties": False,
        }

    speed = {"type": "number", "exclusiveMinimum": 0}
    if caps:
        speed["maximum"] = caps.max_speed
    return {
        "type": "object",
        "properties": {
            "actions": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_ACTIONS,
                "items": {"anyOf": [
                    action("navigate", {"target": places, "pose": pose, "max_speed": speed}, []),
                    action("perceive", {"target": things}, ["target"]),
                    action("manipulate", {"operation": {"type": "string", "enum": ["pick", "place"]},
                                          "object": objects, "destination": dests},
                           ["operation", "object"]),
                    action("communicate", {"text": {"type": "string", "maxLength": MAX_TEXT}},
                           ["text"]),
                ]},
            },
            "explanation": {"type": "string"},
        },
        "required": ["actions"],
        "additionalProperties": False,
    }
