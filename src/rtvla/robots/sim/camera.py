"""``SimCamera``: the robot's head camera (RGB + depth) rendered offscreen by MuJoCo.

It matches perception's ``FrameSource`` by shape (``open``/``close``/``read`` and frames with
``image, stamp_ns, seq, depth, intrinsics``) without importing ``rtvla.perception``.

Rendering never blocks physics: each frame copies the robot's ``qpos`` (a brief lock) and
renders it on a private ``MjData``. By default a thread renders at ``rate_hz`` and
``read()`` returns the newest frame; with ``threaded=False`` ``read()`` renders on demand
and returns that frame (deterministic, for lock-step runs). Either way all GL work happens
in the camera's own thread, because an EGL context is current in one thread at a time:
any thread may call ``read()``.

Usage::

    with SimRobot() as robot, SimCamera(robot, width=640, height=480, rate_hz=30) as cam:
        frame = cam.wait_frame(timeout=2.0)
        T = cam.camera_pose_world(frame.seq)    # 4x4, OpenCV axes: x right, y down, z forward
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import mujoco  # MUJOCO_GL was set by rtvla.robots.sim.__init__ (imports _gl first)
import numpy as np

from rtvla.errors import ConfigError, RenderError, SourceError
from rtvla.metrics import Recorder
from rtvla.robots.sim._gl import gl_backend, gl_hint
from rtvla.robots.sim.robot import SimRobot
from rtvla.robots.sim.scene import SceneConfig, load_scene
from rtvla.timing import MONOTONIC, Clock

__all__ = ["CameraIntrinsics", "CameraUnavailable", "SimCamera", "SimFrame"]

logger = logging.getLogger(__name__)

# MuJoCo cameras look along -z with y up; OpenCV looks along +z with y down.
_MJ_TO_CV = np.diag([1.0, -1.0, -1.0])
_POSE_HISTORY = 16


@dataclass
class _Request:
    """One on-demand frame: filled in by the render thread."""

    done: threading.Event = field(default_factory=threading.Event)
    frame: SimFrame | None = None
    error: BaseException | None = None


class CameraUnavailable(RenderError, SourceError):
    """Offscreen rendering failed; both a robot error and a perception source error."""


@dataclass(frozen=True, slots=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels (OpenCV convention: pixel centres at integer coordinates)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fovy(cls, width: int, height: int, fovy_deg: float) -> CameraIntrinsics:
        f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
        return cls(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, slots=True)
class SimFrame:
    """One rendered frame: RGB ``uint8`` HxWx3, depth ``float32`` HxW metres (or None)."""

    image: np.ndarray = field(repr=False)
    stamp_ns: int
    seq: int
    depth: np.ndarray | None = field(default=None, repr=False)
    intrinsics: CameraIntrinsics | None = None


class SimCamera:
    """A MuJoCo camera of ``robot``'s scene as a frame source (a context manager).

    ``robot=None`` with ``qpos_fn`` (and optionally ``scene``) renders a simulation that runs
    elsewhere, for example in the control loop's own process: ``qpos_fn`` returns the full
    ``qpos`` of the same MJCF (from a shared-memory channel, say).

    ``camera``: MJCF camera name (default: the scene's head camera). ``rate_hz``: render
    rate of the thread. ``depth``: also render depth (a second pass, about twice the cost).
    ``recorder``: render latency as metric ``render`` and one ``count`` per frame of
    component ``name``.
    """

    def __init__(
        self,
        robot: SimRobot | None = None,
        *,
        scene: SceneConfig | None = None,
        qpos_fn: Callable[[], np.ndarray] | None = None,
        width: int = 640,
        height: int = 480,
        rate_hz: float = 30.0,
        depth: bool = True,
        camera: str | None = None,
        threaded: bool = True,
        clock: Clock = MONOTONIC,
        recorder: Recorder | None = None,
        name: str = "sim_camera",
        open_timeout_s: float = 15.0,
    ) -> None:
        if robot is not None:
            model, scene = robot.model, robot.scene
            qpos_fn = qpos_fn or robot.qpos_snapshot
        elif qpos_fn is None:
            raise ConfigError(
                "SimCamera needs a robot or a qpos_fn returning the simulation's qpos"
            )
        else:
            scene = scene if scene is not None else load_scene()
            model = scene.load_model()
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise ConfigError(f"camera resolution must be positive integers, got {width}x{height}")
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise ConfigError(
                f"camera resolution {width}x{height} exceeds the scene's offscreen buffer "
                f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}"
            )
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ConfigError(f"camera rate_hz must be > 0, got {rate_hz}")
        cam_name = camera or scene.robot.camera
        self._cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam_name)
        if self._cam < 0:
            raise ConfigError(f"no camera named {cam_name!r} in the scene")
        self.robot = robot
        self.scene = scene
        self._qpos_fn = qpos_fn
        self.model = model
        self.name = name
        self.width, self.height = width, height
        self.rate_hz = float(rate_hz)
        self.depth_enabled = depth
        self.threaded = threaded
        self.intrinsics = CameraIntrinsics.from_fovy(
            width, height, float(model.cam_fovy[self._cam])
        )
        self._clock = clock
        self._recorder = recorder
        self._open_timeout_s = open_timeout_s
        self._data = mujoco.MjData(model)
        self._pose_data: mujoco.MjData | None = None
        self._pose_lock = threading.Lock()
        self._renderer: mujoco.Renderer | None = None
        # One renderer per size the camera has rendered at (creating a GL renderer costs far
        # more than a frame): the adaptive optimizer turns the size down and back up.
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._pending_size: tuple[int, int] | None = None
        self._prepared_sizes: list[tuple[int, int]] = []
        self._cond = threading.Condition()
        self._latest: SimFrame | None = None
        self._poses: OrderedDict[int, np.ndarray] = OrderedDict()
        self._seq = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._open = False
        self.frames_rendered = 0
        self.render_s_total = 0.0

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Create the GL context and start rendering; raises :class:`CameraUnavailable`."""
        if self._open:
            return
        self._stop.clear()
        self._error = None
        self._ready.clear()
        self._requests = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run if self.threaded else self._serve,
            name=f"{self.name}-render",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(self._open_timeout_s):
            self._stop.set()
            raise CameraUnavailable(
                f"{self.name}: renderer did not start within {self._open_timeout_s} s "
                f"(MUJOCO_GL={gl_backend()!r})"
            )
        if self._error is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
            raise self._error
        self._open = True
        logger.info(
            "%s open: %dx%d at %.0f Hz%s (%s)",
            self.name,
            self.width,
            self.height,
            self.rate_hz,
            " + depth" if self.depth_enabled else "",
            "thread" if self.threaded else "on demand",
        )

    def close(self) -> None:
        """Stop rendering and release the GL context. Idempotent."""
        self._stop.set()
        self._open = False
        with self._cond:
            self._cond.notify_all()
        self._requests.put(None)  # wakes the on-demand server
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> SimCamera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def read(self) -> SimFrame | None:
        """The newest frame (threaded), or a frame rendered now (``threaded=False``)."""
        if not self._open:
            return None
        if not self.threaded:
            return self._render_on_demand()
        with self._cond:
            return self._latest

    def wait_frame(self, after_seq: int = -1, timeout: float = 2.0) -> SimFrame:
        """Block until a frame with ``seq > after_seq`` exists; ``TimeoutError`` otherwise."""
        if not self._open:
            raise RenderError(f"{self.name}: wait_frame() before open()")
        if not self.threaded:
            return self._render_on_demand(timeout)
        with self._cond:
            ok = self._cond.wait_for(
                lambda: (
                    (self._latest is not None and self._latest.seq > after_seq)
                    or self._error is not None
                ),
                timeout,
            )
            if self._error is not None:
                raise self._error
            if not ok or self._latest is None:
                raise TimeoutError(
                    f"{self.name}: no frame newer than seq {after_seq} within {timeout} s"
                )
            return self._latest

    def wait_newer(self, seq: int, timeout: float | None = None) -> SimFrame | None:
        """The first frame with a sequence number above ``seq`` (None on timeout or when closed).

        Lets the perception pipeline align its loop with the camera instead of aliasing.
        """
        if not self._open:
            return None
        if not self.threaded:
            return self._render_on_demand(timeout)
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    (self._latest is not None and self._latest.seq > seq)
                    or self._stop.is_set()
                    or self._error is not None
                ),
                timeout,
            )
            f = self._latest
        return f if f is not None and f.seq > seq else None

    def camera_pose_world(self, seq: int | None = None) -> np.ndarray:
        """4x4 camera-to-world transform in OpenCV axes (x right, y down, z forward).

        ``seq``: the pose at which that recent frame was rendered; default: the newest
        frame's, or the camera's current pose when no frame exists yet.
        """
        with self._cond:
            if seq is not None:
                if seq not in self._poses:
                    raise KeyError(
                        f"{self.name}: no pose kept for frame seq {seq} (only the last {_POSE_HISTORY})"
                    )
                return self._poses[seq].copy()
            if self._poses:
                return next(reversed(self._poses.values())).copy()
        return self._current_pose()

    def set_size(self, width: int, height: int) -> None:
        """Render at ``width`` x ``height`` from the next frame on (the intrinsics follow; each
        frame carries its own). Rendering costs roughly in proportion to the pixels, so this is
        what makes perception's resolution knob cut the camera's cost, not only the detector's."""
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise ConfigError(f"{self.name}: camera size must be positive, got {width}x{height}")
        if width > self.model.vis.global_.offwidth or height > self.model.vis.global_.offheight:
            raise ConfigError(
                f"{self.name}: camera size {width}x{height} exceeds the scene's offscreen buffer "
                f"{self.model.vis.global_.offwidth}x{self.model.vis.global_.offheight}"
            )
        self._pending_size = (width, height)

    def prepare_sizes(self, sizes: Iterable[tuple[int, int]]) -> None:
        """Sizes :meth:`set_size` will be asked for: their renderers are created when the camera
        opens, not mid-run. Creating a GL renderer holds the interpreter for a few hundred
        milliseconds on a software renderer, long enough to stall the other loops' threads."""
        out = []
        for w, h in sizes:
            w, h = int(w), int(h)
            if w <= 0 or h <= 0 or w > self.model.vis.global_.offwidth or h > self.model.vis.global_.offheight:
                raise ConfigError(f"{self.name}: cannot prepare camera size {w}x{h}")
            out.append((w, h))
        self._prepared_sizes = out

    def _warm_prepared(self) -> None:
        """Render one frame with each prepared renderer: the GL driver allocates a context's
        buffers at its first draw, which would otherwise grow memory mid-run at a knob turn."""
        if not self._renderers:
            return
        d = self._data
        d.qpos[:] = self._qpos_fn()
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_camlight(self.model, d)
        for r in self._renderers.values():
            r.update_scene(d, camera=self._cam)
            r.render()
            if self.depth_enabled:
                r.enable_depth_rendering()
                try:
                    r.render()
                finally:
                    r.disable_depth_rendering()

    def _apply_size(self) -> None:
        """Switch to the pending size (in the thread that owns the GL context)."""
        size = self._pending_size
        if size is None or size == (self.width, self.height):
            return
        if self._renderer is not None:
            self._renderers[(self.width, self.height)] = self._renderer
        renderer = self._renderers.pop(size, None)
        self.width, self.height = size
        self._renderer = renderer if renderer is not None else self._make_renderer()
        self.intrinsics = CameraIntrinsics.from_fovy(self.width, self.height, float(self.model.cam_fovy[self._cam]))
        logger.info("%s: rendering at %dx%d", self.name, self.width, self.height)

    def _close_renderers(self) -> None:
        for r in [self._renderer, *self._renderers.values()]:
            if r is not None:
                r.close()
        self._renderer = None
        self._renderers.clear()

    # ------------------------------------------------------------------ rendering
    def _make_renderer(self) -> mujoco.Renderer:
        try:
            return mujoco.Renderer(self.model, height=self.height, width=self.width)
        except Exception as exc:  # GL failures surface as several exception types
            raise CameraUnavailable(
                f"{self.name}: MuJoCo offscreen rendering unavailable with MUJOCO_GL={gl_backend()!r} "
                f"({type(exc).__name__}: {exc}); {gl_hint()}"
            ) from exc

    def _current_pose(self) -> np.ndarray:
        """The camera pose for the simulation's qpos now (its own MjData: the renderer's is busy)."""
        with self._pose_lock:
            if self._pose_data is None:
                self._pose_data = mujoco.MjData(self.model)
            d = self._pose_data
            d.qpos[:] = self._qpos_fn()
            mujoco.mj_kinematics(self.model, d)
            mujoco.mj_camlight(self.model, d)
            pose = np.eye(4)
            pose[:3, :3] = d.cam_xmat[self._cam].reshape(3, 3) @ _MJ_TO_CV
            pose[:3, 3] = d.cam_xpos[self._cam]
            return pose

    def _capture(self) -> SimFrame:
        """Render the robot's current configuration now (in the thread owning the renderer)."""
        if self._renderer is None:
            raise RenderError(f"{self.name}: not open")
        self._apply_size()
        r = self._renderer
        m, d = self.model, self._data
        qpos = self._qpos_fn()
        stamp = self._clock.now_ns()
        t0 = self._clock.now_ns()
        d.qpos[:] = qpos
        mujoco.mj_kinematics(m, d)
        mujoco.mj_camlight(m, d)
        r.update_scene(d, camera=self._cam)
        image = r.render()
        depth = None
        if self.depth_enabled:
            r.enable_depth_rendering()
            try:
                depth = r.render().astype(np.float32, copy=False)
            finally:
                r.disable_depth_rendering()
        pose = np.eye(4)
        pose[:3, :3] = d.cam_xmat[self._cam].reshape(3, 3) @ _MJ_TO_CV
        pose[:3, 3] = d.cam_xpos[self._cam]
        elapsed = (self._clock.now_ns() - t0) * 1e-9
        self.render_s_total += elapsed
        self.frames_rendered += 1
        if self._recorder is not None:
            self._recorder.observe(self.name, "render", elapsed)
            self._recorder.count(self.name)
        image.setflags(write=False)
        if depth is not None:
            depth.setflags(write=False)
        with self._cond:
            self._seq += 1
            frame = SimFrame(
                image=image, stamp_ns=stamp, seq=self._seq, depth=depth, intrinsics=self.intrinsics
            )
            self._latest = frame
            self._poses[frame.seq] = pose
            while len(self._poses) > _POSE_HISTORY:
                self._poses.popitem(last=False)
            self._cond.notify_all()
        return frame

    def _render_on_demand(self, timeout: float | None = None) -> SimFrame:
        """Ask the render thread for a frame of the current configuration and wait for it."""
        req = _Request()
        self._requests.put(req)
        if not req.done.wait(self._open_timeout_s if timeout is None else timeout):
            raise TimeoutError(f"{self.name}: no frame rendered within {timeout} s")
        if req.error is not None:
            raise req.error
        assert req.frame is not None
        return req.frame

    def _open_renderer(self) -> bool:
        """Create the GL renderer in the calling thread (which then owns the context) and
        release :meth:`open`; False, with the error kept for it, when there is no GL."""
        try:
            self._renderer = self._make_renderer()
            for size in self._prepared_sizes:
                if size != (self.width, self.height) and size not in self._renderers:
                    self._renderers[size] = mujoco.Renderer(self.model, height=size[1], width=size[0])
            self._warm_prepared()
        except CameraUnavailable as exc:
            self._error = exc
            return False
        except Exception as exc:  # a prepared size that cannot render: made on demand instead
            logger.warning("%s: preparing renderers failed (%s); sizes are made when asked for", self.name, exc)
        finally:
            self._ready.set()
        return True

    def _serve(self) -> None:
        """On-demand render thread: owns the GL context, renders one frame per request."""
        if not self._open_renderer():
            return
        try:
            while True:
                req = self._requests.get()
                if req is None or self._stop.is_set():
                    if req is not None:
                        req.error = RenderError(f"{self.name}: closed")
                        req.done.set()
                    break
                try:
                    req.frame = self._capture()
                except Exception as exc:
                    logger.exception("%s: rendering failed", self.name)
                    req.error = RenderError(f"{self.name}: rendering failed: {exc}")
                req.done.set()
        finally:
            self._close_renderers()
            while True:  # nobody waits forever on a request that came in while closing
                try:
                    left = self._requests.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    left.error = RenderError(f"{self.name}: closed")
                    left.done.set()

    def _run(self) -> None:
        if not self._open_renderer():
            return
        period_ns = int(1e9 / self.rate_hz)
        next_ns = self._clock.now_ns()
        try:
            while True:
                delay = (next_ns - self._clock.now_ns()) * 1e-9
                if self._stop.wait(max(0.0, delay)):
                    break
                self._capture()
                next_ns += period_ns
                now = self._clock.now_ns()
                if next_ns < now:  # fell behind: skip to the next slot instead of bursting
                    next_ns = now + period_ns - (now - next_ns) % period_ns
        except Exception as exc:
            logger.exception("%s: rendering failed", self.name)
            with self._cond:
                self._error = RenderError(f"{self.name}: rendering failed: {exc}")
                self._cond.notify_all()
        finally:
            self._close_renderers()
