"""Loop and recorder benchmarks: rtvla against the reference chapter's designs, in one run.

``bench_loop`` runs the chapter's naive loop (``time.sleep(period - elapsed)`` after each
step), ``RateLoop`` with pure sleep and ``RateLoop`` sleep-then-spin, at several rates, idle
and under a CPU load that the bench starts and ends itself. ``bench_record`` times one
``Recorder.latency()`` call against appending to a list as the chapter does, and compares
their memory after 10 million samples.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from rtvla.metrics import Recorder
from rtvla.timing import RateLoop, RealtimeSettings, Tick, apply_realtime

__all__ = ["LOOP_KINDS", "bench_loop", "bench_record", "cpu_load", "run_loop"]

LOOP_KINDS = ("naive", "sleep", "spin")
# Sleep until 1 ms before each deadline, then spin: above this VM's p99 oversleep (~0.5-0.7
# ms after a long sleep), and at 100 Hz exactly the spin bound RateLoop keeps under FIFO.
SPIN_MARGIN_S = 0.001
FIFO_PRIORITY = 80
DRIFT_TICKS = 64  # the same window as RateLoop's drift


def _burn(stop: Any) -> None:
    """A CPU hog for the loaded runs: pure-Python arithmetic until told to stop."""
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x = (x + i * i) % 1_000_003


@contextmanager
def cpu_load(processes: int | None = None) -> Iterator[int]:
    """Keep ``processes`` cores busy (default: all) for the duration of the block."""
    n = processes if processes is not None else (os.cpu_count() or 1)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_burn, args=(stop,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield n
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
                p.join(timeout=1.0)


def _control_step_work() -> Callable[[], None]:
    """A small, fixed control-law computation (6-DoF PD with a matrix-vector product)."""
    k = np.eye(6) * 50.0
    q = np.zeros(6)
    target = np.ones(6)

    def work() -> None:
        np.dot(k, target - q)

    return work


def _naive_loop(rate_hz: float, seconds: float, work: Callable[[], None]) -> dict[str, Any]:
    """The reference chapter's loop: sleep ``period - elapsed`` after each step."""
    period = 1.0 / rate_hz
    n = int(seconds * rate_hz)
    wakes = np.empty(n, dtype=np.int64)
    for i in range(n):
        start = time.monotonic()
        wakes[i] = time.monotonic_ns()
        work()
        elapsed = time.monotonic() - start
        time.sleep(max(0.0, period - elapsed))
    period_ns = 1e9 / rate_hz
    # Lateness of each wake-up relative to one period after the previous one.
    lateness = np.diff(wakes) - period_ns
    span = (wakes[-1] - wakes[0]) / 1e9
    achieved = (n - 1) / span
    # Drift as for RateLoop: how far behind the ideal schedule (start + i * period) the loop
    # runs at the end, as the median over the last cycles. Here the oversleeps accumulate.
    behind = wakes - (wakes[0] + np.arange(n) * period_ns)
    drift = float(np.median(behind[-DRIFT_TICKS:])) / 1e6
    missed = int(np.sum(np.diff(wakes) > 2 * period_ns))
    return {"lateness_ns": lateness, "achieved_hz": achieved, "drift_ms": drift, "missed": missed}


@contextmanager
def _fifo(enabled: bool) -> Iterator[str]:
    """SCHED_FIFO for the calling thread while the block runs, when permitted (the real-time
    setup rtvla's loops are meant to run with); back to SCHED_OTHER afterwards."""
    if not enabled:
        yield "SCHED_OTHER"
        return
    report = apply_realtime(RealtimeSettings(fifo_priority=FIFO_PRIORITY))
    try:
        yield report.get("scheduler", "SCHED_OTHER")
    finally:
        if report.get("scheduler", "").startswith("SCHED_FIFO"):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _rate_loop(
    rate_hz: float, seconds: float, work: Callable[[], None], spin_margin_s: float,
    realtime: bool = False,
) -> dict[str, Any]:
    n = int(seconds * rate_hz)
    lateness = np.empty(n, dtype=np.int64)
    count = 0

    def on_cycle(tick: Tick, step_ns: int) -> None:
        nonlocal count
        if count < n:
            lateness[count] = tick.lateness_ns
            count += 1

    loop = RateLoop(rate_hz, spin_margin_s=spin_margin_s, on_cycle=on_cycle, name="bench")
    with _fifo(realtime) as scheduler:
        stats = loop.run(lambda tick: work(), max_ticks=n)
    return {
        "lateness_ns": lateness[:count],
        "achieved_hz": stats.achieved_hz,
        "drift_ms": stats.drift_ms,
        "missed": stats.missed,
        "scheduler": scheduler,
    }


