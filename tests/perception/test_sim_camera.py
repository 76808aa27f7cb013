"""The pipeline on the real MuJoCo camera: the color detector's defaults find the scene."""

from __future__ import annotations

import numpy as np
import pytest

from rtvla.errors import RenderError
from rtvla.metrics import Recorder
from rtvla.perception import ColorDetector, FrameSource, PipelineSettings, VisionPipeline
from rtvla.perception.pipeline import PipelineStatus


@pytest.fixture
def sim_camera():
    from rtvla.robots.sim import SimRobot
    from rtvla.robots.sim.camera import SimCamera

    with SimRobot() as robot:
        try:
            cam = SimCamera(robot, width=640, height=480, threaded=False)
            cam.open()
        except RenderError as exc:
            pytest.skip(f"no offscreen rendering here: {exc}")
        try:
            yield robot, cam
        finally:
            cam.close()


def test_color_defaults_find_the_cubes_in_3d(sim_camera):
    robot, cam = sim_camera
    assert isinstance(cam, FrameSource)
    robot.teleport_base(robot.scene.places["table"].pose)
    pipe = VisionPipeline(cam, ColorDetector(), recorder=Recorder(), own_source=False,
                          settings=PipelineSettings(detect_timeout_s=None))
    pipe.setup()
    assert pipe.step() is PipelineStatus.PUBLISHED
    dets = pipe.channel.latest().value
    by_label = {}
    for d in dets:
        by_label.setdefault(d.label, d)
    assert {"red", "green", "blue"} <= set(by_label)
    for color in ("red", "green", "blue"):
        d = by_label[color]
        assert d.position is not None
        pose = cam.camera_pose_world(dets.frame_seq)
        world = pose[:3, :3] @ np.array(d.position) + pose[:3, 3]
        truth = robot.object_position(f"{color}_cube")
        # the visible face's centre, not the cube's: within a few centimetres
        assert np.linalg.norm(world - truth) < 0.06, (color, world, truth)


def test_color_defaults_find_the_bins(sim_camera):
    robot, cam = sim_camera
    robot.teleport_base(robot.scene.places["kitchen"].pose)
    dets = ColorDetector().detect(cam.read().image)
    assert {"blue", "green"} <= {d.label for d in dets}
