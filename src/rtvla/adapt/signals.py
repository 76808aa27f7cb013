"""What the adaptive optimizer looks at: system CPU/memory and critical components' budgets.

:class:`Signals` is one observation over the last window: system CPU and memory (means of
the monitor's samples, so one noisy sample does not move anything), and for every critical
component its latency p99 as a fraction of its budget and its missed cycles, both counted
over the window only (not since start, so the optimizer can see a recovery).

:class:`RecorderSignals` computes them from a :class:`~rtvla.metrics.Recorder` and a
:class:`~rtvla.resources.SystemMonitor`. The Recorder only offers cumulative histograms or an
*interval* snapshot that resets them (the metrics time series owns that one), so windowed
figures come from differencing copies of the cumulative histogram's bucket counts; the one
place that reads the Recorder's internals is :func:`_cumulative`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rtvla.metrics import LatencyHistogram, Recorder
from rtvla.resources import SystemMonitor

__all__ = ["RecorderSignals", "SignalSource", "Signals"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signals:
    """One observation of the load. ``None`` means "not known yet" (no samples)."""

    cpu_percent: float | None = None
    memory_percent: float | None = None
    latency_ratio: Mapping[str, float] = field(default_factory=dict)
    missed: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpu_percent": self.cpu_percent,
            "memory_percent": self.memory_percent,
            "latency_ratio": dict(self.latency_ratio),
            "missed": dict(self.missed),
        }


@runtime_checkable
class SignalSource(Protocol):
    def read(self, now_ns: int) -> Signals:
        """The signals over the window ending at ``now_ns``."""
        ...


def _cumulative(recorder: Recorder, component: str) -> tuple[tuple[int, ...], int] | None:
    """Copies of the cumulative latency bucket counts and missed cycles of ``component``."""
    series = recorder._series.get(component)  # private: see the module docstring
    if series is None:
        return None
    with series.lock:
        return tuple(series.hist._counts), int(series.missed)


def _p99_of_diff(new: tuple[int, ...], old: tuple[int, ...] | None, q: float = 99.0) -> tuple[float, int]:
    """(percentile in seconds, sample count) of the samples between two bucket-count copies."""
    diff = [n - (old[i] if old is not None else 0) for i, n in enumerate(new)]
    total = sum(diff)
    if total <= 0:
        return math.nan, 0
    rank = q / 100.0 * total
    seen = 0
    for idx, c in enumerate(diff):
        if c <= 0:
            continue
        seen += c
        if seen >= rank:
            return _BUCKETS._bucket_value(idx), total
    return math.nan, total


_BUCKETS = LatencyHistogram()  # same default range as the Recorder's: maps bucket index -> seconds


class RecorderSignals:
    """Signals from a recorder (critical components' budgets) and a system monitor.

    Args:
        recorder: where components record latency and missed cycles.
        monitor: system CPU/memory source; None leaves those signals unknown.
        window_s: the observation window.
        components: which components' budgets to watch (default: every critical one the
            recorder knows, discovered at each read).
        min_samples: fewer latency samples than this in the window give no latency signal.
    """

    def __init__(
        self,
        recorder: Recorder,
        monitor: SystemMonitor | None = None,
        *,
        window_s: float = 2.0,
        components: Iterable[str] | None = None,
        min_samples: int = 5,
    ) -> None:
        self.recorder = recorder
        self.monitor = monitor
        self.window_ns = int(window_s * 1e9)
        self.window_s = window_s
        self.components = None if components is None else tuple(components)
        self.min_samples = min_samples
        self._marks: dict[str, deque[tuple[int, tuple[int, ...], int]]] = {}

    def _watched(self) -> list[str]:
        if self.components is not None:
            return list(self.components)
        return [c for c in self.recorder.components() if self.recorder.budget(c).critical]

    def read(self, now_ns: int) -> Signals:
        cpu = mem = None
        if self.monitor is not None:
            cpu = self.monitor.mean("cpu_percent", self.window_s)
            mem = self.monitor.mean("memory_percent", self.window_s)
        ratios: dict[str, float] = {}
        missed: dict[str, int] = {}
        for name in self._watched():
            cur = _cumulative(self.recorder, name)
            if cur is None:
                continue
            counts, miss = cur
            marks = self._marks.setdefault(name, deque())
            # Keep the newest mark at or before the window start as the baseline.
            while len(marks) >= 2 and marks[1][0] <= now_ns - self.window_ns:
                marks.popleft()
            base = marks[0] if marks else None
            old_counts = base[1] if base is not None else None
            old_missed = base[2] if base is not None else 0
            p99, n = _p99_of_diff(counts, old_counts)
            budget_s = self.recorder.budget(name).max_latency_s
            if n >= self.min_samples and math.isfinite(p99) and budget_s > 0:
                ratios[name] = p99 / budget_s
            missed[name] = max(0, miss - old_missed)
            marks.append((now_ns, counts, miss))
        return Signals(cpu, mem, ratios, missed)
