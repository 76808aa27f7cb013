"""The ROS 2 bridge of a run: ``[ros2] enabled = true``.

While the stack runs, a ROS 2 system (Jazzy or later, or Humble with ``distro = "humble"``,
running ``rmw_zenoh_cpp``; no ROS installation here) sees the node ``/rtvla`` publishing
``/joint_states`` (sensor_msgs/JointState), ``/tf`` (tf2_msgs/TFMessage: world -> base_link),
each camera as ``/<camera>/image_raw`` (sensor_msgs/Image, and ``/compressed`` JPEG) and
``/rtvla/status`` (std_msgs/String, JSON: on every change of the executor's status and once a
second), and may send ``/cmd_vel`` (geometry_msgs/Twist) and ``/rtvla/instruction``
(std_msgs/String). Relative names get ``namespace``.

* ``cmd_vel`` is teleoperation: it becomes a base-velocity setpoint through the control
  loop's watchdog like every setpoint (stamped on arrival, so a stale one is refused, and a
  sender that goes silent while the base moves trips the watchdog, whose stop latches; a
  zero twist at the end stops the base without a trip). It is honoured only while no task
  executes (before the plan starts and after it ends): during a task, navigation owns the
  base and a ``cmd_vel`` is counted as ignored (one event, one warning). Once the run stops,
  every ``cmd_vel`` is ignored.
* An instruction is queued and recorded as an event; ``rtvla run`` carries out its own task
  and leaves queued instructions in the report (``ros2.instructions.pending``). The Python
  API runs them: ``text = bridge.next_instruction(timeout=...)`` then ``stack.run(text)``.

Large camera images are serialized only while a subscriber matches them. Stopping is
bounded (``stop_timeout_s``) whatever the Zenoh session does.

Usage::

    bridge = RunBridge(stack, BridgeSettings.from_section(cfg.section("ros2"))).start()
    ...
    report["ros2"] = bridge.stop()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rtvla.action.setpoints import Setpoint
from rtvla.config import validate_table
from rtvla.errors import ConfigError, Ros2Error
from rtvla.timing import MONOTONIC, Clock, Periodic

__all__ = ["BridgeSettings", "RunBridge", "check_bridge_topics"]

logger = logging.getLogger(__name__)

_STATUS_PERIOD_S = 1.0  # /rtvla/status heartbeat besides every change
_BUSY = ("running",)  # executor states in which navigation owns the base


class BridgeSettings(BaseModel):
    """The ``[ros2]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    domain_id: int = Field(0, ge=0, le=232, description="ROS_DOMAIN_ID of the ROS 2 side")
    namespace: str = "/"
    node_name: str = "rtvla"
    distro: Literal["jazzy", "humble"] = "jazzy"
    attachment: Literal["positional", "keyed"] = Field(
        "positional", description="'keyed' for rmw_zenoh_cpp older than 0.2.4")
    mode: Literal["peer", "client"] = "peer"
    connect: list[str] = Field(default_factory=lambda: ["tcp/127.0.0.1:7447"],
                               description="Zenoh endpoints to connect to (default: the local rmw_zenohd)")
    listen: list[str] = Field(default_factory=list, description="Zenoh endpoints to accept on")
    multicast_scouting: bool = False
    state_hz: float = Field(20.0, gt=0, le=200, description="joint_states and tf rate")
    image_hz: float = Field(5.0, ge=0, le=60, description="camera images (0: none)")
    compressed: bool = True
    stop_timeout_s: float = Field(3.0, gt=0, le=60, description="bound on closing the bridge")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        from rtvla.ros2.keys import normalize_namespace

        try:
            return normalize_namespace(v)
        except Ros2Error as exc:
            raise ValueError(str(exc)) from None

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, v: str) -> str:
        from rtvla.ros2.keys import fully_qualified_name

        if "/" in v:
            raise ValueError(f"node name must not contain '/', got {v!r} (use namespace)")
        try:
            fully_qualified_name(v)  # same token rules as a one-token name
        except Ros2Error:
            raise ValueError(f"node name must be letters, digits and underscores, not starting "
                             f"with a digit, got {v!r}") from None
        return v

    @field_validator("connect", "listen")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        import re

        for e in v:
            if not re.match(r"^[a-z][a-z0-9+-]*/\S+$", e):
                raise ValueError(f"Zenoh endpoint must look like 'tcp/127.0.0.1:7447', got {e!r}")
        return v

    @classmethod
    def from_section(cls, table: dict[str, Any] | None) -> BridgeSettings:
        return validate_table(cls, table, "ros2")


