"""``Periodic``: a helper thread that calls a function every period and stops at once.

For monitors, optimizers and writers (not for real-time loops: those use ``RateLoop``). The
thread waits on an Event (``while not stop.wait(period)``), so :meth:`stop` returns
immediately instead of after a sleep. A call that raises is logged (the first failure, then
every 100th) and counted; the thread keeps going.

Usage::

    sampler = Periodic(0.1, monitor.sample_once, name="rtvla-monitor").start()
    ...
    sampler.stop()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from rtvla.errors import TimingError

__all__ = ["Periodic"]

logger = logging.getLogger(__name__)


class Periodic:
    """Calls ``fn()`` every ``period_s`` seconds in a daemon thread until :meth:`stop`."""

    def __init__(self, period_s: float, fn: Callable[[], Any], *, name: str) -> None:
        if not period_s > 0:
            raise TimingError(f"{name}: period_s must be > 0, got {period_s}")
        self.period_s = period_s
        self.fn = fn
        self.name = name
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Periodic:
        if self.running:
            raise TimingError(f"{self.name} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def call(self) -> None:
        """One call of ``fn``, failures logged and counted (also used outside the thread)."""
        try:
            self.fn()
        except Exception:  # a helper thread must not take the stack down; it reports instead
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                logger.exception("%s failed (%d failures so far)", self.name, self.errors)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.call()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Periodic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
