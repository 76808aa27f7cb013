"""``rtvla bench control``: control-loop lateness under load, thread vs process, and chunks.

Three runs of the 100 Hz :class:`~rtvla.action.control.ControlLoop`, each while the same
background work runs in the bench's own process:

* perception: OpenCV on synthetic 640x480 frames at 30 Hz (HSV threshold, morphology,
  contours and moments of three moving colored blobs),
* navigation: a 10 Hz numpy workload (velocity-space rollouts scored against obstacles, the
  shape of a Dynamic Window Approach step),
* a CPU load: one busy process the bench starts and ends,

and with the control loop placed in a thread of that process, in its own process
(:class:`~rtvla.action.control_process.ControlProcess`), and in a thread fed by an
:class:`~rtvla.action.chunks.ActionChunkQueue` whose policy (a numpy MLP, real computation)
is asked for a new chunk five times a second.

The robot is the MuJoCo ``SimRobot`` in real-time mode when it is available, else
:class:`KinematicRobot` (which integrates commands exactly); the rows say which.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import multiprocessing as mp
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtvla.action.chunks import ActionChunkQueue, ChunkRequest
from rtvla.action.setpoints import Setpoint
from rtvla.errors import ConfigError, RobotError
from rtvla.resources.sampler import hypervisor_steal_s
from rtvla.robots.base import CommandMode, RobotCommand, RobotLimits, RobotState, validate_command
from rtvla.timing import MONOTONIC, Clock, RateLoop, Tick

__all__ = [
    "KinematicRobot",
    "MLPChunkPolicy",
    "RobotChoice",
    "bench_control",
    "busy_process",
    "choose_robot",
    "default_limits",
    "navigation_workload",
    "perception_workload",
]

logger = logging.getLogger(__name__)


def default_limits(dof: int = 6) -> RobotLimits:
    """Joint limits of a 6-joint arm of the mobile-manipulator class."""
    if dof < 1:
        raise ConfigError(f"dof must be >= 1, got {dof}")
    return RobotLimits(
        joint_names=tuple(f"joint{i + 1}" for i in range(dof)),
        q_min=np.full(dof, -2.8),
        q_max=np.full(dof, 2.8),
        dq_max=np.full(dof, 1.5),
        ddq_max=np.full(dof, 5.0),
        jerk_max=np.full(dof, 50.0),
    )


class KinematicRobot:
    """A :class:`~rtvla.robots.base.Robot` without dynamics: commands are integrated exactly.

    Position commands set the joints (velocity is the difference over the time since the
    previous command); base velocity is integrated into the pose in the world frame;
    ``stop()`` holds the arm and zeroes the base. Commands are validated like a real robot
    does (:func:`validate_command`) and a bad one raises ``CommandRejected`` unapplied.
    ``history`` keeps the last N applied commands ``(stamp_ns, q, dq, base_vel)`` for tests.
    """

    def __init__(
        self,
        dof: int = 6,
        *,
        limits: RobotLimits | None = None,
        clock: Clock = MONOTONIC,
        q0: np.ndarray | None = None,
        history: int = 0,
    ) -> None:
        self.limits = limits if limits is not None else default_limits(dof)
        n = self.limits.dof
        self.clock = clock
        self._q = np.zeros(n) if q0 is None else np.asarray(q0, dtype=float).copy()
        if self._q.shape != (n,):
            raise ConfigError(f"q0 must have shape ({n},), got {self._q.shape}")
        self._dq = np.zeros(n)
        self._pose = np.zeros(3)
        self._base_vel = np.zeros(3)
        self._gripper = 0.0
        self._t_base = clock.now_ns()
        self._t_cmd: int | None = None
        self._lock = threading.Lock()
        self.connected = False
        self.commands = 0
        self.stops = 0
        self.history: deque[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=max(history, 1))
        self._keep_history = history > 0

    def connect(self) -> None:
        self.connected = True
        self._t_base = self.clock.now_ns()

    def close(self) -> None:
        self.stop()
        self.connected = False

    def __enter__(self) -> KinematicRobot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _integrate_base(self, now: int) -> None:
        dt = (now - self._t_base) / 1e9
        self._t_base = now
        if dt <= 0:
            return
        vx, vy, wz = self._base_vel
        yaw = self._pose[2]
        c, s = math.cos(yaw), math.sin(yaw)
        self._pose[0] += (c * vx - s * vy) * dt
        self._pose[1] += (s * vx + c * vy) * dt
        self._pose[2] += wz * dt

    def read_state(self) -> RobotState:
        now = self.clock.now_ns()
        with self._lock:
            self._integrate_base(now)
            return RobotState(
                stamp_ns=now, q=self._q.copy(), dq=self._dq.copy(), effort=np.zeros_like(self._q),
                base_pose=self._pose.copy(), base_vel=self._base_vel.copy(), gripper=self._gripper,
            )

    def send_command(self, cmd: RobotCommand) -> None:
        if not self.connected:
            raise RobotError("KinematicRobot is not connected; call connect() first")
        validate_command(cmd, self.limits)
        now = self.clock.now_ns()
        with self._lock:
            self._integrate_base(now)
            if cmd.arm is not None:
                arm = np.asarray(cmd.arm, dtype=float)
                dt = (now - self._t_cmd) / 1e9 if self._t_cmd is not None else 0.0
                if cmd.mode is CommandMode.POSITION:
                    self._dq[:] = (arm - self._q) / dt if dt > 0 else 0.0
                    self._q[:] = arm
                else:
                    self._q[:] = np.clip(self._q + arm * dt, self.limits.q_min, self.limits.q_max)
                    self._dq[:] = arm
            if cmd.base_vel is not None:
                self._base_vel[:] = cmd.base_vel
            if cmd.gripper is not None:
                self._gripper = float(cmd.gripper)
            self._t_cmd = now
            self.commands += 1
            if self._keep_history:
                self.history.append((now, self._q.copy(), self._dq.copy(), self._base_vel.copy()))

    def stop(self) -> None:
        now = self.clock.now_ns()
        with self._lock:
            self._integrate_base(now)
            self._base_vel[:] = 0.0
            self._dq[:] = 0.0
            self.stops += 1


class MLPChunkPolicy:
    """A stand-in VLA policy: a numpy MLP that predicts ``chunk_size`` future joint positions.

    The output is a smooth sinusoidal reach pattern around ``center`` (what a real policy's
    chunks look like) plus a small learned-looking residual from a fixed random MLP whose
    width and depth set the inference cost, spent in real matrix products, not sleeping.
    """

    def __init__(
        self,
        dof: int = 6,
        chunk_size: int = 40,
        *,
        period_s: float = 0.01,
        hidden: int = 128,
        layers: int = 3,
        repeats: int = 2,
        amplitude: float = 0.4,
        motion_period_s: float = 4.0,
        limits: RobotLimits | None = None,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.dof = dof
        self.chunk_size = chunk_size
        self.period_s = period_s
        self.repeats = repeats
        self.omega = 2 * math.pi / motion_period_s
        self.limits = limits
        if limits is not None:
            # Reach around the middle of each joint's range, well inside the limits.
            self.center = (np.asarray(limits.q_min) + np.asarray(limits.q_max)) / 2
            self.amplitude = np.minimum(amplitude, 0.3 * (np.asarray(limits.q_max) - limits.q_min))
        else:
            self.center = np.zeros(dof)
            self.amplitude = np.full(dof, amplitude)
        self.phase = np.linspace(0, math.pi, dof)
        dims = [dof + 2, *([hidden] * layers), dof]
        self.weights = [rng.standard_normal((a, b)) / math.sqrt(a) for a, b in itertools.pairwise(dims)]
        self.calls = 0

    def _mlp(self, x: np.ndarray) -> np.ndarray:
        for w in self.weights[:-1]:
            x = np.tanh(x @ w)
        return np.tanh(x @ self.weights[-1])

    def __call__(self, request: ChunkRequest) -> np.ndarray:
        self.calls += 1
        t = (request.start_tick + np.arange(self.chunk_size)) * self.period_s
        obs = request.observation
        q = obs.q if isinstance(obs, RobotState) else self.center
        feats = np.column_stack([np.tile(q, (self.chunk_size, 1)), np.sin(self.omega * t),
                                 np.cos(self.omega * t)])
        residual = np.zeros((self.chunk_size, self.dof))
        for _ in range(self.repeats):
            residual += self._mlp(feats)
        residual /= self.repeats
        base = self.center + self.amplitude * np.sin(self.omega * t[:, None] + self.phase[None, :])
        out = base + 0.02 * residual
        if self.limits is not None:
            np.clip(out, self.limits.q_min, self.limits.q_max, out=out)
        return out


# -- background workloads ---------------------------------------------------------------------


def perception_workload(seed: int = 0) -> Callable[[Tick], None]:
    """One 30 Hz perception step: render a synthetic 640x480 frame, HSV-threshold, contours."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 40, (480, 640, 3), dtype=np.uint8)
    frame = np.empty((480, 640, 3), np.uint8)
    kernel = np.ones((5, 5), np.uint8)
    colors = ((0, 0, 220), (0, 200, 0), (220, 0, 0))
    lows = (np.array([0, 120, 70]), np.array([40, 100, 70]), np.array([100, 120, 70]))
    highs = (np.array([10, 255, 255]), np.array([80, 255, 255]), np.array([130, 255, 255]))
    found: list[tuple[float, float]] = []

    def step(tick: Tick) -> None:
        np.copyto(frame, noise)
        for i, color in enumerate(colors):
            cx = int(320 + 200 * math.cos(0.05 * tick.index + 2 * i))
            cy = int(240 + 150 * math.sin(0.07 * tick.index + 2 * i))
            cv2.circle(frame, (cx, cy), 40, color, -1)
        blurred = cv2.GaussianBlur(frame, (5, 5), 0)
        hsv = cv2.cvtColor(blurred, cv2.COLOR_BGR2HSV)
        found.clear()
        for lo, hi in zip(lows, highs):
            mask = cv2.inRange(hsv, lo, hi)
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for c in contours:
                m = cv2.moments(c)
                if m["m00"] > 100:
                    found.append((m["m10"] / m["m00"], m["m01"] / m["m00"]))

    return step


