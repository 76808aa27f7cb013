"""``Navigator``: goal -> A* global path -> DWA local plan -> base-velocity setpoints, at 10 Hz.

The navigator is a :class:`~rtvla.component.Component` at the navigation budget's rate. Each
tick it reads the robot state, chooses a base velocity (DWA while travelling, a
proportional docking controller for the last few decimetres and the final yaw alignment)
and publishes it as a :class:`~rtvla.action.setpoints.Setpoint` on the control loop's
latest-value channel. It notices when it stops making progress, replans from where it is,
and gives up with a reason after ``max_replans``. The control loop's watchdog stops the
base if the navigator itself stalls.

Usage::

    nav = Navigator(grid, robot, setpoints, places={"table": (1.3, -0.5, 0.0)}, recorder=rec)
    nav.set_goal("table")
    threading.Thread(target=nav.run, daemon=True).start()     # or step(tick) from a runtime
    ...
    nav.state().status        # NavStatus.RUNNING / SUCCEEDED / FAILED, with .reason
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.action.dwa import DWAConfig, DWAPlanner, wrap_angle
from rtvla.action.grid import GridMap, as_grid_map, plan_path
from rtvla.action.setpoints import Setpoint
from rtvla.channels import Channel
from rtvla.component import Component
from rtvla.config import Budget, format_validation_error
from rtvla.errors import ConfigError, NavigationError
from rtvla.metrics import Recorder
from rtvla.robots.base import RobotState
from rtvla.timing import MONOTONIC, Clock, LoopStats, RateLoop, Tick

__all__ = ["NavState", "NavStatus", "Navigator", "NavigatorConfig", "state_reader"]

logger = logging.getLogger(__name__)


class NavStatus(str, Enum):
    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class NavState:
    """Where navigation stands; ``reason`` explains a FAILED or CANCELED status."""

    status: NavStatus
    reason: str = ""
    goal: tuple[float, float, float] | None = None
    goal_name: str | None = None
    distance_m: float = math.nan
    yaw_error_rad: float = math.nan
    replans: int = 0
    elapsed_s: float = 0.0
    mode: str = "idle"  # track | dock | idle

    @property
    def done(self) -> bool:
        return self.status in (NavStatus.SUCCEEDED, NavStatus.FAILED, NavStatus.CANCELED)


class NavigatorConfig(BaseModel):
    """The ``[navigation]`` config table (all optional). ``dwa`` holds :class:`DWAConfig` fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    position_tolerance_m: float = Field(0.04, gt=0)
    yaw_tolerance_rad: float = Field(0.05, gt=0)
    dock_radius_m: float = Field(0.35, gt=0, description="switch from DWA to docking inside this")
    dock_gain: float = Field(1.5, gt=0, description="docking P gain, 1/s")
    yaw_gain: float = Field(2.0, gt=0, description="yaw P gain, 1/s")
    face_goal_within_m: float = Field(1.0, ge=0, description="turn to the goal yaw inside this")
    max_speed: float = Field(0.5, gt=0)
    max_yaw_rate: float = Field(1.2, gt=0)
    max_accel: float = Field(1.0, gt=0)
    max_yaw_accel: float = Field(2.5, gt=0)
    stuck_window_s: float = Field(3.0, gt=0, description="no progress for this long = stuck")
    stuck_progress_m: float = Field(0.05, gt=0)
    max_replans: int = Field(3, ge=0)
    blocked_replan_s: float = Field(1.0, gt=0, description="replan after DWA is blocked this long")
    snap_radius_m: float = Field(0.4, ge=0, description="start/goal inside inflation snap this far")
    timeout_s: float | None = Field(None, gt=0, description="per-goal limit (None: none)")
    dwa: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_section(cls, table: Mapping[str, Any] | None) -> NavigatorConfig:
        """Validate ``cfg.section("navigation")``; errors name the key and value."""
        try:
            out = cls.model_validate(dict(table or {}))
            out.dwa_config()
            return out
        except ValidationError as exc:
            raise ConfigError(format_validation_error("navigation", exc)) from None

    def dwa_config(self, period_s: float = 0.1) -> DWAConfig:
        base = {
            "max_speed": self.max_speed, "max_yaw_rate": self.max_yaw_rate,
            "max_accel": self.max_accel, "max_yaw_accel": self.max_yaw_accel,
            "period_s": period_s,
        }
        try:
            return DWAConfig(**{**base, **self.dwa})
        except TypeError as exc:
            raise ConfigError(f"navigation.dwa: {exc}") from None


