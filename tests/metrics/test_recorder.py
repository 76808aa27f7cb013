from __future__ import annotations

import logging
import threading

import pytest

from rtvla.config import load_config
from rtvla.metrics import Recorder, build_report, render_table
from rtvla.timing import FakeClock


def make(clock=None, **kw):
    return Recorder(load_config(environ={}, search_cwd=False).requirements,
                    clock=clock or FakeClock(), **kw)


def test_latency_violation_is_aggregated():
    rec = make()
    for _ in range(100):
        rec.latency("control", 0.002)
    rec.latency("control", 0.015)
    rec.latency("control", 0.020)
    (v,) = rec.violations()
    assert (v.component, v.kind, v.count, v.limit, v.critical) == ("control", "latency", 2, 10.0, True)
    assert v.worst == pytest.approx(20.0)
    snap = rec.snapshot()["control"]
    assert snap["latency_ms"]["count"] == 102
    assert snap["latency_ms"]["p50"] == pytest.approx(2.0, rel=0.011)
    assert snap["violations"] == {"latency": 2}


def test_llm_over_deadline_is_a_deadline_violation():
    rec = make()
    rec.latency("llm", 6.0)
    assert [v.kind for v in rec.violations()] == ["deadline"]


def test_warnings_are_rate_limited_with_suppressed_count(caplog):
    clock = FakeClock()
    rec = make(clock, warn_interval_s=5.0)
    with caplog.at_level(logging.WARNING, logger="rtvla.metrics.recorder"):
        for _ in range(1000):  # a breach every cycle for 1 s at 1 kHz
            rec.latency("perception", 0.050)
            clock.advance(0.001)
        assert len(caplog.records) == 1
        clock.advance(5.0)
        rec.latency("perception", 0.050)
    assert len(caplog.records) == 2
    assert "999 more violations suppressed" in caplog.records[1].getMessage()
    assert rec.violations()[0].count == 1001


def test_throughput_window_and_check():
    clock = FakeClock()
    rec = make(clock, rate_window_s=2.0)
    for _ in range(300):  # 30 Hz for 10 s
        rec.count("perception")
        clock.advance(1 / 30)
    assert rec.rate("perception") == pytest.approx(30.0, rel=0.05)
    assert rec.achieved_hz("perception") == pytest.approx(30.0, rel=0.01)
    assert rec.check() == []
    for _ in range(60):  # drop to 15 Hz
        rec.count("perception")
        clock.advance(1 / 15)
    viols = rec.check()
    assert [(v.kind, v.component) for v in viols] == [("throughput", "perception")]
    assert viols[0].worst == pytest.approx(15.0, rel=0.1)


def test_utilization_ceilings():
    rec = make()
    rec.utilization("perception", cpu_percent=50, memory_mb=200)
    rec.utilization("perception", cpu_percent=90, memory_mb=1200)
    kinds = sorted(v.kind for v in rec.violations())
    assert kinds == ["cpu", "memory"]
    snap = rec.snapshot()["perception"]
    assert snap["cpu_percent_max"] == 90 and snap["memory_mb_max"] == 1200


def test_thread_safe_counts():
    rec = make(clock=None)

    def work():
        for _ in range(20_000):
            rec.latency("navigation", 0.01)
            rec.count("navigation")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = rec.snapshot()["navigation"]
    assert snap["latency_ms"]["count"] == 80_000 and snap["count"] == 80_000


def test_interval_snapshot_resets():
    rec = make()
    for _ in range(10):
        rec.latency("control", 0.001)
    assert rec.snapshot(interval=True)["control"]["latency_ms"]["count"] == 10
    rec.latency("control", 0.004)
    lat = rec.snapshot(interval=True)["control"]["latency_ms"]
    assert lat["count"] == 1 and lat["max"] == pytest.approx(4.0)
    assert rec.snapshot()["control"]["latency_ms"]["count"] == 11


def test_report_dict_and_table():
    rec = make()
    rec.latency("control", 0.001)
    rec.miss("control", 2)
    rec.event("llm", "degraded", "timeout after 5 s", source="fallback")
    report = build_report(rec)
    row = report["components"]["control"]
    assert row["missed"] == 2 and row["status"] == "violated"
    assert row["budget"]["rate_hz"] == 100
    assert report["events"][0]["kind"] == "degraded"
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(render_table(report))
    text = console.export_text()
    assert "control" in text and "VIOLATED" in text
