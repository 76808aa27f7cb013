"""Action chunks scheduled inside the control process: tick bookkeeping, triggers, merges.

:class:`ChunkScheduler` runs on the control loop's thread (in the control process, the
default placement) and turns a policy's chunks into one arm target per control tick. It
never waits: each :meth:`ChunkScheduler.tick` polls for a chunk, perhaps sends a request,
and returns a :class:`SchedStatus` with the tick's target in preallocated arrays.

**Tick bookkeeping.** The scheduler counts the ticks it has actually executed (``t``; a
missed control slot is not a tick). A request is stamped with ``t`` and a monotonic time;
its chunk's action 0 belongs to tick ``t``. When the chunk arrives at tick ``t'``, the
``t' - t`` resampled actions whose ticks have passed are dropped: counted, never estimated
from a latency. The first chunk after engaging is the exception: the robot held still while
waiting for it, so it runs from its first action. A policy at 10/15/30/50 Hz is resampled to the control rate (``hold``: each
action for ``control_hz / policy_hz`` ticks; ``linear``: interpolated), so a 50 Hz action
covers exactly 2 ticks at 100 Hz.

**Trigger.** ``mode="rtvla"``: the next request goes out when the actions left cover the
measured inference delay ``d`` (the ``delay_quantile`` of the last ``delay_window``
requests, in ticks) plus ``margin_ticks``. With ``s`` the ticks executed per chunk and
``H`` the chunk's length in ticks, ``d <= s <= H - d`` must hold for the robot never to
starve; a rate-limited warning says when it does not. ``mode="sync"`` is the baseline of
openpi's ``ActionChunkBroker``: ask only when the chunk is exhausted, hold while waiting,
then execute the new chunk from its first action.

**Merges** of a new chunk with the actions still queued for the same ticks: ``replace``
(the new chunk wins, with a ``crossfade_ticks`` blend from the old plan at the boundary);
LeRobot's aggregate functions ``weighted`` (0.3 old + 0.7 new), ``latest``, ``average``
and ``conservative`` (0.7 old + 0.3 new); ``ensemble``, ACT's temporal ensembling (weights
``exp(-ensemble_decay * i)``, ``i = 0`` the oldest prediction). When the policy advertises
real-time chunking, each request also carries the previous chunk's not-yet-executed
actions and the expected delay in policy steps (:func:`~rtvla.policy.base.with_real_time_chunking`).

**Following.** Each target comes with a velocity (central finite differences of the chunk
at the policy rate, resampled like the positions), so the trajectory generator passes
through waypoints instead of stopping at each.

**Starvation.** A tick with nothing to execute holds the last target (zero velocity); after
``starve_hold_ticks`` such ticks in a row the status is ``STOP`` and the control loop latches
a safe stop. Both are counted. Chunks of the wrong shape, non-finite, or outside the joint
limits are rejected (counted) and the robot keeps doing what it did.

**Where requests go (the shared-memory path).** ::

    main process                 control process (100 Hz)            policy process
    ─────────────                ────────────────────────            ──────────────
    PolicyProcess.set_context ─▶ [context shm] ───────────────────────▶ merged under
      (image, target, prompt)                                             each request
                                 ChunkScheduler.tick ──request shm──▶ decode, infer
                                   (state, tick, stamp, RTC fields)     (ONNX, or the
                                 ◀──────────────────chunk shm───────     websocket client
                                   (request id, tick, stamp, [H, A])     to a server)

The control process owns the request channel's writing end (one writer, the channel's
rule) and reads the chunk channel; state comes from the robot it owns; everything else
an observation needs (camera images, perceived target, prompt) the main process publishes
as *context*, which the policy process merges under the request's keys. A
:class:`PolicyLink` (picklable) carries the channels' specs and the settings into the
control process; :meth:`~rtvla.action.control_process.ControlProcess.follow_policy` switches
the loop into "follow the policy" mode and back (a pick skill engages it for its duration).

Usage::

    with PolicyProcess("ws://gpu-host:8000") as policy, \\
            ControlProcess(factory, dof=5, policy=PolicyLink.from_process(policy)) as control:
        policy.set_context({"observation/target_position": target, "prompt": "pick the cube"})
        control.follow_policy(True)
        ...
        control.follow_policy(False)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rtvla.channels.shm import ShmSpec
from rtvla.config import validate_table
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder
from rtvla.robots.base import RobotLimits, RobotState
from rtvla.timing import MONOTONIC, Clock

if TYPE_CHECKING:  # rtvla.policy is imported when a policy is linked, not by every control loop
    from rtvla.policy.base import PolicyMetadata
    from rtvla.policy.chunk_channel import PolicyChunk

__all__ = [
    "MERGES",
    "ChunkScheduler",
    "ChunkTransport",
    "PolicyLink",
    "SchedStatus",
    "SchedulerSettings",
    "ShmTransport",
    "resample_chunk",
]

logger = logging.getLogger(__name__)

#: LeRobot's aggregate functions (old, new) -> merged, plus replace and ACT's ensembling.
_AGGREGATE: dict[str, tuple[float, float]] = {
    "weighted": (0.3, 0.7),
    "latest": (0.0, 1.0),
    "average": (0.5, 0.5),
    "conservative": (0.7, 0.3),
}
MERGES = ("replace", *_AGGREGATE, "ensemble")
_WARN_EVERY_NS = 5_000_000_000
_JUMP_RING = 4096


class SchedulerSettings(BaseModel):
    """How chunks are scheduled (``[policy.scheduler]``). See the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["rtvla", "sync"] = "rtvla"
    resample: Literal["hold", "linear"] = "linear"
    merge: Literal["replace", "weighted", "latest", "average", "conservative", "ensemble"] = "replace"
    crossfade_ticks: int = Field(default=5, ge=0, description="replace: blend this many ticks")
    ensemble_decay: float = Field(default=0.01, description="ensemble: exp(-decay * i) weights")
    margin_ticks: int = Field(default=3, ge=0, description="request this much before the delay")
    delay_window: int = Field(default=20, ge=1, description="recent requests in the delay estimate")
    delay_quantile: float = Field(default=0.95, gt=0, le=1)
    initial_delay_s: float = Field(default=0.1, ge=0, description="delay assumed before any is measured")
    starve_hold_ticks: int = Field(default=10, ge=0, description="hold this long, then a latched stop")
    first_chunk_timeout_s: float = Field(default=5.0, gt=0, description="engaged without any chunk")
    request_timeout_s: float = Field(default=2.0, gt=0, description="an unanswered request is re-sent")
    velocity: bool = Field(default=True, description="give the trajectory velocity targets too")
    gripper_threshold: float | None = Field(default=None, ge=0, le=1)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> SchedulerSettings:
        return validate_table(cls, section, "policy.scheduler")


