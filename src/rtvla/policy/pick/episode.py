"""Seeded pick episodes in lock-step simulation with rendered perception.

One episode: the simulated robot stands in front of the table (its base pose jittered by a
few centimetres and degrees, as the navigator leaves it), the scene's cubes lie at seeded
random positions on the table, and one of them is the target. The world model is fed only
by perception: the head camera renders (RGB + depth, 320x240, 5 Hz), the colour detector
finds the cubes in 3D, and :class:`~rtvla.action.world.WorldModel` puts them in the world.
The simulator's true cube positions are used for nothing but scoring.

Cubes are placed by writing their free joints' ``qpos`` through the robot's MuJoCo model and
data (``SimRobot`` has no object-placement API; lock-step mode has no physics thread, so
nothing races the write).

Usage::

    placement = sample_placement(seed=7, scene=load_scene())
    with PickEpisode(placement) as ep:
        ep.look(1.0)                         # let perception see the table for a second
        result = ep.run_pick(ep.make_executor(), timeout_s=40)
        ep.success(result)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from rtvla.action.control import ControlLoop
from rtvla.action.executor import ExecutionResult, LockstepDriver, TaskExecutor
from rtvla.action.skills import (
    SKILLS,
    SceneInfo,
    SetpointWriter,
    SkillContext,
    SkillFn,
    SkillSettings,
)
from rtvla.action.world import WorldModel, labels_for_scene
from rtvla.channels import LatestValue
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder
from rtvla.perception.color import ColorClass, ColorDetector
from rtvla.perception.detections import Detections
from rtvla.robots.base import RobotCommand
from rtvla.robots.sim import SimRobot
from rtvla.robots.sim.camera import SimCamera
from rtvla.robots.sim.scene import SceneConfig, load_scene
from rtvla.timing import FakeClock

__all__ = [
    "CARRY_Q",
    "TABLE_REGION",
    "PickEpisode",
    "Placement",
    "apply_placement",
    "pick_plan",
    "sample_placement",
]

logger = logging.getLogger(__name__)

#: Where cube centres may lie (world x, y ranges): the table's near half, within the arm's reach
#: from the table place and inside the head camera's view with the arm stowed.
TABLE_REGION = ((1.70, 1.95), (-0.82, -0.18))
#: Cube centre height resting on the table top (z = 0.45) for the 4 cm cubes.
TABLE_Z = 0.47
#: The arm pose every pick starts from and stows to (the scene keyframe's folded arm).
CARRY_Q = (0.0, -0.4, 2.6, 1.2, 0.0)
_MIN_SPACING_M = 0.085
_BASE_JITTER = (0.03, 0.03, 0.05)  # metres, metres, radians
_CAMERA_SIZE = (320, 240)
_PERCEPTION_HZ = 5.0


@dataclass(frozen=True)
class Placement:
    """One seeded episode: where each cube lies (world x, y), which one to pick, the base pose."""

    seed: int
    target: str
    cubes: Mapping[str, tuple[float, float]]
    base_pose: tuple[float, float, float]
    start_q: tuple[float, ...] = CARRY_Q

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "target": self.target, "cubes": dict(self.cubes),
                "base_pose": list(self.base_pose), "start_q": list(self.start_q)}


def sample_placement(seed: int, scene: SceneConfig | None = None, *, start_q_noise: float = 0.0) -> Placement:
    """A random, reproducible placement for ``seed``: every cube of the scene at a random spot
    in :data:`TABLE_REGION` (at least 8.5 cm apart), a random target, the table place's base
    pose jittered, and (``start_q_noise`` > 0) the start arm pose jittered by up to that many
    radians per joint."""
    scene = scene if scene is not None else load_scene()
    names = sorted(scene.objects)
    if not names:
        raise ConfigError("the scene has no objects to pick")
    rng = np.random.default_rng(seed)
    (x0, x1), (y0, y1) = TABLE_REGION
    cubes: dict[str, tuple[float, float]] = {}
    for name in names:
        for _ in range(1000):
            xy = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
            if all(math.dist(xy, other) >= _MIN_SPACING_M for other in cubes.values()):
                cubes[name] = xy
                break
        else:  # pragma: no cover (three cubes always fit)
            raise ConfigError(f"could not place {name} {_MIN_SPACING_M} m from the others")
    target = names[int(rng.integers(len(names)))]
    place = np.asarray(scene.place("table").pose, dtype=float)
    base = place + rng.uniform(-1.0, 1.0, 3) * np.asarray(_BASE_JITTER)
    q = np.asarray(CARRY_Q) + rng.uniform(-1.0, 1.0, len(CARRY_Q)) * start_q_noise
    return Placement(seed=int(seed), target=target, cubes=cubes,
                     base_pose=tuple(float(v) for v in base), start_q=tuple(float(v) for v in q))


def apply_placement(sim: SimRobot, placement: Placement) -> None:
    """Reset ``sim`` and put the base, the arm and every cube where ``placement`` says."""
    import mujoco  # after rtvla.robots.sim (imported above) has chosen the GL backend

    sim.reset()
    m, d = sim.model, sim.data
    for name, (x, y) in placement.cubes.items():
        bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, sim.scene.objects[name].body)
        jnt = int(m.body_jntadr[bid])
        qadr, vadr = int(m.jnt_qposadr[jnt]), int(m.jnt_dofadr[jnt])
        d.qpos[qadr : qadr + 7] = (x, y, TABLE_Z, 1.0, 0.0, 0.0, 0.0)
        d.qvel[vadr : vadr + 6] = 0.0
    arm = [int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, j)])
           for j in sim.scene.robot.arm_joints]
    d.qpos[arm] = placement.start_q
    mujoco.mj_forward(m, d)
    sim.teleport_base(placement.base_pose)
    # The arm's position servos must hold the new pose, not pull back to the keyframe's.
    sim.send_command(RobotCommand(stamp_ns=sim.read_state().stamp_ns, arm=np.asarray(placement.start_q)))


def pick_plan(target: str) -> list[dict[str, Any]]:
    """The one-step plan an episode executes."""
    return [{"type": "manipulate", "parameters": {"operation": "pick", "object": target}}]


def scene_color_classes(scene: SceneConfig) -> list[ColorClass]:
    """One colour class per scene object, bounded by its metric size (so a bin of the same
    colour is not taken for a cube), as the runtime configures the detector."""
    return [ColorClass(name, spec.color, min_size_m=0.4 * spec.size_m, max_size_m=2.5 * spec.size_m)
            for name, spec in scene.objects.items()]


@dataclass
class _Perception:
    camera: SimCamera
    detector: ColorDetector
    channel: LatestValue
    frames: int = 0
    render_s: float = 0.0

    def step(self, now_ns: int) -> None:
        t0 = time.perf_counter()
        f = self.camera.read()
        if f is None:
            return
        items = self.detector.detect(f.image, depth=f.depth, intrinsics=f.intrinsics)
        size = (f.image.shape[1], f.image.shape[0])
        self.channel.publish(Detections(
            items=tuple(items), frame_seq=f.seq, frame_stamp_ns=f.stamp_ns,
            processing_s=time.perf_counter() - t0, frame_size=size, resolution=size,
            detector=self.detector.name))
        self.frames += 1
        self.render_s += time.perf_counter() - t0


@dataclass
class PickEpisode:
    """A lock-step stack (SimRobot, ControlLoop, rendered perception, world model, skill
    context) set up for one :class:`Placement`. A context manager: the camera's GL context
    and the simulator are released on exit.

    ``settings``: executor settings (default: :class:`SkillSettings` with ``carry_q`` =
    :data:`CARRY_Q`, so every pick stows to the same pose).
    """

    placement: Placement
    settings: SkillSettings | None = None
    scene: SceneConfig | None = None
    sim: SimRobot = field(init=False)
    clock: FakeClock = field(init=False)
    recorder: Recorder = field(init=False)
    ctx: SkillContext = field(init=False)
    control: ControlLoop = field(init=False)
    driver: LockstepDriver = field(init=False)
    world: WorldModel = field(init=False)
    perception: _Perception = field(init=False)

    def __post_init__(self) -> None:
        self.clock = clock = FakeClock(1_000_000_000)
        self.recorder = rec = Recorder(clock=clock)
        self.sim = sim = SimRobot(self.scene, lockstep=True, clock=clock)
        sim.connect()
        try:
            apply_placement(sim, self.placement)
            cam = SimCamera(sim, width=_CAMERA_SIZE[0], height=_CAMERA_SIZE[1], threaded=False, clock=clock)
            cam.open()
        except BaseException:
            sim.close()
            raise
        channel = LatestValue("detections", clock=clock)
        self.perception = _Perception(cam, ColorDetector(classes=scene_color_classes(sim.scene)), channel)
        self.world = WorldModel(channel, cam.camera_pose_world, labels=labels_for_scene(sim.scene),
                                clock=clock)
        sp = LatestValue("setpoints", clock=clock)
        self.control = ControlLoop(sim, sp, recorder=rec, clock=clock)
        settings = self.settings or SkillSettings(carry_q=CARRY_Q)
        self.ctx = SkillContext(
            read_state=sim.read_state, setpoints=SetpointWriter(sp, clock=clock), navigator=None,
            kinematics=sim.kinematics, world=self.world, scene=SceneInfo.from_sim(sim),
            settings=settings, recorder=rec, clock=clock)
        self.driver = LockstepDriver(sim, self.control, clock)
        self.driver.every(_PERCEPTION_HZ, self.perception.step)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self.perception.camera.close()
        self.sim.close()

    def __enter__(self) -> PickEpisode:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- running ---------------------------------------------------------------------------

    def look(self, seconds: float = 1.0) -> bool:
        """Step with the arm still until perception has a fresh estimate of the target (at most
        ``seconds`` of simulated time); True when it has one."""
        target = self.placement.target

        def seen() -> bool:
            self.world.update()
            return self.world.estimate(target) is not None

        return self.driver.run_until(seen, seconds)

    def make_executor(self, skills: Mapping[str, SkillFn] | None = None) -> TaskExecutor:
        """An executor over this episode's context (default: the scripted skills)."""
        return TaskExecutor(self.ctx, skills=dict(SKILLS if skills is None else skills))

    def run_pick(self, executor: TaskExecutor, *, timeout_s: float = 45.0) -> ExecutionResult:
        """Execute ``manipulate(pick target)`` in simulated time."""
        return self.driver.run_plan(executor, pick_plan(self.placement.target), timeout_s=timeout_s)

    def every(self, rate_hz: float, fn: Callable[[int], Any]) -> None:
        """Also call ``fn(now_ns)`` at ``rate_hz`` while stepping (recording, say)."""
        self.driver.every(rate_hz, fn)

    def success(self, result: ExecutionResult) -> bool:
        """The pick succeeded and the simulator agrees: the target is held and off the table."""
        target = self.placement.target
        lifted = float(self.sim.object_position(target)[2]) > TABLE_Z + 0.05
        return bool(result.success and self.sim.holding == target and lifted)

    def true_position(self, name: str | None = None) -> np.ndarray:
        """The simulator's position of ``name`` (default: the target), for scoring only."""
        return self.sim.object_position(name or self.placement.target)
