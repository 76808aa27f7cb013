from __future__ import annotations

import itertools
import os
import threading

import pytest

from rtvla.errors import ConfigError, ResourceError
from rtvla.metrics import Recorder
from rtvla.resources import ProcessTimes, PsutilSampler, SystemMonitor
from rtvla.timing import FakeClock


def _monitor(sampler, clock, **kw):
    return SystemMonitor(sampler, clock=clock, period_s=0.1, **kw)


def test_first_read_primes_then_rates_come_from_counter_deltas(scripted):
    clock, s = FakeClock(), scripted()
    m = _monitor(s, clock)
    assert m.sample_once() is None  # priming read: no deltas yet
    clock.advance(0.5)
    s.advance(0.5, [1.0, 0.5])
    s.net_sent += 50_000
    s.net_recv += 10_000
    s.disk_write += 1_000_000
    sample = m.sample_once()
    assert sample is not None
    assert sample.dt_s == pytest.approx(0.5)
    assert sample.cpu_per_core == pytest.approx((100.0, 50.0))
    assert sample.cpu_percent == pytest.approx(75.0)
    assert sample.net_sent_bps == pytest.approx(100_000.0)
    assert sample.net_recv_bps == pytest.approx(20_000.0)
    assert sample.disk_write_bps == pytest.approx(2_000_000.0)
    assert sample.disk_read_bps == 0.0
    assert sample.memory_percent == pytest.approx(25.0)
    assert m.latest() is sample


def test_counter_reset_and_missing_counters_do_not_give_negative_or_fake_rates(scripted):
    clock, s = FakeClock(), scripted(net_sent=1_000_000, disk_read=None)
    m = _monitor(s, clock)
    m.sample_once()
    clock.advance(0.1)
    s.advance(0.1, [0.2, 0.2])
    s.net_sent = 10  # interface re-created: counter went backwards
    sample = m.sample_once()
    assert sample.net_sent_bps == 0.0
    assert sample.disk_read_bps is None


def test_ring_is_bounded_and_history_window_selects_recent_samples(scripted):
    clock, s = FakeClock(), scripted()
    m = _monitor(s, clock, capacity=20)
    m.sample_once()
    for _ in range(100):
        clock.advance(0.1)
        s.advance(0.1, [0.5, 0.5])
        m.sample_once()
    assert m.capacity == 20
    assert len(m.history()) == 20
    assert m.samples_taken == 100
    recent = m.history(0.5)
    assert len(recent) == 5
    assert recent[-1] is m.latest()
    assert all(a.stamp_ns < b.stamp_ns for a, b in itertools.pairwise(recent))


def test_trend_is_the_slope_per_second_and_mean_and_peak_over_a_window(scripted):
    clock, s = FakeClock(), scripted()
    m = _monitor(s, clock)
    m.sample_once()
    for i in range(30):
        clock.advance(0.1)
        s.advance(0.1, [0.3, 0.3])
        s.memory_used_mb = 2000.0 + 10.0 * (i + 1)  # +100 MB per second
        m.sample_once()
    assert m.trend("memory_used_mb") == pytest.approx(100.0, rel=1e-6)
    assert m.trend("cpu_percent") == pytest.approx(0.0, abs=1e-6)
    assert m.mean("cpu_percent", 1.0) == pytest.approx(30.0)
    assert m.peak("memory_used_mb") == pytest.approx(2300.0)
    with pytest.raises(ConfigError, match="unknown monitor metric 'bogus'"):
        m.trend("bogus")


def test_component_cpu_from_thread_and_process_times_feeds_the_recorder(scripted):
    clock, s = FakeClock(), scripted()
    rec = Recorder(clock=clock)
    m = _monitor(s, clock, recorder=rec)
    m.register_thread("perception", 111)
    m.register_thread("perception", 112)
    m.register_process("control", 4242)
    s.threads = {111: 1.0, 112: 2.0, 999: 50.0}
    s.processes = {4242: ProcessTimes(cpu_s=10.0, rss_mb=80.0)}
    m.sample_once()
    clock.advance(1.0)
    s.advance(1.0, [0.9, 0.9])
    s.threads = {111: 1.3, 112: 2.2, 999: 51.0}  # 0.5 s CPU in 1 s for perception's threads
    s.processes = {4242: ProcessTimes(cpu_s=10.25, rss_mb=82.0)}
    sample = m.sample_once()
    assert s.reads[-1] == ({111, 112}, {4242})
    assert sample.components["perception"].cpu_percent == pytest.approx(50.0)
    # A thread's memory is not separable from its process's: null, not a 0 that never violates.
    assert sample.components["perception"].memory_mb is None
    assert sample.components["control"].cpu_percent == pytest.approx(25.0)
    assert sample.components["control"].memory_mb == pytest.approx(82.0)
    assert sample.value("component.control.cpu_percent") == pytest.approx(25.0)
    snap = rec.snapshot()
    assert snap["perception"]["cpu_percent"] == pytest.approx(50.0)
    assert snap["control"]["memory_mb"] == pytest.approx(82.0)
    assert snap["perception"]["memory_mb"] is None and snap["perception"]["memory_scope"] == "process"
    assert snap["control"]["memory_scope"] == "own"