class SchedStatus(str, Enum):
    """What the scheduler asks of the control loop this tick."""

    IDLE = "idle"  # not engaged: the loop follows setpoints
    WAITING = "waiting"  # engaged, first chunk not here yet: hold
    ACTION = "action"  # follow position/velocity/gripper
    HOLD = "hold"  # starved: hold the last target (counted)
    STOP = "stop"  # starved too long, or no first chunk in time: latch a safe stop


class ChunkTransport(Protocol):
    """How requests leave and chunks arrive (shared memory, or a test's in-process fake)."""

    def send(self, tick: int, stamp_ns: int, observation: Mapping[str, Any]) -> int: ...

    def poll(self) -> PolicyChunk | None: ...

    def close(self) -> None: ...


class ShmTransport:
    """Requests into a policy process's request channel, chunks from its chunk channel."""

    def __init__(self, requests: ShmSpec, chunks: ShmSpec, horizon: int, action_dim: int) -> None:
        from rtvla.policy.chunk_channel import ChunkReader, RequestWriter

        self.writer = RequestWriter(requests)
        self.reader = ChunkReader(chunks, horizon, action_dim)
        self._seen = 0

    def send(self, tick: int, stamp_ns: int, observation: Mapping[str, Any]) -> int:
        return self.writer.request(observation, tick=tick, stamp_ns=stamp_ns)

    def warm_up(self, observation: Mapping[str, Any]) -> None:
        """Encode one request without sending it (the encoder's first call is slow)."""
        from rtvla.policy.chunk_channel import encode_request

        encode_request(np.zeros(self.writer.channel.shape, np.uint8), 0, 0, observation)

    def poll(self) -> PolicyChunk | None:
        ch = self.reader.channel
        if ch.seq == self._seen:  # one shared-memory read, no copy: the common case
            return None
        s = ch.latest()
        if s is None or s.seq == self._seen:
            return None
        self._seen = s.seq
        return self.reader.layout.unpack(s.value)

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


