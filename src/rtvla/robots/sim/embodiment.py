"""The built-in ``sim`` robot plug-in: the MuJoCo mobile manipulator as an :class:`Embodiment`.

:func:`make_sim` builds the simulated robot (not yet connected), its head camera and what
planning needs to know of the room: the scene's places, objects (with their start
positions), receptacles (drop points from their drop sites), the surfaces things can be set
down on (found in the MJCF geometry: the top a place faces, e.g. the table and the shelf),
and the occupancy grid for navigation. The control process builds the same robot from
``process_factory`` (:func:`make_sim_robot`), and :func:`sim_telemetry` mirrors its ``qpos``
and held object back, so the parent's camera renders the robot that runs there.

Options (``[robot.options]`` of ``type = "sim"``) are :class:`SimOptions`: today's
``[robot]`` table (``scene``, ``lockstep``, ``realtime_factor``, limit overrides, ``camera``)
plus ``map_resolution_m``.

Usage::

    emb = make_sim(camera={"width": 320, "height": 240})
    emb.robot.connect()
    cam = emb.cameras["head"]; cam.source.open()
    emb.world.surfaces["shelf"].point           # where things go on the shelf
"""

from __future__ import annotations

import logging
import math
from typing import Any

import mujoco  # MUJOCO_GL was set by rtvla.robots.sim.__init__ (imports _gl first)
import numpy as np
from pydantic import Field, ValidationError

from rtvla.config import format_validation_error
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder
from rtvla.parts import FactoryRef
from rtvla.robots.embodiment import (
    Embodiment,
    KnownObject,
    OccupancyMap,
    Place,
    Receptacle,
    RobotCamera,
    Surface,
    Telemetry,
    WorldKnowledge,
)
from rtvla.robots.sim.camera import SimCamera
from rtvla.robots.sim.grid import occupancy_grid
from rtvla.robots.sim.robot import SimRobot
from rtvla.robots.sim.scene import SceneConfig
from rtvla.robots.sim.settings import (
    SimCameraSettings,
    SimSettings,
    build_sim_robot,
    scene_with_overrides,
)
from rtvla.timing import MONOTONIC, Clock

__all__ = ["SimOptions", "find_surfaces", "make_sim", "make_sim_robot", "sim_telemetry", "sim_world"]

logger = logging.getLogger(__name__)

# Software rendering (no GPU) costs ~30 ms per 640x480 RGB-D frame; 320x240 keeps the
# simulated camera at 30 Hz beside everything else on two cores.
_RUNTIME_CAMERA = SimCameraSettings(width=320, height=240)

# Surface search: how far ahead of a place the arm reaches, and what counts as a top.
_REACH_M = 0.9
_TOP_MIN_Z, _TOP_MAX_Z = 0.1, 1.6
_EDGE_MARGIN_M = 0.15
_CLEAR_OF_OBJECTS_M = 0.08
_CLEAR_OF_RECEPTACLES_M = 0.15
_FLAT_HALF_M = 0.04
_LATERAL_OFFSETS_M = (0.0, 0.1, -0.1, 0.2, -0.2)


class SimOptions(SimSettings):
    """``[robot.options]`` of the simulator: :class:`SimSettings` with the runtime's camera
    default (320x240) and the navigation map's resolution."""

    camera: SimCameraSettings = _RUNTIME_CAMERA
    map_resolution_m: float = Field(0.05, gt=0.0, le=0.5)
    # More cameras of the MJCF (by name) the embodiment offers beside the head camera, e.g.
    # {overview = {width = 160, height = 120, rate_hz = 10}}: the fixed room camera.
    extra_cameras: dict[str, SimCameraSettings] = Field(default_factory=dict)


def _options(options: dict[str, Any]) -> SimOptions:
    try:
        return SimOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error("robot.options", exc)) from None


def make_sim_robot(*, clock: Clock = MONOTONIC, recorder: Recorder | None = None, **options: Any) -> SimRobot:
    """The simulated robot alone (what the control process builds), not yet connected."""
    return build_sim_robot(_options(options), clock=clock, recorder=recorder)


make_sim_robot.Options = SimOptions  # type: ignore[attr-defined]


def sim_telemetry(robot: Any, out: np.ndarray) -> None:
    """In the control process after each tick: ``[qpos(nq), held object index or -1]``."""
    q = robot.qpos_snapshot()
    n = len(q)
    out[:n] = q
    held = robot.holding
    out[n] = -1.0 if held is None else float(robot.object_names().index(held))


