"""``PolicyPick``: ``manipulate(pick ...)`` executed by the learned pick policy.

The skill is a drop-in for the scripted pick: the executor ticks it (10 Hz), and each tick
it reads the robot's state, builds the policy's observation (arm joint positions, gripper,
the target's perceived position in the base frame, the object one-hot), and takes the
action due at this tick from an :class:`~rtvla.action.chunks.ActionChunkQueue` of
``[H, 6]`` chunks (5 arm joint-position targets + gripper). When the queue runs below its
threshold it asks the policy for the next chunk (in a worker thread in real time; inline in
lock-step runs, so they stay deterministic) and merges it. The arm target goes to the
control loop as a joint-position :class:`~rtvla.action.setpoints.Setpoint` (validated and
guarded by its watchdog like every setpoint); the gripper closes when the policy's gripper
output crosses 0.5. Once the fingers have closed the skill verifies the grasp (the robot
reports ``holding`` the named object) and from then on keeps the gripper closed; it
finishes when the policy has brought the arm back to the carry pose, holding the object.

Where the target is comes from perception only: the newest fresh world-model estimate when
the pick starts, held for the whole pick (the scripted skill does the same; the arm hides
the cube from the head camera during the grasp).

Usage::

    pick = PolicyPick.from_source("builtin:pick")           # or a path to a pick .onnx
    executor = TaskExecutor(ctx, skills=pick.skills())      # manipulate(pick) -> the policy
    # manipulate(place ...) and every other action run the scripted skills as before

    # in a real-time run (rtvla run --policy builtin:pick), inference in a worker thread:
    executor = TaskExecutor(ctx, skills=policy_skills("builtin:pick"))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.action.chunks import ActionChunkQueue, ChunkRequest, MergeStrategy
from rtvla.action.skills import SKILLS, SkillContext, SkillFn, SkillGen, move_arm, record_pick
from rtvla.action.skills import manipulate as scripted_manipulate
from rtvla.errors import PolicyError, SkillError
from rtvla.policy.pick.demos import base_frame
from rtvla.policy.pick.model import ACTION_DIM, INPUT_NAMES, OnnxPickModel

__all__ = ["BUILTIN_PICK", "GraspWatch", "LearnedPickSkills", "PickStart", "PolicyPick", "PolicyPickSettings", "builtin_model_path",
           "pick_start", "policy_skills"]

logger = logging.getLogger(__name__)

BUILTIN_PICK = "builtin:pick"


def builtin_model_path(name: str = "pick") -> Path:
    """The shipped model ``src/rtvla/policy/models/NAME.onnx``."""
    return Path(__file__).resolve().parents[1] / "models" / f"{name}.onnx"


@dataclass(frozen=True)
class PolicyPickSettings:
    """How the learned pick is run.

    ``threshold``: request the next chunk when fewer than ``threshold * H`` actions remain
    (1.0: a fresh chunk every tick, the most closed-loop). ``merge``: how overlapping
    chunks combine (``latest``, ``average``, ``weighted``). The default, ``average``, is
    ACT's temporal ensembling: each tick's action is the mean of every chunk's prediction
    for that tick. It matters: the demonstrations wait at the pre-grasp and grasp poses
    before switching goals, and a single chunk's first action (``latest``) then settles
    a few centimetres short of the grasp with the gripper open (2 of 10 held-out picks
    succeeded), while the later actions of the earlier chunks already carry the next
    phase and pull the average through it (100 of 100).

    ``chunk_steps``: how many of each chunk's actions are used (None: all H). The shipped
    model predicts 10; averaging over the first 5 of each keeps the grasp where the
    demonstrations grasp. Over all 10, the predictions for after the grasp (lifting)
    already pull the arm up while it descends, and the cube ends up held 6 mm lower in
    the hand than by the scripted pick, enough to press it into a surface when it is set
    down. ``hold_arm_while_closing``: once the policy closes the gripper, the arm holds
    still until the object is held.

    ``asynchronous``: infer in a worker thread (real time) instead of inline (lock-step).
    ``close_above``: gripper output that means "close". ``carry_tolerance_rad``: how close
    to the carry pose the arm must come for the pick to be done. ``grasp_timeout_s``: how
    long the fingers may be closed before a missing grasp fails the pick.
    """

    threshold: float = 1.0
    merge: str = "average"
    weight_decay: float = 0.01
    asynchronous: bool = False
    close_above: float = 0.5
    carry_tolerance_rad: float = 0.08
    settle_speed_rad_s: float = 0.1
    grasp_timeout_s: float = 1.5
    hold_arm_while_closing: bool = True
    chunk_steps: int | None = 5

    def __post_init__(self) -> None:
        if self.chunk_steps is not None and not (isinstance(self.chunk_steps, int) and self.chunk_steps >= 1):
            raise PolicyError(f"policy pick chunk_steps must be an integer >= 1 or None, got {self.chunk_steps!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise PolicyError(f"policy pick threshold must be in [0, 1], got {self.threshold}")
        try:
            MergeStrategy(self.merge)
        except ValueError:
            raise PolicyError(f"policy pick merge must be one of {[m.value for m in MergeStrategy]}, "
                              f"got {self.merge!r}") from None


@dataclass(frozen=True)
class PickStart:
    """What a learned pick starts from: the robot's state, the target's perceived position
    (world frame), the object's one-hot, the model's carry pose and the one to end in."""

    state: Any
    target: np.ndarray
    onehot: np.ndarray
    learned_carry: np.ndarray
    carry: np.ndarray


def pick_start(ctx: SkillContext, obj: str, object_names: list[str], carry_q: np.ndarray, *,
               ready: Any = None) -> PickStart:
    """Check that ``obj`` can be picked and gather what the policy needs; raises SkillError.
    ``ready()`` (optional) returns why the policy cannot run, checked once ``obj`` is known."""
    if ctx.world is None:
        raise SkillError(f"pick {obj}: no world state to locate it")
    if obj not in object_names:
        raise SkillError(f"pick {obj}: the pick policy knows only {object_names}")
    if ready is not None:
        why = ready()
        if why is not None:
            raise SkillError(f"pick {obj}: the policy is not running ({why})")
    state = ctx.read_state()
    if state.holding is not None:
        raise SkillError(f"pick {obj}: already holding {state.holding}")
    ctx.world.update()
    est = ctx.world.estimate(obj, max_age_s=ctx.settings.estimate_max_age_s)
    if est is None:
        raise SkillError(f"pick {obj}: no estimate of where {obj} is (perceive it first)")
    onehot = np.zeros(len(object_names), dtype=np.float32)
    onehot[object_names.index(obj)] = 1.0
    # The policy learned to stow to its model's carry pose; a configured carry pose that
    # differs is reached by a plain arm move once the policy is done.
    learned_carry = carry_q if carry_q.size else state.q.copy()
    carry = np.asarray(ctx.settings.carry_q, dtype=float) if ctx.settings.carry_q is not None else learned_carry
    return PickStart(state, np.asarray(est.position, dtype=float), onehot, learned_carry, carry)


class GraspWatch:
    """Grasp verification and the end of a learned pick, from the robot's state: the grasp
    holds when the robot reports holding ``obj`` once the fingers closed; the pick is done
    when the arm, still holding it, has come to rest at the learned carry pose."""

    def __init__(self, obj: str, learned_carry: np.ndarray, *, grasp_timeout_s: float,
                 carry_tolerance_rad: float, settle_speed_rad_s: float) -> None:
        self.obj = obj
        self.learned_carry = learned_carry
        self.grasp_timeout_s = grasp_timeout_s
        self.carry_tolerance_rad = carry_tolerance_rad
        self.settle_speed_rad_s = settle_speed_rad_s
        self.grasped = False
        self._closed_since: float | None = None

    def update(self, state: Any, now_s: float, *, closing: bool = True,
               opening: bool = True) -> tuple[bool, str | None]:
        """``(grasped just now, "near" | "done" | None)``; raises SkillError on a wrong
        object, an empty grasp past its timeout, or a drop. ``closing``/``opening``: whether
        the fingers are being told to close / open (the timeout runs only while closing)."""
        obj = self.obj
        just = False
        if not self.grasped and closing and state.gripper >= 0.8:
            if state.holding is not None:
                if state.holding != obj:
                    raise SkillError(f"pick {obj}: the gripper holds {state.holding!r} instead")
                self.grasped = just = True
            elif self._closed_since is None:
                self._closed_since = now_s
            elif now_s - self._closed_since > self.grasp_timeout_s:
                raise SkillError(f"pick {obj}: the gripper closed (to {state.gripper:.2f}) on "
                                 f"nothing: {obj} was not between the fingers")
        elif not self.grasped and opening:
            self._closed_since = None
        if not self.grasped:
            return just, None
        if state.holding != obj:
            raise SkillError(f"pick {obj}: dropped it while lifting")
        if float(np.max(np.abs(state.q - self.learned_carry))) > self.carry_tolerance_rad:
            return just, None
        return just, "done" if float(np.max(np.abs(state.dq))) <= self.settle_speed_rad_s else "near"


class LearnedPickSkills:
    """The executor's skills of a learned pick: ``manipulate(pick ...)`` by ``self.pick``,
    every other ``manipulate`` (place, and errors) as the scripted skill."""

    def pick(self, ctx: SkillContext, obj: str) -> SkillGen:
        raise NotImplementedError

    def skills(self, base: Mapping[str, SkillFn] | None = None) -> dict[str, SkillFn]:
        """``base`` (default: the scripted skills) with ``manipulate`` picking by policy."""
        out = dict(SKILLS if base is None else base)
        out["manipulate"] = self.manipulate
        return out

    def manipulate(self, ctx: SkillContext, params: Any) -> SkillGen:
        """``manipulate``: pick through the policy; place (and errors) as the scripted skill."""
        get = params.get if isinstance(params, Mapping) else (lambda k, d=None: getattr(params, k, d))
        if get("operation", None) == "pick" and get("object", None):
            return (yield from self.pick(ctx, str(get("object"))))
        return (yield from scripted_manipulate(ctx, params))


class PolicyPick(LearnedPickSkills):
    """The learned pick as a skill. See the module docstring.

    Args:
        policy: anything with ``infer(observation) -> {"actions": [H, 6]}`` taking the
            observation keys :data:`~rtvla.policy.pick.model.INPUT_NAMES` (the shipped model
            through :class:`OnnxPickModel`, or an ``OnnxPolicy`` of ``rtvla.policy``).
        metadata: the model's metadata (``horizon``, ``rate_hz``, ``object_names``,
            ``carry_q``); default ``policy.metadata``.
        settings: :class:`PolicyPickSettings`.
    """

    def __init__(self, policy: Any, *, metadata: Mapping[str, Any] | None = None,
                 settings: PolicyPickSettings | None = None) -> None:
        meta = dict(metadata if metadata is not None else getattr(policy, "metadata", {}) or {})
        missing = [k for k in ("horizon", "rate_hz", "object_names") if k not in meta]
        if missing:
            raise PolicyError(f"pick policy metadata lacks {missing}")
        self.policy = policy
        self.metadata = meta
        self.horizon = int(meta["horizon"])
        self.rate_hz = float(meta["rate_hz"])
        self.object_names = [str(n) for n in meta["object_names"]]
        self.carry_q = np.asarray(meta.get("carry_q") or [], dtype=float)
        self.settings = settings or PolicyPickSettings()
        self.last_stats: dict[str, Any] = {}

    @classmethod
    def from_source(cls, source: str | Path = BUILTIN_PICK, *, settings: PolicyPickSettings | None = None) -> PolicyPick:
        """``builtin:pick`` (the shipped model), ``builtin:NAME`` or a path to a pick ONNX file."""
        text = str(source)
        if text.startswith(("ws://", "wss://")):
            raise PolicyError(f"pick policy {text!r}: the learned pick runs a pick model from "
                              "builtin:NAME or an ONNX file, not a policy server")
        path = builtin_model_path(text.split(":", 1)[1]) if text.startswith("builtin:") else Path(text)
        if not path.is_file():
            raise PolicyError(f"pick policy {text!r}: no model file at {path}")
        return cls(OnnxPickModel(path), settings=settings)

    # -- the pick --------------------------------------------------------------------------

    def _observation(self, state: Any, target_world: np.ndarray, onehot: np.ndarray) -> dict[str, np.ndarray]:
        return {
            INPUT_NAMES[0]: np.asarray(state.q, dtype=np.float32),
            INPUT_NAMES[1]: np.array([state.gripper], dtype=np.float32),
            INPUT_NAMES[2]: base_frame(target_world, state.base_pose).astype(np.float32),
            INPUT_NAMES[3]: onehot,
        }

    def _infer(self, req: ChunkRequest) -> np.ndarray:
        out = self.policy.infer(req.observation)
        actions = np.asarray(out["actions"], dtype=float)
        if actions.ndim == 3 and actions.shape[0] == 1:
            actions = actions[0]
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
            raise PolicyError(f"pick policy actions must have shape [H, {ACTION_DIM}], got {actions.shape}")
        steps = self.settings.chunk_steps
        return actions if steps is None else actions[:steps]

    def pick(self, ctx: SkillContext, obj: str) -> SkillGen:
        """Pick ``obj`` with the policy; returns ``holding OBJ`` or raises SkillError."""
        s = self.settings
        start = pick_start(ctx, obj, self.object_names, self.carry_q)
        state, target, onehot = start.state, start.target, start.onehot
        learned_carry, carry = start.learned_carry, start.carry
        limits = getattr(ctx.kinematics, "q_min", None), getattr(ctx.kinematics, "q_max", None)
        period_ns = 1e9 / self.rate_hz
        t0 = ctx.clock.now_ns()

        def on_request(req: ChunkRequest) -> None:
            # Lock-step: answer at once, in the caller's tick (deterministic runs).
            try:
                queue.push(self._infer(req), req.start_tick, request=req)
            except Exception as exc:  # a broken policy fails the step, not the executor
                errors.append(exc)

        errors: list[BaseException] = []
        queue = ActionChunkQueue(
            self.horizon, ACTION_DIM, threshold=s.threshold, merge=s.merge, weight_decay=s.weight_decay,
            policy=self._infer if s.asynchronous else None,
            on_request=None if s.asynchronous else on_request,
            recorder=ctx.recorder, name="pick_policy", clock=ctx.clock)
        if s.asynchronous:
            queue.start()
        ctx.phase = f"policy: reaching for {obj}"
        watch = GraspWatch(obj, learned_carry, grasp_timeout_s=s.grasp_timeout_s,
                           carry_tolerance_rad=s.carry_tolerance_rad, settle_speed_rad_s=s.settle_speed_rad_s)
        hold_q: np.ndarray | None = None
        last_arm: np.ndarray | None = None
        try:
            first = self._observation(state, target, onehot)
            if s.asynchronous:
                queue.prime(0, first)  # the first chunk before moving: nothing to hold yet
            else:
                queue.request(0, first)
            while True:
                if errors:
                    raise SkillError(f"pick {obj}: the policy failed: {errors[0]}")
                state = ctx.read_state()
                tick = int((ctx.clock.now_ns() - t0) / period_ns)
                action = queue.pop(tick, self._observation(state, target, onehot))
                if action is not None:
                    arm = np.asarray(action[:ACTION_DIM - 1], dtype=float)
                    if limits[0] is not None and limits[1] is not None:
                        arm = np.clip(arm, limits[0], limits[1])
                    close = watch.grasped or float(action[ACTION_DIM - 1]) >= s.close_above
                    if close and not watch.grasped and s.hold_arm_while_closing:
                        # As the demonstrations do: the fingers close on an arm at rest,
                        # and lifting starts only once the object is held.
                        if hold_q is None:
                            hold_q = state.q.copy() if last_arm is None else last_arm
                        arm = hold_q
                    else:
                        hold_q = None
                    last_arm = arm
                    ctx.setpoints.send(arm_q=arm, gripper=1.0 if close else 0.0)
                else:
                    ctx.setpoints.heartbeat()  # starved: hold the last target
                just, status = watch.update(state, ctx.now_s(), closing=ctx.setpoints.gripper == 1.0,
                                            opening=ctx.setpoints.gripper == 0.0)
                if just:
                    ctx.phase = f"policy: lifting {obj}"
                if status == "done":
                    break
                if status == "near":
                    ctx.phase = "policy: stowing the arm"
                yield
        finally:
            queue.close()
            self.last_stats = queue.stats()
        ctx.detail.update(policy=self.metadata.get("format", "pick"), chunks=queue.chunks,
                          starved_ticks=queue.starved_ticks)
        if float(np.max(np.abs(carry - learned_carry))) > s.carry_tolerance_rad:
            yield from move_arm(ctx, carry, "stowing the arm", gripper=1.0)
            if ctx.read_state().holding != obj:
                raise SkillError(f"pick {obj}: dropped it while stowing the arm")
        record_pick(ctx, obj, target)
        return f"holding {obj} (learned policy)"


def policy_skills(
    source: str | Path = BUILTIN_PICK,
    *,
    settings: PolicyPickSettings | None = None,
    base: Mapping[str, SkillFn] | None = None,
) -> dict[str, SkillFn]:
    """The executor's skills for a run with the learned pick: ``base`` (default: the
    scripted skills) with ``manipulate(pick ...)`` by the pick policy at ``source``
    (``builtin:pick`` or a path to a pick ONNX file); pass it as
    ``TaskExecutor(ctx, skills=policy_skills(source))``.

    The default settings are the real-time ones: inference in a worker thread
    (``asynchronous``), so a slow inference never holds up the executor's tick; lock-step
    runs pass ``PolicyPickSettings()`` (inline inference, deterministic)."""
    chosen = settings if settings is not None else PolicyPickSettings(asynchronous=True)
    return PolicyPick.from_source(source, settings=chosen).skills(base)
