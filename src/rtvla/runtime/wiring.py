"""From config to parts: the robot plug-in, the cameras, detectors and the planner, and what
planning and skills need to know, all through the resolver (:mod:`rtvla.parts`).

The runtime never names a concrete robot: ``[robot] type`` is a built-in name (``sim``,
``ros2``), an entry point of ``rtvla.robots`` or a ``"package.module:factory"``, and its
``[robot.options]`` are validated by the plug-in's own model. What the plug-in returns is an
:class:`~rtvla.robots.embodiment.Embodiment`; capabilities for plan validation, the skills'
scene knowledge, the colour detector's classes and the navigation map all come from it.

``[robot]`` without ``type`` and ``options`` is read as the simulator's options (the
format before plug-ins), so existing files keep working.

Cameras: ``[[cameras]]`` is an array of tables (``name``, ``source``: ``"robot:head"`` for a
camera the robot carries, ``"opencv:0"``, a file or stream URL, ``"synthetic"``; ``width``,
``height``, ``rate_hz``). Without it, every camera the robot carries is used. The first
robot camera feeds the world model (it knows its pose); each camera gets its own
latest-frame pipeline, measured as ``perception`` (the first) and ``perception.<name>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla import parts
from rtvla.action.skills import SceneInfo
from rtvla.config import Config, format_validation_error
from rtvla.errors import ConfigError, PartError
from rtvla.language import Capabilities, LLMSettings, PlanningService
from rtvla.language.schema import Pose2D, Workspace
from rtvla.metrics import Recorder
from rtvla.perception.frames import FrameSource
from rtvla.robots.embodiment import Embodiment, WorldKnowledge, as_embodiment

__all__ = ["CameraSpec", "OpenedCamera", "build_embodiment", "build_planner", "camera_specs",
           "capabilities_for", "color_classes", "open_cameras", "robot_spec", "scene_info",
           "validate_parts"]

logger = logging.getLogger(__name__)

_ROBOT_KEYS = {"type", "options"}


def robot_spec(table: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``[robot]`` as (spec, options)."""
    table = dict(table)
    if not (set(table) & _ROBOT_KEYS):
        return "sim", table  # the simulator's options, as before plug-ins
    extra = set(table) - _ROBOT_KEYS
    if extra:
        raise ConfigError(f"robot: unknown key(s) {sorted(extra)} beside type/options; "
                          "put the plug-in's settings under [robot.options]")
    spec = table.get("type", "sim")
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"robot.options must be a table, got {options!r}")
    return spec, dict(options)


def build_embodiment(cfg: Config, recorder: Recorder) -> Embodiment:
    """Resolve and build the configured robot plug-in (not connected, cameras not open)."""
    spec, options = robot_spec(cfg.section("robot"))
    built = parts.build("robot", spec, options, recorder=recorder)
    try:
        return as_embodiment(built, name=str(spec))
    except ConfigError as exc:
        raise PartError(f"robot {spec!r}: {exc}") from None


# -- cameras --------------------------------------------------------------------------------

