"""Skills: what each plan action does, as a sequence of waits on the robot's state.

A skill is a generator function ``skill(ctx, params) -> Generator[None, None, str]``: it
publishes setpoints, then ``yield`` s once per executor tick while it waits for the robot,
and finally returns a short message. It fails by raising :class:`~rtvla.errors.SkillError`
with the reason; ``ctx.phase`` always says what it is doing, so a timeout can say where it
happened. Skills command the robot only through :class:`~rtvla.action.setpoints.Setpoint` s
on the control loop's channel, never through ``robot.send_command``, so the control loop's
watchdog guards every motion. Because skills only yield, the same code runs in a real-time
thread and in a lock-step simulation (see :class:`~rtvla.action.executor.LockstepDriver`).

Built-in skills: ``navigate`` (a place or pose, via the :class:`Navigator`), ``perceive``
(wait for a fresh estimate of the target), ``manipulate`` pick (IK to a pre-grasp pose above
the object, approach, close, verify ``holding``, lift, stow) and place (into a receptacle:
above the drop point, lower, open, verify the object lies in the receptacle, stow; onto a
place: set it down where it was picked there, or on the scene's put-down point, and verify
it rests there), ``communicate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rtvla.action.navigation import Navigator, NavStatus
from rtvla.action.setpoints import Setpoint
from rtvla.action.world import WorldView
from rtvla.channels import Channel
from rtvla.config import format_validation_error
from rtvla.errors import ConfigError, IKError, NavigationError, SkillError
from rtvla.metrics import Recorder
from rtvla.robots.base import RobotState
from rtvla.timing import MONOTONIC, Clock

__all__ = [
    "DEFAULT_TIMEOUTS_S",
    "SKILLS",
    "Kinematics",
    "SceneInfo",
    "SetpointWriter",
    "SkillContext",
    "SkillFn",
    "SkillSettings",
    "communicate",
    "manipulate",
    "move_arm",
    "navigate",
    "perceive",
    "record_pick",
]

logger = logging.getLogger(__name__)

SkillGen = Generator[None, None, str]
SkillFn = Callable[["SkillContext", Any], SkillGen]


class Kinematics(Protocol):
    """Inverse kinematics of the grasp point (``SimRobot.kinematics`` has this shape)."""

    def ik(self, target_xyz_world: Any, q_seed: Any, base_pose: Any = None) -> np.ndarray: ...


#: Per action type, seconds a step may take before it fails as timed out.
DEFAULT_TIMEOUTS_S = {"navigate": 90.0, "perceive": 5.0, "manipulate": 40.0, "communicate": 2.0}


class SkillSettings(BaseModel):
    """Per-skill timeouts and manipulation geometry (the ``[executor]`` settings).

    Heights are metres above the object's centre (pick) or the receptacle's drop point
    (place).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeouts_s: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TIMEOUTS_S))
    estimate_max_age_s: float = Field(30.0, gt=0, description="manipulate uses estimates this old")
    pregrasp_height_m: float = Field(0.10, gt=0)
    grasp_height_m: float = Field(0.0, description="grasp point relative to the object's centre")
    lift_height_m: float = Field(0.15, gt=0)
    place_above_m: float = Field(0.08, ge=0)
    release_height_m: float = Field(0.0, description="release point relative to the drop point")
    joint_tolerance_rad: float = Field(0.02, gt=0)
    settle_speed_rad_s: float = Field(0.05, gt=0)
    arm_move_timeout_s: float = Field(8.0, gt=0)
    gripper_timeout_s: float = Field(1.5, gt=0)
    settle_timeout_s: float = Field(2.0, gt=0)
    receptacle_radius_m: float = Field(0.08, gt=0, description="how far from the drop point counts as inside")
    carry_q: tuple[float, ...] | None = Field(None, description="arm pose for carrying; default: pose at start")
    recover_stops: bool = Field(False, description="after a step failed on a latched safe stop, "
                                "release it (reset_stop) and ask for a new plan; off: the stop holds")

    @classmethod
    def from_section(cls, table: Mapping[str, Any] | None) -> SkillSettings:
        try:
            out = cls.model_validate(dict(table or {}))
        except ValidationError as exc:
            raise ConfigError(format_validation_error("executor", exc)) from None
        return out

    @field_validator("timeouts_s")
    @classmethod
    def _merge_timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        """Given timeouts override the defaults; the others keep theirs."""
        for k, v in value.items():
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"timeouts_s.{k} must be > 0 seconds, got {v!r}")
        return {**DEFAULT_TIMEOUTS_S, **value}

    def timeout(self, action_type: str) -> float:
        return float(self.timeouts_s.get(action_type, 30.0))