def navigation_workload(samples: int = 150, horizon: int = 15, obstacles: int = 60,
                        seed: int = 0) -> Callable[[Tick], None]:
    """One 10 Hz navigation step: roll out velocity samples and score them against obstacles."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-5, 5, (obstacles, 2))
    v = rng.uniform(-0.5, 0.5, (samples, 2))
    w = rng.uniform(-1.5, 1.5, samples)
    dt = 0.1
    goal = np.array([4.0, 3.0])

    def step(tick: Tick) -> None:
        yaw = np.cumsum(np.tile(w * dt, (horizon, 1)).T, axis=1)  # [samples, horizon]
        vx = v[:, :1] * np.cos(yaw) - v[:, 1:] * np.sin(yaw)
        vy = v[:, :1] * np.sin(yaw) + v[:, 1:] * np.cos(yaw)
        xy = np.stack([np.cumsum(vx * dt, axis=1), np.cumsum(vy * dt, axis=1)], axis=-1)
        d = np.linalg.norm(xy[:, :, None, :] - obs[None, None, :, :], axis=-1).min(axis=(1, 2))
        score = -np.linalg.norm(xy[:, -1] - goal, axis=1) + 0.5 * np.minimum(d, 1.0)
        int(np.argmax(score))

    return step


def _burn(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        for i in range(20_000):
            x = (x + i * i) % 1_000_003


@contextmanager
def busy_process() -> Iterator[int]:
    """A CPU-bound process for the duration of the block; yields its pid."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_burn, args=(stop,), name="rtvla-bench-load", daemon=True)
    proc.start()
    try:
        yield proc.pid or 0
    finally:
        stop.set()
        proc.join(3.0)
        if proc.is_alive():
            proc.kill()
            proc.join(2.0)


