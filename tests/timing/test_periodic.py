from __future__ import annotations

import threading
import time

import pytest

from rtvla.errors import TimingError
from rtvla.timing import Periodic


def test_calls_repeatedly_and_stops_at_once():
    calls = threading.Event()
    n = []

    def fn():
        n.append(1)
        if len(n) >= 3:
            calls.set()

    worker = Periodic(0.01, fn, name="test-periodic").start()
    assert calls.wait(5.0)
    with pytest.raises(TimingError, match="already started"):
        worker.start()
    slow = Periodic(10.0, fn, name="slow").start()
    t0 = time.monotonic()
    slow.stop()
    worker.stop()
    assert time.monotonic() - t0 < 1.0 and not worker.running and not slow.running


def test_failures_are_counted_not_raised():
    done = threading.Event()

    def boom():
        if worker.errors >= 2:
            done.set()
        raise RuntimeError("sampler broke")

    worker = Periodic(0.005, boom, name="boom")
    with worker:
        assert done.wait(5.0)
    assert worker.errors >= 2
    with pytest.raises(TimingError, match="period_s must be > 0"):
        Periodic(0, boom, name="zero")
