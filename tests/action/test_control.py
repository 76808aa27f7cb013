from __future__ import annotations

import threading

import numpy as np
import pytest

from rtvla.action.chunks import ActionChunkQueue
from rtvla.action.control import ControlLoop, ControlSettings, check_setpoint
from rtvla.action.setpoints import Setpoint
from rtvla.bench.control import KinematicRobot, MLPChunkPolicy, default_limits
from rtvla.channels import LatestValue
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder
from rtvla.timing import FakeClock

DT = 0.01


class Rig:
    """A control loop on a FakeClock driving a kinematic robot; setpoints scheduled by time."""

    def __init__(self, dof: int = 6, *, settings: ControlSettings | None = None, chunks=None):
        self.clock = FakeClock(start_ns=1_000_000_000)
        self.robot = KinematicRobot(dof, clock=self.clock, history=10_000)
        self.robot.connect()
        self.channel = LatestValue("setpoints", clock=self.clock)
        self.recorder = Recorder(clock=self.clock)
        self.loop = ControlLoop(self.robot, self.channel, recorder=self.recorder, rate_hz=100,
                                clock=self.clock, chunks=chunks,
                                settings=settings or ControlSettings(spin_margin_s=0.0))
        self.schedule: list[tuple[int, Setpoint | None]] = []
        self.clock.on_sleep = self._on_sleep
        self.t0 = self.clock.now_ns()

    def at(self, t_s: float, **fields) -> None:
        """Publish a setpoint (stamped when it is published) at ``t_s`` after the start."""
        self.schedule.append((self.t0 + int(t_s * 1e9), fields))
        self.schedule.sort(key=lambda x: x[0])

    def _on_sleep(self, deadline: int) -> None:
        while self.schedule and self.schedule[0][0] <= deadline:
            _, fields = self.schedule.pop(0)
            stamp = fields.pop("stamp_ns", self.clock.now_ns())
            self.channel.publish(Setpoint(stamp_ns=stamp, **fields))

    def run(self, seconds: float):
        return self.loop.run(max_ticks=int(round(seconds / DT)))

    def positions(self) -> np.ndarray:
        return np.array([h[1] for h in self.robot.history])

    def events(self, kind: str):
        return [e for e in self.recorder.events if e.kind == kind]


def test_reaches_joint_target_and_records_timing():
    rig = Rig()
    goal = np.array([0.8, -0.6, 1.2, 0.0, -1.0, 0.4])
    rig.at(0.0, arm_q=goal, gripper=1.0)
    stats = rig.run(3.0)
    np.testing.assert_allclose(rig.robot.read_state().q, goal, atol=1e-6)
    assert rig.robot.read_state().gripper == 1.0
    assert stats.ticks == 300 and stats.missed == 0 and stats.watchdog_trips == 0
    assert stats.setpoints_accepted == 1 and stats.commands_sent == 300
    snap = rig.recorder.snapshot()["control"]
    assert snap["count"] == 300
    assert snap["observed_ms"]["lateness"]["count"] == 300
    assert snap["latency_ms"]["count"] == 300


def test_commanded_motion_respects_velocity_and_acceleration_limits():
    rig = Rig()
    lim = rig.robot.limits
    rig.at(0.0, arm_q=np.array([2.5, -2.5, 2.0, -2.0, 1.0, -1.0]))
    rig.run(4.0)
    q = rig.positions()
    v = np.diff(q, axis=0) / DT
    a = np.diff(v, axis=0) / DT
    assert np.abs(v).max() <= lim.dq_max.max() * (1 + 1e-6)
    assert np.abs(v).max() > 0.9 * lim.dq_max.max()  # it did move at speed
    assert np.abs(a).max() <= lim.ddq_max.max() * (1 + 1e-6)


