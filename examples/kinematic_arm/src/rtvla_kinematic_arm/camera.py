"""A synthetic RGB-D head camera: the room drawn with OpenCV and numpy, with true depth.

Every solid is an oriented box (furniture, bin walls, cubes, the robot's links). Each
visible face is clipped to the near plane, projected through the pinhole intrinsics and
filled with ``cv2.fillConvexPoly``; its depth per pixel is the exact ray-plane distance
along the optical axis, kept in a z-buffer, so occlusion is right and the depth image is
what a perfect depth camera would measure (camera-frame z, metres). The floor, walls and
ceiling are intersected analytically per pixel. Faces are shaded by a fixed light, which
changes brightness but not hue or saturation, so rtvla's colour detector sees the same
colours from every side.

It is a frame source by shape (``open``/``close``/``read``/``wait_newer``), producing
:class:`rtvla.perception.frames.Frame` s, and remembers the camera pose of its recent
frames (``camera_pose_world(seq)``) so detections map into the world at capture time.

Usage::

    cam = SyntheticRGBDCamera(scene, robot.snapshot, width=320, height=240, rate_hz=30)
    with cam:
        frame = cam.wait_newer(0, timeout=1.0)
        T = cam.camera_pose_world(frame.seq)      # 4x4, OpenCV axes
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from rtvla.errors import ConfigError, SourceError
from rtvla.perception.frames import Frame, Intrinsics
from rtvla.timing import MONOTONIC, Clock

from rtvla_kinematic_arm.robot import ArmSnapshot
from rtvla_kinematic_arm.scene import Box, Scene

__all__ = ["SyntheticRGBDCamera", "camera_pose", "robot_boxes"]

logger = logging.getLogger(__name__)

_NEAR_M = 0.02
_LIGHT = np.array((0.4, 0.3, 1.0)) / np.linalg.norm((0.4, 0.3, 1.0))
_ROBOT_RGB = (95, 95, 105)
_HAND_RGB = (60, 60, 66)
_POSE_HISTORY = 32
_SHIFT = 4  # sub-pixel bits for cv2.fillConvexPoly
_SIGNS = np.array([(sx, sy, sz) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)


def _yaw_rot(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array(((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0)))


def camera_pose(scene: Scene, base_pose: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 (OpenCV axes: x right, y down, z forward) for a base pose."""
    geo = scene.robot
    a = geo.camera_pitch_rad
    z = np.array((math.cos(a), 0.0, -math.sin(a)))
    x = np.array((0.0, -1.0, 0.0))
    rot_b = np.column_stack((x, np.cross(z, x), z))
    yaw = _yaw_rot(float(base_pose[2]))
    out = np.eye(4)
    out[:3, :3] = yaw @ rot_b
    out[:3, 3] = np.array((base_pose[0], base_pose[1], 0.0)) + yaw @ np.asarray(geo.camera_mount)
    return out


def _link(name: str, p: np.ndarray, q: np.ndarray, width: float, rgb: tuple[int, int, int]) -> Box | None:
    axis = q - p
    length = float(np.linalg.norm(axis))
    if length < 1e-6:
        return None
    x = axis / length
    ref = np.array((0.0, 0.0, 1.0)) if abs(x[2]) < 0.9 else np.array((1.0, 0.0, 0.0))
    y = np.cross(ref, x)
    y /= np.linalg.norm(y)
    return Box(name, (p + q) / 2, np.column_stack((x, y, np.cross(x, y))),
               np.array((length / 2, width / 2, width / 2)), rgb)