@contextmanager
def background_load(loops: list[RateLoop] | None = None) -> Iterator[list[RateLoop]]:
    """Perception (30 Hz) and navigation (10 Hz) threads plus a busy process."""
    loops = [] if loops is None else loops
    threads: list[threading.Thread] = []
    with ExitStack() as stack:
        stack.enter_context(busy_process())
        for name, rate, work in (("perception", 30.0, perception_workload()),
                                 ("navigation", 10.0, navigation_workload())):
            loop = RateLoop(rate, name=name)
            loops.append(loop)
            t = threading.Thread(target=loop.run, args=(work,), name=f"bench-{name}", daemon=True)
            t.start()
            threads.append(t)
        try:
            yield loops
        finally:
            for loop in loops:
                loop.stop()
            for t in threads:
                t.join(5.0)


# -- the bench ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RobotChoice:
    """Which robot the bench drives and how to build it in any process."""

    label: str
    factory: Callable[[], Any]
    dof: int


def choose_robot(kind: str = "auto", dof: int = 6) -> RobotChoice:
    """``sim``: the MuJoCo SimRobot in real-time mode; ``kinematic``: :class:`KinematicRobot`;
    ``auto``: the SimRobot when it can be built, else the kinematic robot."""
    if kind not in ("auto", "sim", "kinematic"):
        raise ConfigError(f"robot must be auto, sim or kinematic, got {kind!r}")
    kinematic = RobotChoice("KinematicRobot (exact integration)",
                            functools.partial(KinematicRobot, dof), dof)
    if kind == "kinematic":
        return kinematic
    try:
        from rtvla.robots.sim import SimRobot  # type: ignore[attr-defined]
    except ImportError:
        SimRobot = None
    if SimRobot is not None:
        try:
            factory = functools.partial(SimRobot, lockstep=False)
            robot = factory()
            n = robot.limits.dof
            close = getattr(robot, "close", None)
            if close is not None:
                close()
            return RobotChoice("SimRobot (MuJoCo, real-time)", factory, n)
        except Exception as exc:
            if kind == "sim":
                raise ConfigError(f"the MuJoCo SimRobot could not be built: {exc}") from exc
            logger.warning("SimRobot unavailable (%s); using the kinematic robot", exc)
    elif kind == "sim":
        raise ConfigError("the MuJoCo SimRobot (rtvla.robots.sim) is not installed")
    return kinematic


