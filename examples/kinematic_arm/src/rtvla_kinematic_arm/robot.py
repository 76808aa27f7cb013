"""``KinematicArm``: a holonomic base with a 5-joint arm and a gripper, integrated with numpy.

It satisfies rtvla's :class:`~rtvla.robots.base.Robot` protocol the way a hardware driver
would: it runs on its own (a thread integrating the motion at ``rate_hz``), ``read_state``
returns the newest published snapshot without blocking, ``send_command`` validates with
:func:`rtvla.robots.base.validate_command` before anything moves, and ``stop()`` latches:
the robot holds until :meth:`reset_stop`, refusing commands meanwhile.

Motion: each arm joint follows its position target as a first-order servo (time constant
``servo_tau_s``) capped at the joint's ``dq_max``; the base follows its commanded velocity
(base frame) under an acceleration limit and stops at obstacles (a bumper: the footprint
may not enter furniture or walls). The gripper closes at ``gripper_speed`` per second; when
it is closed past 0.8 and a cube's centre lies within ``grasp_radius_m`` of the grasp point,
the cube is held and moves with the hand; opening it drops the cube onto whatever is below.

With ``lockstep=True`` there is no thread: :meth:`advance` moves time (tests, lock-step runs).

Usage::

    with KinematicArm(load_scene(), lockstep=True) as arm:
        arm.teleport_base(arm.scene.places["table"].pose)
        q = arm.kinematics.ik(arm.object_position("red_cube"), arm.read_state().q)
        arm.send_command(RobotCommand(stamp_ns=0, arm=q, gripper=0.0)); arm.advance(3.0)
        arm.send_command(RobotCommand(stamp_ns=0, gripper=1.0)); arm.advance(0.5)
        arm.read_state().holding                   # "red_cube"
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from rtvla.errors import ConfigError, RobotError
from rtvla.robots.base import CommandMode, RobotCommand, RobotLimits, RobotState, validate_command
from rtvla.timing import MONOTONIC, Clock

from rtvla_kinematic_arm.kinematics import ArmKinematics
from rtvla_kinematic_arm.scene import Scene

__all__ = ["JOINTS", "ArmSnapshot", "KinematicArm", "snapshot_from_telemetry"]

logger = logging.getLogger(__name__)

JOINTS = ("shoulder_yaw", "shoulder_pitch", "elbow", "wrist_pitch", "wrist_roll")
_Q_MIN = np.array((-2.9, -0.6, -0.3, -1.5, -2.9))
_Q_MAX = np.array((2.9, 2.0, 2.8, 3.0, 2.9))
_DQ_MAX = np.array((1.5, 1.5, 1.5, 2.0, 2.5))
_DDQ_MAX = np.array((4.0, 4.0, 4.0, 6.0, 8.0))
_JERK_MAX = np.array((30.0, 30.0, 30.0, 40.0, 60.0))
_MAX_CATCH_UP_STEPS = 20  # after a stall, at most this many steps at once; the rest is dropped


@dataclass(frozen=True)
class ArmSnapshot:
    """Everything the camera draws: base pose, joints, gripper, objects (world xyz), held."""

    base_pose: np.ndarray
    q: np.ndarray
    gripper: float
    objects: dict[str, np.ndarray]
    holding: str | None


class KinematicArm:
    """The kinematic mobile manipulator; see the module docstring. A context manager."""

    def __init__(self, scene: Scene, *, rate_hz: float = 200.0, lockstep: bool = False,
                 clock: Clock = MONOTONIC, servo_tau_s: float = 0.03, gripper_speed: float = 5.0,
                 base_acc_max: float = 2.0, name: str = "kinematic_arm") -> None:
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ConfigError(f"kinematic_arm.rate_hz must be > 0, got {rate_hz}")
        self.scene = scene
        self.name = name
        self.lockstep = lockstep
        self.rate_hz = float(rate_hz)
        self.dt = 1.0 / self.rate_hz
        self._clock = clock
        self._tau = float(servo_tau_s)
        self._grip_speed = float(gripper_speed)
        self._acc_max = float(base_acc_max)
        geo = scene.robot
        self.limits = RobotLimits(JOINTS, _Q_MIN.copy(), _Q_MAX.copy(), _DQ_MAX.copy(), _DDQ_MAX.copy(),
                                  _JERK_MAX.copy(), base_lin_vel_max=0.5, base_ang_vel_max=1.5)
        self.kinematics = ArmKinematics(shoulder=geo.shoulder, links=geo.links_m, q_min=_Q_MIN,
                                        q_max=_Q_MAX, base_pose_fn=self.base_pose)
        # The bumper: distance (m) from each map cell to the nearest wall or furniture.
        occ, origin = scene.obstacles(0.02)
        free = np.where(occ, 0, 255).astype(np.uint8)
        self._clearance = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * 0.02
        self._clear_origin = origin
        self._footprint_r = geo.base_half_m * 1.05  # the square base's inscribed radius, plus a hair
        self._lock = threading.Lock()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        self.steps = 0
        self.dropped_steps = 0
        self.bumps = 0
        self.commands_refused = 0
        self.reset()

    # -- lifecycle --------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the start: base at the start place, arm stowed, cubes where they began."""
        with self._lock:
            self._pose = np.array(self.scene.places[self.scene.robot.start].pose, dtype=float)
            self._vel = np.zeros(3)  # world frame
            self._vel_cmd = np.zeros(3)  # base frame
            self._q = np.array(self.scene.robot.stow_q, dtype=float)
            self._dq = np.zeros(5)
            self._q_target = self._q.copy()
            self._dq_cmd: np.ndarray | None = None
            self._grip = 0.0
            self._grip_cmd = 0.0
            self._objects = {n: self.scene.object_start(n) for n in self.scene.objects}
            self._held: str | None = None
            self._held_offset = np.zeros(3)  # object centre in the hand frame
            self._stopped = False
            self._publish()

    def connect(self) -> None:
        """Start the integration thread (unless lock-step). Idempotent."""
        if self._connected:
            return
        self._connected = True
        if not self.lockstep:
            self._stop_evt.clear()
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-motion", daemon=True)
            self._thread.start()
        logger.info("%s connected (%s, %.0f Hz)", self.name, "lock-step" if self.lockstep else "thread", self.rate_hz)

    def close(self) -> None:
        """Stop the robot and its thread. Idempotent."""
        if not self._connected:
            return
        self.stop()
        self._stop_evt.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._connected = False

    def __enter__(self) -> KinematicArm:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Robot protocol ------------------------------------------------------------------

    def read_state(self) -> RobotState:
        """The newest state (published after each integration step); never blocks."""
        return self._state

    def send_command(self, cmd: RobotCommand) -> None:
        """Validate and apply ``cmd``. ``CommandRejected`` (bad values) and ``RobotError``
        (not connected, or stopped until :meth:`reset_stop`) leave the robot untouched."""
        if not self._connected:
            raise RobotError(f"{self.name}.send_command before connect()")
        validate_command(cmd, self.limits)
        with self._lock:
            if self._stopped:
                self.commands_refused += 1
                raise RobotError(f"{self.name} is stopped (latched); call reset_stop() before commanding it")
            if cmd.arm is not None:
                arm = np.asarray(cmd.arm, dtype=float)
                if cmd.mode is CommandMode.POSITION:
                    self._q_target, self._dq_cmd = arm.copy(), None
                else:
                    if self._dq_cmd is None:
                        self._q_target = self._q.copy()
                    self._dq_cmd = arm.copy()
            if cmd.base_vel is not None:
                self._vel_cmd = np.asarray(cmd.base_vel, dtype=float).copy()
            if cmd.gripper is not None:
                self._grip_cmd = float(cmd.gripper)
                if self._grip_cmd < 0.5:
                    self._release()

    def stop(self) -> None:
        """Safe stop, latched: hold the arm where it is, brake the base, refuse commands
        until :meth:`reset_stop`."""
        with self._lock:
            self._q_target, self._dq_cmd = self._q.copy(), None
            self._vel_cmd = np.zeros(3)
            self._vel = np.zeros(3)
            self._stopped = True
            self._publish()

    def reset_stop(self) -> None:
        """Release a latched stop: the robot holds still until the next command."""
        with self._lock:
            self._q_target = self._q.copy()
            self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    # -- time ---------------------------------------------------------------------------

    def advance(self, seconds: float) -> int:
        """Move time by ``seconds`` (lock-step only); returns the steps taken."""
        if not self.lockstep:
            raise RobotError(f"{self.name}.advance() is for lockstep=True; its thread owns time here")
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        n = int(round(seconds / self.dt))
        for _ in range(n):
            self._step()
        return n

    def _run(self) -> None:
        """The motion thread: steps at ``rate_hz`` on absolute deadlines."""
        period_ns = int(1e9 / self.rate_hz)
        next_ns = self._clock.now_ns()
        while not self._stop_evt.is_set():
            now = self._clock.now_ns()
            due = (now - next_ns) // period_ns + 1 if now >= next_ns else 0
            if due > _MAX_CATCH_UP_STEPS:  # stalled: drop the excess instead of bursting
                self.dropped_steps += int(due - _MAX_CATCH_UP_STEPS)
                next_ns += int(due - _MAX_CATCH_UP_STEPS) * period_ns
                due = _MAX_CATCH_UP_STEPS
            for _ in range(int(due)):
                self._step()
                next_ns += period_ns
            self._stop_evt.wait(max(0.0, (next_ns - self._clock.now_ns()) / 1e9))

    def _step(self) -> None:
        dt = self.dt
        with self._lock:
            # arm: velocity mode integrates the target; the joints servo to it
            if self._dq_cmd is not None:
                self._q_target = np.clip(self._q_target + self._dq_cmd * dt, _Q_MIN, _Q_MAX)
            want = (self._q_target - self._q) / max(self._tau, dt)
            dq = np.clip(want, -_DQ_MAX, _DQ_MAX)
            q = np.clip(self._q + dq * dt, _Q_MIN, _Q_MAX)
            self._dq = (q - self._q) / dt
            self._q = q
            # base: velocity command in the base frame, acceleration-limited, with a bumper
            c, s = math.cos(self._pose[2]), math.sin(self._pose[2])
            vx, vy, wz = self._vel_cmd
            target = np.array((c * vx - s * vy, s * vx + c * vy, wz))
            dv = np.clip(target - self._vel, -self._acc_max * dt, self._acc_max * dt)
            self._vel = self._vel + dv
            pose = self._pose + self._vel * dt
            pose[2] = math.atan2(math.sin(pose[2]), math.cos(pose[2]))
            if self._clear_at(pose[0], pose[1]) >= self._footprint_r:
                self._pose = pose
            else:
                self.bumps += 1
                self._vel = np.zeros(3)
            # gripper, grasp and the held object
            prev = self._grip
            g = prev + float(np.clip(self._grip_cmd - prev, -self._grip_speed * dt, self._grip_speed * dt))
            if self._held is not None:
                g = min(g, 0.85)  # the cube stops the fingers
            self._grip = g
            if self._held is None and prev < 0.8 <= g:  # the fingers meet whatever is between them
                self._try_grasp()
            if self._held is not None:
                ch = self.kinematics.chain(self._q, self._pose)
                self._objects[self._held] = ch["grasp"] + ch["hand_rot"] @ self._held_offset
            self.steps += 1
            self._publish()

    def _clear_at(self, x: float, y: float) -> float:
        col = int((x - self._clear_origin[0]) / 0.02)
        row = int((y - self._clear_origin[1]) / 0.02)
        h, w = self._clearance.shape
        if not (0 <= row < h and 0 <= col < w):
            return 0.0
        return float(self._clearance[row, col])

    def _try_grasp(self) -> None:
        """Caller holds the lock."""
        ch = self.kinematics.chain(self._q, self._pose)
        best, best_d = None, self.scene.robot.grasp_radius_m
        for name, p in self._objects.items():
            d = float(np.linalg.norm(p - ch["grasp"]))
            if d <= best_d:
                best, best_d = name, d
        if best is None:
            return
        self._held = best
        self._held_offset = ch["hand_rot"].T @ (self._objects[best] - ch["grasp"])
        logger.debug("%s grasped %s %.1f mm from the grasp point", self.name, best, best_d * 1e3)

    def _release(self) -> None:
        """Open the hand: the held cube drops onto whatever is below it. Caller holds the lock."""
        if self._held is None:
            return
        p = self._objects[self._held]
        size = self.scene.objects[self._held].size_m
        rest = self.scene.support_height(p[0], p[1]) + size / 2
        self._objects[self._held] = np.array((p[0], p[1], rest))
        logger.debug("%s released %s at (%.3f, %.3f, %.3f)", self.name, self._held, *self._objects[self._held])
        self._held = None

    def _publish(self) -> None:
        """Snapshot for lock-free readers. Caller holds the lock."""
        c, s = math.cos(self._pose[2]), math.sin(self._pose[2])
        v = self._vel
        base_vel = np.array((c * v[0] + s * v[1], -s * v[0] + c * v[1], v[2]))
        arrays = [self._q.copy(), self._dq.copy(), np.zeros(5), self._pose.copy(), base_vel]
        for a in arrays:
            a.setflags(write=False)
        self._state = RobotState(self._clock.now_ns(), arrays[0], arrays[1], arrays[2], arrays[3], arrays[4],
                                 gripper=self._grip, holding=self._held)

    # -- what the camera and tests read ---------------------------------------------------

    @property
    def holding(self) -> str | None:
        return self._held

    def base_pose(self) -> np.ndarray:
        return self._state.base_pose.copy()

    def object_names(self) -> list[str]:
        return list(self.scene.objects)

    def object_position(self, name: str) -> np.ndarray:
        with self._lock:
            try:
                return self._objects[name].copy()
            except KeyError:
                raise KeyError(f"unknown object {name!r}; known: {', '.join(self._objects)}") from None

    def snapshot(self) -> ArmSnapshot:
        with self._lock:
            return ArmSnapshot(self._pose.copy(), self._q.copy(), self._grip,
                               {n: p.copy() for n, p in self._objects.items()}, self._held)

    def teleport_base(self, pose: Any) -> None:
        """Put the base at rest at ``pose`` (x, y, yaw): setting up tests and episodes."""
        p = np.asarray(pose, dtype=float)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ValueError(f"base pose must be 3 finite values, got {p.tolist()}")
        with self._lock:
            self._pose, self._vel, self._vel_cmd = p.copy(), np.zeros(3), np.zeros(3)
            if self._held is not None:
                ch = self.kinematics.chain(self._q, self._pose)
                self._objects[self._held] = ch["grasp"] + ch["hand_rot"] @ self._held_offset
            self._publish()

    def stats(self) -> dict[str, Any]:
        """The robot's own figures (the control process reports them at the end)."""
        return {"steps": self.steps, "rate_hz": self.rate_hz, "dropped_steps": self.dropped_steps,
                "bumps": self.bumps, "commands_refused_while_stopped": self.commands_refused}

    # -- telemetry: what the parent needs when this robot runs in the control process -------

    def telemetry_size(self) -> int:
        """``[base(3), q(5), gripper, held index or -1, objects (3 each, scene order)]``."""
        return 10 + 3 * len(self.scene.objects)

    def write_telemetry(self, out: np.ndarray) -> None:
        snap = self.snapshot()
        out[0:3] = snap.base_pose
        out[3:8] = snap.q
        out[8] = snap.gripper
        names = self.object_names()
        out[9] = -1.0 if snap.holding is None else float(names.index(snap.holding))
        for i, n in enumerate(names):
            out[10 + 3 * i: 13 + 3 * i] = snap.objects[n]


def snapshot_from_telemetry(tel: np.ndarray, names: list[str]) -> ArmSnapshot:
    """Decode :meth:`KinematicArm.write_telemetry`'s layout."""
    idx = int(tel[9])
    return ArmSnapshot(np.array(tel[0:3]), np.array(tel[3:8]), float(tel[8]),
                       {n: np.array(tel[10 + 3 * i: 13 + 3 * i]) for i, n in enumerate(names)},
                       None if idx < 0 or idx >= len(names) else names[idx])
