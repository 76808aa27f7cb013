"""Clocks: monotonic nanoseconds plus ``sleep_until``; a real one and a fake one for tests."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["MONOTONIC", "Clock", "FakeClock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic time source that can also block until an absolute time."""

    def now_ns(self) -> int:
        """Monotonic time in nanoseconds."""
        ...

    def sleep_until(self, deadline_ns: int) -> None:
        """Block until ``now_ns() >= deadline_ns`` (may overshoot by the OS wake-up latency)."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic_ns`` and ``time.sleep`` on the remaining interval."""

    __slots__ = ()

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, deadline_ns: int) -> None:
        remaining = deadline_ns - time.monotonic_ns()
        if remaining > 0:
            time.sleep(remaining / 1e9)


MONOTONIC = MonotonicClock()


class FakeClock:
    """A clock that only moves when told to; ``sleep_until`` jumps straight to the deadline.

    ``on_sleep`` (if given) is called with the deadline each time code sleeps, which lets a
    test inject work or stop a loop at a precise tick.
    """

    def __init__(self, start_ns: int = 0) -> None:
        self._now = int(start_ns)
        self._lock = threading.Lock()
        self.sleeps: list[int] = []
        self.on_sleep = None

    def now_ns(self) -> int:
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0.0, *, ns: int = 0) -> int:
        """Move time forward by ``seconds`` plus ``ns``; returns the new time."""
        with self._lock:
            self._now += int(round(seconds * 1e9)) + int(ns)
            return self._now

    def set(self, now_ns: int) -> None:
        with self._lock:
            if now_ns < self._now:
                raise ValueError(f"FakeClock cannot go backwards: {now_ns} < {self._now}")
            self._now = int(now_ns)

    def sleep_until(self, deadline_ns: int) -> None:
        self.sleeps.append(deadline_ns)
        with self._lock:
            if deadline_ns > self._now:
                self._now = int(deadline_ns)
        if self.on_sleep is not None:
            self.on_sleep(deadline_ns)