def _goal_stream(dof: int, limits: RobotLimits, t_s: float) -> np.ndarray:
    """A slowly changing reach goal: new targets every second, inside the joint limits."""
    k = int(t_s)
    rng = np.random.default_rng(k)
    span = np.minimum(limits.q_max, 1.2) - np.maximum(limits.q_min, -1.2)
    return np.maximum(limits.q_min, -1.2) + rng.uniform(0.2, 0.8, dof) * span


def _summary(samples_us: np.ndarray, missed: int, starved: int, placement: str, robot: str,
             extra: dict[str, Any]) -> dict[str, Any]:
    s = np.asarray(samples_us, dtype=float)
    lat = {"p50": float(np.percentile(s, 50)) if s.size else math.nan,
           "p99": float(np.percentile(s, 99)) if s.size else math.nan,
           "max": float(s.max()) if s.size else math.nan}
    return {"placement": placement, "lateness_us": lat, "missed": int(missed),
            "starved_ticks": int(starved), "robot": robot, "ticks": int(s.size), **extra,
            "_samples": s}


def _feed_setpoints(publish: Callable[[Setpoint], Any], limits: RobotLimits, stop: threading.Event,
                    rate_hz: float = 20.0) -> None:
    """The planner side: fresh arm goals and a gentle base velocity at 20 Hz."""
    t0 = MONOTONIC.now_ns()
    seq = 0
    while not stop.wait(1.0 / rate_hz):
        now = MONOTONIC.now_ns()
        t = (now - t0) / 1e9
        seq += 1
        publish(Setpoint(stamp_ns=now, seq=seq, arm_q=_goal_stream(limits.dof, limits, t),
                         base_vel=np.array([0.1 * math.sin(t), 0.0, 0.2 * math.cos(t)])))


def run_thread_placement(choice: RobotChoice, seconds: float, rate_hz: float = 100.0,
                         spin_margin_s: float = 0.0005) -> dict[str, Any]:
    """Control loop in a thread of this (busy) process."""
    from rtvla.action.control import ControlLoop, ControlSettings
    from rtvla.channels import LatestValue
    from rtvla.metrics import Recorder

    robot = choice.factory()
    robot.connect()
    channel = LatestValue("setpoints")
    loop = ControlLoop(robot, channel, recorder=Recorder(), rate_hz=rate_hz,
                       settings=ControlSettings(spin_margin_s=spin_margin_s))
    stop = threading.Event()
    feeder = threading.Thread(target=_feed_setpoints, args=(channel.publish, robot.limits, stop),
                              daemon=True)
    feeder.start()
    try:
        stats = loop.run(duration_s=seconds)
    finally:
        stop.set()
        feeder.join(2.0)
        robot.close()
    return _summary(loop.lateness_samples_us(), stats.missed, 0, "thread", choice.label,
                    {"watchdog_trips": stats.watchdog_trips, "achieved_hz": stats.achieved_hz,
                     "loop_time_max_ms": stats.loop_time_max_ms})


def run_process_placement(choice: RobotChoice, seconds: float, rate_hz: float = 100.0,
                          spin_margin_s: float = 0.0005, cpu: int | None = None) -> dict[str, Any]:
    """Control loop in its own process, pinned, fed through shared memory."""
    from rtvla.action.control import ControlSettings
    from rtvla.action.control_process import ControlProcess

    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpu is None and ncpu > 1:
        cpu = max(os.sched_getaffinity(0))
    settings = ControlSettings(placement="process", spin_margin_s=spin_margin_s, cpu=cpu,
                               fifo_priority=80)
    limits = choice.factory().limits
    proc = ControlProcess(choice.factory, choice.dof, settings=settings, rate_hz=rate_hz,
                          duration_s=seconds)
    stop = threading.Event()
    with proc:
        feeder = threading.Thread(target=_feed_setpoints, args=(proc.publish, limits, stop), daemon=True)
        feeder.start()
        try:
            final = proc.wait(seconds + 30.0)
        finally:
            stop.set()
            feeder.join(2.0)
    final = final or proc.final_stats or {}
    return _summary(np.asarray(final.get("lateness_us", [])), final.get("missed", 0), 0, "process",
                    choice.label, {"watchdog_trips": final.get("watchdog_trips", 0),
                                   "achieved_hz": final.get("achieved_hz", 0.0),
                                   "loop_time_max_ms": final.get("loop_time_max_ms", 0.0),
                                   "realtime": proc.child_info.get("realtime", {})})


