"""What the adaptive optimizer looks at: system CPU/memory and critical components' budgets.

:class:`Signals` is one observation over the last window: system CPU and memory (means of
the monitor's samples, so one noisy sample does not move anything), and for every critical
component its latency p99 as a fraction of its budget and its missed cycles, both counted
over the window only (not since start, so the optimizer can see a recovery).

:class:`RecorderSignals` computes them from a :class:`~rtvla.metrics.Recorder` and a
:class:`~rtvla.resources.SystemMonitor`. The Recorder only offers cumulative histograms or an
*interval* snapshot that resets them (the metrics time series owns that one), so windowed
figures come from differencing two :meth:`Recorder.mark` copies of the cumulative
histogram's bucket counts, through the histogram's ``since()``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

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


@dataclass(frozen=True)
class _Mark:
    """Cumulative latency state of one component at one read."""

    stamp_ns: int
    counts: np.ndarray
    count: int
    total_s: float
    missed: int


def _cumulative(recorder: Recorder, component: str, now_ns: int) -> _Mark | None:
    """The cumulative state of ``component``, or None when the recorder has no such series."""
    mark = recorder.mark(component)
    if mark is None:
        return None
    counts, count, total, missed = mark
    return _Mark(now_ns, counts, count, total, missed)


_ZERO = LatencyHistogram()  # never recorded into: the origin for windowed histograms


def _window_p99(cur: _Mark, base: _Mark | None) -> float:
    """p99 in seconds of the samples recorded between ``base`` and ``cur``."""
    counts = cur.counts if base is None else cur.counts - base.counts
    count = cur.count - (base.count if base is not None else 0)
    total = cur.total_s - (base.total_s if base is not None else 0.0)
    # zero - (-window) = window: the histogram's public ``since`` builds it from counts.
    window = _ZERO.since(-counts, -count, -total, math.inf)
    return window.percentile(99.0)


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
        self._marks: dict[str, deque[_Mark]] = {}
        self._broken = False

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
            try:
                cur = _cumulative(self.recorder, name, now_ns)
            except AttributeError:  # the Recorder's internals changed: no budget signals
                if not self._broken:
                    self._broken = True
                    logger.exception("cannot read windowed latency from the recorder")
                continue
            if cur is None:
                continue
            marks = self._marks.setdefault(name, deque())
            # Keep the newest mark at or before the window start as the baseline.
            while len(marks) >= 2 and marks[1].stamp_ns <= now_ns - self.window_ns:
                marks.popleft()
            base = marks[0] if marks else None
            n = cur.count - (base.count if base is not None else 0)
            p99 = _window_p99(cur, base) if n > 0 else math.nan
            budget_s = self.recorder.budget(name).max_latency_s
            if n >= self.min_samples and math.isfinite(p99) and budget_s > 0:
                ratios[name] = p99 / budget_s
            missed[name] = max(0, cur.missed - (base.missed if base is not None else 0))
            marks.append(cur)
        return Signals(cpu, mem, ratios, missed)
