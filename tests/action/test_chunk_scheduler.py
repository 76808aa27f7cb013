"""The chunk scheduler: tick bookkeeping, resampling, trigger, merges, starvation, following,
and the whole shared-memory path (control process <-> policy process) on a real ONNX policy."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from rtvla.action.chunk_scheduler import (
    ChunkScheduler,
    PolicyLink,
    SchedStatus,
    SchedulerSettings,
    resample_chunk,
)
from rtvla.action.control import ControlLoop, ControlSettings
from rtvla.action.control_process import ControlProcess
from rtvla.bench.control import KinematicRobot, default_limits
from rtvla.channels import LatestValue
from rtvla.errors import ConfigError
from rtvla.policy.base import RTC_DELAY_KEY, RTC_LEFTOVER_KEY
from rtvla.policy.chunk_channel import PolicyChunk
from rtvla.robots.base import RobotState
from rtvla.timing import FakeClock, Tick

DOF = 3
PERIOD_NS = 10_000_000


class FakeTransport:
    """Requests recorded; chunks handed over when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, int, dict[str, Any]]] = []  # (id, tick, stamp, obs)
        self._next: PolicyChunk | None = None

    def send(self, tick: int, stamp_ns: int, observation: Mapping[str, Any]) -> int:
        rid = len(self.sent) + 1
        self.sent.append((rid, tick, stamp_ns, dict(observation)))
        return rid

    def answer(self, actions: np.ndarray | None, request: int = -1, now_ns: int = 0) -> None:
        rid, tick, stamp, _ = self.sent[request]
        self._next = PolicyChunk(rid, tick, stamp, now_ns, 1000, None if actions is None else np.asarray(actions, float))

    def poll(self) -> PolicyChunk | None:
        c, self._next = self._next, None
        return c

    def close(self) -> None:
        self.sent.clear()


def state(q: np.ndarray | None = None) -> RobotState:
    q = np.zeros(DOF) if q is None else q
    return RobotState(stamp_ns=0, q=q.copy(), dq=np.zeros(DOF), effort=np.zeros(DOF),
                      base_pose=np.zeros(3), base_vel=np.zeros(3), gripper=0.0)


def make(settings: SchedulerSettings | None = None, *, horizon: int = 5, policy_hz: float = 50.0,
         action_dim: int = DOF, **kw: Any) -> tuple[ChunkScheduler, FakeTransport, FakeClock]:
    tr = FakeTransport()
    clock = FakeClock()
    s = ChunkScheduler(default_limits(DOF), tr, horizon=horizon, action_dim=action_dim, control_hz=100.0,
                       policy_hz=policy_hz, settings=settings or SchedulerSettings(crossfade_ticks=0),
                       clock=clock, **kw)
    return s, tr, clock


def run(s: ChunkScheduler, clock: FakeClock, n: int) -> list[tuple[SchedStatus, np.ndarray]]:
    out = []
    for _ in range(n):
        clock.advance(PERIOD_NS / 1e9)
        st = s.tick(state(), clock.now_ns())
        out.append((st, s.position.copy()))
    return out


def ramp(h: int, start: float = 0.0, step: float = 0.01) -> np.ndarray:
    return np.tile((start + step * np.arange(h))[:, None], (1, DOF))


# -- resampling and tick bookkeeping ------------------------------------------------------

def test_a_20ms_policy_covers_exactly_two_ticks_at_100hz() -> None:
    actions = ramp(5)
    pos, _vel = resample_chunk(actions, 100.0 / 50.0, "hold", 50.0)
    assert pos.shape == (10, DOF)
    for k in range(5):
        assert np.all(pos[2 * k] == actions[k]) and np.all(pos[2 * k + 1] == actions[k])
    lin, _ = resample_chunk(actions, 2.0, "linear", 50.0)
    assert lin[1, 0] == pytest.approx(0.005)  # halfway between actions 0 and 1
    assert lin[-1, 0] == pytest.approx(actions[-1, 0])
    # 15 Hz at 100 Hz: 6.67 ticks per action, 10 actions -> 67 ticks
    p15, _ = resample_chunk(ramp(10), 100.0 / 15.0, "hold", 15.0)
    assert len(p15) == 67