def test_new_target_mid_motion_has_no_velocity_jump():
    rig = Rig(dof=3)
    lim = rig.robot.limits
    rig.at(0.0, arm_q=np.array([2.0, 2.0, 2.0]))
    rig.at(0.8, arm_q=np.array([-1.0, 0.0, 1.0]))  # while moving at speed toward the first
    rig.run(5.0)
    q = rig.positions()
    v = np.diff(q, axis=0) / DT
    switch = 80
    assert np.abs(v[switch - 2]).max() > 1.0
    dv = np.abs(np.diff(v, axis=0))
    assert dv.max() <= lim.ddq_max.max() * DT * (1 + 1e-6)
    np.testing.assert_allclose(q[-1], [-1.0, 0.0, 1.0], atol=1e-6)


def test_watchdog_stop_latches_until_reset_stop():
    rig = Rig()
    rig.at(0.0, base_vel=np.array([0.2, 0.0, 0.1]))
    rig.at(1.0, base_vel=np.array([0.1, 0.0, 0.0]))  # fresh and valid, after the trip
    rig.run(0.8)
    stats = rig.loop.stats_obj()
    assert stats.watchdog_trips == 1 and rig.loop.tripped
    assert "setpoint timeout" in stats.last_trip_reason
    trips = rig.events("watchdog")
    assert len(trips) == 1 and "while the base moves" in trips[0].message
    # The trip came just after the 0.3 s timeout, and nothing was commanded after it.
    trip_t = (trips[0].stamp_ns - rig.t0) / 1e9
    assert 0.3 <= trip_t <= 0.32
    last_cmd_t = (rig.robot.history[-1][0] - rig.t0) / 1e9
    assert last_cmd_t < trip_t
    state = rig.robot.read_state()
    np.testing.assert_array_equal(state.base_vel, 0.0)
    assert rig.robot.stops >= 1
    # A fresh valid setpoint does NOT release the stop: nothing is commanded.
    n_cmds = len(rig.robot.history)
    rig.loop.stop_event.clear()
    rig.run(0.5)
    assert rig.loop.tripped
    assert len(rig.robot.history) == n_cmds
    assert rig.loop.stats_obj().setpoints_refused_while_stopped == 1
    # An explicit reset does; the robot then holds where it is until the next setpoint.
    rig.loop.reset_stop()
    rig.loop.stop_event.clear()
    rig.run(0.2)
    assert not rig.loop.tripped and rig.events("stop_reset")
    np.testing.assert_allclose(rig.robot.history[-1][3], 0.0)  # the refused one stays refused
    rig.at(1.6, base_vel=np.array([0.1, 0.0, 0.0]))
    rig.loop.stop_event.clear()
    rig.run(0.2)
    np.testing.assert_allclose(rig.robot.history[-1][3], [0.1, 0.0, 0.0])  # commanded again
    assert rig.loop.stats_obj().resets == 1


@pytest.mark.parametrize("cause", ["nan", "limits", "stale", "request"])
def test_every_trip_cause_latches(cause):
    rig = Rig()
    rig.at(0.0, arm_q=np.full(6, 0.2))
    if cause == "nan":
        rig.at(0.2, arm_q=np.array([0.1, np.nan, 0, 0, 0, 0]))
    elif cause == "limits":
        rig.at(0.2, arm_q=np.array([0, 0, 0, 0, 0, 9.0]))
    elif cause == "stale":
        rig.at(0.2, arm_q=np.full(6, 0.5), stamp_ns=rig.t0 - 1_000_000_000)
    rig.at(0.4, arm_q=np.full(6, -0.3))  # fresh and valid: must not release
    if cause == "request":
        rig.run(0.2)
        rig.loop.request_stop("operator pressed stop")
        rig.loop.stop_event.clear()
    rig.run(1.0)
    stats = rig.loop.stats_obj()
    assert rig.loop.tripped
    if cause == "request":
        assert stats.last_trip_reason == "operator pressed stop" and stats.stop_requests == 1
        assert stats.watchdog_trips == 0 and rig.events("stop")
    else:
        assert stats.watchdog_trips == 1
    assert np.all(np.abs(rig.robot.read_state().q + 0.3) > 0.1)  # never went to the new goal