def test_exited_process_stops_being_reported(scripted):
    clock, s = FakeClock(), scripted()
    m = _monitor(s, clock)
    m.register_process("worker", 77)
    s.processes = {77: ProcessTimes(1.0, 10.0)}
    m.sample_once()
    clock.advance(0.1)
    s.processes = {}
    assert "worker" not in m.sample_once().components
    with pytest.raises(ResourceError, match="pid must be > 0"):
        m.register_process("x", 0)


def test_thread_mode_samples_until_stopped_and_summary(scripted):
    s = PsutilSampler()
    m = SystemMonitor(s, period_s=0.01)
    m.register_thread("main")
    m.start()
    try:
        done = threading.Event()
        for _ in range(500):  # wait on a condition, not a fixed sleep
            if len(m.history()) >= 3:
                done.set()
                break
            threading.Event().wait(0.01)
        assert done.is_set(), "monitor thread produced no samples"
        with pytest.raises(ResourceError, match="already started"):
            m.start()
    finally:
        m.stop()
    assert not m.running
    summary = m.summary()
    assert summary["samples"] >= 3
    assert 0.0 <= summary["cpu_percent"]["mean"] <= 100.0
    assert "main" in summary["components"]


def test_sampler_errors_are_counted_not_raised_in_thread_mode(scripted):
    class Broken(scripted):
        def read(self, thread_ids, pids):
            raise OSError("procfs unavailable")

    m = SystemMonitor(Broken(), period_s=0.01)
    m.start()
    try:
        for _ in range(500):
            if m.errors >= 2:
                break
            threading.Event().wait(0.01)
    finally:
        m.stop()
    assert m.errors >= 2


def test_bad_settings_are_refused(scripted):
    with pytest.raises(ConfigError, match="period_s must be > 0"):
        SystemMonitor(scripted(), period_s=0)
    with pytest.raises(ConfigError, match="capacity must be >= 2"):
        SystemMonitor(scripted(), capacity=1)


def test_real_sampler_attributes_cpu_to_the_busy_thread_not_the_idle_one():
    m = SystemMonitor(PsutilSampler(), period_s=0.1)
    stop = threading.Event()
    ids: dict[str, int] = {}
    ready = threading.Barrier(3)

    def busy() -> None:
        ids["busy"] = threading.get_native_id()
        ready.wait()
        x = 0
        while not stop.is_set():
            x += 1

    def idle() -> None:
        ids["idle"] = threading.get_native_id()
        ready.wait()
        stop.wait()

    threads = [threading.Thread(target=busy), threading.Thread(target=idle)]
    for t in threads:
        t.start()
    ready.wait()
    m.register_thread("busy", ids["busy"])
    m.register_thread("idle", ids["idle"])
    try:
        m.sample_once()
        stop.wait(0.4)  # a measuring interval, not a settle: the busy thread runs meanwhile
        sample = m.sample_once()
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    busy_cpu = sample.components["busy"].cpu_percent
    idle_cpu = sample.components["idle"].cpu_percent
    # generous: the machine is shared, and this thread competes with the busy one for the GIL
    assert busy_cpu > 15.0
    assert idle_cpu < 5.0
    assert busy_cpu > 5 * max(idle_cpu, 1.0)


def test_psutil_sampler_reads_counters_and_can_skip_io():
    s = PsutilSampler()
    cap = s.capacity()
    assert cap.cpus and cap.memory_total_mb > 0
    raw = s.read({threading.get_native_id()}, {os.getpid()})
    assert len(raw.cores) >= len(cap.cpus)
    assert all(c.total_s >= c.busy_s >= 0 for c in raw.cores)
    assert threading.get_native_id() in raw.threads
    assert raw.processes[os.getpid()].rss_mb > 0
    assert raw.own_rss_mb > 0
    lean = PsutilSampler(net=False, disk=False).read((), ())
    assert lean.net_bytes_sent is None and lean.disk_read_bytes is None
    assert s.read((), {2**22 + 4321}).processes == {}  # no such process: left out
