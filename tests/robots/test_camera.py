from __future__ import annotations

import numpy as np
import pytest

from rtvla.errors import ConfigError, RenderError, SourceError
from rtvla.robots.sim import SimCamera, SimRobot
from rtvla.robots.sim import camera as camera_mod


def project(cam: SimCamera, frame, xyz) -> tuple[int, int, float]:
    """Pixel (u, v) and camera depth of a world point, through the frame's pose and intrinsics."""
    T = cam.camera_pose_world(frame.seq)
    pc = np.linalg.inv(T) @ np.r_[xyz, 1.0]
    k = frame.intrinsics
    return (
        int(round(k.fx * pc[0] / pc[2] + k.cx)),
        int(round(k.fy * pc[1] / pc[2] + k.cy)),
        float(pc[2]),
    )


@pytest.fixture
def at_table(robot: SimRobot) -> SimRobot:
    robot.teleport_base(robot.scene.place("table").pose)
    return robot


def test_red_cube_pixels_are_red_and_depth_is_plausible(at_table: SimRobot) -> None:
    with SimCamera(at_table, width=320, height=240, threaded=False) as cam:
        frame = cam.read()
    assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
    assert frame.depth.shape == (240, 320) and frame.depth.dtype == np.float32
    for name, channel in (("red_cube", 0), ("green_cube", 1), ("blue_cube", 2)):
        u, v, z = project(cam, frame, at_table.object_position(name))
        assert 0 <= u < 320 and 0 <= v < 240, f"{name} projects outside the image: {(u, v)}"
        patch = frame.image[v - 1 : v + 2, u - 1 : u + 2].reshape(-1, 3).astype(int)
        others = [c for c in range(3) if c != channel]
        assert np.all(patch[:, channel] > 2 * patch[:, others].max(axis=1) + 20), (
            f"{name}: {patch.tolist()}"
        )
        # depth at the cube is its distance along the optical axis (front face: up to 3 cm closer)
        assert frame.depth[v, u] == pytest.approx(z, abs=0.04)
    # the red-dominant region is where the red cube projects
    img = frame.image.astype(int)
    red = (
        (img[..., 0] > 120)
        & (img[..., 0] > 2 * img[..., 1] + 20)
        & (img[..., 0] > 2 * img[..., 2] + 20)
    )
    assert 5 < red.sum() < 2000
    rows, cols = np.nonzero(red)
    u, v, _ = project(cam, frame, at_table.object_position("red_cube"))
    assert abs(cols.mean() - u) < 6 and abs(rows.mean() - v) < 6
    assert np.all(np.isfinite(frame.depth))
    assert float(frame.depth.min()) > 0.05 and float(frame.depth.max()) < 12.0


def test_camera_pose_is_opencv_axes_looking_forward_and_down(at_table: SimRobot) -> None:
    with SimCamera(at_table, width=160, height=120, depth=False, threaded=False) as cam:
        frame = cam.read()
        T = cam.camera_pose_world(frame.seq)
    assert frame.depth is None
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
    forward, down = T[:3, 2], T[:3, 1]
    assert forward[0] > 0.6 and forward[2] < -0.6  # facing east (table), tilted down
    assert down[2] < 0  # image y points down in the world
    assert T[2, 3] > 1.0  # mounted on the mast


def test_threaded_camera_delivers_newer_frames(at_table: SimRobot) -> None:
    with SimCamera(at_table, width=160, height=120, rate_hz=50, depth=False) as cam:
        first = cam.wait_frame(timeout=10.0)
        later = cam.wait_frame(after_seq=first.seq + 2, timeout=10.0)
        assert later.seq > first.seq + 2
        assert later.stamp_ns > first.stamp_ns
        assert cam.read().seq >= later.seq
        newer = cam.wait_newer(later.seq, timeout=10.0)
        assert newer is not None and newer.seq > later.seq
    assert cam.read() is None  # closed
    assert cam.wait_newer(0, timeout=0.01) is None


def test_matches_the_perception_frame_source_contract(at_table: SimRobot) -> None:
    frames = pytest.importorskip("rtvla.perception.frames")
    with SimCamera(at_table, width=160, height=120, threaded=False) as cam:
        assert isinstance(cam, frames.FrameSource)
        frame = cam.read()
        assert isinstance(frame, frames.FrameLike)
        k = frames.Intrinsics.of(frame.intrinsics)
        assert k.width == 160 and k.fx > 0