def test_stop_then_reset_in_one_tick_latches_when_the_stop_came_last():
    rig = Rig()
    rig.at(0.0, arm_q=np.full(6, 0.2))
    rig.run(0.1)
    rig.loop.reset_stop()
    rig.loop.request_stop("last word")
    rig.loop.stop_event.clear()
    rig.run(0.1)
    assert rig.loop.tripped


def test_arm_only_setpoints_do_not_keep_a_stale_base_velocity_alive():
    rig = Rig()
    rig.at(0.0, base_vel=np.array([0.3, 0.0, 0.0]))  # navigation, then it goes silent
    for k in range(1, 10):  # an arm planner keeps publishing fresh arm goals
        rig.at(0.1 * k, arm_q=np.full(6, 0.05 * k))
    stats = rig.run(0.9)
    assert stats.watchdog_trips >= 1
    trips = rig.events("watchdog")
    assert "base-velocity setpoint" in trips[0].message
    assert 0.3 <= (trips[0].stamp_ns - rig.t0) / 1e9 <= 0.32


def test_watchdog_leaves_a_holding_arm_alone():
    rig = Rig()
    rig.at(0.0, arm_q=np.full(6, 0.3))  # an arm goal and no base motion: no timeout needed
    stats = rig.run(2.0)
    assert stats.watchdog_trips == 0
    np.testing.assert_allclose(rig.robot.read_state().q, 0.3, atol=1e-6)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"arm_q": np.array([0.1, np.nan, 0, 0, 0, 0])}, "not finite"),
        ({"base_vel": np.array([np.inf, 0.0, 0.0])}, "finite"),
        ({"base_vel": np.array([2.0, 0.0, 0.0])}, "exceeds"),
        ({"arm_q": np.array([0, 0, 0, 0, 0, 9.0])}, "outside"),
        ({"gripper": 1.5}, "gripper"),
    ],
)
def test_watchdog_stops_on_invalid_setpoint(fields, reason):
    rig = Rig()
    rig.at(0.0, arm_q=np.full(6, 1.0), base_vel=np.array([0.1, 0.0, 0.0]))
    rig.at(0.3, **fields)
    stats = rig.run(1.0)
    assert stats.watchdog_trips == 1
    assert "invalid setpoint" in stats.last_trip_reason and reason in stats.last_trip_reason
    assert stats.commands_rejected == 0  # caught before anything reached the robot
    # The arm stopped where it was (well short of the goal) and stayed there.
    q = rig.positions()
    assert np.all(np.abs(q[-1] - 1.0) > 0.1)
    state = rig.robot.read_state()
    np.testing.assert_array_equal(state.base_vel, 0.0)
    assert all(np.all(np.isfinite(h[1])) for h in rig.robot.history)


def test_stale_setpoint_on_arrival_is_refused():
    rig = Rig()
    rig.at(0.2, arm_q=np.full(6, 0.5), stamp_ns=rig.t0 - 1_000_000_000)
    stats = rig.run(0.5)
    assert stats.watchdog_trips == 1 and "stale setpoint" in stats.last_trip_reason
    np.testing.assert_allclose(rig.robot.read_state().q, 0.0)


def test_shm_layout_arrays_are_accepted():
    """The loop takes Setpoint.to_array() floats as well as Setpoint objects."""
    rig = Rig()
    goal = np.full(6, -0.4)
    rig.channel.publish(Setpoint(stamp_ns=rig.clock.now_ns(), arm_q=goal, seq=7).to_array(6))
    rig.run(2.0)
    np.testing.assert_allclose(rig.robot.read_state().q, goal, atol=1e-6)