def test_elapsed_actions_are_dropped_by_ticks_consumed() -> None:
    s, tr, clock = make(SchedulerSettings(resample="hold", crossfade_ticks=0, margin_ticks=1000))
    s.engage(clock.now_ns())
    first = run(s, clock, 3)  # the request goes out on tick 0; 3 ticks pass waiting
    assert [st for st, _ in first] == [SchedStatus.WAITING] * 3
    assert tr.sent[0][1] == 0
    tr.answer(ramp(5))
    st, pos = run(s, clock, 1)[0]
    # The robot held still for the first chunk: it runs from its first action.
    assert st is SchedStatus.ACTION and pos[0] == pytest.approx(0.0) and s.dropped_actions == 0
    assert tr.sent[1][1] == 3  # the next request, stamped with tick 3
    run(s, clock, 7)  # ticks 4..10 pass while the policy thinks
    tr.answer(ramp(5, start=1.0))
    st, pos = run(s, clock, 1)[0]
    assert st is SchedStatus.ACTION
    assert s.dropped_actions == 8  # ticks 3..10 were executed before the chunk came
    assert pos[0] == pytest.approx(1.04)  # tick 11 -> resampled index 8 -> action 4
    assert run(s, clock, 1)[0][1][0] == pytest.approx(1.04)


def test_sync_mode_waits_and_runs_the_chunk_from_its_start() -> None:
    s, tr, clock = make(SchedulerSettings(mode="sync", resample="hold", starve_hold_ticks=1000))
    s.engage(clock.now_ns())
    run(s, clock, 1)
    tr.answer(ramp(5))
    out = run(s, clock, 10)
    assert [p[0] for _, p in out[:2]] == pytest.approx([0.0, 0.0])  # from action 0
    assert len(tr.sent) == 1  # nothing asked before the chunk is exhausted
    run(s, clock, 1)  # exhausted: the next request, and a held tick
    assert len(tr.sent) == 2 and s.starved_ticks == 1


def test_trigger_covers_the_measured_delay_plus_margin() -> None:
    s, tr, clock = make(SchedulerSettings(resample="hold", margin_ticks=2, crossfade_ticks=0,
                                          initial_delay_s=0.0), horizon=10, policy_hz=10.0)
    s.engage(clock.now_ns())
    run(s, clock, 4)  # delay: 4 ticks
    tr.answer(ramp(10))
    assert s.delay_ticks == 0
    while len(tr.sent) == 1:
        run(s, clock, 1)
    assert s.delay_ticks == 4
    # The first chunk came at tick 4 and runs from its first action: the queue ends at tick
    # 104; asked at tick t when 104 - t <= delay 4 + margin 2.
    _, tick, _, _ = tr.sent[1]
    assert tick == 104 - 6


def test_window_violation_warns(caplog: pytest.LogCaptureFixture) -> None:
    s, tr, clock = make(SchedulerSettings(resample="hold", margin_ticks=0, initial_delay_s=0.0,
                                          starve_hold_ticks=1000), horizon=2, policy_hz=50.0)
    s.engage(clock.now_ns())
    with caplog.at_level("WARNING"):
        for _ in range(4):
            run(s, clock, 6)  # delay 6 ticks > H - d with H = 4 ticks
            tr.answer(ramp(2))
        run(s, clock, 1)
    assert s.window_warnings >= 1
    assert "d <= s <= H - d" in caplog.text


# -- merges -------------------------------------------------------------------------------

def merged_value(merge: str, old: float, new: float, **kw: Any) -> float:
    # A margin longer than the chunk: a new request goes out as soon as one is answered.
    s, tr, clock = make(SchedulerSettings(merge=merge, resample="hold", crossfade_ticks=0,
                                          margin_ticks=1000, **kw), horizon=10, policy_hz=10.0)
    s.engage(clock.now_ns())
    run(s, clock, 1)
    tr.answer(np.full((10, DOF), old))
    run(s, clock, 1)
    tr.answer(np.full((10, DOF), new))
    st, pos = run(s, clock, 1)[0]
    assert st is SchedStatus.ACTION
    return float(pos[0])