def robot_boxes(scene: Scene, snap: ArmSnapshot, kinematics: Any) -> list[Box]:
    """The robot as boxes: base, mast, upper arm, forearm, hand and fingers."""
    geo = scene.robot
    yaw = _yaw_rot(float(snap.base_pose[2]))
    base_xy = np.array((snap.base_pose[0], snap.base_pose[1], 0.0))
    h = geo.base_half_m
    out = [Box("base", base_xy + np.array((0, 0, geo.base_height_m / 2)), yaw,
               np.array((h, h, geo.base_height_m / 2)), _ROBOT_RGB)]
    mast_foot = base_xy + yaw @ np.array((geo.camera_mount[0], geo.camera_mount[1], geo.base_height_m))
    mast_top = base_xy + yaw @ np.array((geo.camera_mount[0], geo.camera_mount[1], geo.camera_mount[2] - 0.06))
    ch = kinematics.chain(snap.q, snap.base_pose)
    hz = ch["hand_rot"][:, 2]
    hy = ch["hand_rot"][:, 1]
    palm = ch["grasp"] - 0.05 * hz
    opening = 0.012 + 0.028 * (1.0 - snap.gripper)  # finger offset from the hand's axis
    for box in (
        _link("mast", mast_foot, mast_top, 0.04, _ROBOT_RGB),
        _link("upper_arm", ch["shoulder"], ch["elbow"], 0.06, _ROBOT_RGB),
        _link("forearm", ch["elbow"], ch["wrist"], 0.05, _ROBOT_RGB),
        _link("hand", ch["wrist"], palm, 0.045, _HAND_RGB),
        _link("finger_l", palm + opening * hy, ch["grasp"] + 0.01 * hz + opening * hy, 0.012, _HAND_RGB),
        _link("finger_r", palm - opening * hy, ch["grasp"] + 0.01 * hz - opening * hy, 0.012, _HAND_RGB),
    ):
        if box is not None:
            out.append(box)
    return out


