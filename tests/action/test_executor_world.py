"""World state from detections, and the executor driven by real (rendered) perception."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from rtvla.action.world import WorldModel, labels_for_scene
from rtvla.channels import LatestValue
from rtvla.errors import RenderError
from rtvla.timing import FakeClock


def _dets(items, *, seq=1, stamp_ns, stale=False):
    return SimpleNamespace(items=tuple(items), frame_seq=seq, frame_stamp_ns=stamp_ns, stale=stale)


def _det(label, pos, score=0.9):
    return SimpleNamespace(label=label, score=score, position=pos)


def _camera_at(x, y, z):
    """Camera looking along world +x (OpenCV axes: z forward, x right, y down)."""
    T = np.eye(4)
    T[:3, :3] = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)
    T[:3, 3] = (x, y, z)
    return T


def test_detections_become_world_estimates() -> None:
    clock = FakeClock(10_000_000_000)
    ch = LatestValue("detections", clock=clock)
    world = WorldModel(ch, lambda: _camera_at(1.0, 0.0, 1.0), labels={"red_cube": ["red"]},
                       clock=clock, max_age_s=0.5)
    assert world.update() == 0 and world.estimate("red_cube") is None
    # 2 m ahead, 0.5 m right (camera x), 0.3 m down (camera y)
    ch.publish(_dets([_det("red", (0.5, 0.3, 2.0)), _det("red", (9, 9, 9), score=0.5),
                      _det("green", None)], stamp_ns=clock.now_ns()))
    assert world.update() == 1
    est = world.estimate("red_cube")
    assert est is not None and est.source == "detections"
    assert np.allclose(est.position, (3.0, -0.5, 0.7))  # the higher-scoring red detection
    assert world.estimate("green") is None  # no depth, no position
    clock.advance(1.0)
    assert world.estimate("red_cube") is None  # too old for the default age
    assert world.estimate("red_cube", max_age_s=5.0) is not None


def test_scene_labels_use_colours_only_when_unambiguous() -> None:
    objs = {"red_cube": SimpleNamespace(color="red"), "blue_cube": SimpleNamespace(color="blue"),
            "blue_ball": SimpleNamespace(color="blue")}
    labels = labels_for_scene(SimpleNamespace(objects=objs))
    assert labels == {"red_cube": ["red"], "blue_cube": [], "blue_ball": []}
    clock = FakeClock(1)
    world = WorldModel(LatestValue("d", clock=clock), lambda: np.eye(4), labels=labels, clock=clock)
    assert world.name_of("red") == "red_cube" and world.name_of("blue") == "blue"


def test_stale_or_old_detections_are_not_used() -> None:
    clock = FakeClock(10_000_000_000)
    ch = LatestValue("detections", clock=clock)
    world = WorldModel(ch, lambda: np.eye(4), clock=clock, max_age_s=0.5, min_score=0.3)
    ch.publish(_dets([_det("red_cube", (0, 0, 1))], stamp_ns=clock.now_ns(), stale=True))
    assert world.update() == 0
    ch.publish(_dets([_det("red_cube", (0, 0, 1))], stamp_ns=clock.now_ns() - 2_000_000_000))
    assert world.update() == 0
    ch.publish(_dets([_det("red_cube", (0, 0, 1), score=0.1)], stamp_ns=clock.now_ns()))
    assert world.update() == 0
    assert world.ignored_stale == 2 and world.estimate("red_cube") is None


def test_pose_of_the_frame_is_used_when_the_source_keeps_it() -> None:
    clock = FakeClock(10_000_000_000)
    ch = LatestValue("detections", clock=clock)
    poses = {7: _camera_at(0.0, 0.0, 0.0)}

    def camera_pose(seq=None):
        if seq is None:
            return _camera_at(5.0, 5.0, 5.0)  # the camera has moved on since
        return poses[seq]

    world = WorldModel(ch, camera_pose, clock=clock)
    ch.publish(_dets([_det("cup", (0, 0, 1.0))], seq=7, stamp_ns=clock.now_ns()))
    world.update()
    assert np.allclose(world.estimate("cup").position, (1.0, 0.0, 0.0))
    ch.publish(_dets([_det("cup", (0, 0, 1.0))], seq=99, stamp_ns=clock.now_ns()))
    assert world.update() == 0  # pose of that frame unknown: not guessed


def _rendered_stack(lockstep_stack, make_detector):
    """A lock-step stack from ``home`` whose world model is fed by the sim camera (rendered
    at 5 Hz) through the detector ``make_detector(sim)`` builds; returns (stack, camera)."""
    from rtvla.action.navigation import Navigator
    from rtvla.perception.detections import Detections
    from rtvla.robots.sim.camera import SimCamera
    from rtvla.robots.sim.grid import occupancy_grid

    holder = {}

    def make_nav(sim, sp, clock, rec):
        return Navigator(occupancy_grid(sim.scene), sim, sp, places=sim.scene.places,
                         recorder=rec, clock=clock)

    def make_world(sim, clock):
        try:
            cam = SimCamera(sim, width=320, height=240, threaded=False, clock=clock)
            cam.open()
        except RenderError as exc:
            pytest.skip(f"no offscreen rendering here: {exc}")
        holder["cam"] = cam
        holder["channel"] = ch = LatestValue("detections", clock=clock)
        return WorldModel(ch, cam.camera_pose_world, labels=labels_for_scene(sim.scene), clock=clock)

    s = lockstep_stack("home", navigator=make_nav, world=make_world)
    cam, ch, detector = holder["cam"], holder["channel"], make_detector(s.sim)

    def perception_step(now_ns: int) -> None:
        f = cam.read()
        t0 = time.perf_counter()
        items = detector.detect(f.image, depth=f.depth, intrinsics=f.intrinsics)
        size = (f.image.shape[1], f.image.shape[0])
        ch.publish(Detections(items=tuple(items), frame_seq=f.seq, frame_stamp_ns=f.stamp_ns,
                              processing_s=time.perf_counter() - t0, frame_size=size,
                              resolution=size, detector="color"))

    s.driver.every(5.0, perception_step)
    return s, cam


def _fetch_and_place(obj: str, via: str, dest: str) -> list[dict]:
    return [
        {"type": "navigate", "parameters": {"target": "table"}},
        {"type": "perceive", "parameters": {"target": obj}},
        {"type": "manipulate", "parameters": {"operation": "pick", "object": obj}},
        {"type": "navigate", "parameters": {"target": via}},
        {"type": "manipulate", "parameters": {"operation": "place", "object": obj, "destination": dest}},
    ]


def test_put_red_cube_in_blue_bin_with_rendered_perception(lockstep_stack) -> None:
    """The real path: the sim camera renders, the color detector finds the cube in 3D, the
    world model places it in the world, and the executor picks and places from that."""
    from rtvla.perception.color import ColorDetector

    s, cam = _rendered_stack(lockstep_stack, lambda sim: ColorDetector())
    start = s.sim.object_position("red_cube")
    try:
        result = s.driver.run_plan(s.executor, _fetch_and_place("red_cube", "kitchen", "blue_bin"),
                                   timeout_s=120)
    finally:
        cam.close()
    assert result.success, result.reason
    seen = np.array(result.steps[1].detail["position"])
    assert result.steps[1].detail["source"] == "detections"
    assert np.linalg.norm(seen - start) < 0.04  # where the cube was
    cube = s.sim.object_position("red_cube")
    assert np.hypot(*(cube[:2] - s.sim.frame_pose("blue_bin", "body")[:2, 3])) < 0.08


@pytest.mark.parametrize(
    ("obj", "dest", "via"),
    [("blue_cube", "green_bin", "kitchen"),  # a blue bin stands beside: told apart by size
     ("green_cube", "table", "table")],      # put back down, checked with the camera
)
def test_scene_color_classes_tell_same_coloured_things_apart(lockstep_stack, obj, dest, via) -> None:
    """The runtime's colour classes (named after the scene's objects and receptacles, split
    by metric size) let the camera verify placements the arm would otherwise hide or confuse."""
    from rtvla.perception.color import ColorClass, ColorDetector
    from rtvla.robots.sim.embodiment import sim_world
    from rtvla.runtime.wiring import color_classes

    s, cam = _rendered_stack(lockstep_stack, lambda sim: ColorDetector(
        classes=[ColorClass(**c) for c in color_classes(sim_world(sim.scene))]))
    try:
        result = s.driver.run_plan(s.executor, _fetch_and_place(obj, via, dest), timeout_s=120)
    finally:
        cam.close()
    assert result.success, result.reason
    assert result.steps[1].detail["source"] == "detections"
