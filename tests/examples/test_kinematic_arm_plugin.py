"""The example plug-in through rtvla: found as an entry point, its options validated, its
embodiment driving rtvla's skills (lock-step, rendered perception) and hosted by the
control process."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from rtvla import parts
from rtvla.errors import PartError
from rtvla.robots.base import Robot
from rtvla.robots.embodiment import Embodiment


def test_found_as_an_entry_point_of_its_distribution() -> None:
    ref = parts.resolve("robot", "kinematic_arm")
    assert ref.origin == "entry point of rtvla-kinematic-arm 0.1.0"
    assert ref.target == "rtvla_kinematic_arm:make_embodiment"
    emb = parts.build("robot", "kinematic_arm", {"lockstep": True}, expect=Embodiment)
    try:
        assert isinstance(emb.robot, Robot) and emb.has_base and emb.has_arm and emb.process_safe
        assert set(emb.cameras) == {"head"} and emb.cameras["head"].depth
    finally:
        emb.close()


def test_listed_by_rtvla_parts() -> None:
    from typer.testing import CliRunner

    from rtvla.cli.main import app

    res = CliRunner().invoke(app, ["parts", "robot", "--check", "--json", "-"])
    assert res.exit_code == 0, res.output
    row = next(r for r in json.loads(res.output)["robot"] if r["name"] == "kinematic_arm")
    assert row["distribution"] == "rtvla-kinematic-arm" and row["loads"]
    assert {"rate_hz", "camera", "scene", "lockstep"} <= set(row["options"])


@pytest.mark.parametrize(("options", "field"), [
    ({"rate_hz": -1}, r"robot\.options\.rate_hz: Input should be greater than 0"),
    ({"camera": {"widht": 320}}, r"robot\.options\.camera\.widht: unknown key"),
    ({"scene": "/no/such/room.toml"}, r"kinematic_arm scene /no/such/room\.toml does not exist"),
])
def test_bad_options_name_the_field(options, field) -> None:
    with pytest.raises(PartError, match=field):
        parts.build("robot", "kinematic_arm", options)


def test_world_knowledge_for_planning() -> None:
    emb = parts.build("robot", "rtvla_kinematic_arm:make_embodiment", {"lockstep": True})
    w = emb.world
    assert set(w.places) == {"home", "table", "bench"}
    assert w.locations() == {"red_cube": "table", "green_cube": "table", "blue_bin": "table"}
    assert set(w.surfaces) == {"table", "bench"} and w.surfaces["bench"].height_m == pytest.approx(0.30)
    assert w.drop_points()["blue_bin"][2] == pytest.approx(0.51)
    assert all(w.map.is_free(*p.pose[:2]) for p in w.places.values())
    assert not w.map.is_free(1.4, 0.0)  # the table
    from rtvla.language import Capabilities
    from rtvla.language.rules import RulePlanner
    from rtvla.language.schema import Workspace

    caps = Capabilities.from_scene(w, workspace=Workspace(x_min=w.workspace[0], x_max=w.workspace[1],
                                                           y_min=w.workspace[2], y_max=w.workspace[3]))
    plan = RulePlanner(caps).plan_sync("put the red cube in the blue bin")
    # the bin stands on the same table as the cube: no second drive
    assert [a.type for a in plan.actions] == ["navigate", "perceive", "manipulate", "manipulate"]
    assert plan.actions[0].parameters.target == "table"
    emb.close()


def _lockstep_run(dest: str):
    """navigate, perceive (camera + colour detector), pick, navigate, place — lock-step."""
    from rtvla.action.control import ControlLoop
    from rtvla.action.executor import LockstepDriver, TaskExecutor
    from rtvla.action.navigation import Navigator
    from rtvla.action.skills import SceneInfo, SetpointWriter, SkillContext
    from rtvla.action.world import WorldModel, labels_for_scene
    from rtvla.channels import LatestValue
    from rtvla.metrics import Recorder
    from rtvla.perception.color import ColorClass, ColorDetector
    from rtvla.perception.detections import Detections
    from rtvla.timing import FakeClock

    clock = FakeClock(1_000_000_000)
    emb = parts.build("robot", "kinematic_arm", {"lockstep": True, "camera": {"threaded": False}},
                      expect=Embodiment, clock=clock)
    robot, w, cam = emb.robot, emb.world, emb.cameras["head"]
    robot.connect()
    cam.source.open()
    sp, rec = LatestValue("setpoints", clock=clock), Recorder(clock=clock)
    nav = Navigator(w.map, robot, sp, places=w.places, recorder=rec, clock=clock)
    det_ch = LatestValue("detections", clock=clock)
    ctx = SkillContext(
        read_state=robot.read_state, setpoints=SetpointWriter(sp, clock=clock), navigator=nav,
        kinematics=emb.kinematics,
        world=WorldModel(det_ch, cam.pose_fn, labels=labels_for_scene(w), clock=clock),
        scene=SceneInfo(drop_points=w.drop_points(), locations=w.locations(), surfaces=w.put_down_points()),
        recorder=rec, clock=clock,
    )
    # Colour classes named after the robot's things (what the runtime derives from the world).
    detector = ColorDetector(classes=[ColorClass(n, o.color) for n, o in w.objects.items()]
                             + [ColorClass(n, r.color) for n, r in w.receptacles.items()])

    def perception(now_ns: int) -> None:
        f = cam.source.read()
        items = detector.detect(f.image, depth=f.depth, intrinsics=f.intrinsics)
        size = (f.image.shape[1], f.image.shape[0])
        det_ch.publish(Detections(items=tuple(items), frame_seq=f.seq, frame_stamp_ns=f.stamp_ns,
                                  processing_s=0.0, frame_size=size, resolution=size, detector="color"))

    driver = LockstepDriver(robot, ControlLoop(robot, sp, recorder=rec, clock=clock), clock, navigator=nav)
    driver.every(5.0, perception)
    plan = [{"type": "navigate", "parameters": {"target": "table"}},
            {"type": "perceive", "parameters": {"target": "red_cube"}},
            {"type": "manipulate", "parameters": {"operation": "pick", "object": "red_cube"}},
            {"type": "navigate", "parameters": {"target": w.locations().get(dest, dest)}},
            {"type": "manipulate", "parameters": {"operation": "place", "object": "red_cube",
                                                  "destination": dest}}]
    try:
        result = driver.run_plan(TaskExecutor(ctx), plan, timeout_s=120)
        return result, robot.object_position("red_cube"), w
    finally:
        emb.close()


def test_pick_and_place_into_the_bin_with_rtvla_skills() -> None:
    result, cube, w = _lockstep_run("blue_bin")
    assert result.success, result.reason
    assert result.steps[1].detail["source"] == "detections"
    seen = np.array(result.steps[1].detail["position"])
    assert np.linalg.norm(seen - w.objects["red_cube"].position) < 0.03
    assert result.steps[4].message == "red_cube is in blue_bin"
    assert np.hypot(*(cube[:2] - w.drop_points()["blue_bin"][:2])) < 0.05 and cube[2] == pytest.approx(0.43)


def test_put_down_on_the_bench_surface() -> None:
    result, cube, w = _lockstep_run("bench")
    assert result.success, result.reason
    assert result.steps[3].message.startswith("reached bench")
    point = w.put_down_points()["bench"]
    assert np.hypot(*(cube[:2] - point[:2])) < 0.03 and cube[2] == pytest.approx(point[2])


def test_the_control_process_hosts_the_robot(until) -> None:
    """Process placement: the child rebuilds the robot from the picklable factory and
    drives it; telemetry keeps the parent's camera on the robot that moves there."""
    from rtvla.action.control import ControlSettings
    from rtvla.action.control_process import ControlProcess
    from rtvla.action.setpoints import Setpoint
    from rtvla.timing import MONOTONIC

    emb = parts.build("robot", "kinematic_arm", {"camera": {"threaded": False}}, expect=Embodiment)
    factory = pickle.loads(pickle.dumps(emb.process_factory))
    proc = ControlProcess(factory, emb.dof, settings=ControlSettings(placement="process"),
                          telemetry=emb.telemetry.write, telemetry_size=emb.telemetry.size)
    proc.start()
    try:
        hosted = emb.hosted(emb.robot, proc.latest_telemetry)
        assert proc.wait_state(30.0) is not None
        start = proc.latest_state().state.base_pose.copy()
        cam = hosted.cameras["head"]
        cam.source.open()
        home = cam.source.read()
        goal = np.array(emb.robot.read_state().q)
        goal[0] = 2.0

        def driving() -> bool:
            proc.publish(Setpoint(stamp_ns=MONOTONIC.now_ns(), arm_q=goal,
                                  base_vel=np.array((0.3, 0.0, 0.0))))
            return proc.latest_state().state.base_pose[0] > start[0] + 0.15

        assert until(driving, 20.0, poll_s=0.05), proc.latest_state()
        proc.publish(Setpoint(stamp_ns=MONOTONIC.now_ns(), base_vel=np.zeros(3)))
        assert until(lambda: abs(proc.latest_state().state.q[0] - 2.0) < 0.02, 20.0)
        moved = cam.source.read()
        dx = cam.source.camera_pose_world(moved.seq)[0, 3] - cam.source.camera_pose_world(home.seq)[0, 3]
        assert dx > 0.15  # the parent's camera rode along with the robot in the child
        assert emb.robot.read_state().base_pose[0] == pytest.approx(start[0])  # the local one never moved
    finally:
        final = proc.stop()
        emb.close()
    assert final["robot"]["steps"] > 0 and final["robot"]["bumps"] == 0


def test_the_example_config_is_valid_for_rtvla() -> None:
    from typer.testing import CliRunner

    from rtvla.cli.main import app

    toml = Path(__file__).resolve().parents[2] / "examples" / "kinematic_arm" / "rtvla.toml"
    res = CliRunner().invoke(app, ["config", "check", str(toml)])
    assert res.exit_code == 0, res.output
    assert "valid" in res.output
