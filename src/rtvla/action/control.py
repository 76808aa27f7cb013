"""The 100 Hz control loop: setpoints in, jerk-limited commands out, a watchdog in between.

Each tick :class:`ControlLoop` reads the robot's state, takes the newest :class:`Setpoint`
from its channel (any latest-value channel: in-process or shared memory), follows arm goals
on an online ruckig trajectory (:class:`~rtvla.action.trajectory.ArmTrajectory`), passes base
velocity and gripper through, and sends one :class:`RobotCommand`. It records its loop time
and wake-up lateness into the Recorder under ``"control"``.

The watchdog makes sure the robot never executes a stale or invalid command: a base-velocity
setpoint older than ``setpoint_timeout_s`` while the base moves, a setpoint that arrives
already stale, or one that is non-finite or outside the robot's limits, makes the loop call
``robot.stop()`` (hold the arm, zero base velocity), record a ``"watchdog"`` event with the
reason, and stay stopped. The stop **latches**: a fresh, valid setpoint does not release it;
only an explicit :meth:`ControlLoop.reset_stop` does (a person or a configured recovery step
decides that the robot may move again). :meth:`ControlLoop.request_stop` latches the same way
from any thread; a process-placed loop gets both through its ``commands`` channel (an array
``[stops, resets, last]`` of monotone counters, so a stop is never lost behind a reset that
follows it: the latest-value channel keeps only the newest value).

Following a policy: with a :class:`~rtvla.action.chunk_scheduler.ChunkScheduler`, the loop
can be switched into "follow the policy" mode (:meth:`ControlLoop.follow_policy`, or the
``commands`` channel's follow counter and flag). Then each tick's arm target, its velocity
and the gripper come from the scheduler (setpoints' arm goals are ignored; base velocity
still comes from setpoints), every command goes through ``validate_command``, and a
starved scheduler's ``STOP`` latches a safe stop like the watchdog does.

Usage::

    setpoints = LatestValue("setpoints")
    loop = ControlLoop(robot, setpoints, recorder=rec, settings=ControlSettings.from_config(cfg))
    thread = loop.start_thread()
    setpoints.publish(Setpoint(stamp_ns=MONOTONIC.now_ns(), arm_q=goal))
    ...
    loop.stop(); thread.join(); print(loop.stats())
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.action.chunk_scheduler import ChunkScheduler, SchedStatus
from rtvla.action.chunks import ActionChunkQueue
from rtvla.action.setpoints import Setpoint
from rtvla.action.trajectory import ArmTrajectory, TrajStatus, check_goal
from rtvla.channels import Channel
from rtvla.component import Component, Placement
from rtvla.config import Budget, Config, format_validation_error
from rtvla.errors import ConfigError, RobotError
from rtvla.metrics import LatencyHistogram, Recorder
from rtvla.robots.base import (
    CommandMode,
    Robot,
    RobotCommand,
    RobotLimits,
    RobotState,
    validate_command,
)
from rtvla.timing import MONOTONIC, Clock, RateLoop, Tick

STEP_RING = 32

__all__ = [
    "COMMANDS_SIZE",
    "COMMAND_RESET",
    "COMMAND_STOP",
    "ControlLoop",
    "ControlSettings",
    "ControlStats",
    "check_setpoint",
]

# The ``commands`` channel's last-command codes (see the module docstring).
COMMAND_STOP = 1.0
COMMAND_RESET = 2.0
#: The ``commands`` array: [stops, resets, last command, robot resets, follow asks, follow on].
COMMANDS_SIZE = 6

logger = logging.getLogger(__name__)


class ControlSettings(BaseModel):
    """The ``[control]`` table of ``rtvla.toml`` (the rate comes from ``[budgets.control]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    setpoint_timeout_s: float = Field(default=0.3, gt=0, description="watchdog timeout")
    placement: Literal["thread", "process"] = "process"
    spin_margin_s: float = Field(default=0.0005, ge=0, description="spin this long before each deadline")
    overrun: Literal["skip", "catch_up"] = "skip"
    gc_in_slack: bool = True
    speed_scale: float = Field(default=1.0, gt=0, le=1, description="fraction of dq_max to use")
    cpu: int | None = Field(default=None, ge=0, description="CPU to pin the control process to")
    fifo_priority: int | None = Field(default=None, ge=1, le=99)
    freeze_gc: bool = True
    switch_interval_s: float | None = Field(
        default=0.0005, gt=0, description="interpreter switch interval in the control process")
    lateness_window: int = Field(default=16384, ge=16, description="lateness samples kept")
    hang_periods: int = Field(
        default=3, ge=1, description="a process-placed loop that publishes no tick for more than "
        "this many periods (observed on time by the parent) is treated as lost")
    hang_min_s: float = Field(
        default=0.25, ge=0, description="... and for at least this long: on a shared, noisy "
        "machine a live control process can be held off its CPU for tens of milliseconds")
    stop_timeout_s: float = Field(default=5.0, gt=0, description="bound on stopping the control "
                                  "process, whatever state it is in")

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> ControlSettings:
        """Validate a raw ``[control]`` table; errors name ``control.<field>`` and the value."""
        try:
            return cls.model_validate(section)
        except ValidationError as exc:
            raise ConfigError(format_validation_error("control", exc)) from None

    @classmethod
    def from_config(cls, cfg: Config) -> ControlSettings:
        return cls.from_section(cfg.section("control"))


@dataclass
class ControlStats:
    """What the control loop achieved (the reference's performance metrics and more)."""

    ticks: int = 0
    missed: int = 0
    on_time_rate: float = 1.0
    achieved_hz: float = 0.0
    loop_time_avg_ms: float = 0.0
    loop_time_max_ms: float = 0.0
    loop_time_max_tick: int = -1  # which tick took longest (to find what caused it)
    lateness_p50_us: float = 0.0
    lateness_p99_us: float = 0.0
    lateness_max_us: float = 0.0
    watchdog_trips: int = 0
    last_trip_reason: str = ""
    stopped: bool = False
    stop_requests: int = 0
    resets: int = 0
    setpoints_refused_while_stopped: int = 0
    setpoints_accepted: int = 0
    commands_sent: int = 0
    commands_rejected: int = 0
    trajectory_errors: int = 0
    ruckig_max_us: float = 0.0
    realtime: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_setpoint(sp: Setpoint, limits: RobotLimits) -> str | None:
    """Why ``sp`` must not be executed (non-finite or outside limits), or None (no exception)."""
    if sp.arm_q is not None:
        why = check_goal(sp.arm_q, limits)
        if why is not None:
            return why
    if sp.base_vel is not None:
        v = np.asarray(sp.base_vel, dtype=float)
        if v.shape != (3,) or not np.all(np.isfinite(v)):
            return f"base_vel must be 3 finite values, got {v.tolist()}"
        lin = limits.base_lin_vel_max
        if abs(v[0]) > lin or abs(v[1]) > lin:
            return f"base_vel linear ({v[0]:.3f}, {v[1]:.3f}) exceeds {lin}"
        if abs(v[2]) > limits.base_ang_vel_max:
            return f"base_vel angular {v[2]:.3f} exceeds {limits.base_ang_vel_max}"
    if sp.gripper is not None:
        try:
            g = float(sp.gripper)
        except (TypeError, ValueError):
            return f"gripper must be a number in [0, 1], got {sp.gripper!r}"
        if not (math.isfinite(g) and 0.0 <= g <= 1.0):
            return f"gripper must be in [0, 1], got {g}"
    return None


class ControlLoop(Component):
    """Drives a robot at the control rate from the newest setpoint. See the module docstring.

    Args:
        robot: anything implementing :class:`~rtvla.robots.base.Robot` (already connected).
        setpoints: a latest-value channel of :class:`Setpoint` values, or of float arrays in
            the :meth:`Setpoint.to_array` layout (the shared-memory channel).
        recorder: where loop time, lateness, misses and watchdog events go.
        settings: the validated ``[control]`` table.
        budget: the control budget (its ``rate_hz`` is the loop rate unless ``rate_hz``).
        clock: time source (a FakeClock in logic tests).
        state_out: optional channel the loop publishes each tick's :class:`RobotState` to.
        chunks: optional :class:`ActionChunkQueue`; each tick its action becomes the arm goal.
        commands: optional latest-value channel of ``[stops, resets, last]`` counters (the
            parent of a control process latches and resets the stop through it).
        scheduler: optional :class:`ChunkScheduler`; while engaged (:meth:`follow_policy`),
            it supplies the arm's targets.
    """

    def __init__(
        self,
        robot: Robot,
        setpoints: Channel,
        *,
        recorder: Recorder | None = None,
        settings: ControlSettings | None = None,
        budget: Budget | None = None,
        rate_hz: float | None = None,
        clock: Clock = MONOTONIC,
        state_out: Channel | None = None,
        chunks: ActionChunkQueue | None = None,
        commands: Channel | None = None,
        scheduler: ChunkScheduler | None = None,
        name: str = "control",
    ) -> None:
        self.settings = settings if settings is not None else ControlSettings()
        super().__init__(name, budget=budget, recorder=recorder, rate_hz=rate_hz,
                         placement=Placement(self.settings.placement))
        if self.rate_hz is None or not self.rate_hz > 0:
            raise ConfigError(f"budgets.{name}.rate_hz must be > 0 for the control loop, got {self.rate_hz}")
        self.robot = robot
        self.limits = robot.limits
        self.dof = self.limits.dof
        self.setpoints = setpoints
        self.state_out = state_out
        self.chunks = chunks
        self.commands = commands
        self.scheduler = scheduler
        if scheduler is not None and scheduler.dof != self.limits.dof:
            raise ConfigError(f"chunk scheduler dof {scheduler.dof} does not match the robot's {self.limits.dof}")
        self._follow_asks = 0
        self._follow_seen = 0
        self._follow_on = False
        self._cmd_follow = 0
        self._cmd_seq = 0
        self._cmd_seen = (0, 0)  # stops, resets already applied from ``commands``
        # request_stop()/reset_stop() from other threads: counters the loop applies next tick.
        self._stop_asks = 0
        self._reset_asks = 0
        self._stop_reason = "stop requested"
        self._last_ask = 0.0
        self._asks_seen = (0, 0)
        self._robot_reset_asks = 0
        self._robot_resets_seen = 0
        self._cmd_robot_resets = 0
        if chunks is not None and chunks.dof != self.dof:
            raise ConfigError(f"chunk queue dof {chunks.dof} does not match the robot's {self.dof}")
        self.clock = clock
        self.period_s = 1.0 / float(self.rate_hz)
        self.trajectory = ArmTrajectory(self.limits, self.period_s, speed_scale=self.settings.speed_scale)
        self._timeout_ns = int(self.settings.setpoint_timeout_s * 1e9)
        # Hot-loop state, preallocated.
        self._base_vel = np.zeros(3)
        self._zero3 = np.zeros(3)
        self._gripper: float | None = None
        self._last_seq = 0
        self._base_stamp_ns = 0
        self._tripped = False
        self._last_slot = -1
        self._n_ticks = self._n_missed = self._n_late = 0
        self._first_wake_ns: int | None = None
        self._last_wake_ns = 0
        self._state: RobotState | None = None
        self._lateness = np.zeros(self.settings.lateness_window, dtype=np.int64)
        # Step time of the most recent ticks (seconds), for relaying exact samples out of a
        # control process: STEP_RING slots indexed by tick count.
        self.step_ring = np.zeros(STEP_RING)
        self._lat_hist = LatencyHistogram()
        self._step_hist = LatencyHistogram()
        self._loop: RateLoop | None = None
        self._stats = ControlStats()
        self._stats_lock = threading.Lock()
        self.realtime: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def setup(self) -> None:
        """Start from the robot's measured arm position, holding it."""
        state = self.robot.read_state()
        self._state = state
        self.trajectory.reset(state.q)

    def teardown(self) -> None:
        try:
            self.robot.stop()
        except RobotError as exc:
            logger.warning("%s: robot.stop() at teardown failed: %s", self.name, exc)

    def make_loop(self) -> RateLoop:
        s = self.settings
        return RateLoop(
            float(self.rate_hz or 0), clock=self.clock, spin_margin_s=s.spin_margin_s,
            overrun=s.overrun, stop_event=self.stop_event, gc_in_slack=s.gc_in_slack, name=self.name,
        )

    def run(self, *, duration_s: float | None = None, max_ticks: int | None = None) -> ControlStats:
        """setup, run the RateLoop until stopped (or for a duration / tick count), teardown."""
        self._loop = loop = self.make_loop()
        loop.realtime.update(self.realtime)
        self.setup()
        try:
            loop.run(self.step, max_ticks=max_ticks, duration_s=duration_s)
        finally:
            self.teardown()
        return self.stats_obj()

    def start_thread(self, **run_kwargs: Any) -> threading.Thread:
        """Run :meth:`run` in a daemon thread (placement ``thread``); ``stop()`` ends it."""
        t = threading.Thread(target=self.run, kwargs=run_kwargs, name=f"{self.name}-loop", daemon=True)
        t.start()
        return t

    # -- the hot path ----------------------------------------------------------------------

    def step(self, tick: Tick) -> bool:
        """One control cycle. Never raises for robot or setpoint trouble: it stops instead."""
        rec = self.recorder
        name = self.name
        now = tick.wake_ns
        try:
            state = self.robot.read_state()
        except RobotError as exc:
            self._trip(f"robot state unreadable: {exc}", now)
            self._finish_tick(tick)
            return True
        self._state = state
        self._apply_requests(now, state)

        sample = self.setpoints.latest()
        if sample is not None and sample.seq != self._last_seq:
            self._last_seq = sample.seq
            self._take_setpoint(sample.value, now, state)
        # The base velocity is a rate command: it expires. Arm goals are positions and stay.
        if not self._tripped and self._base_moving() and now - self._base_stamp_ns > self._timeout_ns:
            age = (now - self._base_stamp_ns) / 1e9
            self._trip(f"setpoint timeout: newest base-velocity setpoint is {age:.3f} s old "
                       f"(> {self.settings.setpoint_timeout_s} s) while the base moves", now)

        if self.chunks is not None:
            action = self.chunks.pop(tick.slot, state)
            if action is not None and not self._tripped:
                why = self.trajectory.try_set_goal(action)
                if why is not None:
                    self._trip(f"invalid chunk action: {why}", now)
        following = False
        sched = self.scheduler
        if sched is not None:
            if self._tripped and sched.engaged:
                sched.disengage("latched stop")
            status = sched.tick(state, now)
            if status is SchedStatus.ACTION or status is SchedStatus.HOLD:
                following = True
                why = self.trajectory.try_set_goal(sched.position, sched.velocity)
                if why is not None:
                    self._trip(f"invalid policy action: {why}", now)
                elif status is SchedStatus.ACTION and sched.gripper is not None:
                    self._gripper = sched.gripper
            elif status is SchedStatus.WAITING:
                following = True
            elif status is SchedStatus.STOP:
                self._trip(f"policy: {sched.stop_reason}", now)

        if not self._tripped:
            status = self.trajectory.step()
            if status is TrajStatus.ERROR:
                with self._stats_lock:
                    self._stats.trajectory_errors += 1
                self._trip(f"trajectory error: {self.trajectory.last_error}", now)
            else:
                cmd = RobotCommand(
                    stamp_ns=now,
                    mode=CommandMode.POSITION,
                    arm=self.trajectory.position.copy(),
                    base_vel=self._base_vel.copy(),
                    gripper=self._gripper,
                )
                try:
                    if following:
                        # A policy's command is checked here as well as by the robot: a
                        # robot driver that does not validate must not see a bad one.
                        validate_command(cmd, self.limits)
                    self.robot.send_command(cmd)
                    self._stats.commands_sent += 1
                except RobotError as exc:  # CommandRejected included: nothing was executed
                    with self._stats_lock:
                        self._stats.commands_rejected += 1
                    self._trip(f"command rejected: {exc}", now)
                if self.trajectory.calculation_us > self._stats.ruckig_max_us:
                    self._stats.ruckig_max_us = self.trajectory.calculation_us

        if self.state_out is not None:
            self.state_out.publish(state)
        self._finish_tick(tick)
        rec.count(name)
        return True

    def _finish_tick(self, tick: Tick) -> None:
        rec = self.recorder
        lateness_ns = tick.wake_ns - tick.deadline_ns
        if lateness_ns < 0:
            lateness_ns = 0
        step_s = (self.clock.now_ns() - tick.wake_ns) / 1e9
        skipped = tick.slot - self._last_slot - 1 if self._last_slot >= 0 else 0
        self._last_slot = tick.slot
        self._n_ticks += 1
        if self._first_wake_ns is None:
            self._first_wake_ns = tick.wake_ns
        self._last_wake_ns = tick.wake_ns
        self._lateness[tick.index % len(self._lateness)] = lateness_ns
        self.step_ring[self._n_ticks % STEP_RING] = max(step_s, 0.0)
        with self._stats_lock:
            self._lat_hist.record(lateness_ns / 1e9)
            if step_s > self._step_hist.max:
                self._stats.loop_time_max_tick = tick.index
            self._step_hist.record(max(step_s, 0.0))
        rec.latency(self.name, max(step_s, 0.0))
        rec.observe(self.name, "lateness", lateness_ns / 1e9)
        if skipped > 0:
            self._n_missed += skipped
            self._n_late += 1
            rec.miss(self.name, skipped)

    def _base_moving(self) -> bool:
        v = self._base_vel
        return bool(v[0] != 0.0 or v[1] != 0.0 or v[2] != 0.0)

    def _take_setpoint(self, value: Any, now: int, state: RobotState) -> None:
        if isinstance(value, Setpoint):
            sp = value
        else:
            try:
                sp = Setpoint.from_array(np.asarray(value, dtype=float), self.dof)
            except (ValueError, TypeError, IndexError) as exc:
                self._trip(f"undecodable setpoint: {exc}", now)
                return
        why = check_setpoint(sp, self.limits)
        if why is not None:
            self._trip(f"invalid setpoint (seq {sp.seq}): {why}", now)
            return
        age_ns = now - sp.stamp_ns
        if age_ns > self._timeout_ns:
            self._trip(f"stale setpoint (seq {sp.seq}): {age_ns / 1e9:.3f} s old on arrival "
                       f"(> {self.settings.setpoint_timeout_s} s)", now)
            return
        if self._tripped:
            # The stop latches: a fresh setpoint does not release it, only reset_stop() does.
            with self._stats_lock:
                self._stats.setpoints_refused_while_stopped += 1
            return
        self._stats.setpoints_accepted += 1
        if sp.arm_q is not None and not (self.scheduler is not None and self.scheduler.engaged):
            why = self.trajectory.try_set_goal(sp.arm_q)
            if why is not None:
                self._trip(f"arm goal refused: {why}", now)
                return
        if sp.base_vel is not None:
            self._base_vel[:] = sp.base_vel
            self._base_stamp_ns = sp.stamp_ns
        if sp.gripper is not None:
            self._gripper = float(sp.gripper)

    # -- latched stop ----------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Latch a safe stop from any thread; the loop applies it at its next tick."""
        self._stop_reason = reason
        self._last_ask = COMMAND_STOP
        self._stop_asks += 1

    def reset_stop(self) -> None:
        """Release a latched stop (from any thread) at the next tick: the arm then holds where
        it is and the loop follows setpoints published after the reset."""
        self._last_ask = COMMAND_RESET
        self._reset_asks += 1

    def follow_policy(self, on: bool) -> None:
        """Engage (True) or release (False) the chunk scheduler at the next tick, from any
        thread. Released, the arm holds where it is until the next setpoint."""
        if self.scheduler is None:
            raise ConfigError(f"{self.name}: follow_policy() needs a chunk scheduler")
        self._follow_on = bool(on)
        self._follow_asks += 1

    def _set_following(self, on: bool, now: int, state: RobotState) -> None:
        sched = self.scheduler
        if sched is None:
            self.recorder.event(self.name, "follow_refused", "no chunk scheduler in this control loop")
            return
        if on and not sched.engaged:
            if self._tripped:
                self.recorder.event(self.name, "follow_refused", "latched stop: reset it first", stamp_ns=now)
                return
            sched.engage(now)
        elif not on and sched.engaged:
            sched.disengage("asked")
            if not self._tripped:
                self.trajectory.try_set_goal(self.trajectory.position)  # come to rest here

    def request_robot_reset(self) -> None:
        """At the next tick, between commands: ``robot.reset()`` (a simulator back to its
        start: robot home, objects in place), then hold where the robot now is."""
        self._robot_reset_asks += 1

    def _reset_robot(self, now: int) -> None:
        reset = getattr(self.robot, "reset", None)
        if not callable(reset):
            self.recorder.event(self.name, "robot_reset_refused", "the robot has no reset()")
            return
        reset()
        state = self.robot.read_state()
        self._state = state
        self.trajectory.reset(state.q)
        self._base_vel[:] = 0.0
        sample = self.setpoints.latest()
        if sample is not None:
            self._last_seq = sample.seq  # nothing published before the reset applies after it
        self.recorder.event(self.name, "robot_reset", "robot reset to its start", stamp_ns=now)

    def _apply_requests(self, now: int, state: RobotState) -> None:
        """Stops and resets asked since the last tick, from this process and from the
        ``commands`` channel: any stop trips (and is counted); a reset releases only when it
        was the last thing asked."""
        if self._robot_reset_asks != self._robot_resets_seen:
            self._robot_resets_seen = self._robot_reset_asks
            self._reset_robot(now)
        asks = (self._stop_asks, self._reset_asks)
        if asks != self._asks_seen:
            self._apply_counts(asks, self._asks_seen, self._last_ask, self._stop_reason, now, state)
            self._asks_seen = asks
        if self._follow_asks != self._follow_seen:
            self._follow_seen = self._follow_asks
            self._set_following(self._follow_on, now, state)
        ch = self.commands
        if ch is None:
            return
        sample = ch.latest()
        if sample is None or sample.seq == self._cmd_seq:
            return
        self._cmd_seq = sample.seq
        try:
            arr = np.asarray(sample.value, dtype=float)
            n_stop, n_reset, last = (float(x) for x in arr[:3])
            n_robot_reset = int(arr[3]) if arr.shape[0] > 3 else 0
        except (TypeError, ValueError) as exc:
            self._trip(f"undecodable control command: {exc}", now)
            return
        if n_robot_reset > self._cmd_robot_resets:
            self._cmd_robot_resets = n_robot_reset
            self._reset_robot(now)
        if arr.shape[0] >= COMMANDS_SIZE and int(arr[4]) > self._cmd_follow:
            self._cmd_follow = int(arr[4])
            self._set_following(bool(arr[5]), now, state)
        counts = (int(n_stop), int(n_reset))
        self._apply_counts(counts, self._cmd_seen, last, "stop requested by the parent process",
                           now, state)
        self._cmd_seen = counts

    def _apply_counts(self, counts: tuple[int, int], seen: tuple[int, int], last: float,
                      reason: str, now: int, state: RobotState) -> None:
        if counts[0] > seen[0]:
            with self._stats_lock:
                self._stats.stop_requests += counts[0] - seen[0]
            self._trip(reason, now, requested=True)
        if counts[1] > seen[1] and last == COMMAND_RESET:
            self._release(now, state, "reset_stop()")

    def _release(self, now: int, state: RobotState, why: str) -> None:
        if not self._tripped:
            return
        # A robot that latches its own stop (a ROS 2 driver proxy) is released with the loop.
        reset = getattr(self.robot, "reset_stop", None)
        if callable(reset):
            try:
                reset()
            except RobotError as exc:
                self.recorder.event(self.name, "stop_reset_refused", f"robot.reset_stop() failed: {exc}")
                return
        # Resume from where the robot actually is, holding it; only setpoints published after
        # the reset move it (those seen while stopped stay refused).
        self.trajectory.reset(state.q)
        self._base_vel[:] = 0.0
        self._tripped = False
        with self._stats_lock:
            self._stats.stopped = False
            self._stats.resets += 1
        sample = self.setpoints.latest()
        if sample is not None:
            self._last_seq = sample.seq
        self.recorder.event(self.name, "stop_reset", f"latched stop released: {why}", stamp_ns=now)

    def _trip(self, reason: str, now: int, *, requested: bool = False) -> None:
        """Safe stop: hold the arm, zero base velocity, record why; latched until reset.
        ``requested``: asked for (request_stop), not a watchdog trip; counted apart."""
        first = not self._tripped
        self._tripped = True
        self._base_vel[:] = 0.0
        try:
            self.robot.stop()
        except RobotError as exc:
            logger.error("%s: robot.stop() failed during a watchdog trip: %s", self.name, exc)
        try:
            state = self.robot.read_state()
            self.trajectory.reset(state.q)
        except (RobotError, ValueError):
            self.trajectory.goal = None
        with self._stats_lock:
            if not requested:
                self._stats.watchdog_trips += 1
            self._stats.last_trip_reason = reason
            self._stats.stopped = True
        if requested:
            logger.info("%s: latched stop: %s", self.name, reason)
        elif first:
            logger.warning("%s watchdog: %s", self.name, reason)
        self.recorder.event(self.name, "stop" if requested else "watchdog", reason, stamp_ns=now)

    # -- results ---------------------------------------------------------------------------

    @property
    def tripped(self) -> bool:
        """True while the watchdog holds the robot stopped."""
        return self._tripped

    @property
    def last_state(self) -> RobotState | None:
        return self._state

    def lateness_samples_us(self) -> np.ndarray:
        """The most recent wake-up lateness samples, oldest first, in microseconds (for plots)."""
        ticks = self._n_ticks
        size = len(self._lateness)
        if ticks <= size:
            return self._lateness[:ticks] / 1e3
        start = ticks % size
        return np.concatenate([self._lateness[start:], self._lateness[:start]]) / 1e3

    def live_stats(self) -> dict[str, float]:
        """Cheap running figures (no percentiles), fit to publish from inside the loop."""
        n = self._n_ticks
        span = (self._last_wake_ns - (self._first_wake_ns or 0)) / 1e9
        s = self._stats
        return {
            "ticks": float(n),
            "missed": float(self._n_missed),
            "watchdog_trips": float(s.watchdog_trips),
            "stopped": 1.0 if self._tripped else 0.0,
            "lateness_max_us": self._lat_hist.max * 1e6 if self._lat_hist.count else 0.0,
            "loop_time_max_ms": self._step_hist.max * 1e3 if self._step_hist.count else 0.0,
            "achieved_hz": (n - 1) / span if n > 1 and span > 0 else 0.0,
            "on_time_rate": 1.0 - self._n_late / n if n else 1.0,
            "setpoints_accepted": float(s.setpoints_accepted),
        }

    def stats_obj(self) -> ControlStats:
        """The loop's figures so far (safe to call from another thread)."""
        loop = self._loop
        ls = loop.stats() if loop is not None else None  # for its real-time report
        with self._stats_lock:
            s = ControlStats(**{**self._stats.as_dict()})
            lat = self._lat_hist
            if lat.count:
                p = lat.percentiles((50, 99))
                s.lateness_p50_us = p[50] * 1e6
                s.lateness_p99_us = p[99] * 1e6
                s.lateness_max_us = lat.max * 1e6
            if self._step_hist.count:
                s.loop_time_avg_ms = self._step_hist.mean * 1e3
                s.loop_time_max_ms = self._step_hist.max * 1e3
        # The loop's own counters: right also when a runtime drives step() from its own loop.
        live = self.live_stats()
        s.ticks = int(live["ticks"])
        s.missed = int(live["missed"])
        s.on_time_rate = live["on_time_rate"]
        s.achieved_hz = live["achieved_hz"]
        realtime = dict(ls.realtime) if ls is not None else dict(self.realtime)
        s.realtime = realtime or None
        return s

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(self.stats_obj().as_dict())
        if self.chunks is not None:
            out["chunks"] = self.chunks.stats()
        if self.scheduler is not None:
            out["policy"] = self.scheduler.stats()
        return out
