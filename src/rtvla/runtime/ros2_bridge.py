"""The ROS 2 bridge of a run: ``[ros2] enabled = true``.

While the stack runs, a ROS 2 system (through rmw_zenoh, no ROS installation here) sees
``/joint_states``, ``/tf`` (world -> base_link), each camera as ``<camera>/image_raw`` (and
``/compressed``) and ``/rtvla/status``; it may send ``/cmd_vel`` (geometry_msgs/Twist) and
``/rtvla/instruction`` (std_msgs/String).

* ``cmd_vel`` is teleoperation: it becomes a base-velocity setpoint through the control
  loop's watchdog like every setpoint (stamped on arrival, so a stale one is refused and a
  silent sender stops the base), and it is honoured only while no task is executing: during
  a task, navigation owns the base and a ``cmd_vel`` is counted and ignored (logged once).
* Instructions are queued for the caller (:meth:`RunBridge.next_instruction`; the Python
  API runs them with ``stack.run``) and recorded as events.

Usage::

    bridge = RunBridge(stack, BridgeSettings.from_section(cfg.section("ros2"))).start()
    ...
    bridge.stop()
"""

from __future__ import annotations

import logging
import math
import queue
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.action.setpoints import Setpoint
from rtvla.config import format_validation_error
from rtvla.errors import ConfigError
from rtvla.timing import MONOTONIC, Periodic

__all__ = ["BridgeSettings", "RunBridge"]

logger = logging.getLogger(__name__)


class BridgeSettings(BaseModel):
    """The ``[ros2]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    domain_id: int = Field(0, ge=0, le=232)
    namespace: str = "/"
    node_name: str = "rtvla"
    distro: str = Field("jazzy", pattern="^(jazzy|humble)$")
    mode: str = Field("peer", pattern="^(peer|client)$")
    connect: list[str] = Field(default_factory=list)
    listen: list[str] = Field(default_factory=list)
    state_hz: float = Field(20.0, gt=0, le=200, description="joint_states, tf and status rate")
    image_hz: float = Field(5.0, ge=0, le=60, description="camera images (0: none)")
    compressed: bool = True

    @classmethod
    def from_section(cls, table: dict[str, Any]) -> BridgeSettings:
        try:
            return cls.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(format_validation_error("ros2", exc)) from None


class RunBridge:
    """A :class:`~rtvla.ros2.bridge.Ros2Bridge` fed by a running stack."""

    def __init__(self, stack: Any, settings: BridgeSettings) -> None:
        self.stack = stack
        self.settings = settings
        self.session: Any = None
        self.bridge: Any = None
        self.instructions: queue.Queue[str] = queue.Queue()
        self.cmd_vel_applied = 0
        self.cmd_vel_ignored = 0
        self.published = 0
        self._warned = False
        self._ticks = 0
        self._image_every = (max(1, round(settings.state_hz / settings.image_hz))
                             if settings.image_hz > 0 else 0)
        self._worker = Periodic(1.0 / settings.state_hz, self._publish, name="rtvla-ros2")

    def start(self) -> RunBridge:
        from rtvla.channels.zenoh_channel import zenoh_config
        from rtvla.ros2.bridge import Ros2Bridge

        try:
            import zenoh
        except ImportError as exc:
            raise ConfigError("[ros2] needs eclipse-zenoh: pip install 'rtvla[zenoh]'") from exc
        s = self.settings
        self.session = zenoh.open(zenoh_config(mode=s.mode, listen=s.listen, connect=s.connect))
        cams = [c.name for c in self.stack.cameras]
        try:
            self.bridge = Ros2Bridge(
                self.session, joint_names=self.stack.robot.limits.joint_names, node_name=s.node_name,
                namespace=s.namespace, domain_id=s.domain_id, distro=s.distro, cameras=cams,
                compressed=s.compressed, on_cmd_vel=self._on_cmd_vel, on_instruction=self._on_instruction)
        except Exception:
            self.session.close()
            raise
        self._worker.start()
        self.stack.recorder.event("ros2", "bridge", f"ROS 2 bridge up (domain {s.domain_id}, {s.distro}, "
                                  f"node {s.node_name})")
        return self

    def stop(self) -> None:
        self._worker.stop(timeout=2.0)
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None
        if self.session is not None:
            self.session.close()
            self.session = None

    def stats(self) -> dict[str, Any]:
        return {"published": self.published, "cmd_vel_applied": self.cmd_vel_applied,
                "cmd_vel_ignored": self.cmd_vel_ignored,
                "instructions_received": self.bridge.instructions_received if self.bridge else None}

    def next_instruction(self, timeout: float | None = None) -> str | None:
        try:
            return self.instructions.get(timeout=timeout)
        except queue.Empty:
            return None

    # -- callbacks (Zenoh's thread: short) -------------------------------------------------

    def _busy(self) -> bool:
        status = self.stack.executor.status.value
        return status in ("running", "executing")

    def _on_cmd_vel(self, cmd: Any) -> None:
        if self._busy():
            self.cmd_vel_ignored += 1
            if not self._warned:
                self._warned = True
                logger.warning("ros2: cmd_vel ignored while a task runs (navigation owns the base)")
            return
        self.stack.setpoints.publish(Setpoint(**cmd.setpoint_fields()))
        self.cmd_vel_applied += 1

    def _on_instruction(self, text: str) -> None:
        self.instructions.put(text)
        self.stack.recorder.event("ros2", "instruction", f"instruction received: {text!r}")

    # -- publishing ----------------------------------------------------------------------

    def _publish(self) -> None:
        from rtvla.ros2.bridge import Transform, yaw_quaternion

        b, stack = self.bridge, self.stack
        if b is None:
            return
        state = stack.robot.read_state()
        b.publish_joint_states(state, stamp_ns=state.stamp_ns)
        x, y, yaw = (float(v) for v in state.base_pose)
        b.publish_tf([Transform("world", "base_link", (x, y, 0.0), yaw_quaternion(yaw), state.stamp_ns)])
        self._ticks += 1
        if self._ticks % max(1, int(self.settings.state_hz)) == 0:
            b.publish_status({"executor": stack.executor.status.value,
                              "critical_failure": stack.critical_failure,
                              "control_stopped": bool(getattr(stack.robot, "stopped", False)),
                              "t": MONOTONIC.now_ns() / 1e9})
        if self._image_every and self._ticks % self._image_every == 0:
            for cam in stack.cameras:
                frame = cam.source.read()
                image = getattr(frame, "image", None)
                if image is not None and not (isinstance(image, float) and math.isnan(image)):
                    b.publish_image(image, stamp_ns=getattr(frame, "stamp_ns", None), camera=cam.name)
        self.published += 1