class _QposView:
    """The simulation's qpos for the parent's camera: the local robot's, or — once the
    robot runs in the control process — the newest mirrored one."""

    def __init__(self, robot: SimRobot, telemetry: Telemetry) -> None:
        self.robot = robot
        self.telemetry = telemetry
        self.nq = int(robot.model.nq)

    def qpos(self) -> np.ndarray:
        tel = self.telemetry.latest()
        if tel is None:
            return self.robot.qpos_snapshot()  # thread placement, or before the first tick
        return np.asarray(tel[: self.nq], dtype=float).copy()


def _holding_decoder(names: list[str], nq: int) -> Any:
    def holding(tel: np.ndarray) -> str | None:
        idx = int(tel[nq])
        return None if idx < 0 or idx >= len(names) else names[idx]
    return holding


# -- surfaces from the MJCF geometry ---------------------------------------------------------


def _static_boxes(model: Any, data: Any) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]:
    """World-welded boxes with a horizontal top: (body name, centre xy, axes 2x2, half xy, top z)."""
    out = []
    for g in range(model.ngeom):
        body = int(model.geom_bodyid[g])
        if int(model.body_weldid[body]) != 0 or int(model.geom_type[g]) != mujoco.mjtGeom.mjGEOM_BOX:
            continue
        mat = data.geom_xmat[g].reshape(3, 3)
        if abs(mat[2, 2]) < 0.999:
            continue  # tilted: no flat top
        size = model.geom_size[g]
        top = float(data.geom_xpos[g][2] + size[2])
        out.append((model.body(body).name, data.geom_xpos[g][:2].copy(), mat[:2, :2].copy(),
                    size[:2].copy(), top))
    return out


def _height_at(boxes: list, xy: np.ndarray) -> tuple[float, str | None]:
    """The highest static top over ``xy`` (0 and None over the floor)."""
    best, name = 0.0, None
    for body, centre, axes, half, top in boxes:
        local = axes.T @ (xy - centre)
        if abs(local[0]) <= half[0] and abs(local[1]) <= half[1] and top > best:
            best, name = top, body
    return best, name


def find_surfaces(scene: SceneConfig, model: Any, data: Any,
                  objects: dict[str, KnownObject], receptacles: dict[str, Receptacle]) -> dict[str, Surface]:
    """For each place, the flat top the robot faces within reach: a point on it a margin in
    from the near edge, flat around it and clear of the objects and receptacles there."""
    boxes = [b for b in _static_boxes(model, data) if _TOP_MIN_Z <= b[4] <= _TOP_MAX_Z]
    taken = [o.position[:2] for o in objects.values() if o.position is not None]
    bins = [r.drop_point[:2] for r in receptacles.values()]
    out: dict[str, Surface] = {}
    for pname, place in scene.places.items():
        x, y, yaw = place.pose
        ahead = np.array((math.cos(yaw), math.sin(yaw)))
        side = np.array((-ahead[1], ahead[0]))
        start = np.array((x, y))
        steps = np.arange(0.0, _REACH_M, 0.01)
        heights = [_height_at(boxes, start + d * ahead)[0] for d in steps]
        hit = next((i for i, h in enumerate(heights) if h >= _TOP_MIN_Z), None)
        if hit is None:
            continue
        z0 = heights[hit]
        end = next((i for i in range(hit, len(steps)) if abs(heights[i] - z0) > 0.01), len(steps))
        depth = steps[end - 1] - steps[hit]
        centre = start + (steps[hit] + min(_EDGE_MARGIN_M, depth / 2.0)) * ahead
        for off in _LATERAL_OFFSETS_M:
            q = centre + off * side
            z, body = _height_at(boxes, q)
            grid = [q + a * ahead + b * side for a in (-_FLAT_HALF_M, 0.0, _FLAT_HALF_M)
                    for b in (-_FLAT_HALF_M, 0.0, _FLAT_HALF_M)]
            if body is None or any(abs(_height_at(boxes, p)[0] - z) > 0.005 for p in grid):
                continue
            if any(np.linalg.norm(q - t) < _CLEAR_OF_OBJECTS_M for t in taken):
                continue
            if any(np.linalg.norm(q - b) < _CLEAR_OF_RECEPTACLES_M for b in bins):
                continue
            key = body if body not in out else f"{body}_{pname}"
            out[key] = Surface(key, np.array((q[0], q[1], z)), place=pname)
            break
        else:
            logger.debug("place %s faces a top at %.2f m but no clear flat point on it", pname, z0)
    return out


