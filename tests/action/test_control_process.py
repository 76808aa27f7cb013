from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import psutil
import pytest

from rtvla.action.control import ControlSettings
from rtvla.action.control_process import ControlProcess, state_array_size, state_from_array
from rtvla.action.setpoints import Setpoint
from rtvla.bench.control import KinematicRobot
from rtvla.errors import ComponentError
from rtvla.timing import MONOTONIC

DOF = 6


def _wait_state(proc: ControlProcess, pred, timeout: float = 20.0):
    """Follow the published state until ``pred(state)`` holds (None on timeout)."""
    deadline = MONOTONIC.now_ns() + int(timeout * 1e9)
    while MONOTONIC.now_ns() < deadline:
        st = proc.wait_state(0.5)
        if st is not None and pred(st):
            return st
    return None


def _children() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if c.is_running()
            and c.status() != psutil.STATUS_ZOMBIE]


def test_process_follows_setpoint_through_shm_and_stops_cleanly():
    settings = ControlSettings(placement="process", spin_margin_s=0.0, freeze_gc=True)
    proc = ControlProcess(functools.partial(KinematicRobot, DOF), DOF, settings=settings)
    goal = np.array([0.5, -0.5, 0.3, 0.0, 0.2, -0.1])
    with proc:
        assert proc.is_alive() and proc.pid != os.getpid()
        assert "gc" in proc.child_info["realtime"]
        proc.publish(Setpoint(stamp_ns=MONOTONIC.now_ns(), arm_q=goal, gripper=1.0))
        st = _wait_state(proc, lambda s: np.allclose(s.state.q, goal, atol=1e-6))
        assert st is not None, "the arm never reached the goal"
        assert st.state.gripper == 1.0 and not st.tripped
        live = _wait_state(proc, lambda s: proc.live_stats().get("ticks", 0) > 20)
        assert live is not None
        # Stale setpoint through shm: the child's watchdog refuses it.
        proc.publish(Setpoint(stamp_ns=MONOTONIC.now_ns() - 2_000_000_000, arm_q=np.zeros(DOF)))
        assert _wait_state(proc, lambda s: s.tripped) is not None
        pid = proc.pid
    stats = proc.final_stats
    assert stats is not None
    assert stats["ticks"] > 20 and stats["setpoints_accepted"] == 1
    assert stats["watchdog_trips"] == 1 and "stale" in stats["last_trip_reason"]
    assert len(stats["lateness_us"]) == stats["ticks"]
    assert any(e["kind"] == "watchdog" for e in stats["events"])
    assert not proc.is_alive() and proc._proc.exitcode == 0
    assert pid not in [c.pid for c in _children()]
    with pytest.raises(ComponentError, match="not started"):
        ControlProcess(functools.partial(KinematicRobot, DOF), DOF).publish(
            Setpoint(stamp_ns=0, arm_q=np.zeros(DOF)))


def test_child_failure_is_reported_to_the_parent():
    # dof=-1 makes the robot factory raise inside the child.
    proc = ControlProcess(functools.partial(KinematicRobot, -1), DOF)
    with pytest.raises(ComponentError, match="dof must be >= 1"):
        proc.start()
    assert not proc.is_alive()


_ORPHAN_SCRIPT = textwrap.dedent("""
    import functools, os, sys
    from rtvla.action.control import ControlSettings
    from rtvla.action.control_process import ControlProcess
    from rtvla.bench.control import KinematicRobot
    proc = ControlProcess(functools.partial(KinematicRobot, 6), 6,
                          settings=ControlSettings(spin_margin_s=0.0))
    proc.start()
    print(proc.pid, flush=True)
    os._exit(0)  # die without stopping the control process
""")


def test_no_orphan_when_the_parent_dies():
    out = subprocess.run([sys.executable, "-c", _ORPHAN_SCRIPT], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    child_pid = int(out.stdout.split()[-1])
    try:
        child = psutil.Process(child_pid)
        child.wait(timeout=10)
    except psutil.NoSuchProcess:
        return  # already gone
    except psutil.TimeoutExpired:
        child.kill()
        pytest.fail("the control process outlived its parent")


def test_state_layout_round_trip():
    from rtvla.action.control_process import _state_to_array
    from rtvla.robots.base import RobotState

    st = RobotState(stamp_ns=123, q=np.arange(3.0), dq=np.ones(3), effort=np.zeros(3),
                    base_pose=np.array([1.0, 2.0, 0.5]), base_vel=np.array([0.1, 0.0, 0.2]),
                    gripper=0.5)
    arr = _state_to_array(st, 7, True, np.zeros(state_array_size(3)))
    back = state_from_array(arr, 3)
    assert back.tick == 7 and back.tripped
    np.testing.assert_array_equal(back.state.q, st.q)
    np.testing.assert_array_equal(back.state.base_pose, st.base_pose)
    assert back.state.gripper == 0.5 and back.state.stamp_ns == 123