@dataclass(frozen=True)
class SceneInfo:
    """What the executor knows about the scene: drop points of receptacles (world xyz, just
    above the opening), the place each object or receptacle is reached from, and put-down
    points on places' surfaces (world xyz of an object's centre resting there)."""

    drop_points: Mapping[str, np.ndarray] = field(default_factory=dict)
    locations: Mapping[str, str] = field(default_factory=dict)
    surfaces: Mapping[str, np.ndarray] = field(default_factory=dict)  # place -> put-down point

    @classmethod
    def from_sim(cls, sim: Any) -> SceneInfo:
        """Read the drop sites and locations of a ``SimRobot``'s scene."""
        scene = sim.scene
        drops = {name: sim.frame_pose(spec.drop_site, "site")[:3, 3].copy()
                 for name, spec in scene.receptacles.items()}
        locs = {n: s.place for n, s in scene.objects.items()}
        locs.update({n: s.place for n, s in scene.receptacles.items()})
        return cls(drop_points=drops, locations=locs)


class SetpointWriter:
    """Publishes setpoints for skills and remembers the arm goal and gripper so they can be
    re-sent as a heartbeat (the base is always commanded to zero in arm setpoints: a skill
    moving the arm never keeps the base moving on the watchdog's behalf)."""

    def __init__(self, channel: Channel, *, clock: Clock = MONOTONIC) -> None:
        self.channel = channel
        self.clock = clock
        self.arm_q: np.ndarray | None = None
        self.gripper: float | None = None
        self._seq = 0

    def send(self, *, arm_q: Any = None, gripper: float | None = None) -> None:
        if arm_q is not None:
            self.arm_q = np.asarray(arm_q, dtype=float).copy()
        if gripper is not None:
            self.gripper = float(gripper)
        self.heartbeat()

    def heartbeat(self) -> None:
        """Re-publish the current arm goal and gripper with a fresh stamp."""
        if self.arm_q is None and self.gripper is None:
            return
        self._seq += 1
        self.channel.publish(Setpoint(
            stamp_ns=self.clock.now_ns(),
            arm_q=None if self.arm_q is None else self.arm_q.copy(),
            base_vel=np.zeros(3),
            gripper=self.gripper,
            seq=self._seq,
        ))


@dataclass
class SkillContext:
    """Everything a skill may use. ``read_state`` returns the newest RobotState."""

    read_state: Callable[[], RobotState]
    setpoints: SetpointWriter
    navigator: Navigator | None = None
    kinematics: Kinematics | None = None
    world: WorldView | None = None
    scene: SceneInfo = field(default_factory=SceneInfo)
    settings: SkillSettings = field(default_factory=SkillSettings)
    recorder: Recorder = field(default_factory=Recorder)
    clock: Clock = MONOTONIC
    on_say: Callable[[str], None] | None = None
    phase: str = ""
    said: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    picked_at: dict[str, tuple[str | None, np.ndarray]] = field(default_factory=dict)

    def standing_at(self) -> str | None:
        """The named place the navigator last reached, if it is still there."""
        nav = self.navigator
        if nav is None:
            return None
        st = nav.state()
        return st.goal_name if st.status is NavStatus.SUCCEEDED else None

    def now_s(self) -> float:
        return self.clock.now_ns() / 1e9


# -- waiting helpers ------------------------------------------------------------------------


def wait_for(ctx: SkillContext, done: Callable[[], bool], what: str, timeout_s: float) -> Generator[None, None, None]:
    """Yield each tick until ``done()``; raise SkillError naming ``what`` after ``timeout_s``."""
    ctx.phase = what
    t0 = ctx.now_s()
    while not done():
        if ctx.now_s() - t0 > timeout_s:
            raise SkillError(f"{what}: not done within {timeout_s:.1f} s")
        yield
        if ctx.setpoints.arm_q is not None or ctx.setpoints.gripper is not None:
            ctx.setpoints.heartbeat()


