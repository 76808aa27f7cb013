"""The run record's topics, JSON schemas, and builders of Foxglove messages from rtvla data.

Everything here is a pure function of its arguments (no channels, no threads), so the
writer thread of :class:`~rtvla.record.mcap.RunRecord` calls them and tests check them
directly. Poses are given either as a 4x4 homogeneous transform or as ``(xyz, quat)``
with the quaternion in MuJoCo's order ``(w, x, y, z)``; Foxglove's ``Quaternion`` takes
``x, y, z, w``, and :func:`pose_parts` does the conversion in one place.

Frames: ``world`` (the map), ``base`` (the robot base), ``camera/<name>`` (a camera's
optical frame: x right, y down, z forward), and one frame per arm link named after it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from foxglove import Schema
from foxglove.messages import (
    CameraCalibration,
    Color,
    CubePrimitive,
    FrameTransform,
    FrameTransforms,
    ImageAnnotations,
    JointState,
    JointStates,
    Log,
    LogLevel,
    Point2,
    PointsAnnotation,
    PointsAnnotationType,
    Pose,
    PoseInFrame,
    PosesInFrame,
    Quaternion,
    RawImage,
    SceneEntity,
    SceneEntityDeletion,
    SceneEntityDeletionType,
    SceneUpdate,
    TextAnnotation,
    TextPrimitive,
    Timestamp,
    Vector3,
)

__all__ = [
    "BASE_FRAME",
    "JSON_SCHEMAS",
    "TOPICS",
    "WORLD_FRAME",
    "annotations_msg",
    "base_pose_matrix",
    "calibration_msg",
    "camera_frame",
    "depth_msg",
    "joint_states_msg",
    "json_schema",
    "log_msg",
    "path_msg",
    "pose_msg",
    "pose_parts",
    "scene_update_msg",
    "stamp",
    "transforms_msg",
]

WORLD_FRAME = "world"
BASE_FRAME = "base"

#: Topic of each kind of message; per-camera and per-component topics are formatted.
TOPICS = {
    "image": "/camera/{camera}/image",
    "depth": "/camera/{camera}/depth",
    "calibration": "/camera/{camera}/calibration",
    "annotations": "/camera/{camera}/annotations",
    "detections": "/detections",
    "tf": "/tf",
    "joints": "/joint_states",
    "path": "/navigation/path",
    "goal": "/navigation/goal",
    "plan": "/plan",
    "step": "/plan/step",
    "log": "/log",
    "timing": "/timing/{component}",
    "control": "/control/timing",
}

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}

#: JSON schemas of the channels Foxglove has no schema for (name -> schema).
JSON_SCHEMAS: dict[str, dict[str, Any]] = {
    "rtvla.Plan": {
        "type": "object",
        "properties": {
            "instruction": _STR, "source": _STR, "degraded": {"type": "boolean"},
            "reason": _STR, "latency_s": _NUM,
            "steps": {"type": "array", "items": {"type": "object", "properties": {
                "index": _INT, "type": _STR, "name": _STR}}},
        },
    },
    "rtvla.PlanStep": {
        "type": "object",
        "properties": {"index": _INT, "count": _INT, "name": _STR, "status": _STR,
                       "phase": _STR, "reason": _STR},
    },
    "rtvla.ComponentTiming": {
        "type": "object",
        "properties": {
            "component": _STR, "rate_hz": _NUM, "achieved_hz": _NUM, "count": _INT,
            "latency_p50_ms": _NUM, "latency_p99_ms": _NUM, "latency_max_ms": _NUM,
            "budget_latency_ms": _NUM, "budget_rate_hz": _NUM, "missed": _INT,
            "violations": _INT, "cpu_percent": _NUM,
        },
    },
    "rtvla.ControlTiming": {
        "type": "object",
        "properties": {"lateness_us": _NUM, "step_us": _NUM, "tick": _INT},
    },
}


def json_schema(name: str) -> Schema:
    """The Foxglove ``Schema`` (encoding ``jsonschema``) registered under ``name``."""
    return Schema(name=name, encoding="jsonschema",
                  data=json.dumps(JSON_SCHEMAS[name]).encode("utf-8"))


def stamp(ns: int) -> Timestamp:
    """A Foxglove timestamp from integer nanoseconds (of the run's monotonic clock)."""
    ns = max(0, int(ns))
    return Timestamp(ns // 1_000_000_000, ns % 1_000_000_000)


def camera_frame(camera: str) -> str:
    return f"camera/{camera}"


def _mat_to_quat_wxyz(m: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z), robust for every rotation."""
    t = float(np.trace(m))
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
    out = np.array(q, dtype=float)
    return out / np.linalg.norm(out)


def pose_parts(pose: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz, quat_wxyz)`` of a 4x4 transform or of an ``(xyz, quat_wxyz)`` pair.

    Raises ``ValueError`` naming the shape when ``pose`` is neither.
    """
    if isinstance(pose, np.ndarray) and pose.shape == (4, 4):
        return pose[:3, 3].astype(float), _mat_to_quat_wxyz(pose[:3, :3])
    if isinstance(pose, (tuple, list)) and len(pose) == 2:
        xyz = np.asarray(pose[0], dtype=float).reshape(-1)
        quat = np.asarray(pose[1], dtype=float).reshape(-1)
        if xyz.shape == (3,) and quat.shape == (4,):
            n = float(np.linalg.norm(quat))
            if not n > 0:
                raise ValueError(f"pose quaternion must be non-zero, got {quat.tolist()}")
            return xyz, quat / n
    arr = np.asarray(pose, dtype=float)
    if arr.shape == (7,):  # x, y, z, qw, qx, qy, qz (SimRobot.object_pose)
        return arr[:3], arr[3:] / np.linalg.norm(arr[3:])
    if arr.shape == (4, 4):
        return pose_parts(arr)
    raise ValueError(f"a pose is a 4x4 transform, (xyz, quat_wxyz) or 7 values, got shape {arr.shape}")


def base_pose_matrix(base_pose: Sequence[float], z: float = 0.0) -> np.ndarray:
    """The 4x4 world transform of a planar base pose ``(x, y, yaw)``."""
    x, y, yaw = (float(v) for v in base_pose)
    c, s = math.cos(yaw), math.sin(yaw)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = (x, y, z)
    return m


def _fg_pose(pose: Any) -> Pose:
    xyz, q = pose_parts(pose)
    return Pose(position=Vector3(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
                orientation=Quaternion(x=float(q[1]), y=float(q[2]), z=float(q[3]), w=float(q[0])))


def transforms_msg(stamp_ns: int, transforms: Iterable[tuple[str, str, Any]]) -> FrameTransforms:
    """``FrameTransforms`` from ``(parent, child, pose of child in parent)`` triples."""
    ts = stamp(stamp_ns)
    out = []
    for parent, child, pose in transforms:
        xyz, q = pose_parts(pose)
        out.append(FrameTransform(
            timestamp=ts, parent_frame_id=parent, child_frame_id=child,
            translation=Vector3(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
            rotation=Quaternion(x=float(q[1]), y=float(q[2]), z=float(q[3]), w=float(q[0]))))
    return FrameTransforms(transforms=out)


def joint_states_msg(stamp_ns: int, names: Sequence[str], position: Sequence[float],
                     velocity: Sequence[float] | None = None,
                     effort: Sequence[float] | None = None) -> JointStates:
    joints = []
    for i, name in enumerate(names):
        joints.append(JointState(
            name=name, position=float(position[i]),
            velocity=None if velocity is None else float(velocity[i]),
            effort=None if effort is None else float(effort[i])))
    return JointStates(timestamp=stamp(stamp_ns), joints=joints)


def depth_msg(stamp_ns: int, camera: str, depth: np.ndarray) -> RawImage:
    """Depth in metres as ``16UC1`` millimetres: half the bytes of float32, still 1 mm steps."""
    mm = np.clip(np.nan_to_num(depth, nan=0.0, posinf=0.0) * 1000.0, 0, 65535).astype("<u2")
    h, w = mm.shape
    return RawImage(timestamp=stamp(stamp_ns), frame_id=camera_frame(camera), width=w, height=h,
                    encoding="16UC1", step=2 * w, data=mm.tobytes())


def calibration_msg(stamp_ns: int, camera: str, intrinsics: Any) -> CameraCalibration:
    """Pinhole calibration (no distortion) so Foxglove's 3D panel can project the image."""
    fx, fy, cx, cy = (float(intrinsics.fx), float(intrinsics.fy), float(intrinsics.cx),
                      float(intrinsics.cy))
    return CameraCalibration(
        timestamp=stamp(stamp_ns), frame_id=camera_frame(camera), width=int(intrinsics.width),
        height=int(intrinsics.height), distortion_model="plumb_bob", D=[0.0] * 5,
        K=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], R=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
        P=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


_GREEN = Color(r=0.1, g=0.9, b=0.2, a=1.0)
_WHITE = Color(r=1.0, g=1.0, b=1.0, a=1.0)
_SHADE = Color(r=0.0, g=0.0, b=0.0, a=0.6)


def annotations_msg(stamp_ns: int, items: Sequence[Any]) -> ImageAnnotations:
    """Boxes and labels of detections (``box``, ``label``, ``score``) on the camera image."""
    ts = stamp(stamp_ns)
    boxes, texts = [], []
    for d in items:
        x1, y1, x2, y2 = (float(v) for v in d.box)
        boxes.append(PointsAnnotation(
            timestamp=ts, type=PointsAnnotationType.LineLoop, thickness=2.0, outline_color=_GREEN,
            points=[Point2(x=x1, y=y1), Point2(x=x2, y=y1), Point2(x=x2, y=y2), Point2(x=x1, y=y2)]))
        texts.append(TextAnnotation(
            timestamp=ts, position=Point2(x=x1, y=max(0.0, y1 - 2.0)), font_size=12.0,
            text=f"{d.label} {float(d.score):.2f}", text_color=_WHITE, background_color=_SHADE))
    return ImageAnnotations(timestamp=ts, points=boxes, texts=texts)


def scene_update_msg(stamp_ns: int, camera: str, items: Sequence[Any],
                     size_m: float = 0.05) -> SceneUpdate:
    """Detections with a 3D ``position`` (camera optical frame, metres) as labelled cubes."""
    ts = stamp(stamp_ns)
    entities = []
    for i, d in enumerate(items):
        if d.position is None:
            continue
        x, y, z = (float(v) for v in d.position)
        pose = Pose(position=Vector3(x=x, y=y, z=z), orientation=Quaternion(w=1.0))
        label_pose = Pose(position=Vector3(x=x, y=y - 1.5 * size_m, z=z), orientation=Quaternion(w=1.0))
        entities.append(SceneEntity(
            timestamp=ts, frame_id=camera_frame(camera), id=f"det-{i}",
            cubes=[CubePrimitive(pose=pose, size=Vector3(x=size_m, y=size_m, z=size_m),
                                 color=Color(r=0.1, g=0.9, b=0.2, a=0.6))],
            texts=[TextPrimitive(pose=label_pose, billboard=True, font_size=14.0, scale_invariant=True,
                                 color=_WHITE, text=f"{d.label} {float(d.score):.2f}")]))
    # Every update replaces the last one: detections that vanished must vanish in the view.
    return SceneUpdate(deletions=[SceneEntityDeletion(timestamp=ts, type=SceneEntityDeletionType.All)],
                       entities=entities)


def path_msg(stamp_ns: int, path_xy: np.ndarray, frame: str = WORLD_FRAME) -> PosesInFrame:
    """A navigation path (``(N, 2)`` world x, y) as poses on the floor."""
    pts = np.asarray(path_xy, dtype=float).reshape(-1, 2)
    poses = [Pose(position=Vector3(x=float(x), y=float(y), z=0.01), orientation=Quaternion(w=1.0))
             for x, y in pts]
    return PosesInFrame(timestamp=stamp(stamp_ns), frame_id=frame, poses=poses)


def pose_msg(stamp_ns: int, pose: Any, frame: str = WORLD_FRAME) -> PoseInFrame:
    """A goal: a planar ``(x, y, yaw)`` or any pose :func:`pose_parts` accepts."""
    arr = np.asarray(pose, dtype=float) if not isinstance(pose, (tuple, list)) or len(pose) != 2 else None
    if arr is not None and arr.shape == (3,):
        yaw = float(arr[2]) if math.isfinite(arr[2]) else 0.0
        pose = base_pose_matrix((arr[0], arr[1], yaw))
    return PoseInFrame(timestamp=stamp(stamp_ns), frame_id=frame, pose=_fg_pose(pose))


_LEVELS = {"debug": LogLevel.Debug, "info": LogLevel.Info, "warning": LogLevel.Warning,
           "error": LogLevel.Error, "fatal": LogLevel.Fatal}


def log_msg(stamp_ns: int, level: str, message: str, name: str) -> Log:
    return Log(timestamp=stamp(stamp_ns), level=_LEVELS.get(level, LogLevel.Info), message=message,
               name=name)