class CameraSpec(BaseModel):
    """One ``[[cameras]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    source: str = Field(description="robot:NAME, synthetic, opencv:INDEX, a file or stream URL, "
                        "or part:SPEC (a camera part: an entry point of rtvla.cameras or "
                        "'package.module:factory')")
    options: dict[str, Any] = Field(default_factory=dict, description="the camera part's options "
                                    "(part:SPEC only), validated by the part's own model")
    width: int | None = Field(default=None, ge=16)
    height: int | None = Field(default=None, ge=16)
    rate_hz: float | None = Field(default=None, gt=0, le=240)


def camera_specs(cfg: Config, emb: Embodiment) -> list[CameraSpec]:
    raw = cfg.sections.get("cameras")
    entries = raw.get("streams") if isinstance(raw, dict) else None
    if not entries:
        return [CameraSpec(name=n, source=f"robot:{n}") for n in emb.cameras]
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(CameraSpec.model_validate(entry))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(f"cameras[{i}]", exc)) from None
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"cameras: names must be distinct, got {names}")
    return out


@dataclass
class OpenedCamera:
    """A camera the stack uses: its source, where it is (None for a camera the robot does
    not carry, whose detections stay in image space) and its intrinsics."""

    name: str
    source: Any
    pose_fn: Any = None
    intrinsics: Any = None
    robot_camera: bool = False
    rate_hz: float | None = None


def open_cameras(specs: list[CameraSpec], emb: Embodiment) -> list[OpenedCamera]:
    """The frame sources for ``specs`` (not opened yet)."""
    out = []
    for spec in specs:
        kind, _, rest = spec.source.partition(":")
        if spec.options and kind != "part":
            raise ConfigError(f"cameras.{spec.name}.options: only a part:SPEC source takes options, "
                              f"got source {spec.source!r}")
        if kind == "part":
            if not rest:
                raise ConfigError(f"cameras.{spec.name}.source {spec.source!r}: name the camera part "
                                  "after part: (an entry point of rtvla.cameras or 'module:factory')")
            src = parts.build("camera", rest, {**_size_options(spec), **spec.options},
                              where=f"cameras.{spec.name}.options", expect=FrameSource)
            out.append(OpenedCamera(spec.name, src, rate_hz=spec.rate_hz))
        elif kind == "robot":
            cam = emb.cameras.get(rest)
            if cam is None:
                raise ConfigError(f"cameras.{spec.name}.source {spec.source!r}: the robot carries "
                                  f"no camera {rest!r}; it has {', '.join(emb.cameras) or 'none'}")
            out.append(OpenedCamera(spec.name, cam.source, cam.pose, cam.intrinsics, True,
                                    spec.rate_hz or cam.rate_hz))
        elif kind == "synthetic":
            src = parts.build("camera", "synthetic", _size_options(spec))
            out.append(OpenedCamera(spec.name, src, rate_hz=spec.rate_hz))
        else:
            # "opencv:0", a file path or a stream URL.
            target: Any = rest if kind == "opencv" else spec.source
            if isinstance(target, str) and target.isdigit():
                target = int(target)
            src = parts.build("camera", "opencv", {"source": target, **_size_options(spec)})
            out.append(OpenedCamera(spec.name, src, rate_hz=spec.rate_hz))
    return out


def _size_options(spec: CameraSpec) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if spec.width and spec.height:
        opts.update(width=spec.width, height=spec.height)
    if spec.rate_hz:
        opts["fps"] = spec.rate_hz
    return opts


# -- what planning and skills know ----------------------------------------------------------

def color_classes(world: WorldKnowledge) -> list[dict[str, Any]]:
    """Colour-detector classes named after the world's objects and receptacles, told apart by
    metric size where they share a colour (a 4 cm blue cube vs an 18 cm blue bin)."""
    classes: list[dict[str, Any]] = []
    largest: dict[str, float] = {}
    for name, obj in world.objects.items():
        if not obj.color:
            continue
        classes.append({"label": name, "color": obj.color,
                        "min_size_m": 0.4 * obj.size_m, "max_size_m": 2.5 * obj.size_m})
        largest[obj.color] = max(largest.get(obj.color, 0.0), obj.size_m)
    for name, rec in world.receptacles.items():
        if rec.color:
            classes.append({"label": name, "color": rec.color,
                            "min_size_m": 2.5 * largest.get(rec.color, 0.04)})
    return classes


def capabilities_for(emb: Embodiment) -> Capabilities:
    """Plan-validation capabilities from what the embodiment knows and can do."""
    w = emb.world
    places = {n: Pose2D(x=p.pose[0], y=p.pose[1], yaw=p.pose[2]) for n, p in w.places.items()}
    ws = w.workspace
    reason = ""
    if not emb.has_base:
        reason = "it has no mobile base"
    elif w.map is None:
        reason = "it has no map to navigate by"
    data: dict[str, Any] = {
        "places": places or {"here": None},
        "objects": tuple(w.objects), "receptacles": tuple(w.receptacles), "locations": w.locations(),
        "max_speed": float(emb.robot.limits.base_lin_vel_max),
        "can_navigate": not reason, "navigate_reason": reason,
        "can_manipulate": emb.has_arm and emb.kinematics is not None,
        "manipulate_reason": "" if emb.has_arm else "it has no arm",
    }
    if ws is not None:
        data["workspace"] = Workspace(x_min=ws[0], x_max=ws[1], y_min=ws[2], y_max=ws[3])
    base = Capabilities.default()
    data["synonyms"] = dict(base.synonyms)
    try:
        return Capabilities.model_validate(data)
    except ValidationError as exc:
        raise PartError(f"robot {emb.name!r}: its world knowledge is not usable for planning: {exc}") from None


def scene_info(world: WorldKnowledge) -> SceneInfo:
    return SceneInfo(drop_points=world.drop_points(), locations=world.locations(),
                     surfaces=world.put_down_points())


# -- planner --------------------------------------------------------------------------------

def build_planner(llm: LLMSettings, cfg: Config, capabilities: Capabilities,
                  recorder: Recorder, *, planner: Any = None) -> PlanningService:
    """The planning service around the configured planner: ``[llm] planner`` (a built-in
    ``openai``/``rules``, an entry point or ``module:attr`` with ``[llm.planner_options]``),
    else the OpenAI-compatible planner when ``base_url`` is set, else the rule planner."""
    spec = llm.planner
    if planner is not None:
        pass  # given as an object
    elif spec is not None and spec not in ("openai", "rules"):
        planner = parts.build("planner", spec, llm.planner_options, capabilities=capabilities,
                              recorder=recorder)
    elif spec == "openai" and not llm.base_url:
        raise ConfigError("llm.planner = 'openai' needs llm.base_url")
    if spec == "rules":
        llm = llm.model_copy(update={"base_url": None})
    return PlanningService.from_settings(llm, recorder=recorder, capabilities=capabilities,
                                         deadline_s=llm.deadline(cfg), planner=planner)


def validate_parts(cfg: Config) -> None:
    """Resolve every configured part and validate its options, without building anything
    (``rtvla run`` and ``rtvla config check`` fail before start, naming the part)."""
    spec, options = robot_spec(cfg.section("robot"))
    ref = parts.resolve("robot", spec)
    parts.validate_options(ref.load(), options, where="robot.options")
    llm = LLMSettings.from_mapping(cfg.section("llm"))
    if llm.planner is not None and llm.planner not in ("openai", "rules"):
        pref = parts.resolve("planner", llm.planner)
        parts.validate_options(pref.load(), llm.planner_options, where="llm.planner_options")
    ptable = cfg.section("perception")
    det = ptable.get("detector", "color")
    if det not in ("color", "onnx"):
        dref = parts.resolve("detector", det)
        parts.validate_options(dref.load(), ptable.get("detector_options", {}),
                               where="perception.detector_options")