def record_pick(ctx: SkillContext, obj: str, position: np.ndarray) -> None:
    """``obj``, picked up where it was seen at ``position``, now moves with the hand: remember
    where it was picked from (a put-back returns it there) and drop its world estimate."""
    ctx.picked_at[obj] = (ctx.standing_at(), np.array(position, dtype=float))
    forget = getattr(ctx.world, "forget", None)
    if forget is not None:
        forget(obj)


def move_arm(ctx: SkillContext, q: np.ndarray, what: str, *, gripper: float | None = None) -> Generator[None, None, None]:
    """Send an arm goal and wait until the arm is there and still."""
    s = ctx.settings
    goal = np.asarray(q, dtype=float)
    ctx.setpoints.send(arm_q=goal, gripper=gripper)

    def reached() -> bool:
        st = ctx.read_state()
        return bool(np.max(np.abs(st.q - goal)) <= s.joint_tolerance_rad
                    and np.max(np.abs(st.dq)) <= s.settle_speed_rad_s)

    yield from wait_for(ctx, reached, what, s.arm_move_timeout_s)


def _confirm_placed(ctx: SkillContext, obj: str, point: np.ndarray,
                    fits: Callable[[np.ndarray], bool], check: str, failure: str) -> SkillGen:
    """Wait until the world model sees ``obj`` at an offset from ``point`` that ``fits``;
    otherwise fail saying where it was seen, if anywhere."""

    def seen_there() -> bool:
        if ctx.world is None:
            return False
        ctx.world.update()
        est = ctx.world.estimate(obj)
        return est is not None and fits(np.asarray(est.position, dtype=float) - point)

    try:
        yield from wait_for(ctx, seen_there, f"checking {obj} {check}", ctx.settings.settle_timeout_s)
    except SkillError:
        est = ctx.world.estimate(obj) if ctx.world is not None else None
        where = "not seen" if est is None else "at ({:.3f}, {:.3f}, {:.3f})".format(*est.position)
        raise SkillError(f"place {obj}: released but {failure} ({where})") from None


def solve_ik(ctx: SkillContext, target: np.ndarray, seed: np.ndarray, state: RobotState, what: str) -> np.ndarray:
    if ctx.kinematics is None:
        raise SkillError(f"{what}: no kinematics available for the arm")
    try:
        return np.asarray(ctx.kinematics.ik(target, seed, state.base_pose), dtype=float)
    except IKError as exc:
        raise SkillError(f"{what}: {exc}") from None


def _up(p: np.ndarray, dz: float) -> np.ndarray:
    """``p`` raised by ``dz`` metres."""
    return p + np.array((0.0, 0.0, dz))


def _params(params: Any, *names: str) -> dict[str, Any]:
    if isinstance(params, Mapping):
        get = params.get
    else:
        def get(k: str, default: Any = None) -> Any:
            return getattr(params, k, default)
    return {n: get(n, None) for n in names}


# -- skills -------------------------------------------------------------------------------


def navigate(ctx: SkillContext, params: Any) -> SkillGen:
    """Drive to ``target`` (a place) or ``pose`` ({x, y, yaw}) via the navigator."""
    p = _params(params, "target", "pose", "max_speed")
    nav = ctx.navigator
    if nav is None:
        raise SkillError("navigate: no navigator is configured")
    goal = p["target"] if p["target"] is not None else p["pose"]
    if goal is None:
        raise SkillError("navigate: needs a 'target' place or a 'pose'")
    if isinstance(goal, Mapping):
        goal = (float(goal["x"]), float(goal["y"]), float(goal.get("yaw", 0.0)))
    ctx.phase = "planning a path"
    try:
        nav.set_goal(goal, max_speed=p["max_speed"])
    except NavigationError as exc:
        raise SkillError(f"navigate: {exc}") from None
    ctx.phase = "driving"
    try:
        while True:
            st = nav.state()
            if st.status is NavStatus.SUCCEEDED:
                ctx.detail.update(replans=st.replans, nav_elapsed_s=round(st.elapsed_s, 3))
                return f"reached {st.goal_name or st.goal} after {st.elapsed_s:.1f} s"
            if st.status in (NavStatus.FAILED, NavStatus.CANCELED):
                raise SkillError(f"navigate: {st.reason or st.status.value}")
            ctx.phase = f"driving ({st.distance_m:.2f} m to go, {st.mode})"
            yield
    finally:
        # A timeout or a cancel closes the generator: stop the base too.
        if nav.state().status is NavStatus.RUNNING:
            nav.cancel("the navigate step was stopped")


