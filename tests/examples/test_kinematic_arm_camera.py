"""The example's synthetic RGB-D camera: exact depth and intrinsics, so rtvla's colour
detector finds the cubes and the bin at their true 3D positions."""

from __future__ import annotations

import math

import numpy as np
import pytest


@pytest.fixture
def camera(arm):
    from rtvla_kinematic_arm.camera import SyntheticRGBDCamera

    cam = SyntheticRGBDCamera(arm.scene, arm.snapshot, arm.kinematics, threaded=False)
    cam.open()
    yield cam
    cam.close()


def _world(cam, frame, det) -> np.ndarray:
    T = cam.camera_pose_world(frame.seq)
    return T[:3, :3] @ np.asarray(det.position) + T[:3, 3]


def test_frames_are_what_perception_expects(arm, camera) -> None:
    from rtvla.perception.frames import FrameSource, check_depth, check_image

    assert isinstance(camera, FrameSource)
    f = camera.read()
    check_image(f.image)
    check_depth(f.depth, f.image.shape)
    k = f.intrinsics
    assert (k.width, k.height) == (320, 240)
    assert k.fy == pytest.approx(120 / math.tan(arm.scene.robot.camera_fovy_rad / 2))
    assert camera.read().seq == f.seq + 1


def test_depth_is_the_exact_distance_along_the_optical_axis(arm, camera) -> None:
    arm.teleport_base(arm.scene.places["table"].pose)
    f = camera.read()
    T = camera.camera_pose_world(f.seq)
    k = f.intrinsics
    for (u, v) in ((160, 100), (40, 200), (300, 60)):
        z = float(f.depth[v, u])
        p = T[:3, :3] @ np.array(((u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z)) + T[:3, 3]
        # every pixel's back-projected point lies on a surface of the room: its height is
        # the floor, a static top, or a wall/box side (then inside the room or on a box face)
        on_top = abs(p[2] - arm.scene.support_height(p[0], p[1])) < 1e-3
        on_wall = max(abs(p[0]), abs(p[1])) > 2.999
        on_side = any(b.contains_xy(p[0] - 1e-3 * s, p[1]) or b.contains_xy(p[0], p[1] - 1e-3 * s)
                      for b in arm.scene.static_boxes() for s in (-1, 1)) and p[2] <= 0.41
        assert on_top or on_wall or on_side, (u, v, p)


def test_colour_detector_finds_cubes_and_bin_in_3d(arm, camera) -> None:
    from rtvla.perception.color import ColorDetector

    arm.teleport_base(arm.scene.places["table"].pose)
    f = camera.read()
    dets = {d.label: d for d in ColorDetector().detect(f.image, depth=f.depth, intrinsics=f.intrinsics)}
    assert {"red", "green", "blue"} <= set(dets)
    for label, name in (("red", "red_cube"), ("green", "green_cube")):
        seen = _world(camera, f, dets[label])
        assert np.linalg.norm(seen - arm.object_position(name)) < 0.03, (name, seen)
    bin_seen = _world(camera, f, dets["blue"])
    assert np.hypot(*(bin_seen[:2] - arm.scene.drop_point("blue_bin")[:2])) < 0.04


def test_the_camera_sees_where_the_robot_put_the_cube(arm, camera) -> None:
    from rtvla.perception.color import ColorDetector
    from rtvla.robots.base import RobotCommand

    def go(q, seconds: float = 3.0, **kw) -> None:
        arm.send_command(RobotCommand(stamp_ns=0, arm=q, **kw))
        arm.advance(seconds)

    arm.teleport_base(arm.scene.places["table"].pose)
    st = arm.read_state()
    cube, drop = arm.object_position("red_cube"), arm.scene.drop_point("blue_bin")
    grasp = arm.kinematics.ik(cube, st.q, st.base_pose)
    go(grasp, gripper=0.0)
    arm.send_command(RobotCommand(stamp_ns=0, gripper=1.0))
    arm.advance(0.5)
    go(arm.kinematics.ik(drop, grasp, st.base_pose))
    arm.send_command(RobotCommand(stamp_ns=0, gripper=0.0))
    arm.advance(0.3)
    go(st.q)  # stowed: out of the camera's view
    f = camera.read()
    red = [d for d in ColorDetector().detect(f.image, depth=f.depth, intrinsics=f.intrinsics)
           if d.label == "red"]
    assert red, "the cube in the bin is not seen"
    seen = _world(camera, f, red[0])
    assert np.linalg.norm(seen - arm.object_position("red_cube")) < 0.03
    assert np.hypot(*(seen[:2] - drop[:2])) < 0.05 and seen[2] < drop[2] - 0.05
    then = camera.camera_pose_world(f.seq)
    arm.teleport_base((0.0, -1.0, 0.0))
    now = camera.read()
    assert np.allclose(camera.camera_pose_world(now.seq)[:2, 3], (-0.1, -1.0))  # the mast moved along
    assert np.allclose(camera.camera_pose_world(f.seq), then)  # each frame keeps its own pose


def test_threaded_camera_delivers_newest_frames(arm, until) -> None:
    from rtvla_kinematic_arm.camera import SyntheticRGBDCamera

    with SyntheticRGBDCamera(arm.scene, arm.snapshot, arm.kinematics, rate_hz=50) as cam:
        first = cam.wait_newer(0, timeout=5.0)
        assert first is not None
        later = cam.wait_newer(first.seq + 3, timeout=5.0)
        assert later is not None and later.seq > first.seq + 3
        assert cam.read().seq >= later.seq
        assert until(lambda: cam.frames_rendered >= later.seq, 1.0)
    assert cam.read() is None  # closed