def run_loop(kind: str, rate_hz: float, seconds: float, *, realtime: bool = False) -> dict[str, Any]:
    """Run one loop kind for ``seconds``; returns lateness samples (ns) and figures.

    ``realtime``: run rtvla's loops (not the naive reference) under SCHED_FIFO when the OS
    permits, as ``RealtimeSettings`` would in a real deployment.
    """
    work = _control_step_work()
    if kind == "naive":
        return {**_naive_loop(rate_hz, seconds, work), "scheduler": "SCHED_OTHER"}
    if kind == "sleep":
        return _rate_loop(rate_hz, seconds, work, 0.0, realtime)
    if kind == "spin":
        return _rate_loop(rate_hz, seconds, work, SPIN_MARGIN_S, realtime)
    raise ValueError(f"loop kind must be one of {LOOP_KINDS}, got {kind!r}")


def bench_loop(
    *,
    seconds: float = 10.0,
    rates: tuple[float, ...] = (100.0, 1000.0),
    loads: tuple[str, ...] = ("idle", "loaded"),
    kinds: tuple[str, ...] = LOOP_KINDS,
    progress: Callable[[str], None] | None = None,
    realtime: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """All combinations of ``kinds`` x ``rates`` x ``loads``; returns (rows, lateness samples)."""
    rows: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    for load in loads:
        if load not in ("idle", "loaded"):
            raise ValueError(f"load must be 'idle' or 'loaded', got {load!r}")
        with cpu_load() if load == "loaded" else _nothing():
            for rate in rates:
                for kind in kinds:
                    if progress is not None:
                        progress(f"{kind} {rate:g} Hz {load}")
                    r = run_loop(kind, rate, seconds, realtime=realtime)
                    lat_us = r["lateness_ns"] / 1e3
                    rows.append(
                        {
                            "loop": kind,
                            "rate_hz": rate,
                            "load": load,
                            "achieved_hz": r["achieved_hz"],
                            "rate_error_pct": abs(r["achieved_hz"] - rate) / rate * 100.0,
                            "lateness_us": {
                                "p50": float(np.percentile(lat_us, 50)),
                                "p99": float(np.percentile(lat_us, 99)),
                                "max": float(np.max(lat_us)),
                            },
                            "drift_ms": r["drift_ms"],
                            "missed": r["missed"],
                            "scheduler": r["scheduler"],
                            "seconds": seconds,
                        }
                    )
                    samples[f"{kind} {rate:g}Hz {load}"] = lat_us
    return rows, samples


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _deep_size_recorder(rec: Recorder) -> int:
    """Bytes held by a recorder's per-component state (histogram buckets, rate bins...)."""
    total = sys.getsizeof(rec._series)
    for s in rec._series.values():
        for h in (s.hist, *s.observed.values()):
            total += sys.getsizeof(h) + h._counts.nbytes
        total += sys.getsizeof(s.pending) + len(s.pending) * sys.getsizeof(0.5)
        total += sys.getsizeof(s.bins) + sys.getsizeof(s.bins_epoch) + s.interval_counts.nbytes
    return total


def bench_record(
    *, samples: int = 10_000_000, timing_calls: int = 200_000, batch: int = 1000
) -> dict[str, Any]:
    """Cost per ``Recorder.latency()`` call and memory after ``samples`` samples, beside the
    reference chapter's list-append measurement."""
    rec = Recorder()
    baseline: dict[str, list[float]] = {}
    max_allowed = rec.requirements.budget("perception").max_latency_s

    def reference_measure(component: str, latency: float) -> None:
        # The chapter's measure_latency: append to an ever-growing list, compare to the max.
        if component not in baseline:
            baseline[component] = []
        baseline[component].append(latency)
        if latency > max_allowed:
            raise AssertionError("unreachable in this benchmark")

    def per_call_ns(fn: Callable[[str, float], None]) -> float:
        medians = []
        clock = time.perf_counter_ns
        for b in range(timing_calls // batch):
            v = 0.001 + b * 1e-9
            t0 = clock()
            for _ in range(batch):
                fn("perception", v)
            medians.append((clock() - t0) / batch)
        return float(np.median(medians))

    # Loop overhead (an empty call) is subtracted from both, so figures are the call's cost.
    def empty(component: str, latency: float) -> None:
        return None

    overhead = per_call_ns(empty)
    rec_ns = per_call_ns(rec.latency) - overhead
    base_ns = per_call_ns(reference_measure) - overhead

    rec_big = Recorder()
    baseline.clear()
    small_size = 0
    for i in range(samples):
        v = 0.001 + (i % 1000) * 1e-6
        rec_big.latency("perception", v)
        if i == 999:
            small_size = _deep_size_recorder(rec_big)
    rec_size = _deep_size_recorder(rec_big)
    base_list: list[float] = []
    for i in range(samples):
        base_list.append(0.001 + (i % 1000) * 1e-6)
    base_size = sys.getsizeof(base_list) + samples * sys.getsizeof(0.5)
    del base_list
    return {
        "record_ns_median": rec_ns,
        "baseline_ns_median": base_ns,
        "call_overhead_ns": overhead,
        "memory_bytes_after_1e3": small_size,
        "memory_bytes_after_1e7": rec_size,
        "baseline_memory_bytes_after_1e7": base_size,
        "samples": samples,
        "memory_ratio": base_size / rec_size if rec_size else math.inf,
    }
