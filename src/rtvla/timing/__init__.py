"""Clocks, the absolute-deadline ``RateLoop`` and real-time process setup."""

from __future__ import annotations

from rtvla.timing.clock import MONOTONIC, Clock, FakeClock, MonotonicClock
from rtvla.timing.periodic import Periodic
from rtvla.timing.rate_loop import LoopStats, Overrun, RateLoop, Tick
from rtvla.timing.realtime import RealtimeSettings, apply_realtime

__all__ = [
    "MONOTONIC",
    "Clock",
    "FakeClock",
    "LoopStats",
    "MonotonicClock",
    "Overrun",
    "Periodic",
    "RateLoop",
    "RealtimeSettings",
    "Tick",
    "apply_realtime",
]
