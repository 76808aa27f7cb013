"""The simulated robot running inside the control process, seen from the main process.

With ``control.placement = "process"`` the control loop and the simulator it drives live in
their own process (as a real robot's driver would), so Python work in the main process can
never delay a control cycle. The main process still needs the robot for everything else:
its state (navigation, skills), where things are (kinematics, drop sites) and its full
simulation state (the camera renders from it). :class:`RemoteSimRobot` gives exactly that
from what the control process publishes through shared memory: the robot state every tick and
a telemetry array (``qpos`` plus the held object) written by :func:`sim_telemetry`.

A private, never-stepped ``SimRobot`` of the same scene (the *shadow*) is kept in sync with
the published ``qpos`` for kinematics and frame poses; it never runs physics.

Usage::

    proc = ControlProcess(partial(build_sim_robot, settings), dof, settings=ctl,
                          telemetry=sim_telemetry, telemetry_size=telemetry_size(scene)).start()
    robot = RemoteSimRobot(scene, proc)
    robot.read_state().base_pose
    camera = SimCamera(None, scene=scene, qpos_fn=robot.qpos_snapshot)
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np

from rtvla.action.control_process import ControlProcess
from rtvla.action.setpoints import Setpoint
from rtvla.errors import RobotError
from rtvla.robots.base import RobotState
from rtvla.robots.sim import SimRobot
from rtvla.robots.sim.scene import SceneConfig
from rtvla.timing import MONOTONIC, Clock

__all__ = ["ProcessSetpoints", "RemoteSimRobot", "sim_telemetry", "telemetry_size"]


def telemetry_size(scene: SceneConfig) -> int:
    """Floats in the telemetry layout: ``[qpos(nq), held object index or -1]``."""
    return int(scene.load_model().nq) + 1


def sim_telemetry(robot: Any, out: np.ndarray) -> None:
    """Runs in the control process after each tick: the full qpos and the held object."""
    q = robot.qpos_snapshot()
    n = len(q)
    out[:n] = q
    held = robot.holding
    out[n] = -1.0 if held is None else float(robot.object_names().index(held))


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


class RemoteSimRobot:
    """The main process's view of a :class:`SimRobot` driven by a :class:`ControlProcess`.

    It is read-only except :meth:`stop`, which sends a hold-position, zero-velocity setpoint
    (the control process's own watchdog and teardown stop the robot too).
    """

    def __init__(self, scene: SceneConfig, process: ControlProcess | None = None, *,
                 clock: Clock = MONOTONIC) -> None:
        self.scene = scene
        self.process = process  # set before use when built ahead of the process
        self.clock = clock
        self.name = "sim"
        self._shadow = SimRobot(scene, lockstep=True, clock=clock, name="sim_shadow")
        self.model = self._shadow.model
        self.limits = self._shadow.limits
        self.kinematics = self._shadow.kinematics
        self._objects = self._shadow.object_names()
        self._lock = threading.Lock()
        self._nq = int(self.model.nq)
        self._last_tel: np.ndarray | None = None

    # -- Robot protocol -------------------------------------------------------------------

    def connect(self) -> None:
        """The control process connected the real one; nothing to do here."""

    def close(self) -> None:
        """The control process owns and closes the simulator."""

    def _telemetry(self) -> np.ndarray:
        tel = self.process.latest_telemetry() if self.process is not None else None
        if tel is None:
            if self._last_tel is None:
                raise RobotError("the control process has not published the robot's state yet")
            return self._last_tel
        self._last_tel = tel
        return tel

    @property
    def holding(self) -> str | None:
        idx = int(self._telemetry()[self._nq])
        return None if idx < 0 else self._objects[idx]

    def read_state(self) -> RobotState:
        ps = self.process.latest_state() if self.process is not None else None
        if ps is None:
            raise RobotError("the control process has not published the robot's state yet")
        return dataclasses.replace(ps.state, holding=self.holding)

    def send_command(self, cmd: Any) -> None:
        raise RobotError("commands go to the control process through setpoints, not send_command()")

    def stop(self) -> None:
        """A latched safe stop in the control process: the arm holds where it is, the base
        stops, and no setpoint moves the robot again until :meth:`reset_stop`."""
        proc = self.process
        if proc is not None and proc.is_alive():
            proc.request_stop()

    def reset_stop(self) -> None:
        """Release a latched stop (the robot holds until the next setpoint)."""
        proc = self.process
        if proc is None or not proc.is_alive():
            raise RobotError("the control process is not running; nothing to reset")
        proc.reset_stop()

    # -- what the rest of the stack reads from a SimRobot ---------------------------------

    def qpos_snapshot(self) -> np.ndarray:
        return self._telemetry()[: self._nq].copy()

    def _sync(self) -> None:
        """Pose the shadow model at the newest published qpos (before the first one, the
        shadow keeps the scene's initial pose: static frames such as drop sites are right)."""
        import mujoco

        try:
            q = self.qpos_snapshot()
        except RobotError:
            return
        sh = self._shadow
        with sh._lock:
            sh.data.qpos[:] = q
            mujoco.mj_kinematics(sh.model, sh.data)

    def base_pose(self) -> np.ndarray:
        return self.read_state().base_pose.copy()

    def frame_pose(self, name: str, kind: str = "site") -> np.ndarray:
        self._sync()
        return self._shadow.frame_pose(name, kind)

    def object_names(self) -> list[str]:
        return list(self._objects)

    def object_position(self, name: str) -> np.ndarray:
        self._sync()
        return self._shadow.object_position(name)

    def occupancy_grid(self, *args: Any, **kwargs: Any) -> Any:
        return self._shadow.occupancy_grid(*args, **kwargs)
