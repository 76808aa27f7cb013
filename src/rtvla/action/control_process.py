"""Process placement for the control loop: its own process, pinned, fed through shared memory.

A Python thread's wake-up can be delayed by any busy Python thread in the same process (the
GIL's switch interval is 5 ms, half a control period). :class:`ControlProcess` runs the
:class:`~rtvla.action.control.ControlLoop` in a ``spawn``-ed child process that builds and
owns its robot (from a picklable factory), applies :class:`RealtimeSettings` (CPU affinity,
SCHED_FIFO when permitted, frozen GC; the loop collects garbage only in slack time), reads
setpoints from a shared-memory latest-value channel and publishes the robot's state and its
running stats back through shared memory.

Shutdown is bounded whatever the child does. :meth:`ControlProcess.stop` writes to a *stop
pipe*; the child stops its robot, sends its final stats (lateness summary, missed cycles,
watchdog trips, lateness samples) over a second pipe and exits. The parent waits for that
within ``timeout`` and then terminates and kills the child; it never waits on a primitive a
dead process could hold (a ``multiprocessing`` Event or Condition whose sleeper died never
wakes its notifier: that hung the run on Ctrl-C). The stop pipe is also how the child learns
that its parent died: the write end closes with the parent, the child's read end reports EOF
at once, and the child stops the robot and exits (within a control tick or two, not at the
next poll of its parent's PID).

The child ignores SIGINT: a terminal's Ctrl-C signals the whole foreground process group,
and the parent decides when control stops (it stops the robot first, then the child). SIGTERM
sent to the child alone stops it cleanly with its stats.

Safe stops latch. :meth:`ControlProcess.request_stop` and :meth:`ControlProcess.reset_stop`
reach the loop through a shared-memory counter array (see
:class:`~rtvla.action.control.ControlLoop`). :meth:`ControlProcess.check_alive` tells a
dead child (with its exit code or signal) and a hung one (no tick published for more than
``hang_periods`` periods) apart from a live one.

Following a policy: given a :class:`~rtvla.action.chunk_scheduler.PolicyLink` (the shared-
memory channels of a :class:`~rtvla.policy.process.PolicyProcess`), the child builds a
:class:`~rtvla.action.chunk_scheduler.ChunkScheduler` beside its loop; it sends requests
stamped with the loop's ticks and takes chunks without ever waiting.
:meth:`ControlProcess.follow_policy` switches the loop into following the policy and back
(through the commands array); the scheduler's figures are in the live stats
(``policy_*``) and, whole, under ``"policy"`` in the final stats.

Usage::

    factory = functools.partial(KinematicRobot, dof=6)        # module-level: picklable
    with ControlProcess(factory, dof=6, settings=ControlSettings(cpu=1)) as proc:
        proc.publish(Setpoint(stamp_ns=MONOTONIC.now_ns(), arm_q=goal))
        state = proc.latest_state()
    print(proc.final_stats["lateness_p99_us"])
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtvla.action.chunk_scheduler import PolicyLink
from rtvla.action.control import (
    COMMAND_RESET,
    COMMAND_STOP,
    COMMANDS_SIZE,
    STEP_RING,
    ControlLoop,
    ControlSettings,
)
from rtvla.action.setpoints import Setpoint
from rtvla.channels.shm import SharedArrayChannel, ShmSpec
from rtvla.errors import ComponentError, ControlLost
from rtvla.metrics import Recorder
from rtvla.robots.base import Robot, RobotState
from rtvla.timing import MONOTONIC, RealtimeSettings, apply_realtime

__all__ = ["ControlProcess", "ProcessState", "describe_exit", "state_array_size", "state_from_array"]

logger = logging.getLogger(__name__)

# Live stats layout (float64): published every _STATS_EVERY ticks.
_STATS_FIELDS = (
    "ticks", "missed", "watchdog_trips", "stopped", "lateness_max_us", "loop_time_max_ms",
    "achieved_hz", "on_time_rate", "setpoints_accepted",
    "policy_engaged", "policy_chunks", "policy_starved_ticks", "policy_stops", "policy_rejected",
)
_STATS_EVERY = 10
_STATS_SIZE = len(_STATS_FIELDS) + 1 + STEP_RING
_PARENT_CHECK_S = 0.2
_COMMANDS_SIZE = COMMANDS_SIZE  # [stops, resets, last command, robot resets, follow asks, follow on]
# The robot's threads in the control process run this far below the control thread.
_HELPER_PRIORITY_GAP = 10


def state_array_size(dof: int) -> int:
    """Floats in the shared state layout: [stamp, tick, tripped, gripper, q, dq, pose(3), vel(3)]."""
    return 4 + 2 * dof + 6


@dataclass(frozen=True)
class ProcessState:
    """The robot state the control process published, with its tick and watchdog status."""

    state: RobotState
    tick: int
    tripped: bool


def _state_to_array(state: RobotState, tick: int, tripped: bool, out: np.ndarray) -> np.ndarray:
    dof = len(state.q)
    out[0] = float(state.stamp_ns)
    out[1] = float(tick)
    out[2] = 1.0 if tripped else 0.0
    out[3] = float(state.gripper)
    out[4 : 4 + dof] = state.q
    out[4 + dof : 4 + 2 * dof] = state.dq
    out[4 + 2 * dof : 7 + 2 * dof] = state.base_pose
    out[7 + 2 * dof : 10 + 2 * dof] = state.base_vel
    return out


def state_from_array(arr: np.ndarray, dof: int) -> ProcessState:
    """Decode the shared state layout (see :func:`state_array_size`)."""
    state = RobotState(
        stamp_ns=int(arr[0]),
        q=arr[4 : 4 + dof].copy(),
        dq=arr[4 + dof : 4 + 2 * dof].copy(),
        effort=np.zeros(dof),
        base_pose=arr[4 + 2 * dof : 7 + 2 * dof].copy(),
        base_vel=arr[7 + 2 * dof : 10 + 2 * dof].copy(),
        gripper=float(arr[3]),
    )
    return ProcessState(state=state, tick=int(arr[1]), tripped=bool(arr[2]))


class _StatePublisher:
    """The loop's ``state_out``: encodes each tick's state into shm, stats every few ticks."""

    name = "control_state"

    def __init__(self, state_ch: SharedArrayChannel, stats_ch: SharedArrayChannel, dof: int,
                 telemetry: tuple[Callable[[Any, np.ndarray], Any], Any, SharedArrayChannel] | None = None,
                 ) -> None:
        self.state_ch = state_ch
        self.stats_ch = stats_ch
        self.loop: ControlLoop | None = None
        self._buf = np.zeros(state_array_size(dof))
        self._stats_buf = np.zeros(_STATS_SIZE)
        self._n = 0
        self._telemetry = telemetry
        self._tel_buf = np.zeros(telemetry[2].shape) if telemetry is not None else None

    def publish(self, state: RobotState) -> int:
        loop = self.loop
        tripped = loop.tripped if loop is not None else False
        seq = self.state_ch.publish(_state_to_array(state, self._n, tripped, self._buf))
        if self._telemetry is not None:
            fn, robot, ch = self._telemetry
            fn(robot, self._tel_buf)
            ch.publish(self._tel_buf)
        self._n += 1
        if loop is not None and self._n % _STATS_EVERY == 0:
            live = loop.live_stats()
            sched = loop.scheduler
            if sched is not None:
                live["policy_engaged"] = 1.0 if sched.engaged else 0.0
                live["policy_chunks"] = float(sched.chunks)
                live["policy_starved_ticks"] = float(sched.starved_ticks)
                live["policy_stops"] = float(sched.starvation_stops)
                live["policy_rejected"] = float(sched.rejected)
            buf = self._stats_buf
            for i, key in enumerate(_STATS_FIELDS):
                buf[i] = live.get(key, 0.0)
            # The step times of the last STEP_RING finished ticks, oldest first, after their
            # count: the parent relays them as exact latency samples.
            done = int(live["ticks"])
            k = len(_STATS_FIELDS)
            buf[k] = done
            ring = loop.step_ring
            for j in range(STEP_RING):
                buf[k + 1 + j] = ring[(done - STEP_RING + 1 + j) % STEP_RING]
            self.stats_ch.publish(buf)
        return seq

    def latest(self) -> Any:
        return None

    def wait_newer(self, seq: int, timeout: float | None = None) -> Any:
        return None

    def close(self) -> None:
        return None


def _fifo_helpers(priority: int) -> str:
    """SCHED_FIFO, below the control thread, for the robot's own threads in this process (a
    simulator's physics thread). The control thread needs the GIL they hold: left at
    SCHED_OTHER, any other process's thread on this CPU could preempt one while it holds the
    GIL and keep the control thread waiting (priority inversion). Below the control thread,
    they never delay its wake-up, and it preempts them."""
    me = threading.get_native_id()
    prio = max(1, priority)
    n = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) == me:
            continue
        try:
            os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(prio))
            n += 1
        except (ProcessLookupError, PermissionError, OSError):
            continue
    return f"SCHED_FIFO priority {prio} ({n} threads)"


def _robot_stats(robot: Any) -> dict[str, Any] | None:
    """The robot's own figures (a simulator's real-time factor...) for the final report."""
    stats = getattr(robot, "stats", None)
    if stats is None:
        return None
    try:
        value = stats()
    except Exception as exc:
        return {"error": str(exc)}
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def describe_exit(exitcode: int | None) -> str:
    """``killed by signal 9 (SIGKILL)`` / ``exited with code 1`` / ``still running``."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-exitcode} ({name})"
    return f"exited with code {exitcode}"


