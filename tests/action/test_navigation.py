from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from rtvla.action.grid import GridMap
from rtvla.action.navigation import Navigator, NavigatorConfig, NavStatus
from rtvla.action.setpoints import Setpoint
from rtvla.channels import LatestValue
from rtvla.errors import ConfigError, NavigationError
from rtvla.metrics import Recorder
from rtvla.robots.base import RobotState
from rtvla.timing import FakeClock


class _Base:
    """A kinematic base that executes the newest base-velocity setpoint (or ignores it)."""

    def __init__(self, kinematic_base, pose, *, stuck=False):
        self.kb = kinematic_base(pose)
        self.stuck = stuck

    def read_state(self) -> RobotState:
        return RobotState(stamp_ns=0, q=np.zeros(5), dq=np.zeros(5), effort=np.zeros(5),
                          base_pose=self.kb.pose.copy())

    def apply(self, channel: LatestValue, dt: float) -> None:
        sample = channel.latest()
        if sample is not None and not self.stuck:
            self.kb.apply(sample.value.base_vel, dt)


def _nav(grid, base, *, places=None, config=None):
    clock = FakeClock(1_000_000_000)
    rec = Recorder(clock=clock)
    sp = LatestValue("setpoints", clock=clock)
    nav = Navigator(grid, base, sp, places=places or {}, config=config, recorder=rec, clock=clock)
    return nav, sp, clock, rec


def _spin(nav, base, sp, clock, seconds):
    for _ in range(int(seconds * 10)):
        clock.advance(0.1)
        status = nav.update(clock.now_ns())
        base.apply(sp, 0.1)
        if status is not NavStatus.RUNNING:
            return status
    return nav.state().status


def test_navigator_reaches_a_pose_around_a_wall(wall_map: GridMap, kinematic_base) -> None:
    base = _Base(kinematic_base, (-2.0, -2.0, 0.0))
    nav, sp, clock, rec = _nav(wall_map, base, places={"far": (2.0, -2.0, math.pi / 2)})
    nav.set_goal("far")
    status = _spin(nav, base, sp, clock, 60)
    assert status is NavStatus.SUCCEEDED, nav.state()
    pose = base.kb.pose
    assert np.hypot(pose[0] - 2.0, pose[1] + 2.0) <= nav.config.position_tolerance_m
    assert abs((pose[2] - math.pi / 2 + math.pi) % (2 * math.pi) - math.pi) <= nav.config.yaw_tolerance_rad
    last = sp.latest().value
    assert isinstance(last, Setpoint) and np.all(last.base_vel == 0)  # stops at the goal
    snap = rec.snapshot()["navigation"]
    assert snap["latency_ms"]["count"] > 10 and "dwa" in snap["observed_ms"]


def test_setpoints_respect_speed_and_acceleration(wall_map: GridMap, kinematic_base) -> None:
    base = _Base(kinematic_base, (-2.0, -2.0, 0.0))
    nav, sp, clock, _ = _nav(wall_map, base)
    nav.set_goal((-0.8, -2.0, 0.0), max_speed=0.3)
    prev = np.zeros(3)
    for _ in range(100):
        clock.advance(0.1)
        if nav.update(clock.now_ns()) is not NavStatus.RUNNING:
            break
        v = sp.latest().value.base_vel
        assert np.all(np.abs(v[:2]) <= 0.3 + 1e-9)
        assert np.all(np.abs(v[:2] - prev[:2]) <= nav.config.max_accel * 0.1 + 1e-9)
        prev = v
        base.apply(sp, 0.1)
    assert nav.state().status is NavStatus.SUCCEEDED


def test_stuck_robot_triggers_replans_then_fails(wall_map: GridMap, kinematic_base) -> None:
    base = _Base(kinematic_base, (-2.0, -2.0, 0.0), stuck=True)
    cfg = NavigatorConfig(stuck_window_s=1.0, max_replans=2)
    nav, sp, clock, rec = _nav(wall_map, base, config=cfg)
    nav.set_goal((2.0, -2.0, 0.0))
    status = _spin(nav, base, sp, clock, 30)
    assert status is NavStatus.FAILED
    st = nav.state()
    assert "stuck" in st.reason and "gave up after 2 replans" in st.reason
    assert st.replans == 3
    assert sum(e.kind == "replan" for e in rec.events) == 2
    assert np.all(sp.latest().value.base_vel == 0)  # it stopped the base


def test_goal_errors(wall_map: GridMap, kinematic_base) -> None:
    base = _Base(kinematic_base, (-2.0, -2.0, 0.0))
    nav, *_ = _nav(wall_map, base, places={"home": (-2.0, -2.0, 0.0)},
                   config=NavigatorConfig(snap_radius_m=0.0))
    with pytest.raises(NavigationError, match="unknown place 'moon'"):
        nav.set_goal("moon")
    with pytest.raises(NavigationError, match="blocked"):
        nav.set_goal((0.0, -1.5, 0.0))  # inside the wall
    with pytest.raises(NavigationError, match="goal pose"):
        nav.set_goal((float("nan"), 0.0))
    with pytest.raises(NavigationError, match="keys x and y"):
        nav.set_goal({"x": 1.0})
    assert nav.resolve({"x": -1.5, "y": -2.0, "yaw": 0.5}) == ((-1.5, -2.0, 0.5), None)
    assert nav.state().status is NavStatus.IDLE


