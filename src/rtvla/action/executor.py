"""``TaskExecutor``: runs a validated plan step by step through skills, with timeouts.

The executor is ticked (``tick(now_ns)``): each tick advances the current skill generator by
one step, enforces the step's timeout, and moves on when the step returns. Ticking makes it
run the same way in real time (:meth:`TaskExecutor.execute` ticks it on a RateLoop in the
caller's thread) and in a lock-step simulation (:class:`LockstepDriver` ticks it between
physics steps, deterministically). The result says whether the plan succeeded, or which
step failed and why, with per-step durations. Progress callbacks feed a dashboard.

Usage::

    ctx = SkillContext(read_state=robot.read_state, setpoints=SetpointWriter(setpoints),
                       navigator=nav, kinematics=robot.kinematics, world=world,
                       scene=SceneInfo.from_sim(robot), recorder=rec)
    ex = TaskExecutor(ctx, on_progress=lambda p: print(p.index, p.name, p.status))
    result = ex.execute(plan, stop_event=stop)        # real time, blocking
    result.success, result.failed_step, result.reason, [s.duration_s for s in result.steps]

In real time the navigator and the control loop run in their own threads (or the runtime's);
the executor only sets goals and watches. In lock-step, :class:`LockstepDriver` steps them all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from rtvla.action.navigation import Navigator
from rtvla.action.skills import SKILLS, SkillContext, SkillFn, SkillGen
from rtvla.errors import ActionError, SkillError
from rtvla.timing import FakeClock, RateLoop, Tick

__all__ = [
    "ExecStatus",
    "ExecutionResult",
    "LockstepDriver",
    "Progress",
    "StepResult",
    "TaskExecutor",
]

logger = logging.getLogger(__name__)


class ExecStatus(str, Enum):
    IDLE = "idle"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"


_DONE = (ExecStatus.SUCCEEDED, ExecStatus.FAILED, ExecStatus.TIMED_OUT, ExecStatus.CANCELED)


@dataclass(frozen=True)
class Progress:
    """One progress report: step ``index`` of ``count`` (``name`` like ``navigate(table)``)."""

    index: int
    count: int
    name: str
    status: ExecStatus
    phase: str = ""
    reason: str = ""


@dataclass
class StepResult:
    index: int
    name: str
    type: str
    status: ExecStatus = ExecStatus.PENDING
    duration_s: float = 0.0
    message: str = ""
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutionResult:
    """The outcome of a plan. ``failed_step`` is the index of the step that failed (or None)."""

    status: ExecStatus
    steps: list[StepResult]
    duration_s: float = 0.0
    failed_step: int | None = None
    reason: str = ""

    @property
    def success(self) -> bool:
        return self.status is ExecStatus.SUCCEEDED

    @property
    def failed_action(self) -> str | None:
        return None if self.failed_step is None else self.steps[self.failed_step].name

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        for s in out["steps"]:
            s["status"] = s["status"].value
        out["success"] = self.success
        return out


def _action_parts(action: Any) -> tuple[str, Any, str]:
    """(type, parameters, one-line name) of a plan action (a language ``Action`` or a dict)."""
    if isinstance(action, dict):
        kind, params = action.get("type"), action.get("parameters", {})
        name = f"{kind}({', '.join(f'{k}={v}' for k, v in dict(params).items())})"
    else:
        kind, params = action.type, action.parameters
        name = action.summary() if hasattr(action, "summary") else str(kind)
    return str(kind), params, name


class TaskExecutor:
    """Turns a plan into skills. See the module docstring.

    Args:
        ctx: the :class:`SkillContext` skills run in.
        skills: action type -> skill (default :data:`~rtvla.action.skills.SKILLS`).
        on_progress: called on every step start and end (and on phase changes).
        rate_hz: tick rate of :meth:`execute` (skills wait in ticks of this length).
        name: recorder component for step and task durations (budget ``task``).
    """

    def __init__(
        self,
        ctx: SkillContext,
        *,
        skills: dict[str, SkillFn] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        rate_hz: float = 10.0,
        name: str = "task",
    ) -> None:
        if not rate_hz > 0:
            raise ActionError(f"executor rate_hz must be > 0, got {rate_hz}")
        self.ctx = ctx
        self.skills = dict(SKILLS if skills is None else skills)
        self.on_progress = on_progress
        self.rate_hz = float(rate_hz)
        self.name = name
        self.clock = ctx.clock
        self._lock = threading.RLock()
        self._actions: list[tuple[str, Any, str]] = []
        self._result: ExecutionResult | None = None
        self._gen: SkillGen | None = None
        self._index = -1
        self._step_t0 = 0
        self._plan_t0 = 0
        self._status = ExecStatus.IDLE
        self._stop: threading.Event | None = None
        self._last_phase = ""

    # -- driving ----------------------------------------------------------------------------

    def start(self, plan: Any, *, stop_event: threading.Event | None = None) -> None:
        """Begin ``plan`` (a validated ``Plan``, or anything with ``actions``)."""
        actions: Sequence[Any] = getattr(plan, "actions", plan)
        if not actions:
            raise SkillError("the plan has no actions")
        parts = [_action_parts(a) for a in actions]
        unknown = [k for k, _, _ in parts if k not in self.skills]
        if unknown:
            raise SkillError(f"no skill for action type(s) {unknown}; known: {sorted(self.skills)}")
        with self._lock:
            self._actions = parts
            self._result = ExecutionResult(
                ExecStatus.RUNNING, [StepResult(i, n, k) for i, (k, _, n) in enumerate(parts)]
            )
            self._stop = stop_event
            self._index = -1
            self._gen = None
            self._plan_t0 = self.clock.now_ns()
            self._status = ExecStatus.RUNNING
        logger.info("executing plan of %d steps", len(parts))

    def cancel(self, reason: str = "canceled") -> None:
        with self._lock:
            if self._status is ExecStatus.RUNNING:
                self._end_step(ExecStatus.CANCELED, reason, self.clock.now_ns())

    @property
    def status(self) -> ExecStatus:
        return self._status

    @property
    def result(self) -> ExecutionResult | None:
        return self._result

    def tick(self, now_ns: int | None = None) -> ExecStatus:
        """Advance the plan by one tick; returns the plan's status."""
        with self._lock:
            if self._status is not ExecStatus.RUNNING:
                return self._status
            now = self.clock.now_ns() if now_ns is None else now_ns
            if self._stop is not None and self._stop.is_set():
                self._end_step(ExecStatus.CANCELED, "stop requested", now)
                return self._status
            if self._gen is None:
                self._begin_step(self._index + 1, now)
                if self._status is not ExecStatus.RUNNING:
                    return self._status
            assert self._gen is not None and self._result is not None
            step = self._result.steps[self._index]
            timeout = self.ctx.settings.timeout(step.type)
            elapsed = (now - self._step_t0) / 1e9
            if elapsed > timeout:
                phase = self.ctx.phase
                self._end_step(ExecStatus.TIMED_OUT,
                               f"timed out after {timeout:.1f} s while {phase or 'starting'}", now)
                return self._status
            try:
                next(self._gen)
            except StopIteration as done:
                step.message = str(done.value or "")
                self._end_step(ExecStatus.SUCCEEDED, "", now)
            except (SkillError, ActionError) as exc:
                self._end_step(ExecStatus.FAILED, str(exc), now)
            except Exception as exc:  # a bug in a skill fails the step, not the executor
                logger.exception("skill %s raised", step.name)
                self._end_step(ExecStatus.FAILED, f"{type(exc).__name__}: {exc}", now)
            else:
                if self.ctx.phase != self._last_phase:
                    self._last_phase = self.ctx.phase
                    self._progress(step, ExecStatus.RUNNING)
            return self._status

    def execute(
        self, plan: Any, *, stop_event: threading.Event | None = None, timeout_s: float | None = None
    ) -> ExecutionResult:
        """Run ``plan`` to the end in real time, ticking at ``rate_hz`` in this thread."""
        stop = stop_event if stop_event is not None else threading.Event()
        self.start(plan, stop_event=stop)
        loop_stop = threading.Event()
        loop = RateLoop(self.rate_hz, clock=self.clock, stop_event=loop_stop, name=self.name)
        t_end = None if timeout_s is None else self.clock.now_ns() + int(timeout_s * 1e9)

        def step(tick: Tick) -> bool:
            if t_end is not None and tick.wake_ns > t_end and self._status is ExecStatus.RUNNING:
                self._end_step(ExecStatus.TIMED_OUT, f"the plan exceeded {timeout_s:.1f} s", tick.wake_ns)
            return self.tick(tick.wake_ns) is ExecStatus.RUNNING

        loop.run(step)
        assert self._result is not None
        return self._result

    # -- steps ------------------------------------------------------------------------------

    def _begin_step(self, index: int, now: int) -> None:
        assert self._result is not None
        if index >= len(self._actions):
            self._finish(ExecStatus.SUCCEEDED, None, "", now)
            return
        kind, params, _ = self._actions[index]
        self._index = index
        self._step_t0 = now
        self.ctx.phase = ""
        self.ctx.detail = {}
        self._last_phase = ""
        step = self._result.steps[index]
        step.status = ExecStatus.RUNNING
        logger.info("step %d/%d: %s", index + 1, len(self._actions), step.name)
        self._gen = self.skills[kind](self.ctx, params)
        self._progress(step, ExecStatus.RUNNING)

    def _end_step(self, status: ExecStatus, reason: str, now: int) -> None:
        res = self._result
        assert res is not None
        if 0 <= self._index < len(res.steps) and res.steps[self._index].status is ExecStatus.RUNNING:
            step = res.steps[self._index]
            if self._gen is not None and status is not ExecStatus.SUCCEEDED:
                self._gen.close()  # runs the skill's cleanup (cancels navigation, ...)
            step.status = status
            step.reason = reason
            step.duration_s = (now - self._step_t0) / 1e9
            step.detail = dict(self.ctx.detail)
            self.ctx.recorder.observe(self.name, f"step.{step.type}", step.duration_s)
            self._progress(step, status, reason)
        self._gen = None
        if status is not ExecStatus.SUCCEEDED:
            failed = self._index if self._index >= 0 else None
            name = res.steps[failed].name if failed is not None else "plan"
            self._finish(status, failed, f"step {failed} {name}: {reason}" if failed is not None else reason, now)

    def _finish(self, status: ExecStatus, failed: int | None, reason: str, now: int) -> None:
        res = self._result
        assert res is not None
        res.status = status
        res.failed_step = failed
        res.reason = reason
        res.duration_s = (now - self._plan_t0) / 1e9
        self._status = status
        self.ctx.recorder.latency(self.name, res.duration_s)
        self.ctx.recorder.count(self.name)
        if status is ExecStatus.SUCCEEDED:
            logger.info("plan succeeded in %.1f s", res.duration_s)
        else:
            self.ctx.recorder.event(self.name, status.value, reason, step=failed)
            logger.warning("plan %s: %s", status.value, reason)

    def _progress(self, step: StepResult, status: ExecStatus, reason: str = "") -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(Progress(step.index, len(self._actions), step.name, status,
                                      self.ctx.phase, reason))
        except Exception:  # a broken dashboard must not stop the robot's task
            logger.exception("progress callback failed")