class _Renderer:
    """Z-buffered box rasteriser for one image size."""

    def __init__(self, scene: Scene, width: int, height: int, fovy_rad: float) -> None:
        self.scene = scene
        self.width, self.height = width, height
        self.intrinsics = Intrinsics.from_fov(width, height, math.degrees(fovy_rad))
        k = self.intrinsics
        us, vs = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        self.xn = (us - k.cx) / k.fx
        self.yn = (vs - k.cy) / k.fy
        self.rays = np.stack((self.xn, self.yn, np.ones_like(self.xn)), axis=-1).astype(np.float32)
        self.static = scene.static_boxes()
        self._static_key = b""
        self._static_rgb = np.zeros((height, width, 3), np.float32)
        self._static_z = np.zeros((height, width), np.float32)

    def _background(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Floor (checker), walls and ceiling, intersected per pixel."""
        c = T[:3, 3]
        d = self.rays @ T[:3, :3].T.astype(np.float32)  # world directions, scaled so camera z = 1
        dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
        hx, hy = self.scene.room_size_m[0] / 2, self.scene.room_size_m[1] / 2
        top = self.scene.wall_height_m * 2.5
        with np.errstate(divide="ignore", invalid="ignore"):
            # the room is a convex box seen from inside: the nearest of its planes ahead is hit
            t_z = np.where(dz < 0, -c[2] / dz, (top - c[2]) / dz)
            t_x = (np.copysign(hx, dx) - c[0]) / dx
            t_y = (np.copysign(hy, dy) - c[1]) / dy
        t_z[~np.isfinite(t_z) | (t_z <= 0)] = np.inf
        t_x[~np.isfinite(t_x) | (t_x <= 0)] = np.inf
        t_y[~np.isfinite(t_y) | (t_y <= 0)] = np.inf
        depth = np.minimum(np.minimum(t_z, t_x), t_y)
        floor = (t_z == depth) & (dz < 0)
        hit_x, hit_y = c[0] + dx * depth, c[1] + dy * depth
        checker = (np.floor(hit_x * 2.0) + np.floor(hit_y * 2.0)) % 2
        grey = np.where(floor, 110 + 18 * checker, np.where(t_z == depth, 235.0, np.where(t_x == depth, 200.0, 185.0)))
        rgb = np.empty((*depth.shape, 3), np.float32)
        rgb[..., 0] = grey
        rgb[..., 1] = grey
        rgb[..., 2] = grey + np.where(floor | (t_z == depth), 0.0, 8.0)  # walls slightly bluish
        return rgb, depth

    def render(self, T: np.ndarray, dynamic: list[Box]) -> tuple[np.ndarray, np.ndarray]:
        """The image and depth seen from ``T``: the room and static boxes (cached while the
        camera stands still), then ``dynamic`` ones (robot links, cubes)."""
        key = T.tobytes()
        if key != self._static_key:
            rgb, zbuf = self._background(T)
            self._draw(T, self.static, rgb, zbuf)
            self._static_key, self._static_rgb, self._static_z = key, rgb, zbuf
        rgb, zbuf = self._static_rgb.copy(), self._static_z.copy()
        self._draw(T, dynamic, rgb, zbuf)
        return np.clip(rgb, 0, 255).astype(np.uint8), zbuf

    def _draw(self, T: np.ndarray, boxes: list[Box], rgb: np.ndarray, zbuf: np.ndarray) -> None:
        c, r = T[:3, 3], T[:3, :3]
        k = self.intrinsics
        for box in boxes:
            if not self._in_view(box, c, r):
                continue
            for axis in range(3):
                for sign in (-1.0, 1.0):
                    n = sign * box.rot[:, axis]
                    centre = box.center + sign * box.half[axis] * box.rot[:, axis]
                    if n @ (c - centre) <= 1e-9:
                        continue  # facing away
                    a, b = [i for i in range(3) if i != axis]
                    ua, ub = box.rot[:, a] * box.half[a], box.rot[:, b] * box.half[b]
                    corners = (centre - ua - ub, centre + ua - ub, centre + ua + ub, centre - ua + ub)
                    poly = _clip_near([r.T @ (p - c) for p in corners])
                    if len(poly) < 3:
                        continue
                    shade = 0.55 + 0.45 * max(0.0, float(n @ _LIGHT))
                    self._fill(rgb, zbuf, poly, r.T @ n, r.T @ (centre - c),
                               np.array(box.rgb, dtype=np.float32) * shade, k)

    def _in_view(self, box: Box, c: np.ndarray, r: np.ndarray) -> bool:
        """False when the box lies wholly behind the near plane or beside the image."""
        corners = (box.rot * box.half) @ _SIGNS.T  # 3 x 8 offsets
        cam = r.T @ (box.center[:, None] + corners - c[:, None])
        front = cam[2] > _NEAR_M
        if not front.any():
            return False
        if not front.all():
            return True  # straddles the near plane: let the clipper decide
        k = self.intrinsics
        u = k.fx * cam[0] / cam[2] + k.cx
        v = k.fy * cam[1] / cam[2] + k.cy
        return bool(u.max() >= 0 and u.min() < self.width and v.max() >= 0 and v.min() < self.height)

    def _fill(self, rgb: np.ndarray, zbuf: np.ndarray, poly: list[np.ndarray], n_c: np.ndarray,
              p_c: np.ndarray, colour: np.ndarray, k: Intrinsics) -> None:
        pts = np.array([(k.fx * p[0] / p[2] + k.cx, k.fy * p[1] / p[2] + k.cy) for p in poly])
        x0 = max(int(math.floor(pts[:, 0].min())), 0)
        x1 = min(int(math.ceil(pts[:, 0].max())) + 1, self.width)
        y0 = max(int(math.floor(pts[:, 1].min())), 0)
        y1 = min(int(math.ceil(pts[:, 1].max())) + 1, self.height)
        if x0 >= x1 or y0 >= y1:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        shifted = np.round((pts - (x0, y0)) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillConvexPoly(mask, shifted, 1, lineType=cv2.LINE_8, shift=_SHIFT)
        sel = mask.astype(bool)
        if not sel.any():
            return
        denom = n_c[0] * self.xn[y0:y1, x0:x1] + n_c[1] * self.yn[y0:y1, x0:x1] + n_c[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = float(n_c @ p_c) / denom
        zroi = zbuf[y0:y1, x0:x1]
        win = sel & (z > _NEAR_M) & (z < zroi)
        zroi[win] = z[win]
        rgb[y0:y1, x0:x1][win] = colour


def _clip_near(poly: list[np.ndarray]) -> list[np.ndarray]:
    """Sutherland-Hodgman against the plane z = near (camera frame)."""
    out: list[np.ndarray] = []
    for i, cur in enumerate(poly):
        prev = poly[i - 1]
        cin, pin = cur[2] >= _NEAR_M, prev[2] >= _NEAR_M
        if cin != pin:
            t = (_NEAR_M - prev[2]) / (cur[2] - prev[2])
            out.append(prev + t * (cur - prev))
        if cin:
            out.append(cur)
    return out


class SyntheticRGBDCamera:
    """The head camera as a frame source; see the module docstring.

    ``snapshot_fn`` returns the newest :class:`ArmSnapshot` (the local robot's, or one
    decoded from the control process's telemetry). ``threaded=False`` renders on each
    ``read()`` (deterministic, for lock-step runs).
    """

    def __init__(self, scene: Scene, snapshot_fn: Callable[[], ArmSnapshot], kinematics: Any, *,
                 width: int = 320, height: int = 240, rate_hz: float = 30.0, depth: bool = True,
                 threaded: bool = True, clock: Clock = MONOTONIC, recorder: Any = None,
                 name: str = "head") -> None:
        if not (16 <= width <= 1920 and 16 <= height <= 1440):
            raise ConfigError(f"camera size must be within 16x16..1920x1440, got {width}x{height}")
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ConfigError(f"camera rate_hz must be > 0, got {rate_hz}")
        self.scene = scene
        self.name = name
        self.rate_hz = float(rate_hz)
        self.depth_enabled = depth
        self.threaded = threaded
        self._snapshot = snapshot_fn
        self._kin = kinematics
        self._clock = clock
        self._recorder = recorder
        self._renderer = _Renderer(scene, width, height, scene.robot.camera_fovy_rad)
        self.intrinsics = self._renderer.intrinsics
        self.width, self.height = width, height
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._poses: OrderedDict[int, np.ndarray] = OrderedDict()
        self._seq = 0
        self._open = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.frames_rendered = 0
        self.render_s_total = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        if self._open:
            return
        self._stop.clear()
        self._error = None
        self._open = True
        if self.threaded:
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-render", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._open = False
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> SyntheticRGBDCamera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------

    def read(self) -> Frame | None:
        """The newest frame (threaded), or one rendered now (``threaded=False``)."""
        if not self._open:
            return None
        if not self.threaded:
            return self.capture()
        with self._cond:
            if self._error is not None:
                raise SourceError(f"{self.name}: rendering failed: {self._error}")
            return self._latest

    def wait_newer(self, seq: int, timeout: float | None = None) -> Frame | None:
        """The first frame newer than ``seq`` (None on timeout or when closed)."""
        if not self._open:
            return None
        if not self.threaded:
            return self.capture()
        with self._cond:
            self._cond.wait_for(lambda: (self._latest is not None and self._latest.seq > seq)
                                or self._stop.is_set() or self._error is not None, timeout)
            f = self._latest
        return f if f is not None and f.seq > seq else None

    def camera_pose_world(self, seq: int | None = None) -> np.ndarray:
        """Camera-to-world 4x4 (OpenCV axes) of frame ``seq``, of the newest frame, or now."""
        with self._cond:
            if seq is not None:
                if seq not in self._poses:
                    raise KeyError(f"{self.name}: no pose kept for frame {seq} (only the last {_POSE_HISTORY})")
                return self._poses[seq].copy()
            if self._poses:
                return next(reversed(self._poses.values())).copy()
        return camera_pose(self.scene, self._snapshot().base_pose)

    # -- rendering ----------------------------------------------------------------------

    def dynamic_boxes(self, snap: ArmSnapshot) -> list[Box]:
        """What moves: the robot's links and the cubes."""
        boxes = robot_boxes(self.scene, snap, self._kin)
        for name, p in snap.objects.items():
            spec = self.scene.objects[name]
            boxes.append(Box(name, np.asarray(p, dtype=float), np.eye(3), np.full(3, spec.size_m / 2), spec.rgb))
        return boxes

    def capture(self) -> Frame:
        """Render the robot's world as it is now."""
        t0 = self._clock.now_ns()
        snap = self._snapshot()
        T = camera_pose(self.scene, snap.base_pose)
        image, depth = self._renderer.render(T, self.dynamic_boxes(snap))
        elapsed = (self._clock.now_ns() - t0) / 1e9
        self.frames_rendered += 1
        self.render_s_total += elapsed
        if self._recorder is not None:
            self._recorder.observe(self.name, "render", elapsed)
            self._recorder.count(self.name)
        image.setflags(write=False)
        depth.setflags(write=False)
        with self._cond:
            self._seq += 1
            frame = Frame(image=image, stamp_ns=t0, seq=self._seq,
                          depth=depth if self.depth_enabled else None, intrinsics=self.intrinsics)
            self._latest = frame
            self._poses[frame.seq] = T
            while len(self._poses) > _POSE_HISTORY:
                self._poses.popitem(last=False)
            self._cond.notify_all()
        return frame

    def _run(self) -> None:
        period_ns = int(1e9 / self.rate_hz)
        next_ns = self._clock.now_ns()
        try:
            while not self._stop.wait(max(0.0, (next_ns - self._clock.now_ns()) / 1e9)):
                self.capture()
                next_ns += period_ns
                now = self._clock.now_ns()
                if next_ns < now:  # fell behind: skip to the next slot instead of bursting
                    next_ns = now + period_ns - (now - next_ns) % period_ns
        except Exception as exc:
            logger.exception("%s: rendering failed", self.name)
            with self._cond:
                self._error = exc
                self._cond.notify_all()