def state_reader(source: Any) -> Callable[[], RobotState]:
    """A callable returning the newest :class:`RobotState` from a robot (``read_state``), a
    latest-value channel of states, or a callable."""
    if hasattr(source, "read_state"):
        return source.read_state  # type: ignore[no-any-return]
    if hasattr(source, "latest"):

        def from_channel() -> RobotState:
            sample = source.latest()
            if sample is None:
                raise NavigationError(f"no robot state on channel {getattr(source, 'name', '?')!r} yet")
            return sample.value  # type: ignore[no-any-return]

        return from_channel
    if callable(source):
        return source  # type: ignore[no-any-return]
    raise NavigationError(
        f"robot state source must be a Robot, a channel or a callable, got {type(source).__name__}"
    )


def _as_pose(goal: Any) -> tuple[float, float, float]:
    if isinstance(goal, Mapping):
        try:
            return _as_pose((goal["x"], goal["y"], goal.get("yaw", math.nan)))
        except KeyError:
            raise NavigationError(f"goal pose needs keys x and y, got {sorted(goal)}") from None
    if hasattr(goal, "x") and hasattr(goal, "y"):
        return float(goal.x), float(goal.y), float(getattr(goal, "yaw", 0.0))
    if hasattr(goal, "pose"):  # a scene Place
        return _as_pose(goal.pose)
    arr = np.asarray(goal, dtype=float).reshape(-1)
    if arr.shape not in ((2,), (3,)) or not np.all(np.isfinite(arr)):
        raise NavigationError(f"goal pose must be (x, y[, yaw]) finite numbers, got {goal!r}")
    return float(arr[0]), float(arr[1]), float(arr[2]) if arr.size == 3 else math.nan


