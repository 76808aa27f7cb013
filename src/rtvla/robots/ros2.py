"""The ROS 2 robot part: drive a robot whose driver is a ROS 2 node, over rmw_zenoh's wire format.

``[robot] type = "ros2"`` plus topic names is all a ROS 2 robot needs: :class:`Ros2Robot`
reads ``/joint_states`` (sensor_msgs/msg/JointState; the newest one, stamped on arrival),
sends arm commands as ``trajectory_msgs/msg/JointTrajectory`` (joint_trajectory_controller)
or ``std_msgs/msg/Float64MultiArray`` (ros2_control's forward position or velocity
controllers) on a configurable topic, and base velocity as ``geometry_msgs/msg/Twist`` on
``/cmd_vel``. No ROS installation: a Zenoh session reaches the ROS 2 graph (through the
``rmw_zenohd`` router, or peer to peer) and :mod:`rtvla.ros2` speaks its format.

``read_state()`` fails (RobotError) once the newest joint state is older than
``stale_after_s``, so a control loop trips and stops the robot when its driver goes quiet.
Every command is validated against the configured limits before anything is published.
``stop()`` latches: it publishes a zero twist and a hold-position command and refuses every
further command until :meth:`Ros2Robot.reset_stop`.

Config::

    [robot]
    type = "ros2"
    [robot.options]
    joint_names = ["joint1", "joint2", "joint3"]
    q_min = [-3.1, -2.0, -2.5]
    q_max = [3.1, 2.0, 2.5]
    command_topic = "/joint_trajectory_controller/joint_trajectory"
    connect = ["tcp/127.0.0.1:7447"]          # the rmw_zenohd router
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rtvla.channels.zenoh_channel import zenoh_config
from rtvla.errors import CommandRejected, RobotError, Ros2Error
from rtvla.robots.base import CommandMode, RobotCommand, RobotLimits, RobotState, validate_command
from rtvla.ros2.keys import fully_qualified_name, normalize_namespace
from rtvla.ros2.node import EntityIds, Ros2Node, Ros2Sample
from rtvla.timing import MONOTONIC, Clock

__all__ = ["Ros2Robot", "Ros2RobotOptions", "make_embodiment", "make_robot"]

logger = logging.getLogger(__name__)

JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
JOINT_STATE = "sensor_msgs/msg/JointState"
TWIST = "geometry_msgs/msg/Twist"
ODOMETRY = "nav_msgs/msg/Odometry"


class Ros2RobotOptions(BaseModel):
    """The ``[robot.options]`` table of a ``ros2`` robot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    joint_names: list[str] = Field(default_factory=list, description="arm joints, in command order")
    q_min: list[float] | None = Field(default=None, description="per joint, rad (default -pi)")
    q_max: list[float] | None = Field(default=None, description="per joint, rad (default pi)")
    dq_max: list[float] | None = Field(default=None, description="per joint, rad/s (default 1)")
    ddq_max: list[float] | None = Field(default=None, description="per joint, rad/s^2 (default 5)")
    jerk_max: list[float] | None = Field(default=None, description="per joint, rad/s^3 (default 50)")
    has_base: bool = True
    base_lin_vel_max: float = Field(default=0.5, gt=0)
    base_ang_vel_max: float = Field(default=1.5, gt=0)

    domain_id: int = Field(default=0, ge=0, le=232)
    distro: Literal["jazzy", "humble"] = "jazzy"
    attachment: Literal["positional", "keyed"] = Field(
        default="positional", description="'keyed' for rmw_zenoh_cpp older than 0.2.4")
    node_name: str = "rtvla_robot"
    namespace: str = "/"
    joint_states_topic: str = "/joint_states"
    command_topic: str = "/joint_trajectory_controller/joint_trajectory"
    command_type: Literal["trajectory_msgs/msg/JointTrajectory", "std_msgs/msg/Float64MultiArray"] = JOINT_TRAJECTORY
    command_interface: Literal["position", "velocity"] = Field(
        default="position", description="what the controller on command_topic takes")
    trajectory_time_s: float = Field(default=0.1, gt=0, description="time_from_start of each trajectory point")
    cmd_vel_topic: str = "/cmd_vel"
    odom_topic: str | None = Field(default=None, description="nav_msgs/Odometry for the base pose, e.g. /odom")
    gripper_topic: str | None = Field(default=None, description="Float64MultiArray [0..1] for a forward gripper controller")

    mode: Literal["peer", "client"] = "peer"
    connect: list[str] = Field(default_factory=lambda: ["tcp/127.0.0.1:7447"])
    listen: list[str] = Field(default_factory=list)
    multicast_scouting: bool = False
    state_timeout_s: float = Field(default=10.0, gt=0, description="connect() waits this long for joint_states")
    stale_after_s: float | None = Field(
        default=1.0, gt=0, description="read_state() fails when the newest joint_states is older (None: never)")

    @field_validator("joint_names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if any(not n for n in v) or len(set(v)) != len(v):
            raise ValueError(f"joint names must be non-empty and distinct, got {v}")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        try:
            return normalize_namespace(v)
        except Ros2Error as exc:
            raise ValueError(str(exc)) from None

    @field_validator("joint_states_topic", "command_topic", "cmd_vel_topic", "odom_topic", "gripper_topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                fully_qualified_name(v)
            except Ros2Error as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _limits(self) -> Ros2RobotOptions:
        n = len(self.joint_names)
        for name in ("q_min", "q_max", "dq_max", "ddq_max", "jerk_max"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} values, joint_names has {n}")
            if v is not None and not all(math.isfinite(x) for x in v):
                raise ValueError(f"{name} must be finite, got {v}")
        lo, hi = self.limits_arrays()[:2]
        bad = np.flatnonzero(lo >= hi)
        if bad.size:
            j = int(bad[0])
            raise ValueError(f"q_min[{self.joint_names[j]}] = {lo[j]} must be < q_max = {hi[j]}")
        for name in ("dq_max", "ddq_max", "jerk_max"):
            v = getattr(self, name)
            if v is not None and any(x <= 0 for x in v):
                raise ValueError(f"{name} must be > 0, got {v}")
        if self.command_type == JOINT_TRAJECTORY and self.command_interface == "velocity":
            raise ValueError("command_interface 'velocity' needs command_type std_msgs/msg/Float64MultiArray "
                             "(a forward velocity controller); JointTrajectory commands are positions here")
        return self

    def limits_arrays(self) -> tuple[np.ndarray, ...]:
        n = len(self.joint_names)

        def arr(v: list[float] | None, default: float) -> np.ndarray:
            return np.full(n, default) if v is None else np.asarray(v, dtype=float)

        return (arr(self.q_min, -math.pi), arr(self.q_max, math.pi), arr(self.dq_max, 1.0),
                arr(self.ddq_max, 5.0), arr(self.jerk_max, 50.0))

    def limits(self) -> RobotLimits:
        q_min, q_max, dq_max, ddq_max, jerk_max = self.limits_arrays()
        return RobotLimits(joint_names=tuple(self.joint_names), q_min=q_min, q_max=q_max, dq_max=dq_max,
                           ddq_max=ddq_max, jerk_max=jerk_max, base_lin_vel_max=self.base_lin_vel_max,
                           base_ang_vel_max=self.base_ang_vel_max)


def _yaw(q: Any) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


class Ros2Robot:
    """A :class:`~rtvla.robots.base.Robot` whose driver is a ROS 2 node.

    ``session``: an open Zenoh session to use (and not close); by default ``connect()``
    opens one from the options' endpoints. ``ids``: the session's entity counter when other
    ROS 2 nodes (a :class:`~rtvla.ros2.bridge.Ros2Bridge`) share that session.
    """

    def __init__(self, options: Ros2RobotOptions, *, session: Any = None, clock: Clock = MONOTONIC,
                 ids: EntityIds | None = None) -> None:
        if not isinstance(options, Ros2RobotOptions):
            raise RobotError(f"Ros2Robot needs Ros2RobotOptions, got {type(options).__name__}")
        self.options = options
        self.limits = options.limits()
        self.clock = clock
        self.name = options.node_name
        self._session = session
        self._ids = ids
        self._owns_session = session is None
        self._node: Ros2Node | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._connected = False
        self._odom: Ros2Sample | None = None
        self.commands_sent = 0
        self.commands_refused = 0
        self._gripper_warned = False

    # -- lifecycle --------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the session, declare the node and its endpoints, wait for the first joint_states."""
        if self._connected:
            return
        o = self.options
        if self._session is None:
            import zenoh

            try:
                conf = zenoh_config(mode=o.mode, listen=o.listen, connect=o.connect,
                                    multicast_scouting=o.multicast_scouting)
                self._session = zenoh.open(conf)
            except Exception as exc:  # ChannelError for bad endpoints, zenoh's own errors
                raise RobotError(f"ros2 robot: cannot open a Zenoh session (connect={o.connect}, "
                                 f"listen={o.listen}): {exc}") from exc
        try:
            node = Ros2Node(self._session, o.node_name, namespace=o.namespace, domain_id=o.domain_id,
                            distro=o.distro, clock=self.clock, ids=self._ids, attachment=o.attachment)
            self._node = node
            self._states = node.subscription(o.joint_states_topic, JOINT_STATE)
            self._cmd_pub = node.publisher(o.command_topic, o.command_type)
            self._twist_pub = node.publisher(o.cmd_vel_topic, TWIST) if o.has_base else None
            self._gripper_pub = node.publisher(o.gripper_topic, FLOAT64_ARRAY) if o.gripper_topic else None
            self._odom_sub = node.subscription(o.odom_topic, ODOMETRY) if o.odom_topic else None
            if self._states.wait_newer(0, timeout=o.state_timeout_s) is None:
                raise RobotError(f"ros2 robot: no {self._states.topic} (sensor_msgs/msg/JointState) within "
                                 f"{o.state_timeout_s} s on domain {o.domain_id}; is the driver running "
                                 f"and the Zenoh router reachable at {o.connect}?")
            self._map_joints(self._states.latest())  # fails early if joints are missing
        except Exception:
            self._teardown()
            raise
        self._connected = True

    def _teardown(self) -> None:
        if self._node is not None:
            self._node.close()
            self._node = None
        if self._owns_session and self._session is not None:
            self._session.close()
            self._session = None

    def close(self) -> None:
        """Undeclare everything and close the session if this robot opened it; idempotent."""
        self._connected = False
        self._teardown()

    def __enter__(self) -> Ros2Robot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------------

    def _map_joints(self, sample: Ros2Sample | None) -> np.ndarray:
        if sample is None:
            raise RobotError("ros2 robot: no joint_states received yet")
        names = list(sample.msg.name)
        try:
            return np.array([names.index(n) for n in self.limits.joint_names], dtype=np.intp)
        except ValueError:
            missing = [n for n in self.limits.joint_names if n not in names]
            raise RobotError(f"ros2 robot: joint_states lacks joints {missing} (it has {names})") from None

    def read_state(self) -> RobotState:
        """The newest joint state in configured joint order, stamped when it arrived (monotonic)."""
        if self._node is None:
            raise RobotError("ros2 robot: read_state() before connect()")
        sample = self._states.latest()
        idx = self._map_joints(sample)
        assert sample is not None
        stale = self.options.stale_after_s
        if stale is not None:
            age = (self.clock.now_ns() - sample.received_ns) / 1e9
            if age > stale:
                # The driver stopped publishing: a state this old must not drive the arm.
                raise RobotError(f"ros2 robot: newest {self._states.topic} is {age:.2f} s old "
                                 f"(> stale_after_s = {stale} s); is the driver alive?")
        m = sample.msg

        def pick(values: Any) -> np.ndarray:
            v = np.asarray(values, dtype=float)
            return v[idx] if v.size == len(m.name) else np.zeros(len(idx))

        base_pose, base_vel = np.zeros(3), np.zeros(3)
        odom = self._odom_sub.latest() if self._odom_sub is not None else None
        if odom is not None:
            p, t = odom.msg.pose.pose, odom.msg.twist.twist
            base_pose = np.array([p.position.x, p.position.y, _yaw(p.orientation)])
            base_vel = np.array([t.linear.x, t.linear.y, t.angular.z])
        return RobotState(stamp_ns=sample.received_ns, q=pick(m.position), dq=pick(m.velocity),
                          effort=pick(m.effort), base_pose=base_pose, base_vel=base_vel)

    # -- commands ---------------------------------------------------------------------------

    def _arm_message(self, values: np.ndarray) -> Any:
        types = self._node.types  # type: ignore[union-attr]
        if self.options.command_type == FLOAT64_ARRAY:
            layout = types.make("std_msgs/msg/MultiArrayLayout", dim=[], data_offset=0)
            return types.make(FLOAT64_ARRAY, layout=layout, data=np.asarray(values, dtype=np.float64))
        sec, frac = divmod(self.options.trajectory_time_s, 1.0)
        point = types.make("trajectory_msgs/msg/JointTrajectoryPoint",
                           positions=np.asarray(values, dtype=np.float64), velocities=np.zeros(0),
                           accelerations=np.zeros(0), effort=np.zeros(0),
                           time_from_start=types.make("builtin_interfaces/msg/Duration", sec=int(sec),
                                                      nanosec=int(round(frac * 1e9))))
        # A zero header stamp means "start now" to joint_trajectory_controller.
        return types.make(JOINT_TRAJECTORY, header=types.header(0), joint_names=list(self.limits.joint_names),
                          points=[point])

    def _twist(self, v: np.ndarray) -> Any:
        types = self._node.types  # type: ignore[union-attr]
        vec = "geometry_msgs/msg/Vector3"
        return types.make(TWIST, linear=types.make(vec, x=float(v[0]), y=float(v[1]), z=0.0),
                          angular=types.make(vec, x=0.0, y=0.0, z=float(v[2])))

    def send_command(self, cmd: RobotCommand) -> None:
        """Validate ``cmd`` and publish it; CommandRejected (nothing sent) if invalid or stopped."""
        if self._node is None:
            raise RobotError("ros2 robot: send_command() before connect()")
        with self._lock:
            if self._stopped:
                self.commands_refused += 1
                raise CommandRejected("ros2 robot is stopped (latched); call reset_stop() before commanding it")
            validate_command(cmd, self.limits)
            want = CommandMode.POSITION if self.options.command_interface == "position" else CommandMode.VELOCITY
            if cmd.arm is not None and cmd.mode is not want:
                raise CommandRejected(f"command.mode {cmd.mode.value} but {self.options.command_topic} "
                                      f"takes {want.value} commands (command_interface)")
            base = None if cmd.base_vel is None else np.asarray(cmd.base_vel, dtype=float)
            if base is not None and self._twist_pub is None and np.any(base != 0.0):
                raise CommandRejected(f"command.base_vel {base.tolist()} but this robot has no base (has_base=false)")
            if cmd.gripper is not None and self._gripper_pub is None and not self._gripper_warned:
                self._gripper_warned = True
                logger.warning("ros2 robot: gripper commands ignored (no gripper_topic configured)")
            # Everything is checked: now publish.
            if cmd.arm is not None and self.limits.dof:
                self._cmd_pub.publish(self._arm_message(np.asarray(cmd.arm, dtype=float)))
            if base is not None and self._twist_pub is not None:
                self._twist_pub.publish(self._twist(base))
            if cmd.gripper is not None and self._gripper_pub is not None:
                types = self._node.types
                self._gripper_pub.publish(types.make(
                    FLOAT64_ARRAY, layout=types.make("std_msgs/msg/MultiArrayLayout", dim=[], data_offset=0),
                    data=np.array([float(cmd.gripper)])))
            self.commands_sent += 1

    def stop(self) -> None:
        """Zero base velocity and hold the arm where it is; latched until :meth:`reset_stop`."""
        with self._lock:
            self._stopped = True
            if self._node is None:
                return
            if self._twist_pub is not None:
                self._twist_pub.publish(self._twist(np.zeros(3)))
            if self.limits.dof:
                if self.options.command_interface == "velocity":
                    self._cmd_pub.publish(self._arm_message(np.zeros(self.limits.dof)))
                else:
                    try:
                        q = self.read_state().q
                    except RobotError as exc:  # no state: nothing to hold, the twist is out
                        logger.error("ros2 robot: stop() could not read the arm position to hold: %s", exc)
                    else:
                        self._cmd_pub.publish(self._arm_message(np.clip(q, self.limits.q_min, self.limits.q_max)))

    def reset_stop(self) -> None:
        """Release a latched stop: commands are accepted again."""
        with self._lock:
            self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def __repr__(self) -> str:
        return (f"Ros2Robot({self.options.node_name!r}, domain={self.options.domain_id}, "
                f"{self.limits.dof} joints, {'stopped' if self._stopped else 'running'})")


def make_robot(**options: Any) -> Ros2Robot:
    """The ``ros2`` robot part: ``make_robot(joint_names=[...], command_topic=...)``."""
    return Ros2Robot(Ros2RobotOptions(**options))


make_robot.Options = Ros2RobotOptions  # type: ignore[attr-defined]  # the resolver validates with it


def make_embodiment(**options: Any) -> Any:
    """The ``ros2`` robot as an :class:`~rtvla.robots.embodiment.Embodiment`: it says whether
    there is a base and lets a control process build its own Ros2Robot (its own Zenoh session)
    from the same options."""
    from rtvla.parts import FactoryRef
    from rtvla.robots.embodiment import Embodiment

    opts = Ros2RobotOptions(**options)
    robot = Ros2Robot(opts)
    return Embodiment(robot=robot, has_base=opts.has_base, has_arm=robot.limits.dof > 0, process_safe=True,
                      process_factory=FactoryRef("rtvla.robots.ros2:make_robot", opts.model_dump()),
                      name=f"ros2:{opts.node_name}")


make_embodiment.Options = Ros2RobotOptions  # type: ignore[attr-defined]