def perceive(ctx: SkillContext, params: Any) -> SkillGen:
    """Wait until the world state holds a fresh estimate of ``target``."""
    target = _params(params, "target")["target"]
    world = ctx.world
    if world is None:
        raise SkillError("perceive: no world state (perception) is configured")
    if not target:
        raise SkillError("perceive: needs a 'target'")
    ctx.phase = f"looking for {target}"
    while True:
        world.update()
        est = world.estimate(target)
        if est is not None:
            ctx.detail.update(position=[round(float(v), 4) for v in est.position], source=est.source)
            return f"{target} at ({est.position[0]:.3f}, {est.position[1]:.3f}, {est.position[2]:.3f})"
        yield


def _carry_pose(ctx: SkillContext, q_start: np.ndarray) -> np.ndarray:
    s = ctx.settings
    return np.asarray(s.carry_q, dtype=float) if s.carry_q is not None else q_start


def _pick(ctx: SkillContext, obj: str) -> SkillGen:
    s = ctx.settings
    if ctx.world is None:
        raise SkillError(f"pick {obj}: no world state to locate it")
    state = ctx.read_state()
    if state.holding is not None:
        raise SkillError(f"pick {obj}: already holding {state.holding}")
    ctx.world.update()
    est = ctx.world.estimate(obj, max_age_s=s.estimate_max_age_s)
    if est is None:
        raise SkillError(f"pick {obj}: no estimate of where {obj} is (perceive it first)")
    q_start = state.q.copy()
    p = np.asarray(est.position, dtype=float)
    q_pre = solve_ik(ctx, _up(p, s.pregrasp_height_m), state.q, state, "pre-grasp IK")
    yield from move_arm(ctx, q_pre, "moving to pre-grasp", gripper=0.0)
    q_grasp = solve_ik(ctx, _up(p, s.grasp_height_m), q_pre, ctx.read_state(), "grasp IK")
    yield from move_arm(ctx, q_grasp, "approaching")
    ctx.setpoints.send(gripper=1.0)
    try:
        yield from wait_for(
            ctx, lambda: ctx.read_state().holding is not None, "closing the gripper", s.gripper_timeout_s
        )
    except SkillError:
        g = ctx.read_state().gripper
        raise SkillError(
            f"pick {obj}: the gripper closed (to {g:.2f}) on nothing: {obj} was not between the fingers"
        ) from None
    held = ctx.read_state().holding
    if held != obj:
        raise SkillError(f"pick {obj}: the gripper holds {held!r} instead")
    q_lift = solve_ik(ctx, _up(p, s.lift_height_m), q_grasp, ctx.read_state(), "lift IK")
    yield from move_arm(ctx, q_lift, "lifting")
    yield from move_arm(ctx, _carry_pose(ctx, q_start), "stowing the arm")
    if ctx.read_state().holding != obj:
        raise SkillError(f"pick {obj}: dropped it while lifting")
    record_pick(ctx, obj, p)
    return f"holding {obj}"


def _place(ctx: SkillContext, obj: str, dest: str) -> SkillGen:
    s = ctx.settings
    state = ctx.read_state()
    if state.holding != obj:
        raise SkillError(
            f"place {obj}: not holding it (holding {state.holding!r})" if state.holding
            else f"place {obj}: the gripper is empty"
        )
    drop = ctx.scene.drop_points.get(dest)
    if drop is None:
        return (yield from _put_down(ctx, obj, dest))
    drop = np.asarray(drop, dtype=float)
    q_start = state.q.copy()
    q_above = solve_ik(ctx, _up(drop, s.place_above_m), state.q, state, "above-drop IK")
    yield from move_arm(ctx, q_above, f"moving above {dest}")
    q_low = solve_ik(ctx, _up(drop, s.release_height_m), q_above, ctx.read_state(), "release IK")
    yield from move_arm(ctx, q_low, f"lowering into {dest}")
    ctx.setpoints.send(gripper=0.0)
    yield from wait_for(ctx, lambda: ctx.read_state().holding is None, "opening the gripper", s.gripper_timeout_s)

    # Out of the camera's view first: above the receptacle the arm hides what is in it.
    yield from move_arm(ctx, _carry_pose(ctx, q_start), "retreating")

    yield from _confirm_placed(
        ctx, obj, drop, lambda d: bool(np.hypot(d[0], d[1]) <= s.receptacle_radius_m and d[2] < -0.05),
        f"landed in {dest}", f"it is not in {dest}")
    return f"{obj} is in {dest}"