@dataclass(frozen=True)
class PolicyLink:
    """Everything the control process needs to schedule a policy's chunks (picklable)."""

    requests: ShmSpec
    chunks: ShmSpec
    horizon: int
    action_dim: int
    policy_hz: float
    real_time_chunking: bool = False
    settings: SchedulerSettings = field(default_factory=SchedulerSettings)
    state_key: str = "observation/joint_position"
    gripper_key: str | None = "observation/gripper_position"
    arm_start: int = 0
    gripper_index: int | None = None

    @classmethod
    def from_process(cls, proc: Any, settings: SchedulerSettings | None = None, *,
                     policy_hz: float | None = None, **keys: Any) -> PolicyLink:
        """From a started :class:`~rtvla.policy.process.PolicyProcess`; the rate comes from
        its metadata unless given; ``keys``: ``state_key``, ``gripper_key``, ``arm_start``,
        ``gripper_index``."""
        meta: PolicyMetadata = proc.metadata
        rate = policy_hz or meta.rate_hz
        if rate is None:
            raise ConfigError(f"policy {meta.name!r} declares no rate_hz; set policy.options.rate_hz")
        return cls(requests=proc.request_spec, chunks=proc.chunk_spec, horizon=int(meta.horizon or 0),
                   action_dim=int(meta.action_dim or 0), policy_hz=float(rate),
                   real_time_chunking=meta.real_time_chunking,
                   settings=settings if settings is not None else SchedulerSettings(), **keys)

    def open(self) -> ShmTransport:
        return ShmTransport(self.requests, self.chunks, self.horizon, self.action_dim)

    def build(self, limits: RobotLimits, control_hz: float, *, recorder: Recorder | None = None,
              clock: Clock = MONOTONIC) -> ChunkScheduler:
        """The scheduler, attached to the channels (call in the control process)."""
        return ChunkScheduler(
            limits, self.open(), horizon=self.horizon, action_dim=self.action_dim, control_hz=control_hz,
            policy_hz=self.policy_hz, settings=self.settings, arm_start=self.arm_start,
            gripper_index=self.gripper_index, real_time_chunking=self.real_time_chunking,
            observe=state_observer(limits.dof, self.state_key, self.gripper_key), recorder=recorder,
            clock=clock)


def state_observer(dof: int, state_key: str, gripper_key: str | None) -> Callable[[RobotState], dict[str, Any]]:
    """The request's own observation: joint positions (and gripper), float32."""
    def observe(state: RobotState) -> dict[str, Any]:
        obs: dict[str, Any] = {state_key: np.asarray(state.q[:dof], dtype=np.float32)}
        if gripper_key is not None:
            obs[gripper_key] = np.array([state.gripper], dtype=np.float32)
        return obs
    return observe


