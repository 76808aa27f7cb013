"""What the record needs from the MuJoCo simulator: a fixed third-person view and the frames.

Both work from the scene's model and a ``qpos`` function (``SimRobot.qpos_snapshot``, or
the control process's telemetry in process placement), on a private ``MjData``, so they
never touch the physics thread's data.

``SceneView`` renders a fixed free camera offscreen (EGL). A GL context is current in one
thread only, so the renderer is created on the first call, in the calling thread, and
must be closed there (``EpisodeVideo`` does both on its own thread).

``SimFrames`` gives the transforms the record's ``/tf`` carries: ``world -> base``,
``base -> camera/<name>`` (optical axes) and ``base -> <link>`` for every arm link, plus
``world -> object/<name>`` for the scene's objects.

Usage::

    view = SceneView(robot.model, robot.qpos_snapshot)
    image = view()                                   # HxWx3 uint8, the whole room from above
    record.log_transforms(SimFrames(robot.model, robot.qpos_snapshot, robot.scene).transforms())
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

# rtvla.robots.sim sets MUJOCO_GL (egl) before MuJoCo is first imported: import it first.
from rtvla.robots.sim.camera import CameraUnavailable  # isort: skip

import mujoco  # isort: skip

from rtvla.record.channels import BASE_FRAME, WORLD_FRAME, camera_frame

__all__ = ["SceneView", "SimFrames"]

logger = logging.getLogger(__name__)

_MJ_TO_CV = np.diag([1.0, -1.0, -1.0])


class SceneView:
    """A fixed free camera over the scene, rendered from ``qpos_fn()`` on each call.

    ``lookat``/``distance``/``azimuth``/``elevation`` place the camera (MuJoCo's free
    camera, degrees); by default it looks down at the middle of the floor from above one
    corner, far enough back to see the whole room.
    """

    def __init__(self, model: Any, qpos_fn: Callable[[], np.ndarray], *, width: int = 480,
                 height: int = 360, lookat: tuple[float, float, float] | None = None,
                 distance: float | None = None, azimuth: float = 135.0,
                 elevation: float = -60.0) -> None:
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise CameraUnavailable(
                f"scene view {width}x{height} exceeds the offscreen buffer "
                f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}")
        self.model = model
        self.qpos_fn = qpos_fn
        self.width, self.height = width, height
        self._data = mujoco.MjData(model)
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        c = model.stat.center
        cam.lookat[:] = (c[0], c[1], 0.0) if lookat is None else lookat
        # 0.7 x the model's extent frames the packaged room wall to wall at 4:3.
        cam.distance = float(distance if distance is not None else 0.7 * model.stat.extent)
        cam.azimuth, cam.elevation = azimuth, elevation
        self.camera = cam
        self._renderer: Any = None
        self.frames = 0

    def prepare(self) -> None:
        """Create the GL renderer now (in the thread that will render). Creating one holds the
        interpreter for a few hundred milliseconds on a software renderer: do it before the
        task moves the robot, not at the first frame."""
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
            except Exception as exc:
                raise CameraUnavailable(f"scene view: offscreen rendering unavailable: {exc}") from exc

    def __call__(self) -> np.ndarray:
        """Render the simulation as it is now (in the thread that owns this view)."""
        self.prepare()
        d = self._data
        d.qpos[:] = self.qpos_fn()
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_camlight(self.model, d)
        self._renderer.update_scene(d, camera=self.camera)
        self.frames += 1
        return self._renderer.render()

    def close(self) -> None:
        """Release the GL context (call from the thread that rendered)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class SimFrames:
    """The simulator's frames as ``(parent, child, 4x4)`` triples for ``RunRecord.log_transforms``."""

    def __init__(self, model: Any, qpos_fn: Callable[[], np.ndarray], scene: Any) -> None:
        self.model = model
        self.qpos_fn = qpos_fn
        self._data = mujoco.MjData(model)
        w = scene.robot

        def body_of_joint(name: str) -> int:
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise KeyError(f"no joint {name!r} in the scene model")
            return int(model.jnt_bodyid[jid])

        self._base = body_of_joint(w.base_joints[-1])
        self._links = [(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b), b)
                       for b in dict.fromkeys(body_of_joint(j) for j in w.arm_joints)]
        hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, w.hand_body)
        if hand >= 0 and all(b != hand for _, b in self._links):
            self._links.append((w.hand_body, hand))
        self._cameras = [(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, c), c)
                         for c in range(model.ncam)]
        self._objects = [(name, mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, spec.body))
                         for name, spec in scene.objects.items()]

    def _body(self, bid: int) -> np.ndarray:
        d = self._data
        m = np.eye(4)
        m[:3, :3] = d.xmat[bid].reshape(3, 3)
        m[:3, 3] = d.xpos[bid]
        return m

    def transforms(self, qpos: np.ndarray | None = None) -> list[tuple[str, str, np.ndarray]]:
        """All frames for ``qpos`` (default: ``qpos_fn()`` now)."""
        d = self._data
        d.qpos[:] = self.qpos_fn() if qpos is None else qpos
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_camlight(self.model, d)
        base = self._body(self._base)
        inv = np.linalg.inv(base)
        out = [(WORLD_FRAME, BASE_FRAME, base)]
        for name, cid in self._cameras:
            cam = np.eye(4)
            cam[:3, :3] = d.cam_xmat[cid].reshape(3, 3) @ _MJ_TO_CV
            cam[:3, 3] = d.cam_xpos[cid]
            out.append((BASE_FRAME, camera_frame(name), inv @ cam))
        for name, bid in self._links:
            out.append((BASE_FRAME, name, inv @ self._body(bid)))
        for name, bid in self._objects:
            if bid >= 0:
                out.append((WORLD_FRAME, f"object/{name}", self._body(bid)))
        return out