def sim_world(scene: SceneConfig, *, map_resolution_m: float = 0.05) -> WorldKnowledge:
    """What the simulated room holds, from its scene config and MJCF at the start pose."""
    model = scene.load_model()
    data = mujoco.MjData(model)
    key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, scene.keyframe)
    if key >= 0:
        mujoco.mj_resetDataKeyframe(model, data, key)
    mujoco.mj_kinematics(model, data)
    places = {n: Place(n, p.pose, p.description) for n, p in scene.places.items()}
    objects = {}
    for n, spec in scene.objects.items():
        bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, spec.body)
        pos = data.xpos[bid].copy() if bid >= 0 else None
        objects[n] = KnownObject(n, spec.place, spec.color, spec.size_m, pos)
    receptacles = {}
    for n, spec in scene.receptacles.items():
        sid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, spec.drop_site)
        if sid < 0:
            raise ConfigError(f"scene receptacle {n!r}: drop site {spec.drop_site!r} is not in the MJCF")
        receptacles[n] = Receptacle(n, data.site_xpos[sid].copy(), spec.place, spec.color)
    surfaces = find_surfaces(scene, model, data, objects, receptacles)
    grid = occupancy_grid(scene, resolution_m=map_resolution_m)
    return WorldKnowledge(places=places, objects=objects, receptacles=receptacles, surfaces=surfaces,
                          map=OccupancyMap.of(grid), robot_radius_m=scene.robot_radius_m)


def make_sim(*, clock: Clock = MONOTONIC, recorder: Recorder | None = None, **options: Any) -> Embodiment:
    """The built-in ``sim`` robot: the simulated robot (not connected), its head camera (not
    open), the room's world knowledge, and how the control process builds the same robot."""
    opts = _options(options)
    scene = scene_with_overrides(opts)
    robot = build_sim_robot(opts, clock=clock, recorder=recorder)
    nq = int(robot.model.nq)
    telemetry = Telemetry(nq + 1, sim_telemetry, _holding_decoder(robot.object_names(), nq))
    view = _QposView(robot, telemetry)
    c = opts.camera
    cam_name = scene.robot.camera
    camera = SimCamera(robot, qpos_fn=view.qpos, width=c.width, height=c.height, rate_hz=c.rate_hz,
                       depth=c.depth, threaded=c.threaded, camera=cam_name, clock=clock,
                       recorder=recorder)
    cid = mujoco.mj_name2id(robot.model, mujoco.mjtObj.mjOBJ_CAMERA, cam_name)
    mount = robot.model.body(int(robot.model.cam_bodyid[cid])).name
    cameras = {cam_name: RobotCamera(cam_name, camera, camera.intrinsics, mount, camera.camera_pose_world,
                                     rate_hz=c.rate_hz, depth=c.depth)}
    for name, ec in opts.extra_cameras.items():
        eid = mujoco.mj_name2id(robot.model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if eid < 0:
            robot.close()
            known = [robot.model.camera(i).name for i in range(robot.model.ncam)]
            raise ConfigError(f"robot.options.extra_cameras.{name}: no camera {name!r} in the scene; "
                              f"it has {', '.join(known)}")
        extra = SimCamera(robot, qpos_fn=view.qpos, width=ec.width, height=ec.height, rate_hz=ec.rate_hz,
                          depth=ec.depth, threaded=ec.threaded, camera=name, clock=clock, recorder=recorder)
        frame = robot.model.body(int(robot.model.cam_bodyid[eid])).name
        cameras[name] = RobotCamera(name, extra, extra.intrinsics, frame, extra.camera_pose_world,
                                    rate_hz=ec.rate_hz, depth=ec.depth)
    try:
        world = sim_world(scene, map_resolution_m=opts.map_resolution_m)
    except BaseException:
        robot.close()
        raise
    process_opts = opts.model_dump(mode="json", exclude_defaults=True)
    return Embodiment(
        robot=robot, cameras=cameras, world=world, kinematics=robot.kinematics,
        has_base=True, has_arm=True, process_safe=True,
        process_factory=FactoryRef("rtvla.robots.sim.embodiment:make_sim_robot", process_opts,
                                   where="robot.options"),
        telemetry=telemetry, name="sim",
    )


make_sim.Options = SimOptions  # type: ignore[attr-defined]
