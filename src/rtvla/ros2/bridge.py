"""``Ros2Bridge``: what a run shows a ROS 2 system, and what it takes from it.

Out: ``joint_states`` (sensor_msgs/msg/JointState) from a ``RobotState``-like snapshot, each
camera as ``<camera>/image_raw`` (sensor_msgs/msg/Image, rgb8) and optionally
``<camera>/image_raw/compressed`` (sensor_msgs/msg/CompressedImage, jpeg), ``tf``
(tf2_msgs/msg/TFMessage) from the transforms it is given, and the run's status as JSON
(std_msgs/msg/String). In: ``cmd_vel`` (geometry_msgs/msg/Twist), handed on as a
:class:`BaseVelocityCommand` (the fields of ``rtvla.action.setpoints.Setpoint``, stamped on
arrival with the local monotonic clock so the control loop's watchdog refuses a stale one)
and an instruction topic (std_msgs/msg/String) whose text goes to a callback.

Topic names are relative, so a namespace (``/robot1``) prefixes them as in ROS. Header
stamps are ROS time (the wall clock): a monotonic stamp is mapped onto it on this host.

Usage::

    bridge = Ros2Bridge(session, joint_names=robot.limits.joint_names,
                        on_cmd_vel=lambda c: setpoints.publish(Setpoint(**c.setpoint_fields())),
                        on_instruction=executor.start_task)
    bridge.publish_joint_states(robot.read_state())
    bridge.publish_image(frame_rgb, stamp_ns=stamp, camera="head")
    bridge.publish_tf([Transform("map", "base_link", (x, y, 0), yaw_quaternion(yaw), stamp)])
    bridge.publish_status({"task": "pick", "state": "running"})
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtvla.errors import FrameError, Ros2Error
from rtvla.metrics.report import json_safe
from rtvla.ros2.keys import check_domain_id
from rtvla.ros2.liveliness import Qos
from rtvla.ros2.node import EntityIds, Ros2Node, Ros2Publisher, Ros2Sample
from rtvla.ros2.types import MessageTypes
from rtvla.timing import MONOTONIC, Clock

__all__ = ["BaseVelocityCommand", "BridgeTopics", "Ros2Bridge", "Transform", "yaw_quaternion"]

logger = logging.getLogger(__name__)

JOINT_STATE = "sensor_msgs/msg/JointState"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
STRING = "std_msgs/msg/String"
TWIST = "geometry_msgs/msg/Twist"


@dataclass(frozen=True)
class BridgeTopics:
    """Topic names (relative ones get the bridge's namespace)."""

    joint_states: str = "joint_states"
    tf: str = "tf"
    status: str = "rtvla/status"
    cmd_vel: str = "cmd_vel"
    instruction: str = "rtvla/instruction"
    image: str = "{camera}/image_raw"
    compressed: str = "{camera}/image_raw/compressed"


@dataclass(frozen=True)
class Transform:
    """One ``geometry_msgs/TransformStamped``: ``child`` in ``parent``, rotation as (x, y, z, w)."""

    parent: str
    child: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)
    stamp_ns: int | None = None  # monotonic; None: now


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """A rotation of ``yaw`` rad about z as (x, y, z, w)."""
    return (0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))


@dataclass(frozen=True)
class BaseVelocityCommand:
    """A ``cmd_vel`` as a base-velocity setpoint: the fields of ``rtvla.action.setpoints.Setpoint``.

    ``stamp_ns`` is the local monotonic time of arrival (the sender's clock is not
    comparable), so the watchdog's age check measures how long ago ROS said it.
    ``Setpoint(**cmd.setpoint_fields())`` builds the setpoint.
    """

    stamp_ns: int
    base_vel: np.ndarray
    seq: int
    arm_q: np.ndarray | None = None
    gripper: float | None = None
    ignored: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))  # linear.z, angular.x, angular.y

    def setpoint_fields(self) -> dict[str, Any]:
        return {"stamp_ns": self.stamp_ns, "arm_q": self.arm_q, "base_vel": self.base_vel.copy(),
                "gripper": self.gripper, "seq": self.seq}