def check_bridge_topics(settings: BridgeSettings, robot_table: dict[str, Any]) -> None:
    """Refuse a bridge whose topics are the ROS 2 robot part's own.

    With ``[robot] type = "ros2"`` on the same domain, a bridge in the same namespace would
    publish ``/joint_states`` beside the robot's driver and hear the robot's own ``/cmd_vel``
    as teleoperation (a feedback loop): ConfigError naming both fields.
    """
    if not settings.enabled or robot_table.get("type") != "ros2":
        return
    from rtvla.robots.ros2 import Ros2RobotOptions
    from rtvla.ros2.keys import fully_qualified_name

    try:
        opts = Ros2RobotOptions.model_validate(dict(robot_table.get("options") or {}))
    except ValidationError:
        return  # the robot part's own check names that problem
    if opts.domain_id != settings.domain_id:
        return
    ns = settings.namespace
    for mine, theirs, field in (("joint_states", opts.joint_states_topic, "joint_states_topic"),
                                ("cmd_vel", opts.cmd_vel_topic, "cmd_vel_topic")):
        if fully_qualified_name(mine, ns) == fully_qualified_name(theirs, opts.namespace):
            raise ConfigError(
                f"ros2.namespace: the bridge's {fully_qualified_name(mine, ns)} is the ROS 2 robot's own "
                f"robot.options.{field} on domain {settings.domain_id}; give the bridge its own "
                f"namespace (for example namespace = \"/rtvla\")")