def _watch(stop_conn: Any, loop: ControlLoop, ppid: int, why: list[str]) -> None:
    """Stop the loop when the parent asks (a message on the stop pipe) or dies (EOF on it,
    or re-parented). A dead parent also latches a stop so the robot halts at the next tick."""
    while True:
        try:
            ready = stop_conn.poll(_PARENT_CHECK_S)
        except (OSError, ValueError):
            ready = True
        if ready:
            try:
                stop_conn.recv()
                why.append("parent asked")
            except (EOFError, OSError, ValueError):
                why.append(f"parent {ppid} died")
            break
        if os.getppid() != ppid:
            why.append(f"parent {ppid} died")
            break
    if why[-1].endswith("died"):
        logger.error("control process: %s; stopping the robot", why[-1])
        loop.request_stop(f"{why[-1]}: stopping the robot")
    loop.stop()


def _child_main(
    robot_factory: Callable[[], Robot],
    settings: ControlSettings,
    rate_hz: float,
    realtime: RealtimeSettings,
    specs: tuple[ShmSpec, ShmSpec, ShmSpec, ShmSpec | None, ShmSpec],
    stop_conn: Any,
    conn: Any,
    ppid: int,
    duration_s: float | None,
    telemetry: Callable[[Any, np.ndarray], Any] | None = None,
    policy: PolicyLink | None = None,
) -> None:
    # The parent decides when control stops: a terminal's Ctrl-C reaches the whole process
    # group, and dying here with it would leave the parent's report without control's figures.
    # (The parent also starts this process with SIGINT ignored, which covers interpreter start.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sp_ch = state_ch = stats_ch = tel_ch = cmd_ch = None
    robot = None
    loop: ControlLoop | None = None
    scheduler = None

    def on_term(signum: int, frame: Any) -> None:
        if loop is not None:
            loop.request_stop("SIGTERM: stopping the robot")
            loop.stop()
        else:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    code = 0
    try:
        # CPU affinity first, so that threads the robot starts (a simulator's physics thread)
        # share the control CPU and hand the GIL over locally; SCHED_FIFO only for this
        # thread (Linux applies it per thread), after the robot started: a busy FIFO physics
        # thread would eat the real-time budget. The GC is frozen last, after all setup.
        report = apply_realtime(RealtimeSettings(cpus=realtime.cpus, strict=realtime.strict))
        if settings.switch_interval_s is not None:
            # A thread holding the GIL (a physics thread) hands it over after this long at
            # most when the control thread wakes; the default 5 ms is half a period.
            sys.setswitchinterval(settings.switch_interval_s)
            report["switch_interval"] = f"{settings.switch_interval_s * 1e3:g} ms"
        sp_ch = SharedArrayChannel.attach(specs[0])
        state_ch = SharedArrayChannel.attach(specs[1])
        stats_ch = SharedArrayChannel.attach(specs[2])
        if specs[3] is not None:
            tel_ch = SharedArrayChannel.attach(specs[3])
        cmd_ch = SharedArrayChannel.attach(specs[4])
        robot = robot_factory()
        robot.connect()
        recorder = Recorder()
        publisher = _StatePublisher(
            state_ch, stats_ch, robot.limits.dof,
            telemetry=(telemetry, robot, tel_ch) if telemetry is not None and tel_ch is not None else None,
        )
        if policy is not None:
            scheduler = policy.build(robot.limits, rate_hz, recorder=recorder)
        loop = ControlLoop(robot, sp_ch, recorder=recorder, settings=settings, rate_hz=rate_hz,
                           state_out=publisher, commands=cmd_ch, scheduler=scheduler)
        publisher.loop = loop
        # The watcher starts before the real-time setup so that it, too, runs at the helpers'
        # FIFO priority: a SCHED_OTHER thread that holds the GIL when another process
        # preempts it keeps the control thread waiting (priority inversion).
        why: list[str] = []
        watcher = threading.Thread(target=_watch, args=(stop_conn, loop, ppid, why),
                                   name="control-watch", daemon=True)
        watcher.start()
        report.update(apply_realtime(dataclasses.replace(realtime, cpus=None)))
        if realtime.fifo_priority is not None and report.get("scheduler", "").startswith("SCHED_FIFO"):
            report["helper_threads"] = _fifo_helpers(realtime.fifo_priority - _HELPER_PRIORITY_GAP)
        loop.realtime = report
        conn.send(("ready", {"pid": os.getpid(), "realtime": loop.realtime}))
        stats = loop.run(duration_s=duration_s)
        if realtime.freeze_gc:
            gc.unfreeze()  # let the interpreter free the frozen objects at exit
        snapshot = recorder.snapshot() if hasattr(recorder, "snapshot") else {}
        conn.send(("stats", {
            **stats.as_dict(),
            "lateness_us": loop.lateness_samples_us().tolist(),
            "events": [e.as_dict() for e in recorder.events],
            "recorder": snapshot.get("control", {}),
            "robot": _robot_stats(robot),
            "stop_cause": why[-1] if why else "duration elapsed",
            "policy": scheduler.stats() if scheduler is not None else None,
        }))
    except BaseException as exc:  # report anything to the parent, then exit non-zero
        try:
            if robot is not None:
                robot.stop()
        except Exception:
            pass
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        code = 1
    finally:
        if robot is not None:
            try:
                robot.close()
            except Exception as exc:
                logger.warning("control process: robot.close() failed: %s", exc)
        for ch in (sp_ch, state_ch, stats_ch, tel_ch, cmd_ch):
            if ch is not None:
                ch.close()
        if scheduler is not None:
            with contextlib.suppress(Exception):
                scheduler.close()
        conn.close()
        stop_conn.close()
        # The robot is stopped and closed, the stats are sent: end here. The interpreter's
        # own shutdown (finalizers, freeing the simulator's objects) takes 1-2 s, and a
        # control process whose parent died must be gone at once.
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