class Ros2Bridge:
    """Publishes a run's state to ROS 2 and receives ``cmd_vel`` and instructions from it.

    ``session`` is an open Zenoh session (borrowed, not closed); ``ids``: share one
    :class:`~rtvla.ros2.node.EntityIds` with other nodes on that session; ``attachment``: the
    layout sent (see :class:`~rtvla.ros2.node.Ros2Node`). ``on_cmd_vel`` and
    ``on_instruction`` run on Zenoh's thread: keep them short (publish to a channel).
    """

    def __init__(self, session: Any, *, joint_names: Sequence[str], node_name: str = "rtvla",
                 namespace: str = "/", domain_id: int = 0, distro: str = "jazzy",
                 topics: BridgeTopics = BridgeTopics(),
                 on_cmd_vel: Callable[[BaseVelocityCommand], None] | None = None,
                 on_instruction: Callable[[str], None] | None = None,
                 cameras: Sequence[str] = ("camera",), compressed: bool = False, jpeg_quality: int = 90,
                 image_qos: Qos = Qos.sensor_data(),
                 clock: Clock = MONOTONIC, wall_clock_ns: Callable[[], int] = time.time_ns,
                 ids: EntityIds | None = None, attachment: str = "positional") -> None:
        check_domain_id(domain_id)
        if isinstance(joint_names, str) or not all(isinstance(n, str) and n for n in joint_names):
            raise Ros2Error(f"bridge joint_names must be a list of non-empty names, got {joint_names!r}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise Ros2Error(f"bridge jpeg_quality must be in 1..100, got {jpeg_quality}")
        self.joint_names = tuple(joint_names)
        self.topics = topics
        self.compressed = compressed
        self.jpeg_quality = int(jpeg_quality)
        self.image_qos = image_qos
        self.clock = clock
        self.wall_clock_ns = wall_clock_ns
        self.on_cmd_vel = on_cmd_vel
        self.on_instruction = on_instruction
        self.types = MessageTypes(distro)
        self.node = Ros2Node(session, node_name, namespace=namespace, domain_id=domain_id,
                             types=self.types, clock=clock, wall_clock_ns=wall_clock_ns, ids=ids,
                             attachment=attachment)  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self._cmd_seq = 0
        self._latest_cmd: BaseVelocityCommand | None = None
        self.instructions_received = 0
        try:
            self._joint_pub = self.node.publisher(topics.joint_states, JOINT_STATE)
            self._tf_pub = self.node.publisher(topics.tf, TF_MESSAGE)
            self._status_pub = self.node.publisher(topics.status, STRING)
            self._image_pubs: dict[str, tuple[Ros2Publisher, Ros2Publisher | None]] = {}
            for camera in cameras:
                self._image_publishers(camera)
            self.cmd_vel = self.node.subscription(topics.cmd_vel, TWIST, self._on_cmd_vel)
            self.instruction = self.node.subscription(topics.instruction, STRING, self._on_instruction)
        except Exception:
            self.node.close()
            raise

    def publishers(self) -> list[Ros2Publisher]:
        """Every publisher the bridge has declared so far."""
        with self._lock:
            images = [p for pair in self._image_pubs.values() for p in pair if p is not None]
        return [self._joint_pub, self._tf_pub, self._status_pub, *images]

    def wait_matched(self, timeout: float) -> bool:
        """Block until every publisher has a subscriber somewhere (False on timeout)."""
        end = self.clock.now_ns() + int(timeout * 1e9)
        for pub in self.publishers():
            left = max(0.0, (end - self.clock.now_ns()) / 1e9)
            if not pub.wait_matched(left):
                return False
        return True

    # -- time -------------------------------------------------------------------------------

    def ros_time_ns(self, stamp_ns: int | None = None) -> int:
        """A monotonic stamp of this host as ROS time (wall clock ns); None: now."""
        wall = self.wall_clock_ns()
        if stamp_ns is None:
            return wall
        return wall - (self.clock.now_ns() - int(stamp_ns))

    # -- out ----------------------------------------------------------------------------------

    def publish_joint_states(self, state: Any, *, stamp_ns: int | None = None) -> int:
        """``state``: anything with ``q``, ``dq``, ``effort`` arrays in joint order and ``stamp_ns``
        (a ``RobotState``). Returns the sample's sequence number."""
        q = np.asarray(state.q, dtype=np.float64)
        n = len(self.joint_names)
        if q.shape != (n,):
            raise Ros2Error(f"joint_states: state.q has shape {q.shape}, the bridge has {n} joint names")

        def arr(name: str) -> np.ndarray:
            v = np.asarray(getattr(state, name, ()), dtype=np.float64).reshape(-1)
            if v.size not in (0, n):
                raise Ros2Error(f"joint_states: state.{name} has {v.size} values, expected {n} or none")
            return v

        stamp = stamp_ns if stamp_ns is not None else getattr(state, "stamp_ns", None)
        msg = self.types.make(JOINT_STATE, header=self.types.header(self.ros_time_ns(stamp)),
                              name=list(self.joint_names), position=q.copy(), velocity=arr("dq"),
                              effort=arr("effort"))
        return self._joint_pub.publish(msg)

    def _image_publishers(self, camera: str) -> tuple[Ros2Publisher, Ros2Publisher | None]:
        with self._lock:
            pubs = self._image_pubs.get(camera)
            if pubs is None:
                raw = self.node.publisher(self.topics.image.format(camera=camera), IMAGE, self.image_qos)
                comp = (self.node.publisher(self.topics.compressed.format(camera=camera), COMPRESSED_IMAGE,
                                            self.image_qos) if self.compressed else None)
                pubs = self._image_pubs[camera] = (raw, comp)
            return pubs

    def image_matched(self, camera: str = "camera") -> bool:
        """Whether a subscriber matches ``camera``'s raw or compressed image topic."""
        raw, comp = self._image_publishers(camera)
        return raw.wait_matched(0) or (comp is not None and comp.wait_matched(0))

    def publish_image(self, frame: np.ndarray, *, stamp_ns: int | None = None, camera: str = "camera",
                      frame_id: str | None = None, only_matched: bool = False) -> int:
        """An RGB ``(H, W, 3)`` uint8 frame as ``sensor_msgs/Image`` (rgb8), plus JPEG if enabled.

        ``only_matched``: serialize and send only to the topics a subscriber matches (a
        frame is large); returns the raw image's sequence number, 0 if it was not sent."""
        img = np.asarray(frame)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise FrameError(f"bridge image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
        raw_pub, comp_pub = self._image_publishers(camera)
        h, w = img.shape[:2]
        header = self.types.header(self.ros_time_ns(stamp_ns), frame_id or f"{camera}_optical_frame")
        seq = 0
        if not only_matched or raw_pub.wait_matched(0):
            data = np.ascontiguousarray(img).reshape(-1)
            msg = self.types.make(IMAGE, header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                                  step=w * 3, data=data)
            seq = raw_pub.publish(msg)
        if comp_pub is not None and (not only_matched or comp_pub.wait_matched(0)):
            import cv2

            ok, jpeg = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise FrameError(f"JPEG encoding of a {w}x{h} frame failed")
            comp_pub.publish(self.types.make(COMPRESSED_IMAGE, header=header, format="jpeg",
                                             data=np.asarray(jpeg, dtype=np.uint8).reshape(-1)))
        return seq

    def publish_tf(self, transforms: Sequence[Transform]) -> int:
        """One ``TFMessage`` holding ``transforms``."""
        out = []
        for t in transforms:
            tr = [float(v) for v in t.translation]
            rot = [float(v) for v in t.rotation]
            if len(tr) != 3 or len(rot) != 4 or not all(math.isfinite(v) for v in tr + rot):
                raise Ros2Error(f"tf {t.parent}->{t.child}: translation needs 3 and rotation 4 finite values")
            norm = math.sqrt(sum(v * v for v in rot))
            if abs(norm - 1.0) > 1e-3:
                raise Ros2Error(f"tf {t.parent}->{t.child}: rotation {rot} is not a unit quaternion")
            out.append(self.types.make(
                "geometry_msgs/msg/TransformStamped",
                header=self.types.header(self.ros_time_ns(t.stamp_ns), t.parent), child_frame_id=t.child,
                transform=self.types.make(
                    "geometry_msgs/msg/Transform",
                    translation=self.types.make("geometry_msgs/msg/Vector3", x=tr[0], y=tr[1], z=tr[2]),
                    rotation=self.types.make("geometry_msgs/msg/Quaternion", x=rot[0], y=rot[1], z=rot[2],
                                             w=rot[3]))))
        return self._tf_pub.publish(self.types.make(TF_MESSAGE, transforms=out))

    def publish_status(self, status: Mapping[str, Any]) -> int:
        """The run's status as JSON text (NaN/inf become null)."""
        text = json.dumps(json_safe(dict(status)), allow_nan=False, sort_keys=True)
        return self._status_pub.publish(self.types.make(STRING, data=text))

    # -- in -----------------------------------------------------------------------------------

    def _on_cmd_vel(self, sample: Ros2Sample) -> None:
        m = sample.msg
        with self._lock:
            self._cmd_seq += 1
            cmd = BaseVelocityCommand(
                stamp_ns=sample.received_ns, seq=self._cmd_seq,
                # Non-finite values pass through on purpose: the watchdog refuses them and stops.
                base_vel=np.array([m.linear.x, m.linear.y, m.angular.z], dtype=np.float64),
                ignored=(float(m.linear.z), float(m.angular.x), float(m.angular.y)))
            self._latest_cmd = cmd
        if self.on_cmd_vel is not None:
            self.on_cmd_vel(cmd)

    def _on_instruction(self, sample: Ros2Sample) -> None:
        text = str(sample.msg.data).strip()
        if not text:
            logger.warning("ros2 bridge: ignored an empty instruction on %s", self.instruction.topic)
            return
        self.instructions_received += 1
        if self.on_instruction is not None:
            self.on_instruction(text)

    def latest_cmd_vel(self) -> BaseVelocityCommand | None:
        """The newest ``cmd_vel`` received, or None."""
        return self._latest_cmd

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Undeclare the node and its endpoints (the session stays open); idempotent."""
        self.node.close()

    def __enter__(self) -> Ros2Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
