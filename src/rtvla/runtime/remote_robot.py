"""Any robot running inside the control process, seen from the main process.

With ``control.placement = "process"`` the control loop and the robot it drives live in
their own process (a robot plug-in's ``process_factory`` builds the robot there), so Python
work in the main process can never delay a control cycle. The main process still needs the
robot for everything else: its state (navigation, skills, the planner's context), its limits
and kinematics, what it holds. :class:`RemoteRobot` gives exactly that from what the control
process publishes through shared memory (the state every tick, plus the plug-in's telemetry
array), and turns :meth:`stop` into a latched stop inside the control loop.

Usage::

    proc = ControlProcess(emb.process_factory, emb.robot.limits.dof, telemetry=emb.telemetry.write,
                          telemetry_size=emb.telemetry.size).start()
    robot = RemoteRobot(emb.robot, proc, emb.telemetry)
    emb = emb.hosted(robot, proc.latest_telemetry)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rtvla.action.control_process import ControlProcess
from rtvla.action.setpoints import Setpoint
from rtvla.errors import RobotError
from rtvla.robots.base import RobotState

__all__ = ["ProcessSetpoints", "RemoteRobot"]


class ProcessSetpoints:
    """The setpoint channel into a :class:`ControlProcess` (``publish`` only: the control loop
    is the sole reader, in the other process)."""

    name = "setpoints"

    def __init__(self, process: ControlProcess) -> None:
        self.process = process

    def publish(self, value: Setpoint) -> int:
        return self.process.publish(value)

    def latest(self) -> None:
        return None

    def wait_newer(self, seq: int, timeout: float | None = None) -> None:
        return None

    def close(self) -> None:
        """The control process owns the shared memory."""


class RemoteRobot:
    """The main process's view of the robot a :class:`ControlProcess` drives.

    ``model`` is the plug-in's local robot object (never connected here): it supplies the
    limits and kinematics. ``telemetry`` (optional) decodes what the robot holds.
    """

    def __init__(self, model: Any, process: ControlProcess, telemetry: Any = None) -> None:
        self.model = model
        self.process = process
        self.telemetry = telemetry
        self.limits = model.limits
        self.kinematics = getattr(model, "kinematics", None)
        self.name = getattr(model, "name", type(model).__name__)

    # -- Robot protocol -------------------------------------------------------------------

    def connect(self) -> None:
        """The control process connected the real one."""

    def close(self) -> None:
        """The control process owns and closes the robot."""

    @property
    def holding(self) -> str | None:
        tel = self.telemetry
        decode = getattr(tel, "holding", None) if tel is not None else None
        if decode is None:
            return None
        arr = self.process.latest_telemetry()
        return None if arr is None else decode(arr)

    def read_state(self) -> RobotState:
        ps = self.process.latest_state()
        if ps is None:
            raise RobotError("the control process has not published the robot's state yet")
        return dataclasses.replace(ps.state, holding=self.holding)

    @property
    def stopped(self) -> bool:
        """True while the control loop holds a latched stop."""
        ps = self.process.latest_state()
        return bool(ps is not None and ps.tripped)

    def send_command(self, cmd: Any) -> None:
        raise RobotError("commands go to the control process through setpoints, not send_command()")

    def stop(self) -> None:
        """A latched safe stop in the control process: the arm holds where it is, the base
        stops, and no setpoint moves the robot again until :meth:`reset_stop`."""
        if self.process.is_alive():
            self.process.request_stop()

    def reset_stop(self) -> None:
        """Release a latched stop (the robot holds until the next setpoint)."""
        if not self.process.is_alive():
            raise RobotError("the control process is not running; nothing to reset")
        self.process.reset_stop()
