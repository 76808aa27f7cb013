"""``RateLoop``: run ``step(tick)`` at a fixed rate on absolute deadlines.

The naive loop in the reference chapter sleeps ``period - elapsed`` after each step, so every
oversleep (100-185 us per cycle on Linux) accumulates: about 2 % rate error at 100 Hz. Here
each deadline is ``start + slot * period``: errors never accumulate. The loop sleeps until
``spin_margin_s`` before the deadline and spins the rest, which trades a little CPU for
sub-microsecond median wake-up lateness.

Usage::

    loop = RateLoop(100.0, spin_margin_s=0.0005)
    stats = loop.run(lambda tick: controller.update(tick.dt_s), duration_s=10.0)
    print(stats.achieved_hz, stats.lateness_p99_us, stats.missed)
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from rtvla.errors import TimingError
from rtvla.timing.clock import MONOTONIC, Clock, MonotonicClock

__all__ = ["LoopStats", "Overrun", "RateLoop", "Tick"]

# Sleeps longer than this wait on the stop Event, so stop() interrupts them at once.
_EVENT_WAIT_MIN_NS = 20_000_000
# Under SCHED_FIFO a spin may use at most this fraction of the period (the kernel throttles
# RT tasks that run 95 % of a second and stalls them for tens of milliseconds).
_FIFO_MAX_SPIN_FRACTION = 0.1
# Collect gen-0 garbage in slack time only when this much of the period is still free.
_GC_SLACK_FRACTION = 0.5
# Drift is the median lateness over this many of the most recent cycles.
_DRIFT_TICKS = 64


class Overrun(str, Enum):
    """What to do when a step runs past the next deadline."""

    SKIP = "skip"  # drop the slots that passed; next deadline is the first one in the future
    CATCH_UP = "catch_up"  # run the late slots back to back until on schedule again


@dataclass(frozen=True, slots=True)
class Tick:
    """One cycle of a :class:`RateLoop`."""

    index: int  # cycles executed so far (0-based)
    slot: int  # schedule slot (index plus skipped slots)
    deadline_ns: int  # when this cycle was due
    wake_ns: int  # when it actually started
    dt_s: float  # seconds since the previous cycle started (the period on the first)

    @property
    def lateness_ns(self) -> int:
        return self.wake_ns - self.deadline_ns


@dataclass
class LoopStats:
    """What a loop achieved. ``drift_ms``: how far behind its ideal schedule the loop runs at
    the end (median lateness of the last 64 cycles); ``missed``: slots skipped after overruns."""

    name: str
    rate_hz: float
    ticks: int = 0
    missed: int = 0
    late_cycles: int = 0  # cycles whose step finished after the next deadline
    achieved_hz: float = 0.0
    drift_ms: float = 0.0
    elapsed_s: float = 0.0
    lateness_max_us: float = 0.0
    lateness_mean_us: float = 0.0
    lateness_p50_us: float = 0.0
    lateness_p99_us: float = 0.0
    step_max_ms: float = 0.0
    step_mean_ms: float = 0.0
    on_time_rate: float = 1.0
    gc_collections_in_slack: int = 0
    spin_margin_us: float = 0.0
    realtime: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RateLoop:
    """Run a step function at ``rate_hz`` on absolute deadlines until stopped.

    Args:
        rate_hz: target rate; :meth:`set_rate` changes it between cycles.
        clock: time source (a :class:`~rtvla.timing.clock.FakeClock` in logic tests).
        spin_margin_s: sleep until this long before each deadline, then spin; 0 = pure sleep.
        overrun: :class:`Overrun` policy when a step overruns.
        stop_event: set it (or call :meth:`stop`) to end the loop after the current cycle.
        gc_in_slack: disable the cyclic GC inside the loop and collect generation 0 only in
            slack time (re-enabled on exit).
        on_cycle: called after every step with ``(tick, step_ns)``, e.g. to feed a Recorder.
        window: how many recent lateness samples to keep for percentiles (constant memory).
    """

    def __init__(
        self,
        rate_hz: float,
        *,
        clock: Clock = MONOTONIC,
        spin_margin_s: float = 0.0,
        overrun: Overrun | str = Overrun.SKIP,
        stop_event: threading.Event | None = None,
        gc_in_slack: bool = False,
        on_cycle: Callable[[Tick, int], None] | None = None,
        window: int = 8192,
        name: str = "loop",
    ) -> None:
        self._period_ns = self._check_rate(rate_hz)
        self.rate_hz = float(rate_hz)
        if spin_margin_s < 0:
            raise TimingError(f"spin_margin_s must be >= 0, got {spin_margin_s}")
        try:
            self.overrun = Overrun(overrun)
        except ValueError:
            raise TimingError(
                f"overrun must be one of {[o.value for o in Overrun]}, got {overrun!r}"
            ) from None
        if window < 1:
            raise TimingError(f"window must be >= 1, got {window}")
        self.clock = clock
        self.spin_margin_ns = int(spin_margin_s * 1e9)
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.gc_in_slack = gc_in_slack
        self.on_cycle = on_cycle
        self.name = name
        self.realtime: dict[str, Any] = {}
        self._window = np.zeros(window, dtype=np.int64)
        self._stats = LoopStats(name=name, rate_hz=self.rate_hz)
        self._pending_rate: float | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _check_rate(rate_hz: float) -> int:
        if not (isinstance(rate_hz, (int, float)) and rate_hz > 0 and np.isfinite(rate_hz)):
            raise TimingError(f"rate_hz must be a finite number > 0, got {rate_hz!r}")
        return max(1, int(round(1e9 / rate_hz)))

    @property
    def period_s(self) -> float:
        return self._period_ns / 1e9

    def set_rate(self, rate_hz: float) -> None:
        """Change the rate; takes effect at the next cycle, re-anchoring the schedule there."""
        self._check_rate(rate_hz)
        self._pending_rate = float(rate_hz)

    def stop(self) -> None:
        self.stop_event.set()

    def stats(self) -> LoopStats:
        """A snapshot of the statistics so far (safe to call from another thread)."""
        with self._lock:
            s = LoopStats(**{**self._stats.as_dict(), "realtime": dict(self.realtime)})
        n = min(s.ticks, len(self._window))
        if n:
            recent = self._window[:n] / 1e3
            s.lateness_p50_us = float(np.percentile(recent, 50))
            s.lateness_p99_us = float(np.percentile(recent, 99))
            # Drift: how far behind its schedule the loop runs now, robust to one late wake-up
            # (the median lateness of the last few cycles). Absolute deadlines keep it ~0.
            last = (s.ticks - 1 - np.arange(min(n, _DRIFT_TICKS))) % len(self._window)
            s.drift_ms = float(np.median(self._window[last])) / 1e6
        return s

    def _effective_spin_ns(self) -> int:
        spin = self.spin_margin_ns
        if spin and not isinstance(self.clock, MonotonicClock):
            return 0  # a fake clock never advances while spinning
        if spin and _under_fifo():
            spin = min(spin, int(self._period_ns * _FIFO_MAX_SPIN_FRACTION))
        return spin

    def _wait_until(self, deadline_ns: int, spin_ns: int) -> int:
        clock = self.clock
        coarse = deadline_ns - spin_ns
        now = clock.now_ns()
        # Long sleeps wait on the stop event so that stop() is prompt at low rates.
        if (
            coarse - now > _EVENT_WAIT_MIN_NS
            and isinstance(clock, MonotonicClock)
            and self.stop_event.wait((coarse - now - _EVENT_WAIT_MIN_NS // 2) / 1e9)
        ):
            return clock.now_ns()
        if coarse > clock.now_ns():
            clock.sleep_until(coarse)
        now = clock.now_ns()
        while now < deadline_ns:
            if not spin_ns:
                clock.sleep_until(deadline_ns)
            now = clock.now_ns()
        return now

    def run(
        self,
        step: Callable[[Tick], Any],
        *,
        max_ticks: int | None = None,
        duration_s: float | None = None,
    ) -> LoopStats:
        """Run until stopped, ``max_ticks`` cycles, or ``duration_s`` seconds.

        ``step`` may return ``False`` to end the loop. Exceptions from ``step`` propagate
        (after the GC state is restored); supervision is the caller's business.
        """
        clock = self.clock
        period = self._period_ns
        spin_ns = self._effective_spin_ns()
        self._stats.spin_margin_us = spin_ns / 1e3
        start = clock.now_ns()
        end_ns = None if duration_s is None else start + int(duration_s * 1e9)
        anchor, anchor_slot = start, 0
        slot = 0
        prev_wake = start - period
        lat_sum = step_sum = 0
        window = self._window
        wlen = len(window)
        gc_was_enabled = gc.isenabled()
        if self.gc_in_slack:
            gc.disable()
        s = self._stats
        first_wake = None
        try:
            while not self.stop_event.is_set():
                if max_ticks is not None and s.ticks >= max_ticks:
                    break
                if self._pending_rate is not None:
                    # Re-anchor at the current slot so that the new period starts cleanly.
                    self.rate_hz, self._pending_rate = self._pending_rate, None
                    anchor = anchor + (slot - anchor_slot) * period
                    anchor_slot = slot
                    period = self._period_ns = self._check_rate(self.rate_hz)
                    s.rate_hz = self.rate_hz
                    spin_ns = self._effective_spin_ns()
                deadline = anchor + (slot - anchor_slot) * period
                if end_ns is not None and deadline >= end_ns:
                    break
                wake = self._wait_until(deadline, spin_ns)
                if self.stop_event.is_set():
                    break
                if first_wake is None:
                    first_wake = wake
                tick = Tick(s.ticks, slot, deadline, wake, (wake - prev_wake) / 1e9)
                prev_wake = wake
                keep_going = step(tick)
                done = clock.now_ns()
                step_ns = done - wake
                lateness = wake - deadline
                with self._lock:
                    window[s.ticks % wlen] = lateness
                    s.ticks += 1
                    lat_sum += lateness
                    step_sum += step_ns
                    s.lateness_max_us = max(s.lateness_max_us, lateness / 1e3)
                    s.step_max_ms = max(s.step_max_ms, step_ns / 1e6)
                    s.lateness_mean_us = lat_sum / s.ticks / 1e3
                    s.step_mean_ms = step_sum / s.ticks / 1e6
                    s.drift_ms = (wake - (anchor + (slot - anchor_slot) * period)) / 1e6
                    if s.ticks > 1:
                        s.elapsed_s = (wake - first_wake) / 1e9
                        s.achieved_hz = (s.ticks - 1) / s.elapsed_s if s.elapsed_s > 0 else 0.0
                    next_deadline = deadline + period
                    if done > next_deadline:
                        s.late_cycles += 1
                        if self.overrun is Overrun.SKIP:
                            behind = (done - deadline) // period
                            s.missed += int(behind)
                            slot += int(behind)
                    s.on_time_rate = 1.0 - s.late_cycles / s.ticks
                slot += 1
                if self.on_cycle is not None:
                    self.on_cycle(tick, step_ns)
                if keep_going is False:
                    break
                if self.gc_in_slack:
                    self._collect_in_slack(anchor + (slot - anchor_slot) * period, period)
        finally:
            if self.gc_in_slack and gc_was_enabled:
                gc.enable()
        return self.stats()

    def _collect_in_slack(self, next_deadline: int, period: int) -> None:
        threshold = gc.get_threshold()[0] or 700
        if gc.get_count()[0] < threshold:
            return
        if next_deadline - self.clock.now_ns() > period * _GC_SLACK_FRACTION:
            gc.collect(0)
            with self._lock:
                self._stats.gc_collections_in_slack += 1


def _under_fifo() -> bool:
    try:
        return os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR)
    except (AttributeError, OSError):
        return False