def test_follows_action_chunks():
    dof, h = 3, 20
    policy = MLPChunkPolicy(dof, h, hidden=32, layers=1, repeats=1, amplitude=0.3)
    chunks = ActionChunkQueue(h, dof, threshold=0.5, merge="latest")
    rig = Rig(dof=dof, chunks=chunks)
    # Inference answered synchronously on request (no thread): a chunk arrives with no delay.
    chunks.on_request = lambda req: chunks.push(policy(req), req.start_tick, request=req)
    chunks.request(0)
    stats = rig.run(2.0)
    assert stats.watchdog_trips == 0
    assert chunks.starved_ticks == 0 and chunks.chunks >= 9
    q = rig.positions()
    assert np.ptp(q[:, 0]) > 0.2  # it followed the sinusoidal reach
    assert rig.loop.stats()["chunks"]["starved_ticks"] == 0


def test_settings_validation_names_the_field():
    with pytest.raises(ConfigError, match=r"control\.setpoint_timeout_s"):
        ControlSettings.from_section({"setpoint_timeout_s": -1})
    with pytest.raises(ConfigError, match=r"control\.bogus: unknown key"):
        ControlSettings.from_section({"bogus": 1})
    assert ControlSettings.from_section({}).setpoint_timeout_s == 0.3
    lim = default_limits(2)
    assert check_setpoint(Setpoint(stamp_ns=0, arm_q=np.zeros(2)), lim) is None


def test_sim_robot_reaches_joint_target_in_lockstep():
    sim = pytest.importorskip("rtvla.robots.sim")
    clock = FakeClock(start_ns=1_000_000_000)
    with sim.SimRobot(lockstep=True, clock=clock) as robot:
        lim = robot.limits
        channel = LatestValue("setpoints", clock=clock)
        loop = ControlLoop(robot, channel, rate_hz=100, clock=clock,
                           settings=ControlSettings(spin_margin_s=0.0))
        last = [clock.now_ns()]

        def physics(deadline: int) -> None:  # the simulator keeps pace with the fake clock
            robot.advance((clock.now_ns() - last[0]) / 1e9)
            last[0] = clock.now_ns()

        clock.on_sleep = physics
        start = robot.read_state().q.copy()
        goal = np.clip(start + 0.4, lim.q_min + 0.1, lim.q_max - 0.1)
        channel.publish(Setpoint(stamp_ns=clock.now_ns(), arm_q=goal))
        stats = loop.run(max_ticks=400)
        assert stats.watchdog_trips == 0, stats.last_trip_reason
        np.testing.assert_allclose(robot.read_state().q, goal, atol=0.03)


def test_stats_when_a_runtime_drives_step_from_its_own_loop():
    from rtvla.timing import RateLoop

    rig = Rig()
    rig.at(0.0, arm_q=np.full(6, 0.2))
    rig.loop.setup()
    RateLoop(100, clock=rig.clock).run(rig.loop.step, max_ticks=50)
    stats = rig.loop.stats_obj()
    assert stats.ticks == 50 and stats.missed == 0 and stats.commands_sent == 50
    assert len(rig.loop.lateness_samples_us()) == 50


def test_thread_placement_in_real_time():
    """The loop in a thread on the real clock: follows a goal, then stops promptly."""
    from rtvla.timing import MONOTONIC

    robot = KinematicRobot(6, history=10)
    robot.connect()
    channel = LatestValue("setpoints")
    loop = ControlLoop(robot, channel, rate_hz=100, settings=ControlSettings(spin_margin_s=0.0))
    thread = loop.start_thread()
    goal = np.full(6, 0.25)
    channel.publish(Setpoint(stamp_ns=MONOTONIC.now_ns(), arm_q=goal))
    deadline = MONOTONIC.now_ns() + 20_000_000_000
    pace = threading.Event()
    # Check the condition every 20 ms until it holds or the deadline passes.
    while MONOTONIC.now_ns() < deadline and not np.allclose(robot.read_state().q, goal, atol=1e-6):
        pace.wait(0.02)
    assert np.allclose(robot.read_state().q, goal, atol=1e-6)
    loop.stop()
    thread.join(5.0)
    assert not thread.is_alive()
    stats = loop.stats_obj()
    assert stats.ticks > 10 and stats.achieved_hz > 50
    assert stats.watchdog_trips == 0