@pytest.mark.parametrize(("merge", "want"), [
    ("replace", 1.0), ("latest", 1.0), ("weighted", 0.3 * 0.5 + 0.7 * 1.0),
    ("average", 0.75), ("conservative", 0.7 * 0.5 + 0.3 * 1.0),
    ("ensemble", 0.75),  # two predictions, decay 0: equal weights
])
def test_merges(merge: str, want: float) -> None:
    kw = {"ensemble_decay": 0.0} if merge == "ensemble" else {}
    assert merged_value(merge, 0.5, 1.0, **kw) == pytest.approx(want)


def test_ensemble_weights_favour_older_predictions() -> None:
    v = merged_value("ensemble", 0.0, 1.0, ensemble_decay=1.0)
    assert v == pytest.approx(np.exp(-1.0) / (1.0 + np.exp(-1.0)))


def test_replace_crossfades_at_the_boundary_and_counts_the_jump() -> None:
    s, tr, clock = make(SchedulerSettings(resample="hold", crossfade_ticks=4, margin_ticks=1000),
                        horizon=10, policy_hz=10.0)
    s.engage(clock.now_ns())
    run(s, clock, 1)
    tr.answer(np.zeros((10, DOF)))
    run(s, clock, 1)
    tr.answer(np.full((10, DOF), 1.0))
    out = [p[0] for _, p in run(s, clock, 6)]
    assert out == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    stats = s.stats()
    assert stats["boundary_jump_rad"]["max"] == pytest.approx(0.2)


def test_an_answer_from_before_reengaging_is_stale() -> None:
    s, tr, clock = make(SchedulerSettings(resample="hold", crossfade_ticks=0))
    s.engage(clock.now_ns())
    run(s, clock, 2)
    s.disengage()
    assert run(s, clock, 1)[0][0] is SchedStatus.IDLE
    s.engage(clock.now_ns())
    run(s, clock, 1)
    assert len(tr.sent) == 2  # asked again at once, not waiting for the old answer
    tr.answer(np.full((5, DOF), 0.5), request=0)
    assert run(s, clock, 1)[0][0] is SchedStatus.WAITING and s.stale == 1
    tr.answer(np.full((5, DOF), 0.25), request=1)
    st, pos = run(s, clock, 1)[0]
    assert st is SchedStatus.ACTION and pos[0] == pytest.approx(0.25)


def test_unknown_merge_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError, match=r"policy\.scheduler\.merge"):
        SchedulerSettings.from_section({"merge": "median"})


# -- velocity, starvation, bad chunks, RTC ------------------------------------------------

def test_velocity_targets_are_finite_differences_at_the_policy_rate() -> None:
    s, tr, clock = make(SchedulerSettings(resample="linear", crossfade_ticks=0), horizon=5, policy_hz=10.0)
    s.engage(clock.now_ns())
    run(s, clock, 1)
    tr.answer(ramp(5, step=0.05))  # 0.05 rad per 0.1 s -> 0.5 rad/s
    run(s, clock, 3)
    assert s.velocity == pytest.approx(np.full(DOF, 0.5))


def test_starvation_holds_then_latches_a_stop() -> None:
    s, tr, clock = make(SchedulerSettings(mode="sync", resample="hold", starve_hold_ticks=3, crossfade_ticks=0),
                        horizon=2)
    s.engage(clock.now_ns())
    run(s, clock, 1)
    tr.answer(ramp(2, start=0.1))
    out = run(s, clock, 4 + 4)
    statuses = [st for st, _ in out]
    assert statuses[:4] == [SchedStatus.ACTION] * 4
    assert statuses[4:7] == [SchedStatus.HOLD] * 3
    assert statuses[7] is SchedStatus.STOP
    assert out[5][1][0] == pytest.approx(0.11)  # held at the last target
    assert s.starved_ticks == 4 and s.starvation_stops == 1 and not s.engaged
    assert "starved" in s.stats()["stop_reason"]


