"""Fixtures for navigation and executor tests: synthetic maps and a kinematic holonomic base."""

from __future__ import annotations

import numpy as np
import pytest

from rtvla.action.grid import GridMap


def room_with_wall(
    *, size_m: float = 6.0, res: float = 0.05, wall_x: float = 0.0, gap_y: float | None = 2.0
) -> GridMap:
    """A square room centred on the origin, bordered by walls, with an internal wall at
    ``wall_x`` spanning y from the bottom wall up to ``gap_y`` (None: the full height)."""
    n = round(size_m / res)
    occ = np.zeros((n, n), dtype=bool)
    occ[:2, :] = occ[-2:, :] = True
    occ[:, :2] = occ[:, -2:] = True
    origin = (-size_m / 2, -size_m / 2)
    c = int((wall_x - origin[0]) / res)
    top = n if gap_y is None else int((gap_y - origin[1]) / res)
    occ[:top, c - 2 : c + 2] = True
    return GridMap.from_array(occ, origin_xy=origin, resolution=res)


@pytest.fixture
def wall_map() -> GridMap:
    return room_with_wall()


@pytest.fixture
def make_room():
    """The :func:`room_with_wall` factory."""
    return room_with_wall


@pytest.fixture
def kinematic_base():
    """The :class:`KinematicBase` class."""
    return KinematicBase


class KinematicBase:
    """Integrates base-frame velocity commands exactly (a perfect holonomic base)."""

    def __init__(self, pose: tuple[float, float, float]) -> None:
        self.pose = np.array(pose, dtype=float)

    def apply(self, vel: np.ndarray, dt: float) -> None:
        from rtvla.action.dwa import rollout

        self.pose = rollout(self.pose, np.asarray(vel, dtype=float)[None, :], np.array([dt]))[0, 0]


@pytest.fixture
def lockstep_stack():
    """Build a lock-step stack: SimRobot + ControlLoop + (optional) Navigator + executor.

    Returns a factory ``make(place="table", world=None, settings=None, navigator=True)`` that
    yields a namespace with ``sim, clock, recorder, setpoints, control, ctx, executor, driver``
    and ``navigator``.
    """
    from types import SimpleNamespace

    from rtvla.action.control import ControlLoop
    from rtvla.action.executor import LockstepDriver, TaskExecutor
    from rtvla.action.skills import SceneInfo, SetpointWriter, SkillContext, SkillSettings
    from rtvla.action.world import GroundTruthPerception
    from rtvla.channels import LatestValue
    from rtvla.metrics import Recorder
    from rtvla.robots.sim import SimRobot
    from rtvla.timing import FakeClock

    made = []

    def make(place="table", *, world=None, settings=None, navigator=None, progress=None):
        clock = FakeClock(1_000_000_000)
        rec = Recorder(clock=clock)
        sim = SimRobot(lockstep=True, clock=clock)
        sim.connect()
        made.append(sim)
        if place is not None:
            sim.teleport_base(sim.scene.place(place).pose)
        sp = LatestValue("setpoints", clock=clock)
        control = ControlLoop(sim, sp, recorder=rec, clock=clock)
        nav = navigator(sim, sp, clock, rec) if navigator is not None else None
        ctx = SkillContext(
            read_state=sim.read_state,
            setpoints=SetpointWriter(sp, clock=clock),
            navigator=nav,
            kinematics=sim.kinematics,
            world=world(sim, clock) if world is not None else GroundTruthPerception(sim, clock=clock),
            scene=SceneInfo.from_sim(sim),
            settings=settings or SkillSettings(),
            recorder=rec,
            clock=clock,
        )
        ex = TaskExecutor(ctx, on_progress=progress)
        driver = LockstepDriver(sim, control, clock, navigator=nav)
        return SimpleNamespace(sim=sim, clock=clock, recorder=rec, setpoints=sp, control=control,
                               ctx=ctx, executor=ex, driver=driver, navigator=nav)

    yield make
    for sim in made:
        sim.close()