def test_missing_gl_backend_is_a_clear_error(
    at_table: SimRobot, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_gl(*a, **k):
        raise RuntimeError("cannot initialize EGL")

    monkeypatch.setattr(camera_mod.mujoco, "Renderer", no_gl)
    for threaded in (False, True):
        cam = SimCamera(at_table, width=64, height=48, threaded=threaded)
        with pytest.raises(RenderError, match="MUJOCO_GL") as info:
            cam.open()
        assert isinstance(info.value, SourceError)


def test_bad_settings_are_named(at_table: SimRobot) -> None:
    with pytest.raises(ConfigError, match="offscreen buffer"):
        SimCamera(at_table, width=4000, height=3000)
    with pytest.raises(ConfigError, match="rate_hz"):
        SimCamera(at_table, rate_hz=0)
    with pytest.raises(ConfigError, match="no camera named"):
        SimCamera(at_table, camera="tail")


def test_renders_a_simulation_running_elsewhere_from_its_qpos(at_table: SimRobot) -> None:
    with pytest.raises(ConfigError, match="qpos_fn"):
        SimCamera()
    # e.g. the physics runs in the control process and publishes qpos through shared memory
    with SimCamera(qpos_fn=at_table.qpos_snapshot, width=160, height=120, threaded=False) as cam:
        before = cam.camera_pose_world()  # no frame yet: the current pose
        frame = cam.read()
        np.testing.assert_allclose(cam.camera_pose_world(frame.seq), before, atol=1e-12)
        u, v, _ = project(cam, frame, at_table.object_position("red_cube"))
        r, g, b = (int(x) for x in frame.image[v, u])
        assert r > 2 * max(g, b) + 20


def test_on_demand_camera_may_be_read_from_any_thread(at_table: SimRobot) -> None:
    import threading

    with SimCamera(at_table, width=64, height=48, depth=False, threaded=False) as cam:
        first = cam.read()
        got: list = []
        t = threading.Thread(target=lambda: got.append(cam.read()))
        t.start()
        t.join(timeout=30)
        assert got and got[0].seq == first.seq + 1  # rendered on demand, in order
        at_table.advance(0.1)
        assert cam.wait_newer(got[0].seq, timeout=30).seq == first.seq + 2
    assert cam.read() is None


def test_set_size_renders_smaller_frames_with_matching_intrinsics_and_reuses_renderers(
        at_table: SimRobot) -> None:
    with SimCamera(at_table, width=320, height=240, threaded=False) as cam:
        full = cam.read()
        cam.set_size(160, 120)
        small = cam.read()
        assert small.image.shape == (120, 160, 3) and small.depth.shape == (120, 160)
        assert (small.intrinsics.width, small.intrinsics.height) == (160, 120)
        assert small.intrinsics.fx == pytest.approx(full.intrinsics.fx / 2, rel=1e-6)
        # The red cube projects to the same place, scaled: 3D from depth stays right.
        u, v, z = project(cam, small, at_table.object_position("red_cube"))
        assert small.depth[v, u] == pytest.approx(z, abs=0.05)
        cam.set_size(320, 240)
        back = cam.read()
        assert back.image.shape == (240, 320, 3)
        assert list(cam._renderers) == [(160, 120)]  # kept for the next turn, not recreated
        with pytest.raises(ConfigError, match="exceeds the scene's offscreen buffer"):
            cam.set_size(100000, 240)
        with pytest.raises(ConfigError, match="must be positive"):
            cam.set_size(0, 240)


def test_prepared_sizes_are_rendered_without_creating_a_renderer_mid_run(at_table: SimRobot) -> None:
    # Creating a GL renderer holds the interpreter for a few hundred ms: a knob turn must not.
    cam = SimCamera(at_table, width=320, height=240, threaded=False)
    cam.prepare_sizes([(320, 240), (240, 180), (160, 120)])
    with cam:
        cam.read()
        assert sorted(cam._renderers) == [(160, 120), (240, 180)]
        made = []
        orig = cam._make_renderer
        cam._make_renderer = lambda: made.append(1) or orig()  # type: ignore[method-assign]
        cam.set_size(160, 120)
        assert cam.read().image.shape == (120, 160, 3)
        assert not made
    with pytest.raises(ConfigError, match="cannot prepare camera size"):
        cam.prepare_sizes([(0, 10)])