def test_no_first_chunk_in_time_stops() -> None:
    s, _, clock = make(SchedulerSettings(first_chunk_timeout_s=0.05))
    s.engage(clock.now_ns())
    statuses = [st for st, _ in run(s, clock, 10)]
    assert statuses[:5] == [SchedStatus.WAITING] * 5
    assert SchedStatus.STOP in statuses and not s.engaged and s.starvation_stops == 1


@pytest.mark.parametrize("bad", [np.zeros((4, DOF)), np.full((5, DOF), np.nan), np.full((5, DOF), 9.0)])
def test_a_bad_chunk_is_rejected_and_the_robot_holds(bad: np.ndarray) -> None:
    s, tr, clock = make(SchedulerSettings(resample="hold", crossfade_ticks=0, margin_ticks=1000))
    s.engage(clock.now_ns())
    run(s, clock, 1)
    tr.answer(np.full((5, DOF), 0.2))
    run(s, clock, 2)
    tr.answer(bad)
    out = run(s, clock, 12)
    assert s.rejected == 1 and s.last_rejection
    assert all(p[0] == pytest.approx(0.2) for _, p in out)  # the last good target, held
    assert {st for st, _ in out} <= {SchedStatus.ACTION, SchedStatus.HOLD}


def test_rtc_fields_only_when_advertised() -> None:
    for rtc in (False, True):
        s, tr, clock = make(SchedulerSettings(initial_delay_s=0.05), real_time_chunking=rtc)
        s.engage(clock.now_ns())
        run(s, clock, 1)
        tr.answer(ramp(5))
        while len(tr.sent) < 2:
            run(s, clock, 1)
        obs = tr.sent[1][3]
        assert (RTC_LEFTOVER_KEY in obs) is rtc and (RTC_DELAY_KEY in obs) is rtc
        if rtc:
            assert obs[RTC_LEFTOVER_KEY].shape[1] == DOF and obs[RTC_DELAY_KEY] >= 1


# -- in the control loop ------------------------------------------------------------------

def tick_loop(loop: ControlLoop, clock: FakeClock, n: int, start: int) -> None:
    for i in range(start, start + n):
        clock.advance(PERIOD_NS / 1e9)
        now = clock.now_ns()
        loop.step(Tick(index=i, slot=i, deadline_ns=now, wake_ns=now, dt_s=0.01))


def test_control_loop_follows_chunks_without_stopping_at_waypoints() -> None:
    clock = FakeClock()
    robot = KinematicRobot(DOF, clock=clock)
    robot.connect()
    s, tr, _ = make(SchedulerSettings(resample="linear", crossfade_ticks=0, initial_delay_s=0.0,
                                      starve_hold_ticks=3, mode="sync"), horizon=10, policy_hz=10.0)
    s.clock = clock
    loop = ControlLoop(robot, LatestValue("sp"), settings=ControlSettings(placement="thread"),
                       rate_hz=100.0, clock=clock, scheduler=s)
    loop.setup()
    loop.follow_policy(True)
    tick_loop(loop, clock, 1, 0)
    assert s.engaged and len(tr.sent) == 1
    tr.answer(ramp(10, step=0.02))  # 0.2 rad/s through 10 waypoints
    tick_loop(loop, clock, 80, 1)
    speeds = np.abs(loop.trajectory.velocity)
    assert np.all(speeds > 0.1)  # still moving through the waypoints
    assert robot.read_state().q[0] > 0.05
    # chunk exhausted (sync: one request, never answered) -> hold 3 ticks -> latched stop
    tick_loop(loop, clock, 30, 81)
    assert loop.tripped and "starved" in loop.stats_obj().last_trip_reason
    assert loop.stats()["policy"]["starvation_stops"] == 1