class LockstepDriver:
    """Steps a lock-step simulation, the control loop, the navigator and the executor in a
    fixed order on a shared :class:`FakeClock`, so runs are fast and reproducible.

    Per control period: advance the clock; run any :meth:`every` callbacks that are due
    (perception); on navigation ticks run the navigator and the executor (they publish
    setpoints); run one control-loop step (takes the newest
    setpoint, commands the robot); advance the physics by one control period.

    Args:
        sim: a robot with ``advance(seconds)`` (``SimRobot(lockstep=True, clock=clock)``).
        control: a ``ControlLoop`` built with the same clock (``setup()`` is called here).
        clock: the shared FakeClock.
        navigator: ticked at ``nav_hz`` (optional).
        executor: ticked at ``nav_hz`` (optional; set it later with :meth:`run_plan`).
    """

    def __init__(
        self,
        sim: Any,
        control: Any,
        clock: FakeClock,
        *,
        navigator: Navigator | None = None,
        executor: TaskExecutor | None = None,
        control_hz: float = 100.0,
        nav_hz: float = 10.0,
    ) -> None:
        if control_hz <= 0 or nav_hz <= 0 or control_hz % nav_hz:
            raise ActionError(
                f"control_hz ({control_hz}) must be a positive multiple of nav_hz ({nav_hz})"
            )
        self.sim = sim
        self.control = control
        self.clock = clock
        self.navigator = navigator
        self.executor = executor
        self.period_ns = round(1e9 / control_hz)
        self.nav_every = int(control_hz // nav_hz)
        self.ticks = 0
        self.wall_s = 0.0
        self._periodic: list[tuple[int, Callable[[int], Any]]] = []
        control.setup()

    def every(self, rate_hz: float, fn: Callable[[int], Any]) -> None:
        """Also call ``fn(now_ns)`` at ``rate_hz`` (rounded to whole control periods), e.g. a
        perception step rendering the sim camera and publishing detections."""
        if not rate_hz > 0:
            raise ActionError(f"rate_hz must be > 0, got {rate_hz}")
        every = max(1, round(1e9 / rate_hz / self.period_ns))
        self._periodic.append((every, fn))

    @property
    def sim_time_s(self) -> float:
        return self.ticks * self.period_ns / 1e9

    def step(self) -> None:
        """One control period."""
        t0 = time.perf_counter()
        now = self.clock.advance(ns=self.period_ns)
        for every, fn in self._periodic:
            if self.ticks % every == 0:
                fn(now)
        if self.ticks % self.nav_every == 0:
            if self.navigator is not None:
                self.navigator.update(now)
            if self.executor is not None:
                self.executor.tick(now)
        tick = Tick(index=self.ticks, slot=self.ticks, deadline_ns=now, wake_ns=now,
                    dt_s=self.period_ns / 1e9)
        self.control.step(tick)
        self.sim.advance(self.period_ns / 1e9)
        self.ticks += 1
        self.wall_s += time.perf_counter() - t0

    def run_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Step until ``done()`` (checked each period) or ``timeout_s`` of simulated time."""
        end = self.ticks + int(timeout_s * 1e9 / self.period_ns)
        while self.ticks < end:
            if done():
                return True
            self.step()
        return done()

    def run_plan(self, executor: TaskExecutor, plan: Any, *, timeout_s: float = 300.0) -> ExecutionResult:
        """Execute ``plan`` in simulated time; a plan still running at ``timeout_s`` is canceled."""
        self.executor = executor
        executor.start(plan)
        self.run_until(lambda: executor.status in _DONE, timeout_s)
        if executor.status not in _DONE:
            executor.cancel(f"lock-step run exceeded {timeout_s:.0f} s of simulated time")
        assert executor.result is not None
        return executor.result
