"""Demonstrations for a LeRobot dataset: the task run N times on the simulator, in lock-step.

Each episode builds a fresh lock-step simulation (``SimRobot(lockstep=True)`` on a
``FakeClock``, the control loop, the navigator, the task executor), places the scene's
objects at random on their surfaces (seeded per episode), plans the instruction with the
embedded rule planner and executes the plan with real perception: the head camera is
rendered, the colour detector finds the objects in 3D, and the world model feeds the
skills. Every ``1 / fps`` of simulated time one frame is added to the dataset:
``observation.state`` = arm joints, gripper, base (x, y, yaw); ``action`` = the setpoint
the control loop was following (arm joint goal, gripper, base velocity); the head camera
image. Frames are taken on the control tick at or after each frame time (the simulation
runs at 100 Hz, so a frame is at most 10 ms late against its 1/fps timestamp).

Only successful episodes are kept unless ``keep_failures``.

Usage::

    summary = record_episodes("datasets/red-cube", "put the red cube in the blue bin",
                              episodes=10, fps=30, seed=0)
    summary["kept"], summary["episodes"][0]["success"]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.action.control import ControlLoop
from rtvla.action.executor import LockstepDriver, TaskExecutor
from rtvla.action.navigation import Navigator
from rtvla.action.skills import SceneInfo, SetpointWriter, SkillContext, SkillSettings
from rtvla.action.world import WorldModel, labels_for_scene
from rtvla.channels import LatestValue
from rtvla.errors import RecordError
from rtvla.language import Capabilities, PlanContext, RulePlanner
from rtvla.metrics import Recorder
from rtvla.perception.color import ColorClass, ColorDetector
from rtvla.perception.detections import Detections
from rtvla.record.lerobot import LeRobotDatasetWriter
from rtvla.robots.sim import SimCamera, SimRobot, load_scene
from rtvla.timing import FakeClock

import mujoco  # isort: skip  (after rtvla.robots.sim, which sets MUJOCO_GL)

__all__ = ["EpisodeOutcome", "place_objects", "record_episodes", "state_and_action_names"]

logger = logging.getLogger(__name__)

# Where the scene's cubes may be put: on the table top (x 1.65..2.35, y -0.95..-0.05 in
# scene.xml), within the arm's reach from the "table" place and the head camera's view.
_TABLE_X = (1.74, 1.86)
_TABLE_Y = (-0.72, -0.28)
_MIN_GAP_M = 0.09
_PERCEPTION_HZ = 10.0


@dataclass
class EpisodeOutcome:
    index: int
    seed: int
    success: bool
    kept: bool
    frames: int
    sim_time_s: float
    wall_s: float
    reason: str
    placements: dict[str, list[float]]

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def state_and_action_names(robot: SimRobot) -> tuple[list[str], list[str]]:
    joints = list(robot.limits.joint_names)
    return ([*joints, "gripper", "base_x", "base_y", "base_yaw"],
            [*joints, "gripper", "base_vx", "base_vy", "base_wz"])


def place_objects(robot: SimRobot, rng: np.random.Generator, *,
                  x_range: tuple[float, float] = _TABLE_X, y_range: tuple[float, float] = _TABLE_Y,
                  min_gap_m: float = _MIN_GAP_M) -> dict[str, list[float]]:
    """Put every object of the scene at a random spot of the table, none closer than
    ``min_gap_m`` to another, upright with a random yaw (lock-step robots only).

    ``SimRobot`` has no API to place objects, so this writes the qpos of each object's
    free joint through the robot's model and data, then recomputes the kinematics.
    """
    if not robot.lockstep:
        raise RecordError("place_objects needs a lock-step SimRobot (no physics thread running)")
    m, d = robot.model, robot.data
    placed: dict[str, list[float]] = {}
    for name in robot.object_names():
        spec = robot.scene.objects[name]
        bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, spec.body)
        jnt = int(m.body_jntadr[bid])
        qadr, vadr = int(m.jnt_qposadr[jnt]), int(m.jnt_dofadr[jnt])
        z = float(d.qpos[qadr + 2])  # resting height from the keyframe
        for _ in range(1000):
            xy = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
            if all(np.hypot(*(xy - p[:2])) >= min_gap_m for p in map(np.array, placed.values())):
                break
        else:
            raise RecordError(f"cannot place {name!r} {min_gap_m} m from the other objects in the area")
        yaw = rng.uniform(-0.3, 0.3)
        d.qpos[qadr:qadr + 3] = (xy[0], xy[1], z)
        d.qpos[qadr + 3:qadr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        d.qvel[vadr:vadr + 6] = 0.0
        placed[name] = [float(xy[0]), float(xy[1]), z]
    mujoco.mj_forward(m, d)
    return placed


def _color_classes(scene: Any) -> list[ColorClass]:
    """Colour classes named after the scene's objects and receptacles, told apart by size
    where they share a colour (the rule the runtime's stack uses)."""
    classes, largest = [], {}
    for name, spec in scene.objects.items():
        classes.append(ColorClass(label=name, color=spec.color, min_size_m=0.4 * spec.size_m,
                                  max_size_m=2.5 * spec.size_m))
        largest[spec.color] = max(largest.get(spec.color, 0.0), spec.size_m)
    for name, spec in scene.receptacles.items():
        classes.append(ColorClass(label=name, color=spec.color,
                                  min_size_m=2.5 * largest.get(spec.color, 0.04)))
    return classes


def _nearest_place(robot: SimRobot) -> str | None:
    pose = robot.read_state().base_pose
    best = min(robot.scene.places.values(),
               key=lambda p: math.hypot(pose[0] - p.pose[0], pose[1] - p.pose[1]))
    return best.name if math.hypot(pose[0] - best.pose[0], pose[1] - best.pose[1]) < 0.5 else None


class _Episode:
    """One lock-step episode recording into ``writer``."""

    def __init__(self, writer: LeRobotDatasetWriter, task: str, fps: int, camera_size: tuple[int, int],
                 rng: np.random.Generator, on_second: Callable[[float], None] | None = None) -> None:
        self.on_second = on_second
        self.clock = FakeClock(1_000_000_000)
        self.recorder = Recorder(clock=self.clock)
        self.robot = SimRobot(load_scene(), lockstep=True, clock=self.clock)
        self.robot.connect()
        self.placements = place_objects(self.robot, rng)
        self.setpoints = LatestValue("setpoints", clock=self.clock)
        self.control = ControlLoop(self.robot, self.setpoints, recorder=self.recorder, clock=self.clock)
        self.navigator = Navigator.for_sim(self.robot, self.setpoints, recorder=self.recorder, clock=self.clock)
        w, h = camera_size
        self.camera = SimCamera(self.robot, width=w, height=h, threaded=False, clock=self.clock, depth=True)
        self.camera.open()
        self.detections = LatestValue("detections", clock=self.clock)
        self.detector = ColorDetector(classes=_color_classes(self.robot.scene))
        world = WorldModel(self.detections, self.camera.camera_pose_world,
                           labels=labels_for_scene(self.robot.scene), clock=self.clock)
        ctx = SkillContext(read_state=self.robot.read_state, setpoints=SetpointWriter(self.setpoints, clock=self.clock),
                           navigator=self.navigator, kinematics=self.robot.kinematics, world=world,
                           scene=SceneInfo.from_sim(self.robot), settings=SkillSettings(),
                           recorder=self.recorder, clock=self.clock)
        self.executor = TaskExecutor(ctx)
        self.driver = LockstepDriver(self.robot, self.control, self.clock, navigator=self.navigator)
        self.writer, self.task, self.fps = writer, task, fps
        self.names = state_and_action_names(self.robot)
        self._next_frame_ns = self.clock.now_ns()
        self._frame_ns = 1e9 / fps
        self._next_detect_ns = self.clock.now_ns()
        self._action = self._hold_action()
        self.driver.every(1e9 / self.driver.period_ns, self._tick)

    def _hold_action(self) -> np.ndarray:
        s = self.robot.read_state()
        return np.concatenate([s.q, [s.gripper], np.zeros(3)])

    def _tick(self, now_ns: int) -> None:
        if now_ns < self._next_frame_ns:
            return
        self._next_frame_ns += self._frame_ns
        if self.on_second is not None and self.writer.frames % self.fps == 0:
            self.on_second(self.driver.sim_time_s)
        frame = self.camera.read()
        if frame is None:
            raise RecordError("the simulated camera delivered no frame")
        if now_ns >= self._next_detect_ns:  # perception at its own rate on the same frames
            self._next_detect_ns += 1e9 / _PERCEPTION_HZ
            t0 = time.perf_counter()
            items = self.detector.detect(frame.image, depth=frame.depth, intrinsics=frame.intrinsics)
            size = (frame.image.shape[1], frame.image.shape[0])
            self.detections.publish(Detections(
                items=tuple(items), frame_seq=frame.seq, frame_stamp_ns=frame.stamp_ns,
                processing_s=time.perf_counter() - t0, frame_size=size, resolution=size, detector="color"))
        sample = self.setpoints.latest()
        if sample is not None:  # the action is the setpoint the control loop follows now
            sp, a, dof = sample.value, self._action.copy(), len(self.robot.limits.joint_names)
            if sp.arm_q is not None:
                a[:dof] = sp.arm_q
            if sp.gripper is not None:
                a[dof] = sp.gripper
            if sp.base_vel is not None:  # None: unchanged, as the control loop reads it
                a[dof + 1:] = sp.base_vel
            self._action = a
        s = self.robot.read_state()
        state = np.concatenate([s.q, [s.gripper], s.base_pose])
        self.writer.add_frame(state, self._action, {"head": np.asarray(frame.image)}, task=self.task)

    def run(self, timeout_s: float) -> tuple[bool, str]:
        caps = Capabilities.from_scene(self.robot.scene)
        plan = RulePlanner(caps).plan_sync(self.task, PlanContext(
            capabilities=caps, robot_place=_nearest_place(self.robot), holding=self.robot.holding))
        result = self.driver.run_plan(self.executor, plan, timeout_s=timeout_s)
        return result.success, result.reason

    def close(self) -> None:
        self.camera.close()
        self.robot.close()


def record_episodes(
    out: str | Path,
    task: str,
    *,
    episodes: int,
    fps: int = 30,
    seed: int = 0,
    keep_failures: bool = False,
    camera_size: tuple[int, int] = (320, 240),
    timeout_s: float = 120.0,
    progress: Callable[[int, EpisodeOutcome | None], None] | None = None,
    on_second: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Run ``task`` ``episodes`` times and write the kept ones to the dataset at ``out``.

    Episode ``i`` places the objects with seed ``(seed, i)``, so a run is reproducible and
    a later call with another ``seed`` adds different placements. ``progress(i, None)``
    is called when episode ``i`` starts and ``progress(i, outcome)`` when it ends;
    ``on_second(sim_time_s)`` once per simulated second (a progress bar's heartbeat).
    Returns the summary (per-episode outcomes, kept count, the dataset's ``info.json``).
    """
    if episodes < 1:
        raise RecordError(f"--episodes must be >= 1, got {episodes}")
    if int(fps) != fps or not 1 <= fps <= 100:
        raise RecordError(f"--fps must be an integer in 1..100 (the simulation ticks at 100 Hz), got {fps}")
    probe = SimRobot(load_scene(), lockstep=True)
    state_names, action_names = state_and_action_names(probe)
    # Refuse an instruction the planner does not understand before any file is written.
    caps = Capabilities.from_scene(probe.scene)
    RulePlanner(caps).plan_sync(task, PlanContext(capabilities=caps, robot_place=_nearest_place(probe)))
    w, h = camera_size
    writer = LeRobotDatasetWriter(out, fps=int(fps), state_names=state_names, action_names=action_names,
                                  cameras={"head": (h, w)}, robot_type="rtvla_sim_mobile_manipulator")
    outcomes: list[EpisodeOutcome] = []
    t_all = time.perf_counter()
    try:
        for i in range(episodes):
            if progress is not None:
                progress(i, None)
            rng = np.random.default_rng([seed, i])
            t0 = time.perf_counter()
            ep = _Episode(writer, task, int(fps), camera_size, rng, on_second)
            try:
                success, reason = ep.run(timeout_s)
            finally:
                ep.close()
            keep = success or keep_failures
            frames = writer.frames
            if keep:
                writer.save_episode()
            else:
                writer.discard_episode()
            outcome = EpisodeOutcome(i, seed, success, keep, frames, ep.driver.sim_time_s,
                                     time.perf_counter() - t0, reason, ep.placements)
            outcomes.append(outcome)
            logger.info("episode %d: %s in %.1f s simulated (%d frames)%s", i,
                        "succeeded" if success else f"failed ({reason})", outcome.sim_time_s, frames,
                        "" if keep else ", discarded")
            if progress is not None:
                progress(i, outcome)
    finally:
        info = writer.close()
    return {"dataset": str(out), "task": task, "fps": int(fps), "seed": seed,
            "episodes": [o.as_dict() for o in outcomes], "kept": sum(o.kept for o in outcomes),
            "succeeded": sum(o.success for o in outcomes), "wall_s": time.perf_counter() - t_all,
            "info": info}