def test_control_loop_holds_on_a_bad_chunk() -> None:
    clock = FakeClock()
    robot = KinematicRobot(DOF, clock=clock)
    robot.connect()
    s, tr, _ = make(SchedulerSettings(resample="hold", crossfade_ticks=0, initial_delay_s=0.0),
                    horizon=10, policy_hz=10.0)
    loop = ControlLoop(robot, LatestValue("sp"), settings=ControlSettings(placement="thread"),
                       rate_hz=100.0, clock=clock, scheduler=s)
    loop.setup()
    loop.follow_policy(True)
    tick_loop(loop, clock, 1, 0)
    tr.answer(np.zeros((3, DOF)))  # wrong horizon
    tick_loop(loop, clock, 20, 1)
    assert s.rejected == 1 and not loop.tripped
    assert robot.read_state().q == pytest.approx(np.zeros(DOF))


# -- the shared-memory path, end to end ---------------------------------------------------

def test_control_process_follows_a_policy_process(tmp_path: Any) -> None:
    from rtvla.policy.process import PolicyProcess
    from rtvla.testing.policy_server import build_linear_policy

    path = build_linear_policy(tmp_path / "p.onnx", state_dim=DOF, horizon=10, action_dim=DOF, rate_hz=10.0)
    with PolicyProcess(str(path)) as policy:
        link = PolicyLink.from_process(policy, SchedulerSettings(), state_key="observation/state",
                                       gripper_key=None)
        with ControlProcess(functools.partial(KinematicRobot, DOF), dof=DOF, policy=link) as control:
            control.follow_policy(True)
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline and control.live_stats().get("policy_chunks", 0) < 5:
                control.wait_state(0.5)
            live = control.live_stats()
            assert live["policy_engaged"] == 1.0 and live["policy_chunks"] >= 5
            control.follow_policy(False)
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and control.live_stats().get("policy_engaged") != 0.0:
                control.wait_state(0.5)
            assert control.live_stats()["policy_engaged"] == 0.0
        final = control.final_stats
    assert final is not None
    pol = final["policy"]
    assert pol["chunks"] >= 5 and pol["rejected"] == 0 and pol["starvation_stops"] == 0
    assert final["watchdog_trips"] == 0


def test_a_stalled_server_starves_the_loop_into_a_latched_stop(tmp_path: Any) -> None:
    from rtvla.policy import OnnxPolicy
    from rtvla.policy.process import PolicyProcess
    from rtvla.testing.policy_server import Behaviour, ScriptedPolicyServer, build_linear_policy

    path = build_linear_policy(tmp_path / "p.onnx", state_dim=DOF, horizon=10, action_dim=DOF, rate_hz=10.0)
    with ScriptedPolicyServer(OnnxPolicy(path)) as server:
        server.script(Behaviour.ok(), Behaviour.ok(), Behaviour.slow(5.0))
        with PolicyProcess(server.url, {"timeout_s": 10.0}) as policy:
            link = PolicyLink.from_process(policy, SchedulerSettings(starve_hold_ticks=10),
                                           state_key="observation/state", gripper_key=None)
            with ControlProcess(functools.partial(KinematicRobot, DOF), dof=DOF, policy=link) as control:
                control.follow_policy(True)
                deadline = time.monotonic() + 30.0
                while time.monotonic() < deadline and control.live_stats().get("policy_stops", 0) < 1:
                    control.wait_state(0.5)
                live = control.live_stats()
                assert live["policy_stops"] == 1 and live["stopped"] == 1.0
                assert live["policy_starved_ticks"] >= 10 and live["policy_engaged"] == 0.0
                control.follow_policy(True)  # refused while the stop is latched
                for _ in range(5):
                    control.wait_state(0.5)
                assert control.live_stats()["policy_engaged"] == 0.0
            final = control.final_stats
    assert final is not None
    assert "policy: starved" in final["last_trip_reason"]
    assert final["policy"]["chunks"] == 2 and final["policy"]["starvation_stops"] == 1
    assert any(e.get("kind") == "follow_refused" for e in final["events"])