class Navigator(Component):
    """Drives the base to a goal through base-velocity setpoints. See the module docstring.

    Args:
        grid: occupancy grid (GridLike; obstacles inflated by the robot radius).
        state: where to read the robot state from (Robot, channel of RobotState, callable).
        setpoints: the control loop's setpoint channel.
        places: named standing poses ``name -> (x, y, yaw)`` (or objects with ``pose``).
        config: :class:`NavigatorConfig` (defaults when omitted).
    """

    def __init__(
        self,
        grid: Any,
        state: Any,
        setpoints: Channel,
        *,
        places: Mapping[str, Any] | None = None,
        config: NavigatorConfig | None = None,
        recorder: Recorder | None = None,
        budget: Budget | None = None,
        clock: Clock = MONOTONIC,
        rate_hz: float | None = None,
        name: str = "navigation",
    ) -> None:
        super().__init__(name, budget=budget, recorder=recorder, rate_hz=rate_hz)
        if self.rate_hz is None or not self.rate_hz > 0:
            raise ConfigError(f"{name}: needs a rate (budget rate_hz or rate_hz=), got {self.rate_hz}")
        self.grid: GridMap = as_grid_map(grid)
        self.config = config or NavigatorConfig()
        self.clock = clock
        self.setpoints = setpoints
        self.places = {k: _as_pose(v) for k, v in (places or {}).items()}
        self._read_state = state_reader(state)
        self._dwa = DWAPlanner(self.config.dwa_config(1.0 / self.rate_hz))
        self._lock = threading.RLock()
        self._seq = 0
        self._cmd = np.zeros(3)
        self._path: np.ndarray | None = None
        self._state = NavState(NavStatus.IDLE)
        self._goal: tuple[float, float, float] | None = None
        self._goal_name: str | None = None
        self._max_speed = self.config.max_speed
        self._started_ns = 0
        self._timeout_s: float | None = None
        self._best_remaining = math.inf
        self._best_at_ns = 0
        self._blocked_since: int | None = None
        self._replans = 0
        self._last_dwa: Any = None
        self.loop: RateLoop | None = None
        self.stats_counts = {"goals": 0, "succeeded": 0, "failed": 0, "replans": 0, "blocked_ticks": 0}

    @classmethod
    def for_sim(cls, sim: Any, setpoints: Channel, *, resolution_m: float = 0.05, **kwargs: Any) -> Navigator:
        """A navigator for a ``SimRobot``: occupancy grid from its scene's MuJoCo model
        (inflated by the scene's robot radius), its named places, its state."""
        from rtvla.robots.sim.grid import occupancy_grid

        grid = occupancy_grid(sim.scene, resolution_m=resolution_m)
        kwargs.setdefault("places", sim.scene.places)
        return cls(grid, sim, setpoints, **kwargs)

    # -- goals ------------------------------------------------------------------------------

    def resolve(self, goal: Any) -> tuple[tuple[float, float, float], str | None]:
        """A goal (place name, (x, y[, yaw]), Pose2D-like) as a pose and its name."""
        if isinstance(goal, str):
            if goal not in self.places:
                raise NavigationError(
                    f"unknown place {goal!r}; known places: {', '.join(sorted(self.places)) or 'none'}"
                )
            return self.places[goal], goal
        return _as_pose(goal), None

    def set_goal(self, goal: Any, *, max_speed: float | None = None, timeout_s: float | None = None) -> NavState:
        """Start driving to ``goal``. Plans the global path at once.

        Raises:
            NavigationError: unknown place, or the goal is blocked or unreachable.
        """
        pose, name = self.resolve(goal)
        state = self._read_state()
        here = np.asarray(state.base_pose, dtype=float)
        if math.isnan(pose[2]):
            d = np.array(pose[:2]) - here[:2]
            pose = (pose[0], pose[1], math.atan2(d[1], d[0]) if np.hypot(*d) > 1e-6 else float(here[2]))
        t0 = time.perf_counter()
        path = plan_path(self.grid, here[:2], pose[:2], snap_radius_m=self.config.snap_radius_m)
        self.recorder.observe(self.name, "astar", time.perf_counter() - t0)
        now = self.clock.now_ns()
        with self._lock:
            self._goal, self._goal_name, self._path = pose, name, path
            self._max_speed = min(self.config.max_speed, max_speed) if max_speed else self.config.max_speed
            self._timeout_s = timeout_s if timeout_s is not None else self.config.timeout_s
            self._started_ns = now
            self._replans = 0
            self._blocked_since = None
            self._best_remaining = math.inf
            self._best_at_ns = now
            self.stats_counts["goals"] += 1
            self._state = NavState(NavStatus.RUNNING, "", pose, name, mode="track")
            logger.info("navigating to %s (%.2f, %.2f, %.2f) via %d waypoints",
                        name or "pose", pose[0], pose[1], pose[2], len(path))
            return self._state

    def cancel(self, reason: str = "canceled") -> None:
        """Stop driving: publish zero velocity once and report CANCELED."""
        with self._lock:
            if self._state.status is NavStatus.RUNNING:
                self._finish(NavStatus.CANCELED, reason, self.clock.now_ns())

    def state(self) -> NavState:
        return self._state

    @property
    def path(self) -> np.ndarray | None:
        """The current global path (world ``(N, 2)``), or None."""
        return self._path

    # -- the loop ---------------------------------------------------------------------------

    def step(self, tick: Tick) -> bool:
        self.update(self.clock.now_ns())
        return not self.stop_event.is_set()

    def teardown(self) -> None:
        """Stop the base if a goal is still being driven to."""
        self.cancel("navigator shut down")

    def run(self, *, duration_s: float | None = None) -> LoopStats:
        """Tick at ``rate_hz`` on a RateLoop until :meth:`stop` (or ``duration_s``); the
        base is stopped on the way out."""
        self.loop = RateLoop(self.rate_hz or 10.0, clock=self.clock, stop_event=self.stop_event,
                             name=self.name)
        try:
            return self.loop.run(self.step, duration_s=duration_s)
        finally:
            self.teardown()

    def update(self, now_ns: int) -> NavStatus:
        """One navigation cycle at time ``now_ns``: returns the status (never raises for
        navigation outcomes; failures become ``FAILED`` with a reason)."""
        t0 = time.perf_counter()
        with self._lock:
            status = self._update(now_ns)
        dt = time.perf_counter() - t0
        self.recorder.latency(self.name, dt)
        self.recorder.count(self.name)
        return status

    def _publish(self, vel: np.ndarray, now_ns: int) -> None:
        self._seq += 1
        self._cmd = np.asarray(vel, dtype=float).copy()
        self.setpoints.publish(Setpoint(stamp_ns=now_ns, base_vel=self._cmd.copy(), seq=self._seq))

    def _finish(self, status: NavStatus, reason: str, now_ns: int) -> NavStatus:
        self._publish(np.zeros(3), now_ns)
        s = self._state
        self._state = NavState(status, reason, s.goal, s.goal_name, s.distance_m, s.yaw_error_rad,
                               self._replans, (now_ns - self._started_ns) / 1e9, "idle")
        if status is NavStatus.SUCCEEDED:
            self.stats_counts["succeeded"] += 1
        elif status is NavStatus.FAILED:
            self.stats_counts["failed"] += 1
            self.recorder.event(self.name, "failed", reason, goal=s.goal_name or s.goal)
        logger.info("navigation %s: %s", status.value, reason or s.goal_name or s.goal)
        return status

    def _remaining(self, xy: np.ndarray) -> float:
        """Path length left from the robot's projection onto the path to its end."""
        path = self._path
        assert path is not None
        if len(path) == 1:
            return float(np.linalg.norm(path[0] - xy))
        a, b = path[:-1], path[1:]
        ab = b - a
        seg = np.linalg.norm(ab, axis=1)
        t = np.clip(((xy - a) * ab).sum(-1) / np.maximum(seg**2, 1e-12), 0.0, 1.0)
        proj = a + t[:, None] * ab
        i = int(np.argmin(np.linalg.norm(proj - xy, axis=1)))
        return float((1.0 - t[i]) * seg[i] + seg[i + 1 :].sum() + np.linalg.norm(proj[i] - xy))

    def _replan(self, here: np.ndarray, now_ns: int, why: str) -> NavStatus | None:
        self._replans += 1
        self.stats_counts["replans"] += 1
        if self._replans > self.config.max_replans:
            return self._finish(
                NavStatus.FAILED,
                f"{why}; gave up after {self.config.max_replans} replans "
                f"({self._state.distance_m:.2f} m from the goal)", now_ns)
        self.recorder.event(self.name, "replan", why, replans=self._replans)
        assert self._goal is not None
        try:
            t0 = time.perf_counter()
            self._path = plan_path(self.grid, here[:2], self._goal[:2], snap_radius_m=self.config.snap_radius_m)
            self.recorder.observe(self.name, "astar", time.perf_counter() - t0)
        except NavigationError as exc:
            return self._finish(NavStatus.FAILED, f"{why}; replanning failed: {exc}", now_ns)
        self._best_remaining = math.inf
        self._best_at_ns = now_ns
        self._blocked_since = None
        return None

    def _update(self, now_ns: int) -> NavStatus:
        st = self._state
        if st.status is not NavStatus.RUNNING:
            return st.status
        goal = self._goal
        assert goal is not None and self._path is not None
        try:
            robot = self._read_state()
        except Exception as exc:  # a failing state source must not kill the loop
            self._publish(np.zeros(3), now_ns)
            logger.warning("navigation: cannot read robot state: %s", exc)
            return NavStatus.RUNNING
        pose = np.asarray(robot.base_pose, dtype=float)
        d = np.array(goal[:2]) - pose[:2]
        dist = float(np.hypot(d[0], d[1]))
        yaw_err = float(wrap_angle(goal[2] - pose[2]))
        elapsed = (now_ns - self._started_ns) / 1e9
        self._state = NavState(NavStatus.RUNNING, "", goal, self._goal_name, dist, yaw_err,
                               self._replans, elapsed, st.mode)
        cfg = self.config
        if dist <= cfg.position_tolerance_m and abs(yaw_err) <= cfg.yaw_tolerance_rad:
            return self._finish(NavStatus.SUCCEEDED, "", now_ns)
        if self._timeout_s is not None and elapsed > self._timeout_s:
            return self._finish(
                NavStatus.FAILED, f"timed out after {self._timeout_s:.1f} s, {dist:.2f} m from the goal", now_ns)

        # Progress watch: the remaining path length must shrink by stuck_progress_m within
        # stuck_window_s; docking (short, often rotating in place) watches the distance+yaw.
        progress = self._remaining(pose[:2]) if dist > cfg.dock_radius_m else dist + 0.2 * abs(yaw_err)
        if progress < self._best_remaining - cfg.stuck_progress_m:
            self._best_remaining = progress
            self._best_at_ns = now_ns
        elif (now_ns - self._best_at_ns) / 1e9 > cfg.stuck_window_s:
            out = self._replan(pose, now_ns, f"stuck: no progress for {cfg.stuck_window_s:.1f} s")
            if out is not None:
                return out

        if dist <= cfg.dock_radius_m:
            vel = self._dock(pose, goal, dist)
            mode = "dock"
        else:
            t0 = time.perf_counter()
            res = self._dwa.plan(
                pose=pose, vel=self._cmd, path=self._path, grid=self.grid,
                goal_yaw=goal[2] if dist <= cfg.face_goal_within_m else None,
                max_speed=self._max_speed,
            )
            self.recorder.observe(self.name, "dwa", time.perf_counter() - t0)
            self._last_dwa = res
            vel = res.velocity
            mode = "track"
            if not res.ok:
                self.stats_counts["blocked_ticks"] += 1
                if self._blocked_since is None:
                    self._blocked_since = now_ns
                elif (now_ns - self._blocked_since) / 1e9 > cfg.blocked_replan_s:
                    out = self._replan(pose, now_ns, "blocked: every local trajectory collides")
                    if out is not None:
                        return out
            else:
                self._blocked_since = None
        self._state = NavState(NavStatus.RUNNING, "", goal, self._goal_name, dist, yaw_err,
                               self._replans, elapsed, mode)
        self._publish(vel, now_ns)
        return NavStatus.RUNNING

    def _dock(self, pose: np.ndarray, goal: tuple[float, float, float], dist: float) -> np.ndarray:
        """Proportional approach with a braking-distance speed cap and acceleration limits."""
        cfg = self.config
        dt = 1.0 / (self.rate_hz or 10.0)
        d = np.array(goal[:2]) - pose[:2]
        speed = min(self._max_speed, cfg.dock_gain * dist, math.sqrt(2.0 * cfg.max_accel * dist))
        if dist <= cfg.position_tolerance_m * 0.5:
            speed = 0.0
        v_world = d / dist * speed if dist > 1e-9 else np.zeros(2)
        c, s = math.cos(pose[2]), math.sin(pose[2])
        v_body = np.array([c * v_world[0] + s * v_world[1], -s * v_world[0] + c * v_world[1]])
        yaw_err = float(wrap_angle(goal[2] - pose[2]))
        wz = float(np.clip(cfg.yaw_gain * yaw_err, -cfg.max_yaw_rate, cfg.max_yaw_rate))
        wz = math.copysign(min(abs(wz), math.sqrt(2.0 * cfg.max_yaw_accel * abs(yaw_err))), wz)
        want = np.array([v_body[0], v_body[1], wz])
        step = np.array([cfg.max_accel, cfg.max_accel, cfg.max_yaw_accel]) * dt
        return np.clip(want, self._cmd - step, self._cmd + step)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        st = self._state
        out.update(self.stats_counts)
        out.update(status=st.status.value, reason=st.reason, goal=st.goal_name or st.goal,
                   distance_m=st.distance_m, replans=st.replans)
        if self.loop is not None:
            out["loop"] = self.loop.stats().as_dict()
        return out