@contextlib.contextmanager
def _sigint_ignored() -> Any:
    """Start children with SIGINT ignored: an ignored disposition survives exec, and Python
    keeps it, so a Ctrl-C during the child's interpreter start cannot kill it either. Only the
    main thread may change signal handlers; elsewhere the child sets it itself, first thing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class ControlProcess:
    """Runs a :class:`ControlLoop` in its own process. See the module docstring.

    Args:
        robot_factory: picklable zero-argument callable that builds the robot in the child
            (a module-level class or ``functools.partial`` of one).
        dof: the robot's arm joints (sizes the shared setpoint and state layouts).
        settings: the ``[control]`` table; ``cpu``/``fifo_priority``/``freeze_gc`` feed the
            default real-time settings.
        rate_hz: the control rate (the control budget's rate).
        realtime: explicit real-time settings (overrides those from ``settings``).
        duration_s: end the loop by itself after this long (None: run until :meth:`stop`).
        start_timeout_s: how long the child may take to import, build its robot and report.
    """

    def __init__(
        self,
        robot_factory: Callable[[], Robot],
        dof: int,
        *,
        settings: ControlSettings | None = None,
        rate_hz: float = 100.0,
        realtime: RealtimeSettings | None = None,
        duration_s: float | None = None,
        start_timeout_s: float = 60.0,
        name: str = "control",
        telemetry: Callable[[Any, np.ndarray], Any] | None = None,
        telemetry_size: int = 0,
        policy: PolicyLink | None = None,
    ) -> None:
        if not (isinstance(dof, int) and dof >= 1):
            raise ComponentError(f"dof must be an integer >= 1, got {dof!r}")
        if telemetry is not None and telemetry_size < 1:
            raise ComponentError(f"telemetry_size must be >= 1 with a telemetry function, got {telemetry_size}")
        self.robot_factory = robot_factory
        self.policy = policy
        self.telemetry = telemetry
        self.telemetry_size = telemetry_size
        self._tel_ch: SharedArrayChannel | None = None
        self.dof = dof
        self.settings = settings if settings is not None else ControlSettings(placement="process")
        self.rate_hz = float(rate_hz)
        s = self.settings
        self.realtime = realtime if realtime is not None else RealtimeSettings(
            cpus=[s.cpu] if s.cpu is not None else None, fifo_priority=s.fifo_priority,
            freeze_gc=s.freeze_gc,
        )
        self.duration_s = duration_s
        self.start_timeout_s = start_timeout_s
        self.name = name
        self.final_stats: dict[str, Any] | None = None
        self.child_info: dict[str, Any] = {}
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self._stop_w: Any = None  # the stop pipe's write end (the child holds the read end)
        self._commands = np.zeros(_COMMANDS_SIZE)
        self._cmd_ch: SharedArrayChannel | None = None
        self.lost_reason: str | None = None
        self._live_seq = -1
        self._stalled_polls = 0
        self._last_poll_ns = 0
        self._progress_ns = 0
        self.setpoints: SharedArrayChannel | None = None
        self._state_ch: SharedArrayChannel | None = None
        self._stats_ch: SharedArrayChannel | None = None
        self._sp_seq = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ControlProcess:
        """Create the channels, spawn the child and wait until its loop is about to run."""
        if self._proc is not None:
            raise ComponentError(f"{self.name}: control process already started")
        dof = self.dof
        self.setpoints = SharedArrayChannel.create(f"{self.name}-setpoints", (Setpoint.array_size(dof),),
                                                   np.float64)
        self._state_ch = SharedArrayChannel.create(f"{self.name}-state", (state_array_size(dof),),
                                                   np.float64)
        self._stats_ch = SharedArrayChannel.create(f"{self.name}-stats", (_STATS_SIZE,),
                                                   np.float64)
        if self.telemetry is not None:
            self._tel_ch = SharedArrayChannel.create(f"{self.name}-telemetry", (self.telemetry_size,),
                                                     np.float64)
        self._cmd_ch = SharedArrayChannel.create(f"{self.name}-commands", (_COMMANDS_SIZE,),
                                                 np.float64)
        parent_conn, child_conn = self._ctx.Pipe(duplex=False)
        stop_r, stop_w = self._ctx.Pipe(duplex=False)
        self._conn = parent_conn
        self._stop_w = stop_w
        specs = (self.setpoints.spec, self._state_ch.spec, self._stats_ch.spec,
                 self._tel_ch.spec if self._tel_ch is not None else None, self._cmd_ch.spec)
        self._proc = self._ctx.Process(
            target=_child_main,
            args=(self.robot_factory, self.settings, self.rate_hz, self.realtime, specs,
                  stop_r, child_conn, os.getpid(), self.duration_s, self.telemetry, self.policy),
            name=f"rtvla-{self.name}", daemon=True,
        )
        try:
            with _sigint_ignored():
                self._proc.start()
        except Exception:
            self._release_channels()
            raise
        child_conn.close()
        stop_r.close()  # only the child may hold the read end: EOF there means we are gone
        if not parent_conn.poll(self.start_timeout_s):
            self._kill()
            raise ComponentError(
                f"{self.name}: control process did not report ready within {self.start_timeout_s} s")
        try:
            kind, payload = parent_conn.recv()
        except EOFError:
            self._kill()
            raise ComponentError(f"{self.name}: control process exited during start "
                                 f"(exit code {self._proc.exitcode})") from None
        if kind != "ready":
            self._kill()
            raise ComponentError(f"{self.name}: control process failed to start: {payload}")
        self.child_info = payload
        logger.info("%s: control process %s running (%s)", self.name, payload.get("pid"),
                    payload.get("realtime"))
        return self

    def stop(self, timeout: float | None = None) -> dict[str, Any]:
        """Stop the loop (robot stopped), collect its final stats, reap the child, free shm.

        Takes at most about ``timeout`` seconds (default ``[control].stop_timeout_s``) plus the
        time to kill a child that ignored everything: the child gets most of it to stop the
        robot and report, then SIGTERM, then SIGKILL. Raises :class:`ControlLost` (with how the
        child ended) when no final stats came back.
        """
        if self._proc is None:
            raise ComponentError(f"{self.name}: control process was not started")
        timeout = self.settings.stop_timeout_s if timeout is None else float(timeout)
        deadline = MONOTONIC.now_ns() + int(timeout * 1e9)
        self._ask_stop()
        error: ComponentError | None = None
        try:
            try:
                self._collect(0.8 * timeout)
            except ComponentError as exc:
                error = exc
            self._proc.join(max(0.0, (deadline - MONOTONIC.now_ns()) / 1e9))
            if self._proc.is_alive():
                logger.error("%s: control process did not exit in %.1f s; killing it", self.name, timeout)
                self._kill(grace_s=min(1.0, max(0.1, 0.1 * timeout)))
        finally:
            self._release_channels()
        if error is not None:
            raise error
        if self.final_stats is None:
            raise ControlLost(f"{self.name}: control process lost "
                              f"({describe_exit(self._proc.exitcode)}); no final stats")
        return self.final_stats

    def _ask_stop(self) -> None:
        w = self._stop_w
        if w is None:
            return
        # A few bytes never block on a pipe's buffer; a gone child has nothing to be told.
        with contextlib.suppress(OSError, ValueError):
            w.send("stop")

    def request_stop(self) -> None:
        """Latch a safe stop in the control loop (held until :meth:`reset_stop`)."""
        self._command(COMMAND_STOP, 0)

    def reset_stop(self) -> None:
        """Release a latched stop; the robot holds where it is until the next setpoint."""
        self._command(COMMAND_RESET, 1)

    def follow_policy(self, on: bool) -> None:
        """Switch the loop into following the linked policy's chunks (True) or back to
        setpoints (False), at its next tick. Refused (an event in the child) while a stop is
        latched; a starved policy ends following with a latched stop."""
        if self.policy is None:
            raise ComponentError(f"{self.name}: follow_policy() needs a policy link (policy=...)")
        ch = self._cmd_ch
        if ch is None:
            raise ComponentError(f"{self.name}: control process was not started")
        self._commands[4] += 1
        self._commands[5] = 1.0 if on else 0.0
        ch.publish(self._commands)

    def reset_robot(self) -> None:
        """Reset the robot in the control process (a simulator back to its start)."""
        ch = self._cmd_ch
        if ch is None:
            raise ComponentError(f"{self.name}: control process was not started")
        self._commands[3] += 1
        ch.publish(self._commands)

    def _command(self, code: float, index: int) -> None:
        ch = self._cmd_ch
        if ch is None:
            raise ComponentError(f"{self.name}: control process was not started")
        self._commands[index] += 1
        self._commands[2] = code
        ch.publish(self._commands)

    @property
    def exitcode(self) -> int | None:
        return None if self._proc is None else self._proc.exitcode

    def check_alive(self, now_ns: int | None = None) -> str | None:
        """None while the loop ticks; else why control is lost (dead child, or no tick for
        more than ``hang_periods`` periods). Call it about once per control period: a poll
        that itself comes late (this process was stalled too, for example by the
        hypervisor) does not count as evidence of a hang."""
        if self.lost_reason is not None:
            return self.lost_reason
        proc = self._proc
        if proc is None:
            return None
        if not proc.is_alive():
            self.lost_reason = f"control process lost ({describe_exit(proc.exitcode)})"
            return self.lost_reason
        ch = self._state_ch
        if ch is None:
            return None
        now = MONOTONIC.now_ns() if now_ns is None else now_ns
        period_ns = int(1e9 / self.rate_hz)
        seq = ch.seq
        on_time = self._last_poll_ns and now - self._last_poll_ns < 2 * period_ns
        self._last_poll_ns = now
        if seq != self._live_seq:
            self._live_seq = seq
            self._stalled_polls = 0
            self._progress_ns = now
            return None
        if on_time:
            self._stalled_polls += 1
        quiet_s = (now - self._progress_ns) / 1e9 if self._progress_ns else 0.0
        if self._stalled_polls > self.settings.hang_periods and quiet_s >= self.settings.hang_min_s:
            self.lost_reason = (f"control loop hung: no tick for {quiet_s * 1e3:.0f} ms "
                                f"({self._stalled_polls} on-time checks without progress)")
            return self.lost_reason
        return None

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Wait for a loop started with ``duration_s`` to finish; returns its stats."""
        if self._proc is None:
            raise ComponentError(f"{self.name}: control process was not started")
        self._collect(timeout)
        return self.final_stats

    def __enter__(self) -> ControlProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and (self._proc.is_alive() or self.final_stats is None):
            try:
                self.stop()
            except (ComponentError, ControlLost) as err:
                logger.error("%s: %s", self.name, err)
        else:
            self._release_channels()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    # -- data ------------------------------------------------------------------------------

    def publish(self, setpoint: Setpoint) -> int:
        """Send a setpoint to the control loop through shared memory; returns its seq."""
        if self.setpoints is None:
            raise ComponentError(f"{self.name}: control process was not started")
        return self.setpoints.publish(setpoint.to_array(self.dof))

    def latest_state(self) -> ProcessState | None:
        """The newest state the loop published (None before its first tick)."""
        if self._state_ch is None:
            return None
        sample = self._state_ch.latest()
        return None if sample is None else state_from_array(sample.value, self.dof)

    def wait_state(self, timeout: float) -> ProcessState | None:
        """Block until the loop publishes a new state (None on timeout)."""
        if self._state_ch is None:
            return None
        seq = self._state_ch.seq
        sample = self._state_ch.wait_newer(seq, timeout)
        return None if sample is None else state_from_array(sample.value, self.dof)

    def latest_telemetry(self) -> np.ndarray | None:
        """The newest telemetry array (a copy), or None before the first tick."""
        if self._tel_ch is None:
            return None
        sample = self._tel_ch.latest()
        return None if sample is None else sample.value

    def live_stats(self) -> dict[str, float]:
        """Running figures the child publishes ten times a second (empty before that)."""
        if self._stats_ch is None:
            return dict(self.final_stats or {})
        sample = self._stats_ch.latest()
        if sample is None:
            return {}
        return {k: float(v) for k, v in zip(_STATS_FIELDS, sample.value)}

    def recent_steps(self) -> tuple[int, np.ndarray]:
        """(ticks finished, step times in seconds of the last ones, oldest first) as of the
        child's last stats publish; ``(0, empty)`` before that. Fewer than ``STEP_RING``
        values while fewer ticks have run."""
        if self._stats_ch is None:
            return 0, np.zeros(0)
        sample = self._stats_ch.latest()
        if sample is None:
            return 0, np.zeros(0)
        k = len(_STATS_FIELDS)
        done = int(sample.value[k])
        steps = sample.value[k + 1 : k + 1 + STEP_RING]
        return done, steps[-min(done, STEP_RING):] if done else np.zeros(0)

    # -- internals -------------------------------------------------------------------------

    def _collect(self, timeout: float | None) -> None:
        conn = self._conn
        if conn is None or self.final_stats is not None:
            return
        deadline = None if timeout is None else MONOTONIC.now_ns() + int(timeout * 1e9)
        while True:
            remaining = None if deadline is None else max(0.0, (deadline - MONOTONIC.now_ns()) / 1e9)
            if not conn.poll(remaining):
                return
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                return
            if kind == "stats":
                self.final_stats = payload
                return
            if kind == "error":
                raise ComponentError(f"{self.name}: control process failed: {payload}")

    def _kill(self, grace_s: float = 1.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.is_alive():
            proc.terminate()
            proc.join(grace_s)
        if proc.is_alive():
            proc.kill()
            proc.join(grace_s)
        self._release_channels()

    def _release_channels(self) -> None:
        for attr in ("setpoints", "_state_ch", "_stats_ch", "_tel_ch", "_cmd_ch"):
            ch = getattr(self, attr)
            if ch is not None:
                ch.close()
                ch.unlink()
                setattr(self, attr, None)
        if self._conn is not None and self.final_stats is not None:
            self._conn.close()
            self._conn = None
        if self._stop_w is not None and (self._proc is None or not self._proc.is_alive()):
            self._stop_w.close()
            self._stop_w = None
