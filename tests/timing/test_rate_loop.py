from __future__ import annotations

import threading
import time

import pytest

from rtvla.errors import TimingError
from rtvla.timing import FakeClock, Overrun, RateLoop, RealtimeSettings, apply_realtime

MS = 1_000_000


def test_deadlines_are_absolute_with_fake_clock():
    clock = FakeClock(start_ns=1_000 * MS)
    loop = RateLoop(100.0, clock=clock)
    deadlines = []
    stats = loop.run(lambda t: deadlines.append(t.deadline_ns), max_ticks=50)
    start = 1_000 * MS
    assert deadlines == [start + i * 10 * MS for i in range(50)]
    assert stats.ticks == 50 and stats.missed == 0 and stats.drift_ms == 0.0
    assert stats.achieved_hz == pytest.approx(100.0)


def test_skip_policy_drops_passed_slots():
    clock = FakeClock()
    loop = RateLoop(100.0, clock=clock, overrun=Overrun.SKIP)
    seen = []

    def step(t):
        seen.append((t.index, t.slot, t.deadline_ns))
        if t.index == 3:
            clock.advance(0.035)  # 35 ms step: slots 4, 5, 6 pass

    stats = loop.run(step, max_ticks=6)
    assert [s for _, s, _ in seen] == [0, 1, 2, 3, 7, 8]
    assert seen[4][2] == 70 * MS  # still on the original grid: no drift
    assert stats.missed == 3 and stats.late_cycles == 1


def test_catch_up_policy_runs_late_slots_back_to_back():
    clock = FakeClock()
    loop = RateLoop(100.0, clock=clock, overrun="catch_up")
    wakes = []

    def step(t):
        wakes.append((t.slot, t.wake_ns))
        if t.index == 1:
            clock.advance(0.025)

    stats = loop.run(step, max_ticks=6)
    assert [s for s, _ in wakes] == [0, 1, 2, 3, 4, 5]
    # Slots 2 and 3 ran late immediately (at 35 ms), then the loop is back on schedule.
    assert wakes[2][1] == wakes[3][1] == 35 * MS
    assert wakes[4][1] == 40 * MS and wakes[5][1] == 50 * MS
    assert stats.missed == 0


def test_set_rate_reanchors_between_cycles():
    clock = FakeClock()
    loop = RateLoop(10.0, clock=clock)
    deadlines = []

    def step(t):
        deadlines.append(t.deadline_ns)
        if t.index == 1:
            loop.set_rate(100.0)

    loop.run(step, max_ticks=4)
    assert deadlines == [0, 100 * MS, 200 * MS, 210 * MS]


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(TimingError, match="rate_hz must be a finite number > 0, got -1"):
        RateLoop(-1)
    with pytest.raises(TimingError, match="overrun must be one of"):
        RateLoop(10, overrun="sometimes")
    with pytest.raises(TimingError, match="spin_margin_s must be >= 0"):
        RateLoop(10, spin_margin_s=-0.1)


def test_step_returning_false_and_stop_event():
    loop = RateLoop(1000.0, clock=FakeClock())
    stats = loop.run(lambda t: t.index < 4)
    assert stats.ticks == 5


def test_real_clock_rate_and_prompt_stop():
    loop = RateLoop(200.0, spin_margin_s=0.0005)
    stats = loop.run(lambda t: None, duration_s=1.0)
    # Generous bounds: noisy 2-core machine. A stall skips slots (counted as missed) but
    # never shifts the schedule: executed plus skipped slots fill the second.
    assert stats.ticks + stats.missed == pytest.approx(200, abs=3)
    assert stats.achieved_hz == pytest.approx(200.0, rel=0.1)
    assert abs(stats.drift_ms) < 20.0
    assert stats.lateness_p50_us < 2000

    slow = RateLoop(0.2)  # 5 s period: stop must not wait for the deadline
    t = threading.Thread(target=slow.run, args=(lambda tick: None,))
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    slow.stop()
    t.join(timeout=2.0)
    assert not t.is_alive() and time.monotonic() - t0 < 0.5


def test_gc_collected_in_slack_and_restored():
    import gc

    assert gc.isenabled()
    def step(t):
        for _ in range(1000):  # reference cycles: only the cyclic GC can free them
            a: list = []
            a.append(a)

    stats = RateLoop(200.0, gc_in_slack=True).run(step, max_ticks=40)
    assert gc.isenabled()
    assert stats.gc_collections_in_slack >= 1


def test_realtime_setup_reports_each_outcome():
    import os

    cpus = sorted(os.sched_getaffinity(0))
    report = apply_realtime(RealtimeSettings(cpus=cpus[:1], fifo_priority=10, freeze_gc=True))
    assert report["affinity"] == f"cpus {cpus[:1]}"
    assert report["scheduler"].startswith(("SCHED_FIFO", "refused:"))
    assert report["gc"].startswith("frozen")
    os.sched_setaffinity(0, cpus)
    if report["scheduler"].startswith("SCHED_FIFO"):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    import gc

    gc.unfreeze()
    bad = apply_realtime(RealtimeSettings(cpus=[999]))
    assert bad["affinity"].startswith("refused:") and "999" in bad["affinity"]