def _surface_point(ctx: SkillContext, obj: str, dest: str) -> np.ndarray:
    """Where to set ``obj`` down at place ``dest``: where it was picked up if that was at
    ``dest``, else the scene's put-down point for ``dest``."""
    where, p = ctx.picked_at.get(obj, (None, None))
    if p is not None and where == dest:
        return np.asarray(p, dtype=float)
    if dest in ctx.scene.surfaces:
        return np.asarray(ctx.scene.surfaces[dest], dtype=float)
    known = sorted({*ctx.scene.drop_points, *ctx.scene.surfaces})
    raise SkillError(
        f"place {obj}: no drop point or put-down surface known for {dest!r}; "
        f"known: {', '.join(known) or 'none'}"
    )


def _put_down(ctx: SkillContext, obj: str, dest: str) -> SkillGen:
    """Set the held object down on a surface at place ``dest`` and check it rests there."""
    s = ctx.settings
    point = _surface_point(ctx, obj, dest)
    state = ctx.read_state()
    q_start = state.q.copy()
    q_above = solve_ik(ctx, _up(point, s.pregrasp_height_m), state.q, state, "above-surface IK")
    yield from move_arm(ctx, q_above, f"moving above the {dest} surface")
    q_low = solve_ik(ctx, _up(point, 0.005), q_above, ctx.read_state(), "put-down IK")
    yield from move_arm(ctx, q_low, f"setting {obj} down")
    ctx.setpoints.send(gripper=0.0)
    yield from wait_for(ctx, lambda: ctx.read_state().holding is None, "opening the gripper", s.gripper_timeout_s)
    q_clear = solve_ik(ctx, _up(point, s.pregrasp_height_m), q_low, ctx.read_state(), "clearing IK")
    yield from move_arm(ctx, q_clear, "clearing the object")
    # Out of the camera's view before looking: the arm above the object hides it.
    yield from move_arm(ctx, _carry_pose(ctx, q_start), "retreating")

    yield from _confirm_placed(
        ctx, obj, point, lambda d: bool(np.hypot(d[0], d[1]) <= 0.05 and abs(d[2]) <= 0.03),
        f"rests on {dest}", f"it does not rest on {dest}")
    return f"{obj} is on {dest}"


def manipulate(ctx: SkillContext, params: Any) -> SkillGen:
    """``operation`` pick ``object``, or place ``object`` into ``destination``."""
    p = _params(params, "operation", "object", "destination")
    op, obj = p["operation"], p["object"]
    if not obj:
        raise SkillError("manipulate: needs an 'object'")
    if op == "pick":
        return (yield from _pick(ctx, obj))
    if op == "place":
        if not p["destination"]:
            raise SkillError("manipulate place: needs a 'destination'")
        return (yield from _place(ctx, obj, p["destination"]))
    raise SkillError(f"manipulate: operation must be 'pick' or 'place', got {op!r}")


def communicate(ctx: SkillContext, params: Any) -> SkillGen:
    """Say ``text``: log it, record it, and hand it to ``ctx.on_say`` (a speaker, a UI)."""
    text = _params(params, "text")["text"]
    if not text:
        raise SkillError("communicate: needs a 'text'")
    ctx.phase = "speaking"
    logger.info("robot says: %s", text)
    ctx.said.append(str(text))
    ctx.recorder.event("task", "communicate", str(text))
    if ctx.on_say is not None:
        ctx.on_say(str(text))
    return f"said {text!r}"
    yield  # pragma: no cover  (makes this a generator like every skill)


SKILLS: dict[str, SkillFn] = {
    "navigate": navigate,
    "perceive": perceive,
    "manipulate": manipulate,
    "communicate": communicate,
}