def resample_chunk(actions: np.ndarray, ratio: float, method: str = "linear",
                   policy_hz: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``[H, A]`` actions at the policy rate -> (positions, velocities) ``[n, A]`` at the
    control rate, ``ratio = control_hz / policy_hz``, ``n = ceil(H * ratio)``. Velocities are
    the central differences at the policy rate, resampled the same way."""
    a = np.asarray(actions, dtype=float)
    h = a.shape[0]
    vel = np.gradient(a, 1.0 / policy_hz, axis=0) if h > 1 else np.zeros_like(a)
    n = max(1, int(math.ceil(h * ratio - 1e-9)))
    u = np.arange(n) / ratio
    k = np.minimum(np.floor(u + 1e-9).astype(np.int64), h - 1)
    if method == "hold":
        return a[k].copy(), vel[k].copy()
    k1 = np.minimum(k + 1, h - 1)
    frac = np.clip(u - k, 0.0, 1.0)[:, None]
    return a[k] + frac * (a[k1] - a[k]), vel[k] + frac * (vel[k1] - vel[k])


class ChunkScheduler:
    """Turns chunks into per-tick targets inside the control loop. See the module docstring.

    Args:
        limits: the robot's limits (the arm's dof, joint limits for validating chunks).
        transport: where requests go and chunks come from.
        horizon, action_dim: the chunk's shape ``[H, A]``.
        control_hz, policy_hz: the two rates (resampling ratio ``control_hz / policy_hz``).
        arm_start: first action column of the arm's joint positions (``dof`` columns).
        gripper_index: the action column of the gripper (0 open .. 1 closed), if any.
        real_time_chunking: add the RTC fields to requests (only when the policy says so).
        observe: state -> the request's observation (the context is merged in elsewhere).
    """

    def __init__(self, limits: RobotLimits, transport: ChunkTransport, *, horizon: int, action_dim: int,
                 control_hz: float, policy_hz: float, settings: SchedulerSettings | None = None,
                 arm_start: int = 0, gripper_index: int | None = None, real_time_chunking: bool = False,
                 observe: Callable[[RobotState], Mapping[str, Any]] | None = None,
                 recorder: Recorder | None = None, name: str = "policy", clock: Clock = MONOTONIC) -> None:
        dof = limits.dof
        if not (isinstance(horizon, int) and horizon >= 1):
            raise ConfigError(f"policy horizon must be an integer >= 1, got {horizon!r}")
        if not (isinstance(action_dim, int) and action_dim >= 1):
            raise ConfigError(f"policy action_dim must be an integer >= 1, got {action_dim!r}")
        if not (control_hz > 0 and policy_hz > 0 and math.isfinite(control_hz) and math.isfinite(policy_hz)):
            raise ConfigError(f"rates must be > 0, got control {control_hz} Hz, policy {policy_hz} Hz")
        if not (arm_start >= 0 and arm_start + dof <= action_dim):
            raise ConfigError(f"arm columns [{arm_start}, {arm_start + dof}) do not fit action_dim {action_dim}")
        if gripper_index is not None and not (0 <= gripper_index < action_dim):
            raise ConfigError(f"gripper_index {gripper_index} outside action_dim {action_dim}")
        self.limits = limits
        self.dof = dof
        self.transport = transport
        self.horizon = horizon
        self.action_dim = action_dim
        self.control_hz = float(control_hz)
        self.policy_hz = float(policy_hz)
        self.ratio = self.control_hz / self.policy_hz
        self.settings = s = settings if settings is not None else SchedulerSettings()
        self.arm_start = arm_start
        self.gripper_index = gripper_index
        self.real_time_chunking = real_time_chunking
        self.observe = observe if observe is not None else state_observer(dof, "observation/state", None)
        self.recorder = recorder
        self.name = name
        self.clock = clock
        self._rtc_meta: PolicyMetadata | None = None
        if real_time_chunking:
            from rtvla.policy.base import REAL_TIME_CHUNKING, PolicyMetadata

            self._rtc_meta = PolicyMetadata(name=name, action_dim=action_dim, horizon=horizon,
                                            capabilities=frozenset({REAL_TIME_CHUNKING}))
        self.chunk_ticks = int(math.ceil(horizon * self.ratio - 1e-9))
        cap = 1
        while cap < 4 * self.chunk_ticks + 4:
            cap *= 2
        self._cap = cap
        self._pos = np.zeros((cap, dof))
        self._vel = np.zeros((cap, dof))
        self._grip = np.zeros(cap)
        self._w = np.zeros(cap)  # ensemble weight sums; > 0 marks a tick holding an action
        self._n = np.zeros(cap, dtype=np.int64)
        # The tick's output (reused every tick: copy to keep).
        self.position = np.zeros(dof)
        self.velocity = np.zeros(dof)
        self.gripper: float | None = None
        self.stop_reason = ""
        self._last = np.zeros(dof)
        self._have_last = False
        self._vmax = np.asarray(limits.dq_max, dtype=float) * 0.95
        self._t = 0  # ticks executed (the next tick's index)
        self._tail = 0  # one past the last tick holding an action
        self.engaged = False
        self._engaged_ns = 0
        self._engaged_chunks = 0
        self._got_first = False
        self._in_flight: tuple[int, int, int] | None = None  # (request id, tick, stamp)
        self._last_chunk: tuple[np.ndarray, int] | None = None  # raw actions, start tick
        self._prev_request_tick: int | None = None
        self._starve_run = 0
        self._jump_ref: np.ndarray | None = None
        self._jump_tick = -1
        self._jump_ref_buf = np.zeros(dof)
        self._delays = np.zeros(s.delay_window, dtype=np.int64)
        self._delays_s = np.zeros(s.delay_window)
        self._n_delays = 0
        self._delay_ticks = 0
        self._update_delay()
        self._last_warn_ns = -_WARN_EVERY_NS
        self.jumps = np.zeros(_JUMP_RING)
        self._warm_up()
        # statistics
        self.ticks = 0
        self.action_ticks = 0
        self.starved_ticks = 0
        self.wait_ticks = 0
        self.starvation_stops = 0
        self.requests = 0
        self.chunks = 0
        self.failures = 0
        self.rejected = 0
        self.timeouts = 0
        self.stale = 0
        self.dropped_actions = 0
        self.boundaries = 0
        self.window_warnings = 0
        self.last_rejection = ""

    def _warm_up(self) -> None:
        """Run the chunk path's numpy calls once now: a first call in a fresh process costs
        milliseconds (lazy imports, dispatch caches) that must not land in a control tick."""
        dummy = np.zeros((self.horizon, self.dof))
        for method in ("hold", "linear"):
            resample_chunk(dummy, self.ratio, method, self.policy_hz)
        np.quantile(np.zeros(4, dtype=np.int64), self.settings.delay_quantile)
        np.argwhere(np.zeros((2, 2), bool))
        self._check(np.zeros((self.horizon, self.action_dim)))
        warm = getattr(self.transport, "warm_up", None)
        if callable(warm):
            zero = RobotState(stamp_ns=0, q=np.zeros(self.dof), dq=np.zeros(self.dof), effort=np.zeros(self.dof))
            warm(self.observe(zero))

    # -- mode ------------------------------------------------------------------------------

    def engage(self, now_ns: int | None = None) -> None:
        """Start following the policy: the first request goes out at the next tick."""
        if self.engaged:
            return
        self.engaged = True
        self._engaged_ns = self.clock.now_ns() if now_ns is None else now_ns
        self._got_first = False
        self._engaged_chunks = 0
        self._starve_run = 0
        # An answer to a request from before (a previous engagement) saw another state: it
        # arrives as stale, and a fresh request goes out at once.
        self._in_flight = None
        self._clear_buffer()
        self._have_last = False
        self._last_chunk = None
        self._prev_request_tick = None
        self._event("engaged", "following the policy")

    def disengage(self, reason: str = "asked") -> None:
        """Stop following: queued actions are dropped; a chunk still in flight is ignored."""
        if not self.engaged:
            return
        self.engaged = False
        self._clear_buffer()
        self._event("disengaged", f"policy no longer followed: {reason}")

    def _clear_buffer(self) -> None:
        self._w[:] = 0.0
        self._n[:] = 0
        self._tail = self._t
        self._jump_ref = None

    # -- the hot path ----------------------------------------------------------------------

    @property
    def delay_ticks(self) -> int:
        """The delay the trigger must cover: the quantile of recent delays, in ticks (updated
        when a chunk arrives, not every tick)."""
        return self._delay_ticks

    def _update_delay(self) -> None:
        n = min(self._n_delays, len(self._delays))
        if n == 0:
            self._delay_ticks = int(math.ceil(self.settings.initial_delay_s * self.control_hz))
        else:
            self._delay_ticks = int(math.ceil(np.quantile(self._delays[:n], self.settings.delay_quantile)))

    @property
    def remaining(self) -> int:
        """Ticks from the current one that hold an action (the queue is contiguous)."""
        return max(0, self._tail - self._t)

    def tick(self, state: RobotState, now_ns: int) -> SchedStatus:
        """One control tick: take a chunk if one came, maybe request, pick this tick's target."""
        t = self._t
        self.ticks += 1
        chunk = self.transport.poll()
        if chunk is not None:
            self._take(chunk, t, now_ns)
        inflight = self._in_flight
        if inflight is not None and now_ns - inflight[2] > self.settings.request_timeout_s * 1e9:
            self.timeouts += 1
            self._in_flight = None
            self._event("request_timeout", f"request {inflight[0]} unanswered for "
                        f"{(now_ns - inflight[2]) / 1e9:.2f} s; asking again")
        if not self.engaged:
            self._t = t + 1
            self._discard(t)
            return SchedStatus.IDLE
        if self._in_flight is None:
            left = self.remaining
            if (left <= 0) if self.settings.mode == "sync" else (left <= self.delay_ticks + self.settings.margin_ticks):
                self._request(state, t, now_ns)
        status = self._pop(t, state, now_ns)
        self._t = t + 1
        return status

    def _pop(self, t: int, state: RobotState, now_ns: int) -> SchedStatus:
        slot = t & (self._cap - 1)
        if self._w[slot] > 0.0:
            self.position[:] = self._pos[slot]
            if self.settings.velocity:
                np.clip(self._vel[slot], -self._vmax, self._vmax, out=self.velocity)
            else:
                self.velocity[:] = 0.0
            if self.gripper_index is not None:
                g = float(self._grip[slot])
                thr = self.settings.gripper_threshold
                self.gripper = (1.0 if g >= thr else 0.0) if thr is not None else g
            self._w[slot] = 0.0
            self._n[slot] = 0
            if self._jump_ref is not None and t == self._jump_tick:
                self.jumps[self.boundaries % _JUMP_RING] = float(np.max(np.abs(self.position - self._jump_ref)))
                self.boundaries += 1
                self._jump_ref = None
            self._last[:] = self.position
            self._have_last = True
            self._starve_run = 0
            self.action_ticks += 1
            return SchedStatus.ACTION
        if self._jump_ref is not None and t >= self._jump_tick:
            self._jump_ref = None
        if not self._have_last:
            self._last[:] = state.q[: self.dof]
            self._have_last = True
        self.position[:] = self._last
        self.velocity[:] = 0.0
        if not self._got_first:
            self.wait_ticks += 1
            if now_ns - self._engaged_ns > self.settings.first_chunk_timeout_s * 1e9:
                return self._stop(f"no chunk within {self.settings.first_chunk_timeout_s} s of engaging")
            return SchedStatus.WAITING
        self.starved_ticks += 1
        self._starve_run += 1
        if self._starve_run == 1:
            self._event("starved", f"no action for tick {t}; holding")
        if self._starve_run > self.settings.starve_hold_ticks:
            return self._stop(f"starved for {self._starve_run} ticks (> {self.settings.starve_hold_ticks})")
        return SchedStatus.HOLD

    def _stop(self, why: str) -> SchedStatus:
        self.starvation_stops += 1
        self.stop_reason = why
        self.disengage(why)
        return SchedStatus.STOP

    def _discard(self, t: int) -> None:
        slot = t & (self._cap - 1)
        self._w[slot] = 0.0
        self._n[slot] = 0

    # -- requests --------------------------------------------------------------------------

    def _request(self, state: RobotState, t: int, now_ns: int) -> None:
        obs: Mapping[str, Any] = self.observe(state)
        if self._rtc_meta is not None:
            from rtvla.policy.base import with_real_time_chunking

            obs = with_real_time_chunking(obs, self._rtc_meta, self._leftover(t),
                                          int(math.ceil(self.delay_ticks / self.ratio)))
        try:
            rid = self.transport.send(t, now_ns, obs)
        except Exception as exc:  # a full channel or a closed one: count, try again later
            self.failures += 1
            self._event("request_failed", f"request at tick {t} not sent: {exc}")
            return
        self.requests += 1
        self._in_flight = (int(rid), t, now_ns)
        prev = self._prev_request_tick
        self._prev_request_tick = t
        # The first interval after engaging includes the wait for the first chunk: not s.
        if prev is not None and self._engaged_chunks >= 2 and self.settings.mode == "rtvla":
            self._check_window(t - prev, now_ns)

    def _leftover(self, t: int) -> np.ndarray | None:
        if self._last_chunk is None:
            return None
        raw, start = self._last_chunk
        k = int(math.floor((t - start) / self.ratio + 1e-9))
        return raw[min(max(k, 0), len(raw)):]

    def _check_window(self, s: int, now_ns: int) -> None:
        d, h = self.delay_ticks, self.chunk_ticks
        if d <= s <= h - d:
            return
        self.window_warnings += 1
        if now_ns - self._last_warn_ns >= _WARN_EVERY_NS:
            self._last_warn_ns = now_ns
            logger.warning("%s: chunk timing outside d <= s <= H - d (d=%d, s=%d, H=%d ticks): the "
                           "policy is too slow for its horizon; expect starvation or jerky boundaries "
                           "(%d times so far)", self.name, d, s, h, self.window_warnings)

    # -- chunks ----------------------------------------------------------------------------

    def _take(self, chunk: PolicyChunk, t: int, now_ns: int) -> None:
        inflight = self._in_flight
        if inflight is None or chunk.request_id < inflight[0]:
            self.stale += 1  # answers a request we gave up on, or one from before a reset
            return
        self._in_flight = None
        if not self.engaged:
            return
        if not chunk.ok or chunk.actions is None:
            self.failures += 1
            self._event("inference_failed", f"request {chunk.request_id} failed in the policy process")
            return
        why = self._check(chunk.actions)
        if why is not None:
            self.rejected += 1
            self.last_rejection = why
            self._event("chunk_rejected", f"chunk for request {chunk.request_id} rejected: {why}")
            return
        delay = t - chunk.tick
        i = self._n_delays % len(self._delays)
        self._delays[i] = delay
        self._delays_s[i] = (now_ns - chunk.request_ns) / 1e9
        self._n_delays += 1
        self._update_delay()
        if self.recorder is not None:
            self.recorder.observe(self.name, "inference_delay", max(0.0, (now_ns - chunk.request_ns) / 1e9))
        actions = chunk.actions
        pos, vel = resample_chunk(actions[:, self.arm_start:self.arm_start + self.dof], self.ratio,
                                  self.settings.resample, self.policy_hz)
        if self.gripper_index is not None:
            grip, _ = resample_chunk(actions[:, self.gripper_index:self.gripper_index + 1], self.ratio,
                                     "hold", self.policy_hz)
            grip = grip[:, 0]
        else:
            grip = np.zeros(len(pos))
        # sync (the ActionChunkBroker baseline) waited for this chunk, and so did the robot
        # for the first chunk after engaging: both run from action 0.
        start = t if self.settings.mode == "sync" or not self._got_first else chunk.tick
        skip = max(0, t - start)
        self.dropped_actions += min(skip, len(pos))
        self._last_chunk = (actions, start)
        self.chunks += 1
        self._engaged_chunks += 1
        self._got_first = True
        if skip >= len(pos):
            return
        self._merge(pos[skip:], vel[skip:], grip[skip:], start + skip)

    def _check(self, actions: np.ndarray) -> str | None:
        a = np.asarray(actions)
        if a.shape != (self.horizon, self.action_dim):
            return f"shape {a.shape}, expected ({self.horizon}, {self.action_dim})"
        if not np.all(np.isfinite(a)):
            return "non-finite actions"
        arm = a[:, self.arm_start:self.arm_start + self.dof]
        lim = self.limits
        bad = (arm < lim.q_min - 1e-6) | (arm > lim.q_max + 1e-6)
        if bad.any():
            r, j = (int(v) for v in np.argwhere(bad)[0])
            return (f"action[{r}] {lim.joint_names[j]} = {arm[r, j]:.4f} outside "
                    f"[{lim.q_min[j]:.4f}, {lim.q_max[j]:.4f}]")
        if self.gripper_index is not None:
            g = a[:, self.gripper_index]
            if np.any((g < -1e-6) | (g > 1 + 1e-6)):
                return f"gripper values outside [0, 1]: {g.min():.3f} .. {g.max():.3f}"
        return None

    def _merge(self, pos: np.ndarray, vel: np.ndarray, grip: np.ndarray, lo: int) -> None:
        n = len(pos)
        end = lo + n
        cap = self._cap
        if end - self._t > cap:
            n = cap - (lo - self._t)
            end = lo + n
            pos, vel, grip = pos[:n], vel[:n], grip[:n]
        idx = np.arange(lo, end) & (cap - 1)
        had = self._w[idx] > 0.0
        # What would have run at the boundary tick without this chunk. The first chunk after
        # engaging has no predecessor: its start is not a chunk boundary (the policy's own
        # first action), so it is not counted among the boundary jumps.
        ref = self._jump_ref_buf
        ref[:] = self._pos[idx[0]] if had[0] else (self._last if self._have_last else pos[0])
        if self._engaged_chunks >= 2:
            self._jump_ref, self._jump_tick = ref, lo
        merge = self.settings.merge
        if merge == "replace":
            k = min(self.settings.crossfade_ticks, n)
            # The old plan for the blended ticks: where it has run out, its last value, held.
            old_pos = np.empty((k, self.dof))
            old_vel = np.zeros((k, self.dof))
            cur = ref
            for i in range(k):
                if had[i]:
                    cur = self._pos[idx[i]]
                    old_vel[i] = self._vel[idx[i]]
                old_pos[i] = cur
            self._pos[idx] = pos
            self._vel[idx] = vel
            self._grip[idx] = grip
            if k:
                alpha = (np.arange(1, k + 1) / (k + 1))[:, None]
                head = idx[:k]
                self._pos[head] = (1 - alpha) * old_pos[:k] + alpha * pos[:k]
                self._vel[head] = (1 - alpha) * old_vel[:k] + alpha * vel[:k]
            # Beyond this chunk nothing older survives (it replaces the plan).
            for tick in range(end, self._tail):
                self._w[tick & (cap - 1)] = 0.0
            self._w[idx] = 1.0
            self._n[idx] = 1
            self._tail = end
        elif merge == "ensemble":
            w_new = np.exp(-self.settings.ensemble_decay * self._n[idx])
            w_old = self._w[idx]
            tot = w_old + w_new
            f_old = (w_old / tot)[:, None]
            self._pos[idx] = f_old * self._pos[idx] + (1 - f_old) * pos
            self._vel[idx] = f_old * self._vel[idx] + (1 - f_old) * vel
            self._grip[idx] = f_old[:, 0] * self._grip[idx] + (1 - f_old[:, 0]) * grip
            self._w[idx] = tot
            self._n[idx] += 1
            self._tail = max(self._tail, end)
        else:
            c_old, c_new = _AGGREGATE[merge]
            m = had[:, None]
            self._pos[idx] = np.where(m, c_old * self._pos[idx] + c_new * pos, pos)
            self._vel[idx] = np.where(m, c_old * self._vel[idx] + c_new * vel, vel)
            self._grip[idx] = np.where(had, c_old * self._grip[idx] + c_new * grip, grip)
            self._w[idx] = 1.0
            self._n[idx] += 1
            self._tail = max(self._tail, end)

    # -- results ---------------------------------------------------------------------------

    def _event(self, kind: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(self.name, kind, message)

    def jump_samples(self) -> np.ndarray:
        """Boundary jumps (rad, max over joints) of the most recent chunk switches."""
        n = self.boundaries
        if n <= _JUMP_RING:
            return self.jumps[:n].copy()
        start = n % _JUMP_RING
        return np.concatenate([self.jumps[start:], self.jumps[:start]])

    def stats(self) -> dict[str, Any]:
        n = min(self._n_delays, len(self._delays))
        jumps = self.jump_samples()
        s = self.settings
        return {
            "mode": s.mode, "merge": s.merge, "resample": s.resample,
            "control_hz": self.control_hz, "policy_hz": self.policy_hz, "chunk_ticks": self.chunk_ticks,
            "engaged": self.engaged, "ticks": self.ticks, "action_ticks": self.action_ticks,
            "starved_ticks": self.starved_ticks, "wait_ticks": self.wait_ticks,
            "starvation_stops": self.starvation_stops, "stop_reason": self.stop_reason,
            "requests": self.requests, "chunks": self.chunks, "failures": self.failures,
            "rejected": self.rejected, "last_rejection": self.last_rejection, "timeouts": self.timeouts,
            "stale": self.stale, "dropped_actions": self.dropped_actions,
            "window_warnings": self.window_warnings, "delay_ticks": self.delay_ticks,
            "delay_ms": {
                "p50": float(np.percentile(self._delays_s[:n], 50) * 1e3) if n else 0.0,
                "p95": float(np.percentile(self._delays_s[:n], 95) * 1e3) if n else 0.0,
                "max": float(self._delays_s[:n].max() * 1e3) if n else 0.0,
            },
            "boundaries": self.boundaries,
            "boundary_jump_rad": {
                "p50": float(np.percentile(jumps, 50)) if jumps.size else 0.0,
                "max": float(jumps.max()) if jumps.size else 0.0,
            },
            "jumps": jumps.tolist(),
        }

    def close(self) -> None:
        self.transport.close()