def run_chunks(choice: RobotChoice, seconds: float, rate_hz: float = 100.0, chunk_size: int = 100,
               policy_hz: float = 5.0, spin_margin_s: float = 0.0005) -> dict[str, Any]:
    """Control loop in a thread following action chunks from an asynchronous MLP policy.

    The threshold is chosen so that a chunk is requested every ``rate_hz / policy_hz`` ticks:
    with 100-action chunks (1 s) at 100 Hz, when 80 actions remain, so the policy runs at
    5 Hz and has up to 800 ms to answer before the queue runs dry.
    """
    period_ticks = max(1, round(rate_hz / policy_hz))
    if period_ticks >= chunk_size:
        raise ConfigError(f"chunk_size {chunk_size} must exceed the policy period of {period_ticks} ticks")
    threshold = (chunk_size - period_ticks + 1) / chunk_size
    from rtvla.action.control import ControlLoop, ControlSettings
    from rtvla.channels import LatestValue
    from rtvla.metrics import Recorder

    robot = choice.factory()
    robot.connect()
    rec = Recorder()
    policy = MLPChunkPolicy(robot.limits.dof, chunk_size, period_s=1.0 / rate_hz, limits=robot.limits)
    queue = ActionChunkQueue(chunk_size, robot.limits.dof, threshold=threshold, merge="weighted",
                             policy=policy, recorder=rec)
    channel = LatestValue("setpoints")
    loop = ControlLoop(robot, channel, recorder=rec, rate_hz=rate_hz, chunks=queue,
                       settings=ControlSettings(spin_margin_s=spin_margin_s))
    with queue:
        queue.prime(0, robot.read_state())
        try:
            stats = loop.run(duration_s=seconds)
        finally:
            robot.close()
    cs = queue.stats()
    return _summary(loop.lateness_samples_us(), stats.missed, cs["starved_ticks"], "chunks",
                    choice.label, {"watchdog_trips": stats.watchdog_trips,
                                   "achieved_hz": stats.achieved_hz,
                                   "policy_hz": (cs["chunks"] - 1) / seconds if seconds > 0 else 0.0,
                                   "threshold": threshold,
                                   "inference_delay_ticks": cs["inference_delay_ticks"],
                                   "inference_delay_ms": cs["inference_delay_ms"],
                                   "skipped_actions": cs["skipped_actions"]})



def bench_control(
    seconds: float = 30.0,
    *,
    rate_hz: float = 100.0,
    placements: tuple[str, ...] = ("thread", "process", "chunks"),
    robot: str | RobotChoice = "auto",
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Run the placements one after another under the same background load.

    Returns the JSON rows and the lateness samples (us) per placement for plots.
    """
    if not seconds > 0:
        raise ConfigError(f"seconds must be > 0, got {seconds}")
    unknown = [p for p in placements if p not in ("thread", "process", "chunks")]
    if unknown:
        raise ConfigError(f"unknown placement {unknown[0]!r}; known: thread, process, chunks")
    choice = robot if isinstance(robot, RobotChoice) else choose_robot(robot)
    runners = {"thread": run_thread_placement, "process": run_process_placement, "chunks": run_chunks}
    rows: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    for placement in placements:
        if progress is not None:
            progress(placement)
        loops: list[RateLoop] = []
        steal0 = hypervisor_steal_s()
        with background_load(loops):
            row = runners[placement](choice, seconds, rate_hz)
        row["background"] = {lp.name: round(lp.stats().achieved_hz, 2) for lp in loops}
        # CPU time the hypervisor took from this VM meanwhile (all CPUs): stalls that no
        # placement can avoid, so that the lateness figures can be read in context.
        row["steal_s"] = round(hypervisor_steal_s() - steal0, 3)
        rows.append(row)
        samples[placement] = np.asarray(row.pop("_samples", []))
    return rows, samples
