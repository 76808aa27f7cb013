"""In-process latest-value channel: a slot guarded by a condition variable."""

from __future__ import annotations

import threading
from typing import Any

from rtvla.channels.base import Sample
from rtvla.errors import ChannelClosed
from rtvla.timing import MONOTONIC, Clock

__all__ = ["LatestValue"]


class LatestValue:
    """A latest-value channel between threads of one process (no copy: readers share the object).

    Publishers must not mutate a value after publishing it; publish a new one instead.
    """

    def __init__(self, name: str = "channel", *, clock: Clock = MONOTONIC) -> None:
        self.name = name
        self.clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._sample: Sample[Any] | None = None
        self._seq = 0
        self._closed = False

    def publish(self, value: Any) -> int:
        with self._cond:
            if self._closed:
                raise ChannelClosed(f"channel {self.name!r} is closed")
            self._seq += 1
            self._sample = Sample(value, self.clock.now_ns(), self._seq)
            self._cond.notify_all()
            return self._seq

    def latest(self) -> Sample[Any] | None:
        return self._sample  # a single reference read is atomic

    @property
    def seq(self) -> int:
        return self._seq

    def wait_newer(self, seq: int, timeout: float | None = None) -> Sample[Any] | None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self._seq > seq or self._closed, timeout)
            if not ok or self._sample is None or self._sample.seq <= seq:
                return None
            return self._sample

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __enter__(self) -> LatestValue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