def test_cancel_and_timeout(wall_map: GridMap, kinematic_base) -> None:
    base = _Base(kinematic_base, (-2.0, -2.0, 0.0))
    nav, sp, clock, _ = _nav(wall_map, base)
    nav.set_goal((2.0, -2.0, 0.0))
    _spin(nav, base, sp, clock, 1.0)
    nav.cancel("operator said stop")
    st = nav.state()
    assert st.status is NavStatus.CANCELED and st.reason == "operator said stop"
    assert np.all(sp.latest().value.base_vel == 0)
    nav.set_goal((2.0, -2.0, 0.0), timeout_s=2.0)
    assert _spin(nav, base, sp, clock, 10) is NavStatus.FAILED
    assert "timed out after 2.0 s" in nav.state().reason


def test_config_validation() -> None:
    cfg = NavigatorConfig.from_section({"max_speed": 0.3, "dwa": {"samples_vx": 5}})
    assert cfg.dwa_config().samples_vx == 5 and cfg.dwa_config().max_speed == 0.3
    with pytest.raises(ConfigError, match=r"navigation\.bogus: unknown key"):
        NavigatorConfig.from_section({"bogus": 1})
    with pytest.raises(ConfigError, match=r"navigation\.max_speed"):
        NavigatorConfig.from_section({"max_speed": -1})
    with pytest.raises(ConfigError, match=r"navigation\.dwa"):
        NavigatorConfig.from_section({"dwa": {"nope": 1}})


def test_navigator_reaches_a_named_place_in_lockstep_sim(lockstep_stack) -> None:
    from rtvla.robots.sim.grid import occupancy_grid

    def make_nav(sim, sp, clock, rec):
        return Navigator(occupancy_grid(sim.scene), sim, sp, places=sim.scene.places,
                         recorder=rec, clock=clock)

    s = lockstep_stack("home", navigator=make_nav)
    s.navigator.set_goal("table")
    ok = s.driver.run_until(lambda: s.navigator.state().done, 60)
    assert ok and s.navigator.state().status is NavStatus.SUCCEEDED, s.navigator.state()
    goal = np.array(s.sim.scene.place("table").pose)
    pose = s.sim.base_pose()
    assert np.hypot(*(pose[:2] - goal[:2])) < 0.06
    assert abs(pose[2] - goal[2]) < 0.08
    # the shelf block stands between home and the table: the path bends around it
    assert len(s.navigator.path) >= 3
    assert s.control.stats()["watchdog_trips"] == 0


def test_navigator_runs_on_its_own_rate_loop(wall_map: GridMap, kinematic_base) -> None:
    """run() in a thread at 10 Hz on the real clock; the base integrates in the test thread."""
    base = _Base(kinematic_base, (-2.0, -2.0, 0.0))
    sp = LatestValue("setpoints")
    nav = Navigator(wall_map, base, sp, rate_hz=20.0)
    nav.set_goal((-1.7, -2.0, 0.0))
    t = threading.Thread(target=nav.run, daemon=True)
    t.start()
    seq = 0
    try:
        for _ in range(400):
            sample = sp.wait_newer(seq, timeout=1.0)
            assert sample is not None, "navigator stopped publishing"
            seq = sample.seq
            base.kb.apply(sample.value.base_vel, 0.05)
            if nav.state().done:
                break
    finally:
        nav.stop()
        t.join(timeout=2)
    assert not t.is_alive()
    assert nav.state().status is NavStatus.SUCCEEDED, nav.state()
    assert nav.stats()["loop"]["ticks"] > 5


def test_real_time_navigation_with_control_and_sim_threads() -> None:
    """Everything on the real clock in its own thread: physics, 100 Hz control, 10 Hz nav."""
    from rtvla.action.control import ControlLoop
    from rtvla.robots.sim import SimRobot
    from rtvla.robots.sim.grid import occupancy_grid

    rec = Recorder()
    with SimRobot() as sim:
        home = np.array(sim.scene.place("home").pose)
        goal = (home[0] + 0.5, home[1] + 0.3, 0.5)
        sp = LatestValue("setpoints")
        control = ControlLoop(sim, sp, recorder=rec)
        nav = Navigator(occupancy_grid(sim.scene), sim, sp, recorder=rec)
        ct = control.start_thread()
        nt = threading.Thread(target=nav.run, daemon=True)
        nt.start()
        try:
            nav.set_goal(goal)
            done = threading.Event()
            for _ in range(300):  # up to 30 s on a loaded machine
                if nav.state().done or done.wait(0.1):
                    break
        finally:
            nav.stop()
            nt.join(timeout=2)
            control.stop()
            ct.join(timeout=2)
        pose = sim.base_pose()
    assert nav.state().status is NavStatus.SUCCEEDED, nav.state()
    assert np.hypot(pose[0] - goal[0], pose[1] - goal[1]) < 0.08
    assert rec.snapshot()["navigation"]["latency_ms"]["count"] > 10
