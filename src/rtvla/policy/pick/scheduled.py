"""``ScheduledPick``: the learned pick executed by the control process's chunk scheduler.

The second way to run ``manipulate(pick ...)`` with the pick policy (the first,
:class:`~rtvla.policy.pick.skill.PolicyPick`, takes actions from an executor-side queue at
10 Hz and sends them as setpoints). Here the policy runs in its own
:class:`~rtvla.policy.process.PolicyProcess` and its chunks go straight to the
:class:`~rtvla.action.chunk_scheduler.ChunkScheduler` on the control loop's tick (100 Hz, in
the control process): requests stamped with control ticks, elapsed actions dropped by
counted ticks, ACT temporal ensembling of overlapping chunks, position and velocity targets,
the gripper column binarized at the model's threshold (the scheduler forwards it to the
robot). The skill itself only:

1. publishes the *context* the control process does not have: the target's perceived
   position in the robot's base frame and the object's one-hot (the request carries the
   arm joints and the gripper);
2. engages :meth:`~rtvla.action.control_process.ControlProcess.follow_policy` and watches
   the robot's state: grasp verification (the robot reports ``holding`` the named object
   once the fingers closed) and, afterwards, the learned carry pose, reached and still;
3. releases the loop (``follow_policy(False)``), waits until it has, and hands the arm back
   to setpoints at the pose where the policy left it, gripper closed (then to a configured
   ``carry_q`` with a plain arm move, as the executor-side skill does).

A starved scheduler (the policy process died or stopped answering) latches a safe stop in
the control loop; the skill sees the stop and fails the step with the reason, including how
the policy process ended.

Usage::

    with PolicyProcess("builtin:pick") as proc:
        control = ControlProcess(factory, dof, policy=pick_link(proc, control_hz=100.0))
        skills = ScheduledPick(proc, control).skills()
        executor = TaskExecutor(ctx, skills=skills)     # manipulate(pick) -> the scheduler
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.action.chunk_scheduler import PolicyLink, SchedulerSettings
from rtvla.action.skills import SkillContext, SkillGen, move_arm, record_pick
from rtvla.errors import PolicyError, SkillError
from rtvla.policy.pick.demos import base_frame
from rtvla.policy.pick.model import INPUT_NAMES, read_metadata
from rtvla.policy.pick.skill import GraspWatch, LearnedPickSkills, builtin_model_path, pick_start

__all__ = [
    "FirstSteps",
    "ScheduledPick",
    "ScheduledPickSettings",
    "open_pick_policy",
    "pick_link",
    "pick_model_metadata",
    "pick_scheduler_settings",
]

logger = logging.getLogger(__name__)

_TARGET_KEY = INPUT_NAMES[2]
_ONEHOT_KEY = INPUT_NAMES[3]
#: The control process publishes its live stats every 10 ticks; wait a few of those.
_STATS_LAG_S = 0.3


def pick_model_metadata(source: str | Path) -> dict[str, Any]:
    """The pick model's own metadata (``object_names``, ``carry_q``, ``horizon`` ...) for
    ``builtin:NAME`` or a path to a pick ONNX file; a clear :class:`PolicyError` otherwise."""
    text = str(source)
    if text.startswith(("ws://", "wss://")):
        raise PolicyError(f"pick policy {text!r}: the learned pick runs a pick model from "
                          "builtin:NAME or an ONNX file, not a policy server")
    path = builtin_model_path(text.split(":", 1)[1]) if text.startswith("builtin:") else Path(text)
    if not path.is_file():
        raise PolicyError(f"pick policy {text!r}: no model file at {path}")
    meta = read_metadata(path)
    missing = [k for k in ("horizon", "rate_hz", "object_names") if k not in meta]
    if missing:
        raise PolicyError(f"pick policy {text!r}: its metadata lacks {missing}")
    return meta


class FirstSteps:
    """A policy whose chunks are the first ``steps`` actions of another's (the shipped pick
    model predicts 10; ensembling the first 5 of each keeps the grasp where the
    demonstrations grasp, see :class:`~rtvla.policy.pick.skill.PolicyPickSettings`)."""

    def __init__(self, policy: Any, steps: int) -> None:
        horizon = policy.metadata.horizon
        if not (isinstance(steps, int) and steps >= 1) or (horizon is not None and steps > horizon):
            raise PolicyError(f"pick chunk_steps must be an integer in [1, {horizon}], got {steps!r}")
        self.policy = policy
        self.steps = steps
        self.metadata = policy.metadata.with_overrides(horizon=steps)

    def infer(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(self.policy.infer(observation))
        actions = np.asarray(out["actions"])
        if actions.ndim == 3 and actions.shape[0] == 1:
            actions = actions[0]
        out["actions"] = actions[: self.steps]
        return out

    def close(self) -> None:
        self.policy.close()


def open_pick_policy(source: str, chunk_steps: int | None = 5, options: Mapping[str, Any] | None = None) -> Any:
    """The pick policy at ``source`` (opened by :func:`~rtvla.policy.sources.open_policy`
    with ``options``), its chunks cut to ``chunk_steps`` actions (None: all). Picklable by
    reference: pass it to :class:`~rtvla.policy.process.PolicyProcess` as the factory."""
    from rtvla.policy.sources import open_policy

    policy = open_policy(source, options or {})
    return policy if chunk_steps is None else FirstSteps(policy, chunk_steps)


def pick_scheduler_settings(metadata: Any, *, control_hz: float, ensemble_decay: float = 0.01,
                            starve_hold_ticks: int = 10) -> SchedulerSettings:
    """How the pick's chunks are scheduled: ACT temporal ensembling (the executor-side skill's
    ``average``), a fresh chunk about once per policy step (the queue is refilled when it
    holds less than a chunk minus one policy step, so overlapping predictions average as in
    the demonstrations' replay), the gripper binarized at the model's threshold."""
    rate = float(metadata.rate_hz or 0.0)
    horizon = int(metadata.horizon or 0)
    if rate <= 0 or horizon < 1:
        raise PolicyError(f"pick policy {metadata.name!r}: needs rate_hz and horizon, got {rate}, {horizon}")
    ratio = control_hz / rate
    chunk_ticks = int(np.ceil(horizon * ratio - 1e-9))
    return SchedulerSettings(
        merge="ensemble", ensemble_decay=ensemble_decay, resample="linear",
        margin_ticks=max(0, chunk_ticks - int(np.ceil(ratio))),
        starve_hold_ticks=starve_hold_ticks, gripper_threshold=_gripper_threshold(metadata))


def _gripper_threshold(metadata: Any) -> float:
    table = metadata.action_mapping or {}
    for sl in table.get("slice", []) if isinstance(table, Mapping) else []:
        if sl.get("kind") == "gripper" and sl.get("threshold") is not None:
            return float(sl["threshold"])
    return 0.5


def _link_keys(metadata: Any, dof: int) -> dict[str, Any]:
    """Arm and gripper columns from the policy's action mapping (pick layout by default)."""
    keys: dict[str, Any] = {"state_key": INPUT_NAMES[0], "gripper_key": INPUT_NAMES[1], "arm_start": 0,
                            "gripper_index": dof if (metadata.action_dim or 0) > dof else None}
    table = metadata.action_mapping or {}
    for sl in table.get("slice", []) if isinstance(table, Mapping) else []:
        if sl.get("kind") == "joint_position":
            keys["arm_start"] = int(sl.get("start", 0))
        elif sl.get("kind") == "gripper":
            keys["gripper_index"] = int(sl["start"])
    return keys


def pick_link(policy: Any, *, control_hz: float, dof: int = 5,
              settings: SchedulerSettings | None = None) -> PolicyLink:
    """The :class:`PolicyLink` for a started :class:`~rtvla.policy.process.PolicyProcess`
    serving a pick model, with :func:`pick_scheduler_settings` unless ``settings`` given."""
    meta = policy.metadata
    chosen = settings if settings is not None else pick_scheduler_settings(meta, control_hz=control_hz)
    return PolicyLink.from_process(policy, chosen, **_link_keys(meta, dof))


@dataclass(frozen=True)
class ScheduledPickSettings:
    """How the scheduled pick is watched.

    ``carry_tolerance_rad``/``settle_speed_rad_s``: the learned carry pose counts as reached
    when every joint is this close and this slow. ``grasp_timeout_s``: how long the fingers
    may be closed with nothing between them. ``engage_timeout_s``: how long the control
    loop may take to report that it follows (or no longer follows) the policy.
    ``pick_timeout_s``: the whole pick, from engaging to the carry pose.
    """

    carry_tolerance_rad: float = 0.08
    settle_speed_rad_s: float = 0.1
    grasp_timeout_s: float = 1.5
    engage_timeout_s: float = 2.0
    pick_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("carry_tolerance_rad", "settle_speed_rad_s", "grasp_timeout_s", "engage_timeout_s",
                     "pick_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise PolicyError(f"scheduled pick {name} must be > 0, got {value!r}")


class ScheduledPick(LearnedPickSkills):
    """The learned pick through the control process's chunk scheduler. See the module docstring.

    Args:
        policy: the started :class:`~rtvla.policy.process.PolicyProcess` serving the pick
            model (its context channel carries the target; :meth:`check_alive` says how
            it ended when it did).
        control: the :class:`~rtvla.action.control_process.ControlProcess` built with
            ``policy=pick_link(policy, ...)``.
        metadata: the pick model's metadata (``object_names``, ``carry_q``); default
            :func:`pick_model_metadata` of the policy's source.
    """

    def __init__(self, policy: Any, control: Any, *, metadata: Mapping[str, Any] | None = None,
                 settings: ScheduledPickSettings | None = None) -> None:
        if getattr(control, "policy", None) is None:
            raise PolicyError("scheduled pick: the control process has no policy link (policy=pick_link(...))")
        meta = dict(metadata if metadata is not None else pick_model_metadata(policy.source))
        if "object_names" not in meta:
            raise PolicyError("scheduled pick: the pick model's metadata lacks object_names")
        self.policy = policy
        self.control = control
        self.metadata = meta
        self.object_names = [str(n) for n in meta["object_names"]]
        self.carry_q = np.asarray(meta.get("carry_q") or [], dtype=float)
        self.settings = settings or ScheduledPickSettings()
        self.last_stats: dict[str, Any] = {}
        self._latched_at: float | None = None

    # -- the pick --------------------------------------------------------------------------

    def _live(self) -> dict[str, float]:
        return self.control.live_stats() or {}

    def _stopped_reason(self, obj: str, before: dict[str, float], now: float) -> str | None:
        """Why following ended with a latched stop (None while it has not)."""
        live = self._live()
        stops = live.get("policy_stops", 0.0) - before.get("policy_stops", 0.0)
        latched = bool(getattr(self.control.latest_state(), "tripped", False))
        if stops <= 0 and not latched:
            self._latched_at = None
            return None
        if stops <= 0:
            # The state says "stopped" every tick, the live stats only every tenth: give
            # them a moment to say whether the scheduler's starvation was the cause.
            if self._latched_at is None:
                self._latched_at = now
            if now - self._latched_at < _STATS_LAG_S:
                return None
        dead = self.policy.check_alive()
        why = ("the control loop's chunk scheduler starved (no action to execute) and latched a safe stop"
               if stops > 0 else "the control loop latched a safe stop while following the policy")
        return f"pick {obj}: {why}" + (f"; {dead}" if dead else "")

    def pick(self, ctx: SkillContext, obj: str) -> SkillGen:
        """Pick ``obj`` through the scheduler; returns ``holding OBJ`` or raises SkillError."""
        s = self.settings
        start = pick_start(ctx, obj, self.object_names, self.carry_q, ready=self.policy.check_alive)
        state, target, onehot = start.state, start.target, start.onehot
        learned_carry, carry = start.learned_carry, start.carry
        # The base stands still during a pick: its frame, and so the target in it, holds.
        self.policy.set_context({_TARGET_KEY: base_frame(target, state.base_pose).astype(np.float32),
                                 _ONEHOT_KEY: onehot})
        before = self._live()
        self._latched_at = None
        t0 = ctx.now_s()
        self.control.follow_policy(True)
        ctx.phase = f"policy (control process): reaching for {obj}"
        chunks_seen = before.get("policy_chunks", 0.0)
        engaged = False
        watch = GraspWatch(obj, learned_carry, grasp_timeout_s=s.grasp_timeout_s,
                           carry_tolerance_rad=s.carry_tolerance_rad, settle_speed_rad_s=s.settle_speed_rad_s)
        try:
            while True:
                yield
                now = ctx.now_s()
                why = self._stopped_reason(obj, before, now)
                if why is not None:
                    raise SkillError(why)
                live = self._live()
                chunks = live.get("policy_chunks", chunks_seen)
                if chunks > chunks_seen and ctx.recorder is not None:
                    ctx.recorder.count("pick_policy", int(chunks - chunks_seen))  # taken by the scheduler
                chunks_seen = max(chunks_seen, chunks)
                if not engaged:
                    engaged = live.get("policy_engaged", 0.0) > 0.5
                    if not engaged and now - t0 > s.engage_timeout_s:
                        raise SkillError(f"pick {obj}: the control loop did not start following the policy "
                                         f"within {s.engage_timeout_s} s")
                if now - t0 > s.pick_timeout_s:
                    raise SkillError(f"pick {obj}: not done within {s.pick_timeout_s} s of engaging the policy")
                just, status = watch.update(ctx.read_state(), now)
                if just:
                    ctx.phase = f"policy (control process): lifting {obj}"
                    # Setpoints' grippers still apply while the loop follows: keep it closed
                    # (and once following ends, whatever re-sends the setpoint).
                    ctx.setpoints.send(gripper=1.0)
                if status == "done":
                    break
                if status == "near":
                    ctx.phase = "policy (control process): stowing the arm"
        finally:
            if not bool(getattr(self.control.latest_state(), "tripped", False)):
                self.control.follow_policy(False)
            self.last_stats = self._pick_stats(before)
        yield from self._release(ctx, obj)
        ctx.detail.update(policy=self.metadata.get("format", "pick"), placement="control process",
                          chunks=self.last_stats["chunks"], starved_ticks=self.last_stats["starved_ticks"])
        # Setpoints again: the arm stays where the policy left it, the gripper closed.
        yield from move_arm(ctx, carry if float(np.max(np.abs(carry - learned_carry))) > s.carry_tolerance_rad
                            else ctx.read_state().q, "stowing the arm", gripper=1.0)
        if ctx.read_state().holding != obj:
            raise SkillError(f"pick {obj}: dropped it while stowing the arm")
        record_pick(ctx, obj, target)
        return f"holding {obj} (learned policy, control process)"

    def _release(self, ctx: SkillContext, obj: str) -> SkillGen:
        """Wait until the loop no longer follows the policy (its live stats say so)."""
        t0 = ctx.now_s()
        while self._live().get("policy_engaged", 0.0) > 0.5:
            if ctx.now_s() - t0 > self.settings.engage_timeout_s:
                raise SkillError(f"pick {obj}: the control loop still follows the policy "
                                 f"{self.settings.engage_timeout_s} s after release")
            yield

    def _pick_stats(self, before: dict[str, float]) -> dict[str, Any]:
        """This pick's scheduler figures (live-stats differences)."""
        live = self._live()
        return {key: int(live.get(f"policy_{key}", 0.0) - before.get(f"policy_{key}", 0.0))
                for key in ("chunks", "starved_ticks", "stops", "rejected")}
