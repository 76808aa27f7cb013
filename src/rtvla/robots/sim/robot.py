"""``SimRobot``: the MuJoCo mobile manipulator behind the :class:`~rtvla.robots.base.Robot` protocol.

By default a physics thread advances the simulation following the clock, as hardware runs
on its own: every ``physics_period_s`` it runs as many 2 ms steps as wall time demands
(in chunks, releasing the lock between them, so a reader never waits long) and records
its real-time factor and lag. With ``lockstep=True`` there is no thread; ``step(n)`` and
``advance(seconds)`` move time, for tests and faster-than-real-time runs.

Usage::

    with SimRobot(lockstep=True) as robot:
        robot.teleport_base(robot.scene.place("table").pose)
        q = robot.kinematics.ik(robot.object_position("red_cube") + [0, 0, 0.1], robot.read_state().q)
        robot.send_command(RobotCommand(stamp_ns=0, arm=q))
        robot.advance(2.0)
        robot.send_command(RobotCommand(stamp_ns=0, gripper=1.0))
        robot.advance(0.5)
        robot.read_state().holding            # "red_cube" if the grasp site reached it

Grasping is a weld constraint per cube (inactive in the MJCF): when the gripper closes and
a cube's centre is within ``grasp_radius_m`` of the grasp site, the weld is switched on at
the current relative pose; opening the gripper switches it off.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import mujoco  # MUJOCO_GL was set by rtvla.robots.sim.__init__ (imports _gl first)
import numpy as np

from rtvla.errors import ConfigError, RobotError
from rtvla.metrics import Recorder
from rtvla.robots.base import CommandMode, RobotCommand, RobotLimits, RobotState, validate_command
from rtvla.robots.sim.grid import OccupancyGrid, occupancy_grid
from rtvla.robots.sim.kinematics import SimKinematics
from rtvla.robots.sim.scene import SceneConfig, load_scene
from rtvla.timing import MONOTONIC, Clock

__all__ = ["SimRobot", "SimStats"]

logger = logging.getLogger(__name__)

_CHUNK_STEPS = 2  # steps per lock hold (~0.1-0.3 ms), so a command never waits long


@dataclass(frozen=True)
class SimStats:
    """How well the physics thread keeps up with wall time."""

    sim_time_s: float
    steps: int
    realtime_factor: float  # simulated seconds per wall second, over the last ~second
    lag_s: float  # how far simulated time is behind the wall clock now
    dropped_steps: int  # steps skipped because the thread fell further behind than max_lag_s
    step_us_mean: float  # mean wall time of one mj_step (with control update)


class SimRobot:
    """The simulated mobile manipulator. A context manager: ``connect`` on enter, ``close`` on exit.

    ``scene``: a :class:`SceneConfig` (default: the packaged room). ``lockstep``: no physics
    thread; call :meth:`step`/:meth:`advance`. ``realtime_factor``: simulated seconds per wall
    second for the physics thread. ``physics_period_s``: how often the thread wakes.
    ``max_lag_s``: if the thread falls further behind than this (the machine stalled), the
    excess is dropped and counted instead of being caught up in a burst. ``recorder``: gauges
    ``rtf`` and ``lag_ms`` of component ``name`` once per second.
    """

    def __init__(
        self,
        scene: SceneConfig | None = None,
        *,
        lockstep: bool = False,
        clock: Clock = MONOTONIC,
        recorder: Recorder | None = None,
        name: str = "sim",
        realtime_factor: float = 1.0,
        physics_period_s: float = 0.005,
        max_lag_s: float = 0.1,
    ) -> None:
        if not (realtime_factor > 0 and math.isfinite(realtime_factor)):
            raise ConfigError(f"sim.realtime_factor must be > 0, got {realtime_factor}")
        if not (0 < physics_period_s <= 0.1):
            raise ConfigError(f"sim.physics_period_s must be in (0, 0.1], got {physics_period_s}")
        if not max_lag_s > 0:
            raise ConfigError(f"sim.max_lag_s must be > 0, got {max_lag_s}")
        self.scene = scene if scene is not None else load_scene()
        self.name = name
        self.lockstep = lockstep
        self._clock = clock
        self._recorder = recorder
        self._rtf_target = float(realtime_factor)
        self._period_s = float(physics_period_s)
        self._max_lag_s = float(max_lag_s)

        self.model = self.scene.load_model()
        self.data = mujoco.MjData(self.model)
        self.dt = float(self.model.opt.timestep)
        self._lock = threading.Lock()
        self._wire()
        self.limits = self._make_limits()
        self.kinematics = SimKinematics(
            self.model,
            arm_joints=self._w.arm_joints,
            base_joints=self._w.base_joints,
            site=self._w.grasp_site,
            base_pose_fn=self.base_pose,
        )

        self._connected = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._steps = 0
        self._dropped = 0
        self._step_ns_total = 0
        self._rtf = 0.0
        self._lag_s = 0.0
        self.reset()

    # ------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        m = self.model
        w = self._w = self.scene.robot

        def joint(name: str) -> int:
            jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise ConfigError(f"scene robot joint {name!r} is not in {self.scene.mjcf.name}")
            return jid

        def actuator(name: str) -> int:
            aid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, name)
            if aid < 0:
                raise ConfigError(f"scene robot actuator {name!r} is not in {self.scene.mjcf.name}")
            return aid

        arm_j = [joint(n) for n in w.arm_joints]
        self._arm_qadr = np.array([m.jnt_qposadr[j] for j in arm_j])
        self._arm_vadr = np.array([m.jnt_dofadr[j] for j in arm_j])
        self._arm_range = np.array([m.jnt_range[j] for j in arm_j])
        self._arm_act = np.array([actuator(n) for n in w.arm_actuators])
        base_j = [joint(n) for n in w.base_joints]
        self._base_qadr = [int(m.jnt_qposadr[j]) for j in base_j]
        self._base_vadr = [int(m.jnt_dofadr[j]) for j in base_j]
        self._base_act = [actuator(n) for n in w.base_actuators]
        self._finger_qadr = np.array([m.jnt_qposadr[joint(n)] for n in w.finger_joints])
        self._finger_act = np.array([actuator(n) for n in w.finger_actuators])
        self._site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, w.grasp_site)
        self._hand = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, w.hand_body)
        if self._site < 0 or self._hand < 0:
            raise ConfigError(
                f"scene grasp site {w.grasp_site!r} or hand body {w.hand_body!r} missing"
            )
        # one weld per object, hand <-> object body, found by its bodies
        self._objects: dict[str, int] = {}
        self._obj_adr: dict[str, tuple[int, int]] = {}
        self._welds: dict[str, int] = {}
        for name, spec in self.scene.objects.items():
            bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, spec.body)
            if bid < 0:
                raise ConfigError(f"scene object {name!r}: body {spec.body!r} is not in the MJCF")
            self._objects[name] = bid
            jnt = int(m.body_jntadr[bid])
            if jnt < 0 or m.jnt_type[jnt] != mujoco.mjtJoint.mjJNT_FREE:
                raise ConfigError(f"scene object {name!r}: body {spec.body!r} needs a free joint")
            self._obj_adr[name] = (int(m.jnt_qposadr[jnt]), int(m.jnt_dofadr[jnt]))
            for e in range(m.neq):
                if m.eq_type[e] == mujoco.mjtEq.mjEQ_WELD and {
                    int(m.eq_obj1id[e]),
                    int(m.eq_obj2id[e]),
                } == {self._hand, bid}:
                    if int(m.eq_obj1id[e]) != self._hand:
                        raise ConfigError(
                            f"grasp weld for {name!r} must have body1 = {w.hand_body!r}"
                        )
                    self._welds[name] = e
            if name not in self._welds:
                raise ConfigError(
                    f"scene object {name!r} has no weld to {w.hand_body!r} in the MJCF"
                )
        key = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_KEY, self.scene.keyframe)
        if key < 0:
            raise ConfigError(f"scene keyframe {self.scene.keyframe!r} is not in the MJCF")
        self._key = key

    def _make_limits(self) -> RobotLimits:
        w = self._w
        return RobotLimits(
            joint_names=tuple(w.arm_joints),
            q_min=self._arm_range[:, 0].copy(),
            q_max=self._arm_range[:, 1].copy(),
            dq_max=np.array(w.dq_max, dtype=float),
            ddq_max=np.array(w.ddq_max, dtype=float),
            jerk_max=np.array(w.jerk_max, dtype=float),
            base_lin_vel_max=w.base_lin_vel_max,
            base_ang_vel_max=w.base_ang_vel_max,
        )

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Start the physics thread (unless lock-step). Idempotent."""
        if self._connected:
            return
        self._connected = True
        if not self.lockstep:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"{self.name}-physics", daemon=True
            )
            self._thread.start()
        logger.info("sim robot connected (%s)", "lock-step" if self.lockstep else "real time")

    def close(self) -> None:
        """Stop the robot and the physics thread. Idempotent."""
        if not self._connected:
            return
        self.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._connected = False
        logger.info("sim robot closed after %.2f s simulated", self.sim_time)

    def __enter__(self) -> SimRobot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected

    def reset(self) -> None:
        """Back to the scene's keyframe: robot at home, cubes on the table, nothing held."""
        m, d = self.model, self.data
        with self._lock:
            mujoco.mj_resetDataKeyframe(m, d, self._key)
            for e in self._welds.values():
                d.eq_active[e] = 0
            self._holding: str | None = None
            self._grasp_pending = False
            self._arm_target = d.qpos[self._arm_qadr].copy()
            self._arm_vel: np.ndarray | None = None
            self._base_cmd = np.zeros(3)
            self._gripper_cmd = self._gripper_from_fingers(d.qpos[self._finger_qadr])
            self._set_fingers(self._gripper_cmd)
            d.ctrl[self._arm_act] = self._arm_target
            mujoco.mj_forward(m, d)
            self._publish_state()

    # ------------------------------------------------------------------ Robot protocol
    def read_state(self) -> RobotState:
        """The newest state, as published after the latest physics chunk; never blocks.

        ``stamp_ns`` is when that snapshot was taken (at most one physics period old in
        real-time mode), so consumers can tell its age like a hardware sensor reading's.
        """
        return self._state

    def _publish_state(self) -> None:
        """Snapshot the state for lock-free readers. Caller holds the lock."""
        d = self.data
        q = d.qpos[self._arm_qadr].copy()
        dq = d.qvel[self._arm_vadr].copy()
        effort = d.actuator_force[self._arm_act].copy()
        bq = d.qpos[self._base_qadr].copy()
        bv = d.qvel[self._base_vadr]
        # base velocity is reported in the base frame, like the command
        c, s = math.cos(bq[2]), math.sin(bq[2])
        base_vel = np.array([c * bv[0] + s * bv[1], -s * bv[0] + c * bv[1], bv[2]])
        for arr in (q, dq, effort, bq, base_vel):
            arr.setflags(write=False)
        self._state = RobotState(
            stamp_ns=self._clock.now_ns(),
            q=q,
            dq=dq,
            effort=effort,
            base_pose=bq,
            base_vel=base_vel,
            gripper=self._gripper_from_fingers(d.qpos[self._finger_qadr]),
            holding=self._holding,
        )

    def send_command(self, cmd: RobotCommand) -> None:
        """Validate ``cmd`` and apply it; :class:`CommandRejected` leaves the robot untouched."""
        if not self._connected:
            raise RobotError(
                "SimRobot.send_command before connect(); use `with SimRobot() as robot:`"
            )
        validate_command(cmd, self.limits)
        with self._lock:
            if cmd.arm is not None:
                arm = np.asarray(cmd.arm, dtype=float)
                if cmd.mode is CommandMode.POSITION:
                    self._arm_target = arm.copy()
                    self._arm_vel = None
                else:
                    if self._arm_vel is None:  # switching modes: integrate from where the arm is
                        self._arm_target = self.data.qpos[self._arm_qadr].copy()
                    self._arm_vel = arm.copy()
            if cmd.base_vel is not None:
                self._base_cmd = np.asarray(cmd.base_vel, dtype=float).copy()
            if cmd.gripper is not None:
                self._command_gripper(float(cmd.gripper))

    def stop(self) -> None:
        """Safe stop: hold the arm at its current position, zero base velocity."""
        with self._lock:
            self._arm_target = self.data.qpos[self._arm_qadr].copy()
            self._arm_vel = None
            self._base_cmd = np.zeros(3)
            self._apply_controls(0.0)

    # ------------------------------------------------------------------ stepping
    def step(self, n: int = 1) -> None:
        """Advance ``n`` physics steps (lock-step mode only)."""
        if not self.lockstep:
            raise RobotError(
                "SimRobot.step() is for lockstep=True; the physics thread owns time here"
            )
        if n < 0:
            raise ValueError(f"step count must be >= 0, got {n}")
        self._advance_steps(int(n))

    def advance(self, seconds: float) -> int:
        """Advance simulated time by ``seconds`` (lock-step mode only); returns the steps taken."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        n = int(round(seconds / self.dt))
        self.step(n)
        return n

    def _advance_steps(self, n: int) -> None:
        m, d = self.model, self.data
        done = 0
        while done < n:
            k = min(_CHUNK_STEPS, n - done)
            t0 = self._clock.now_ns()
            with self._lock:
                for _ in range(k):
                    self._apply_controls(self.dt)
                    mujoco.mj_step(m, d)
                if self._grasp_pending:
                    self._try_grasp()
                self._publish_state()
            self._step_ns_total += self._clock.now_ns() - t0
            done += k
            self._steps += k
            if not self.lockstep and done < n:
                # Python locks are not handed over on release: without a yield the physics
                # thread re-takes the lock at once and a control thread waiting in
                # send_command() starves for the whole catch-up batch after a stall.
                time.sleep(0)

    def _apply_controls(self, dt: float) -> None:
        """Write actuator controls for the next step. Caller holds the lock."""
        d = self.data
        if self._arm_vel is not None and dt > 0.0:
            self._arm_target = np.clip(
                self._arm_target + self._arm_vel * dt, self._arm_range[:, 0], self._arm_range[:, 1]
            )
        d.ctrl[self._arm_act] = self._arm_target
        # base command is in the base frame; the slide joints move in the world frame
        yaw = d.qpos[self._base_qadr[2]]
        c, s = math.cos(yaw), math.sin(yaw)
        vx, vy, wz = self._base_cmd
        d.ctrl[self._base_act[0]] = c * vx - s * vy
        d.ctrl[self._base_act[1]] = s * vx + c * vy
        d.ctrl[self._base_act[2]] = wz

    def _run(self) -> None:
        """Physics thread: keep simulated time in step with the clock."""
        clock, dt = self._clock, self.dt
        t0 = clock.now_ns()
        steps0 = self._steps
        sim0 = 0
        win_wall, win_steps = t0, self._steps
        while not self._stop.is_set():
            now = clock.now_ns()
            due_sim = (now - t0) * 1e-9 * self._rtf_target
            behind = due_sim - (self._steps - steps0 + sim0) * dt
            if behind > self._max_lag_s:  # stalled: drop the excess instead of bursting
                drop = int((behind - self._max_lag_s) / dt)
                self._dropped += drop
                sim0 += drop
                behind -= drop * dt
            n = int(behind / dt)
            if n > 0:
                self._advance_steps(n)
            self._lag_s = max(0.0, due_sim - (self._steps - steps0 + sim0) * dt)
            if now - win_wall >= 1_000_000_000:
                self._rtf = (self._steps - win_steps) * dt / ((now - win_wall) * 1e-9)
                win_wall, win_steps = now, self._steps
                if self._recorder is not None:
                    self._recorder.gauge(self.name, "rtf", self._rtf)
                    self._recorder.gauge(self.name, "lag_ms", self._lag_s * 1e3)
            self._stop.wait(self._period_s)

    # ------------------------------------------------------------------ gripper and grasping
    def _gripper_from_fingers(self, fingers: np.ndarray) -> float:
        w = self._w
        g = (float(np.mean(fingers)) - w.finger_open_m) / (w.finger_closed_m - w.finger_open_m)
        return min(1.0, max(0.0, g))

    def _set_fingers(self, g: float) -> None:
        w = self._w
        pos = w.finger_open_m + g * (w.finger_closed_m - w.finger_open_m)
        self.data.ctrl[self._finger_act] = pos

    def _command_gripper(self, g: float) -> None:
        """Caller holds the lock."""
        self._gripper_cmd = g
        self._set_fingers(g)
        if g >= 0.5:
            if self._holding is None:
                self._grasp_pending = True
        else:
            self._grasp_pending = False
            if self._holding is not None:
                self.data.eq_active[self._welds[self._holding]] = 0
                logger.debug("released %s", self._holding)
                self._holding = None

    def _try_grasp(self) -> None:
        """Once the fingers have closed, weld the nearest cube within reach. Caller holds the lock."""
        d = self.data
        if self._gripper_from_fingers(d.qpos[self._finger_qadr]) < 0.8:
            return  # fingers still closing
        self._grasp_pending = False
        site = d.site_xpos[self._site]
        best, best_dist = None, self._w.grasp_radius_m
        for name, bid in self._objects.items():
            dist = float(np.linalg.norm(d.xpos[bid] - site))
            if dist <= best_dist:
                best, best_dist = name, dist
        if best is None:
            logger.debug("gripper closed on nothing")
            return
        self._weld(best)

    def _weld(self, name: str) -> None:
        """Switch on ``name``'s weld at the current hand-to-object pose. Caller holds the lock."""
        m, d = self.model, self.data
        e, bid = self._welds[name], self._objects[name]
        hand_pos, hand_quat = d.xpos[self._hand], d.xquat[self._hand]
        rel_pos = d.xmat[self._hand].reshape(3, 3).T @ (d.xpos[bid] - hand_pos)
        inv = np.zeros(4)
        mujoco.mju_negQuat(inv, hand_quat)
        rel_quat = np.zeros(4)
        mujoco.mju_mulQuat(rel_quat, inv, d.xquat[bid])
        m.eq_data[e, 0:3] = 0.0  # anchor at body2's origin
        m.eq_data[e, 3:6] = rel_pos
        m.eq_data[e, 6:10] = rel_quat
        d.eq_active[e] = 1
        self._holding = name
        logger.debug(
            "grasped %s at %.1f mm from the grasp site", name, 1e3 * float(np.linalg.norm(rel_pos))
        )

    # ------------------------------------------------------------------ accessors
    @property
    def sim_time(self) -> float:
        return float(self.data.time)

    @property
    def holding(self) -> str | None:
        return self._holding

    def stats(self) -> SimStats:
        steps = max(self._steps, 1)
        rtf = self._rtf
        if self.lockstep:
            wall = self._step_ns_total * 1e-9
            rtf = self._steps * self.dt / wall if wall > 0 else 0.0
        return SimStats(
            sim_time_s=self.sim_time,
            steps=self._steps,
            realtime_factor=rtf,
            lag_s=self._lag_s,
            dropped_steps=self._dropped,
            step_us_mean=self._step_ns_total / steps / 1e3,
        )

    def base_pose(self) -> np.ndarray:
        """(x, y, yaw) of the base in the world frame."""
        with self._lock:
            return self.data.qpos[self._base_qadr].copy()

    def teleport_base(self, pose: Any) -> None:
        """Put the base at ``pose`` = (x, y, yaw) at rest (setting up tests and episodes).

        A held object travels with the hand, so a grasp survives the jump.
        """
        p = np.asarray(pose, dtype=float)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ValueError(f"base pose must be 3 finite values (x, y, yaw), got {p.tolist()}")
        m, d = self.model, self.data
        with self._lock:
            held = self._holding
            if held is not None:
                e = self._welds[held]
                rel_pos, rel_quat = m.eq_data[e, 3:6].copy(), m.eq_data[e, 6:10].copy()
            d.qpos[self._base_qadr] = p
            d.qvel[self._base_vadr] = 0.0
            self._base_cmd = np.zeros(3)
            mujoco.mj_kinematics(m, d)
            if held is not None:
                qadr, vadr = self._obj_adr[held]
                d.qpos[qadr : qadr + 3] = (
                    d.xpos[self._hand] + d.xmat[self._hand].reshape(3, 3) @ rel_pos
                )
                quat = np.zeros(4)
                mujoco.mju_mulQuat(quat, d.xquat[self._hand], rel_quat)
                d.qpos[qadr + 3 : qadr + 7] = quat
                d.qvel[vadr : vadr + 6] = 0.0
            mujoco.mj_forward(m, d)
            self._publish_state()

    def object_names(self) -> list[str]:
        return list(self._objects)

    def object_pose(self, name: str) -> np.ndarray:
        """Pose of object ``name`` as (x, y, z, qw, qx, qy, qz) in the world frame."""
        bid = self._object_id(name)
        with self._lock:
            return np.concatenate([self.data.xpos[bid], self.data.xquat[bid]])

    def object_position(self, name: str) -> np.ndarray:
        """(x, y, z) of object ``name``'s centre in the world frame."""
        bid = self._object_id(name)
        with self._lock:
            return self.data.xpos[bid].copy()

    def _object_id(self, name: str) -> int:
        try:
            return self._objects[name]
        except KeyError:
            raise KeyError(f"unknown object {name!r}; known: {', '.join(self._objects)}") from None

    def frame_pose(self, name: str, kind: str = "site") -> np.ndarray:
        """4x4 world transform of a named ``site``, ``body`` or ``camera`` (MuJoCo axes)."""
        types = {
            "site": mujoco.mjtObj.mjOBJ_SITE,
            "body": mujoco.mjtObj.mjOBJ_BODY,
            "camera": mujoco.mjtObj.mjOBJ_CAMERA,
        }
        if kind not in types:
            raise ValueError(f"frame kind must be one of {sorted(types)}, got {kind!r}")
        oid = mujoco.mj_name2id(self.model, types[kind], name)
        if oid < 0:
            raise KeyError(f"no {kind} named {name!r} in the scene")
        d = self.data
        with self._lock:
            if kind == "site":
                pos, mat = d.site_xpos[oid].copy(), d.site_xmat[oid].copy()
            elif kind == "body":
                pos, mat = d.xpos[oid].copy(), d.xmat[oid].copy()
            else:
                pos, mat = d.cam_xpos[oid].copy(), d.cam_xmat[oid].copy()
        out = np.eye(4)
        out[:3, :3] = mat.reshape(3, 3)
        out[:3, 3] = pos
        return out

    def grasp_position(self) -> np.ndarray:
        """(x, y, z) of the grasp site (between the fingertips) in the world frame."""
        with self._lock:
            return self.data.site_xpos[self._site].copy()

    def occupancy_grid(
        self, resolution_m: float = 0.05, inflate_m: float | None = None
    ) -> OccupancyGrid:
        """The static scene's occupancy grid for navigation (see :func:`occupancy_grid`)."""
        inflate = self.scene.robot_radius_m if inflate_m is None else inflate_m
        return occupancy_grid(self.model, resolution_m=resolution_m, inflate_m=inflate)

    def qpos_snapshot(self) -> np.ndarray:
        """A copy of the full ``qpos`` (for rendering or kinematics elsewhere)."""
        with self._lock:
            return self.data.qpos.copy()
