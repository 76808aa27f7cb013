"""The Embodiment type and the simulator's robot plug-in (``sim``) built through the resolver."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from rtvla import parts
from rtvla.errors import ConfigError, PartError
from rtvla.robots.base import Robot
from rtvla.robots.embodiment import (
    Embodiment,
    KnownObject,
    OccupancyMap,
    Place,
    Receptacle,
    Surface,
    WorldKnowledge,
    as_embodiment,
)


@pytest.fixture(scope="module")
def sim():
    emb = parts.build("robot", "sim", {"lockstep": True}, expect=Embodiment)
    yield emb
    emb.close()


def test_sim_embodiment_knows_its_world(sim) -> None:
    assert sim.has_base and sim.has_arm and sim.process_safe and sim.kinematics is not None
    assert isinstance(sim.robot, Robot) and sim.dof == 5
    w = sim.world
    assert set(w.places) == {"home", "table", "kitchen", "shelf"}
    assert set(w.objects) == {"red_cube", "green_cube", "blue_cube"}
    assert np.allclose(w.objects["red_cube"].position, (1.8, -0.7, 0.47), atol=1e-6)
    assert w.objects["red_cube"].color == "red" and w.objects["red_cube"].place == "table"
    assert np.allclose(w.receptacles["blue_bin"].drop_point, (-2.2, 3.4, 0.55))
    assert w.locations()["blue_bin"] == "kitchen"
    assert w.map is not None and w.map.resolution == 0.05
    assert w.map.is_free(*w.places["home"].pose[:2]) and not w.map.is_free(2.0, -0.5)  # the table
    x0, x1, y0, y1 = w.workspace
    assert -3.8 < x0 < -3.5 and 3.5 < x1 < 3.8 and -3.8 < y0 < -3.5 and 3.5 < y1 < 3.8


def test_sim_surfaces_come_from_the_scene_geometry(sim) -> None:
    s = sim.world.surfaces
    table, shelf = s["table"], s["shelf"]
    assert table.place == "table" and table.height_m == pytest.approx(0.45)
    assert 1.65 < table.point[0] < 2.35 and -0.95 < table.point[1] < -0.05  # on the table top
    for obj in sim.world.objects.values():  # clear of the cubes standing there
        assert np.hypot(*(table.point[:2] - obj.position[:2])) >= 0.08
    assert shelf.place == "shelf" and shelf.height_m == pytest.approx(0.7)
    assert -0.7 < shelf.point[0] < -0.3 and shelf.point[1] == pytest.approx(-1.5)
    assert s["counter"].place == "kitchen" and s["counter"].height_m == pytest.approx(0.40)
    for r in sim.world.receptacles.values():  # between the bins, not in one
        assert np.hypot(*(s["counter"].point[:2] - r.drop_point[:2])) >= 0.15
    down = sim.world.put_down_points()
    assert set(down) == {"table", "shelf", "kitchen"}
    assert down["shelf"][2] == pytest.approx(0.72)  # a 4 cm cube's centre resting there


def test_skills_and_planning_build_from_the_world(sim) -> None:
    from rtvla.action.skills import SceneInfo
    from rtvla.action.world import labels_for_scene
    from rtvla.language import Capabilities
    from rtvla.language.schema import Workspace
    from rtvla.robots.sim import load_scene
    from rtvla.runtime.wiring import color_classes

    w = sim.world
    info = SceneInfo(drop_points=w.drop_points(), locations=w.locations(), surfaces=w.put_down_points())
    old = SceneInfo.from_sim(sim.robot)
    assert info.locations == old.locations
    assert all(np.allclose(info.drop_points[k], old.drop_points[k]) for k in old.drop_points)
    assert "shelf" in info.surfaces and not old.surfaces  # what the sim never filled
    caps = Capabilities.from_scene(w, workspace=Workspace(x_min=w.workspace[0], x_max=w.workspace[1],
                                                           y_min=w.workspace[2], y_max=w.workspace[3]))
    assert set(caps.places) == set(w.places) and set(caps.receptacles) == {"blue_bin", "green_bin"}
    assert caps.locations == Capabilities.from_scene(load_scene()).locations
    scene = load_scene()
    assert labels_for_scene(w) == labels_for_scene(scene)
    classes = {c["label"]: c for c in color_classes(w)}
    assert set(classes) == {*scene.objects, *scene.receptacles}
    assert classes["blue_bin"]["min_size_m"] > classes["blue_cube"]["max_size_m"] * 0.9  # told apart by size


def test_sim_process_factory_is_picklable_and_builds_the_same_robot(sim) -> None:
    fr = pickle.loads(pickle.dumps(sim.process_factory))
    assert fr.target == "rtvla.robots.sim.embodiment:make_sim_robot"
    assert fr.options == {"lockstep": True}
    robot = fr()
    try:
        assert isinstance(robot, Robot) and robot.limits.joint_names == sim.robot.limits.joint_names
        assert robot.lockstep
    finally:
        robot.close()


def test_telemetry_mirrors_a_robot_running_elsewhere(sim) -> None:
    """The parent's camera follows the robot that the control process drives: its pose
    comes from the mirrored qpos once the embodiment is hosted."""
    from rtvla.robots.sim.embodiment import make_sim_robot

    tel = sim.telemetry
    assert tel.size == int(sim.robot.model.nq) + 1
    other = make_sim_robot(lockstep=True)  # stands in for the control process's robot
    other.connect()
    try:
        before = sim.cameras["head"].pose()
        other.teleport_base((1.27, -0.5, 0.0))
        buf = np.zeros(tel.size)
        tel.write(other, buf)
        hosted = sim.hosted(other, lambda: buf)
        assert hosted.is_hosted and hosted.robot is other and not sim.is_hosted
        after = hosted.cameras["head"].pose()
        moved = after[:3, 3] - before[:3, 3]
        assert np.allclose(moved[:2], np.array((1.27, -0.5)) - (-2.5, -2.5), atol=1e-6)
        assert tel.holding(buf) is None
        buf[-1] = 0.0
        assert tel.holding(buf) == other.object_names()[0]
    finally:
        tel.attach(lambda: None)  # back to the local robot for the other tests
        other.close()


def test_sim_options_are_validated_with_the_field_named() -> None:
    with pytest.raises(PartError, match=r"robot\.options\.camera\.width: .*greater than 0"):
        parts.build("robot", "sim", {"camera": {"width": 0}})
    with pytest.raises(PartError, match=r"robot\.options\.lockstepp: unknown key"):
        parts.build("robot", "sim", {"lockstepp": True})


def test_sim_picks_and_puts_down_on_a_surface_it_found() -> None:
    """A lock-step pick, then a put-down on the table's surface point (the object was not
    picked at a named place, so the skill needs the surface the embodiment found)."""
    from rtvla.action.control import ControlLoop
    from rtvla.action.executor import LockstepDriver, TaskExecutor
    from rtvla.action.skills import SceneInfo, SetpointWriter, SkillContext
    from rtvla.action.world import GroundTruthPerception
    from rtvla.channels import LatestValue
    from rtvla.metrics import Recorder
    from rtvla.timing import FakeClock

    clock = FakeClock(1_000_000_000)
    emb = parts.build("robot", "sim", {"lockstep": True}, expect=Embodiment, clock=clock)
    robot, w = emb.robot, emb.world
    robot.connect()
    try:
        robot.teleport_base(w.places["table"].pose)
        sp = LatestValue("setpoints", clock=clock)
        rec = Recorder(clock=clock)
        ctx = SkillContext(
            read_state=robot.read_state, setpoints=SetpointWriter(sp, clock=clock),
            kinematics=emb.kinematics, world=GroundTruthPerception(robot, clock=clock),
            scene=SceneInfo(drop_points=w.drop_points(), locations=w.locations(),
                            surfaces=w.put_down_points()),
            recorder=rec, clock=clock,
        )
        driver = LockstepDriver(robot, ControlLoop(robot, sp, recorder=rec, clock=clock), clock)
        plan = [{"type": "manipulate", "parameters": {"operation": "pick", "object": "red_cube"}},
                {"type": "manipulate", "parameters": {"operation": "place", "object": "red_cube",
                                                      "destination": "table"}}]
        result = driver.run_plan(TaskExecutor(ctx), plan, timeout_s=60)
        assert result.success, result.reason
        cube = robot.object_position("red_cube")
        target = w.put_down_points()["table"]
        assert np.hypot(*(cube[:2] - target[:2])) < 0.03 and abs(cube[2] - target[2]) < 0.01
    finally:
        emb.close()


def test_world_knowledge_checks_its_references() -> None:
    places = [Place("dock", (0, 0, 0))]
    with pytest.raises(ConfigError, match=r"objects\.cup\.place = 'shelf' is not a place; known: dock"):
        WorldKnowledge(places=places, objects=[KnownObject("cup", place="shelf")])
    with pytest.raises(ConfigError, match="'dock' is both in places and in objects"):
        WorldKnowledge(places=places, objects=[KnownObject("dock")])
    with pytest.raises(ConfigError, match=r"receptacles\.bin\.drop_point must be 3 finite"):
        Receptacle("bin", (0, float("nan"), 0))
    with pytest.raises(ConfigError, match=r"places\.a\.pose must be 3 finite"):
        Place("a", (0, 0))
    w = WorldKnowledge(places=places, surfaces=[Surface("bench", (1, 0, 0.5), place="dock")],
                       map=OccupancyMap(np.zeros((4, 6), bool), (0.0, 0.0), 0.5))
    assert w.workspace == (0.25, 2.75, 0.25, 1.75)
    assert np.allclose(w.put_down_points(0.1)["dock"], (1, 0, 0.55))
    with pytest.raises(KeyError, match="unknown target 'mug'"):
        w.place_for("mug")


def test_a_bare_robot_becomes_an_embodiment_without_a_base(sim) -> None:
    emb = as_embodiment(sim.robot)
    assert emb.robot is sim.robot and not emb.has_base and emb.has_arm and not emb.world.places
    with pytest.raises(ConfigError, match="must return an Embodiment or a Robot, got dict"):
        as_embodiment({})
    with pytest.raises(ConfigError, match="process_safe needs a process_factory"):
        Embodiment(robot=sim.robot, process_safe=True)
    d = sim.describe()
    assert d["cameras"]["head"]["frame"] == "base" and d["world"]["surfaces"]["shelf"]["height_m"] == 0.7