class RunBridge:
    """A :class:`~rtvla.ros2.bridge.Ros2Bridge` fed by a running stack.

    ``stack`` needs ``robot`` (``read_state()``, ``limits.joint_names``), ``cameras``
    (``name``, ``source.read()``), ``setpoints`` (``publish``), ``executor.status``,
    ``recorder`` and ``critical_failure``: a :class:`~rtvla.runtime.stack.Stack` has them.
    """

    def __init__(self, stack: Any, settings: BridgeSettings, *, clock: Clock = MONOTONIC) -> None:
        self.stack = stack
        self.settings = settings
        self.clock = clock
        self.session: Any = None
        self.bridge: Any = None
        self._cmd_sub: Any = None  # the cmd_vel subscription, kept for its counters after stop
        self.instructions: queue.Queue[str] = queue.Queue()
        self.received_instructions: list[str] = []
        self.cmd_vel_applied = 0
        self.cmd_vel_ignored = 0  # a task was executing
        self.cmd_vel_refused = 0  # the run was stopping
        self.published = {"joint_states": 0, "tf": 0, "status": 0, "images": 0}
        self.images_unmatched = 0
        self.publish_errors = 0
        self.stop_s: float | None = None
        self._accepting = False
        self._warned_busy = False
        self._lock = threading.Lock()
        self._ticks = 0
        self._last_status: str | None = None
        self._last_status_ns = 0
        self._image_every = (max(1, round(settings.state_hz / settings.image_hz))
                             if settings.image_hz > 0 else 0)
        self._worker = Periodic(1.0 / settings.state_hz, self._publish, name="rtvla-ros2")

    def start(self) -> RunBridge:
        """Open the Zenoh session, declare the node and its endpoints, start publishing."""
        from rtvla.channels.zenoh_channel import zenoh_config
        from rtvla.ros2.bridge import Ros2Bridge

        try:
            import zenoh
        except ImportError as exc:
            raise ConfigError("[ros2] needs eclipse-zenoh: pip install 'rtvla[zenoh]'") from exc
        s = self.settings
        try:
            self.session = zenoh.open(zenoh_config(mode=s.mode, listen=s.listen, connect=s.connect,
                                                   multicast_scouting=s.multicast_scouting))
        except Exception as exc:  # zenoh's ZError: a port in use, a bad address
            raise Ros2Error(f"ros2 bridge: cannot open a Zenoh session (mode {s.mode}, listen={s.listen}, "
                            f"connect={s.connect}): {exc}") from exc
        cams = [c.name for c in self.stack.cameras]
        try:
            self.bridge = Ros2Bridge(
                self.session, joint_names=self.stack.robot.limits.joint_names, node_name=s.node_name,
                namespace=s.namespace, domain_id=s.domain_id, distro=s.distro, cameras=cams,
                compressed=s.compressed, on_cmd_vel=self._on_cmd_vel, on_instruction=self._on_instruction,
                clock=self.clock, attachment=s.attachment)
        except Exception:
            self.session.close()
            self.session = None
            raise
        self._cmd_sub = self.bridge.cmd_vel
        self._accepting = True
        self._worker.start()
        self.stack.recorder.event(
            "ros2", "bridge", f"ROS 2 bridge up: node {self.bridge.node.entity.namespace.rstrip('/')}/"
            f"{s.node_name}, domain {s.domain_id}, {s.distro}, {s.mode} listen={s.listen} connect={s.connect}",
            session=self.bridge.node.session_id)
        return self

    def stop(self) -> dict[str, Any]:
        """Stop publishing, undeclare and close the session within ``stop_timeout_s``; returns
        :meth:`report`. Never raises: a close that hangs or fails is an event."""
        self._accepting = False
        t0 = time.monotonic()
        self._worker.stop(timeout=self.settings.stop_timeout_s)
        errors: list[str] = []

        def close() -> None:
            try:
                if self.bridge is not None:
                    self.bridge.close()
                if self.session is not None:
                    self.session.close()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        started = self.bridge is not None or self.session is not None
        if started:
            # The session's close goes over the network: a thread keeps it bounded.
            t = threading.Thread(target=close, name="rtvla-ros2-close", daemon=True)
            t.start()
            t.join(max(0.0, self.settings.stop_timeout_s - (time.monotonic() - t0)))
            self.stop_s = round(time.monotonic() - t0, 3)
            if t.is_alive():
                self.stack.recorder.event("ros2", "fault", f"ROS 2 bridge did not close within "
                                          f"{self.settings.stop_timeout_s:g} s; left to finish in the background")
            elif errors:
                self.stack.recorder.event("ros2", "fault", f"ROS 2 bridge close failed: {errors[0]}")
            else:
                self.stack.recorder.event("ros2", "stopped", f"ROS 2 bridge closed in {self.stop_s:.2f} s",
                                          **self.counters())
        self.bridge = None
        self.session = None
        return self.report()

    # -- figures ---------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Flat counters (for events)."""
        return {"cmd_vel_applied": self.cmd_vel_applied, "cmd_vel_ignored": self.cmd_vel_ignored,
                "cmd_vel_refused": self.cmd_vel_refused, "instructions": len(self.received_instructions),
                **{f"published_{k}": v for k, v in self.published.items()}}

    def report(self) -> dict[str, Any]:
        """The ``ros2`` section of report.json."""
        s = self.settings
        sub = self._cmd_sub
        pending: list[str] = []
        while True:  # the queue is drained into the report only once the bridge is closed
            try:
                pending.append(self.instructions.get_nowait())
            except queue.Empty:
                break
        for text in pending:
            self.instructions.put(text)
        out: dict[str, Any] = {
            "enabled": True, "node": s.node_name, "namespace": s.namespace, "domain_id": s.domain_id,
            "distro": s.distro, "mode": s.mode, "listen": list(s.listen), "connect": list(s.connect),
            "published": dict(self.published), "images_unmatched": self.images_unmatched,
            "publish_errors": self.publish_errors + self._worker.errors,
            "cmd_vel": {"applied": self.cmd_vel_applied, "ignored_during_task": self.cmd_vel_ignored,
                        "refused_stopping": self.cmd_vel_refused},
            "instructions": {"received": list(self.received_instructions), "pending": pending},
            "stop_s": self.stop_s,
        }
        if sub is not None:
            out["cmd_vel"].update(received=sub.received, rejected=sub.rejected, decode_errors=sub.decode_errors)
        return out

    def next_instruction(self, timeout: float | None = None) -> str | None:
        """The oldest queued instruction, or None after ``timeout``."""
        try:
            return self.instructions.get(timeout=timeout)
        except queue.Empty:
            return None

    # -- callbacks (Zenoh's thread: short) -------------------------------------------------

    def _busy(self) -> bool:
        return self.stack.executor.status.value in _BUSY

    def _on_cmd_vel(self, cmd: Any) -> None:
        if not self._accepting:
            with self._lock:
                self.cmd_vel_refused += 1
            return
        if self._busy():
            with self._lock:
                self.cmd_vel_ignored += 1
                first = not self._warned_busy
                self._warned_busy = True
            if first:
                logger.warning("ros2: cmd_vel ignored while a task executes (navigation owns the base)")
                self.stack.recorder.event("ros2", "cmd_vel_ignored",
                                          "cmd_vel ignored while a task executes (navigation owns the base); "
                                          "counted in ros2.cmd_vel")
            return
        self.stack.setpoints.publish(Setpoint(**cmd.setpoint_fields()))
        with self._lock:
            self.cmd_vel_applied += 1
            first = self.cmd_vel_applied == 1
        if first:
            self.stack.recorder.event("ros2", "cmd_vel", "first cmd_vel from ROS 2 applied as a base-velocity "
                                      "setpoint", base_vel=[float(v) for v in cmd.base_vel])

    def _on_instruction(self, text: str) -> None:
        with self._lock:
            self.received_instructions.append(text)
        self.instructions.put(text)
        self.stack.recorder.event("ros2", "instruction", f"instruction received on ROS 2: {text!r} (queued)")

    # -- publishing (the worker thread) ----------------------------------------------------

    def _status(self) -> dict[str, Any]:
        stack = self.stack
        return {"executor": stack.executor.status.value, "critical_failure": stack.critical_failure,
                "cmd_vel_applied": self.cmd_vel_applied, "cmd_vel_ignored": self.cmd_vel_ignored,
                "instructions_pending": self.instructions.qsize(), "t": self.clock.now_ns() / 1e9}

    def _publish(self) -> None:
        from rtvla.ros2.bridge import Transform, yaw_quaternion

        b, stack = self.bridge, self.stack
        if b is None:
            return
        state = stack.robot.read_state()
        b.publish_joint_states(state, stamp_ns=state.stamp_ns)
        self.published["joint_states"] += 1
        pose = getattr(state, "base_pose", None)
        if pose is not None:
            x, y, yaw = (float(v) for v in pose)
            b.publish_tf([Transform("world", "base_link", (x, y, 0.0), yaw_quaternion(yaw), state.stamp_ns)])
            self.published["tf"] += 1
        now = self.clock.now_ns()
        status = stack.executor.status.value
        if status != self._last_status or now - self._last_status_ns >= _STATUS_PERIOD_S * 1e9:
            b.publish_status(self._status())
            self._last_status, self._last_status_ns = status, now
            self.published["status"] += 1
        self._ticks += 1
        if self._image_every and self._ticks % self._image_every == 0:
            self._publish_images(b)

    def _publish_images(self, b: Any) -> None:
        for cam in self.stack.cameras:
            if not b.image_matched(cam.name):
                self.images_unmatched += 1
                continue
            frame = cam.source.read()
            if frame is None:
                continue
            try:
                b.publish_image(frame.image, stamp_ns=frame.stamp_ns, camera=cam.name, only_matched=True)
                self.published["images"] += 1
            except Exception as exc:  # one bad frame must not end the bridge
                self.publish_errors += 1
                if self.publish_errors == 1 or self.publish_errors % 100 == 0:
                    logger.warning("ros2: camera %s frame not published: %s (%d so far)", cam.name, exc,
                                   self.publish_errors)
