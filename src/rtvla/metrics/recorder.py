"""``Recorder``: per-component latency, throughput and utilization, checked against budgets.

Constant memory per component (fixed histograms and a ring of rate bins), O(1) recording,
thread-safe. A budget breach becomes a :class:`Violation` (aggregated with a count) and a
rate-limited warning: the first one, then at most one per component every
``warn_interval_s`` seconds carrying the number suppressed in between.

Usage::

    rec = Recorder(load_config().requirements)
    t0 = time.perf_counter(); detect(frame); rec.latency("perception", time.perf_counter() - t0)
    rec.count("perception")                       # one frame done (throughput)
    rec.utilization("perception", cpu_percent=41.0, memory_mb=220.0)
    rec.event("llm", "degraded", "timeout after 5.0 s; fallback planner answered")
    rec.snapshot()["perception"]["latency_ms"]["p99"]
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rtvla.config import DEFAULT_BUDGETS, Budget, Requirements
from rtvla.metrics.histogram import LatencyHistogram
from rtvla.timing import MONOTONIC, Clock

__all__ = ["Event", "Recorder", "Violation"]

logger = logging.getLogger(__name__)

_BIN_NS = 100_000_000  # throughput bins of 100 ms
_FLUSH_AT = 1024  # pending latency samples folded into the histogram per batch
_INF = float("inf")


@dataclass
class Violation:
    """A budget breach of one kind for one component, aggregated over its occurrences."""

    component: str
    kind: str  # latency | deadline | throughput | cpu | memory | missed
    limit: float
    worst: float
    count: int
    first_ns: int
    last_ns: int
    critical: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Event:
    """Something that happened to a component: a degradation, restart, fault or adaptation."""

    stamp_ns: int
    component: str
    kind: str
    message: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Series:
    """Everything recorded for one component."""

    __slots__ = (
        "bins", "bins_epoch", "budget", "count_total", "cpu_last", "cpu_max", "cpu_sum",
        "first_count_ns", "gauges", "hist", "interval_count", "interval_counts",
        "interval_max", "interval_sum", "last_count_ns", "lock", "max_latency_s", "mem_last",
        "mem_max", "mem_scope", "missed", "observed", "pending", "util_n",
    )

    def __init__(self, budget: Budget, window_bins: int) -> None:
        self.budget = budget
        self.lock = threading.Lock()
        self.max_latency_s = budget.max_latency_ms / 1000.0
        # Hot-path samples land here first: deque.append/popleft are atomic in CPython, so
        # recording needs no lock; batches are folded into the histogram under ``lock``.
        self.pending: deque[float] = deque()
        self.hist = LatencyHistogram()
        # The interval histogram is the difference from these counts (no second record).
        self.interval_counts = self.hist.counts()
        self.interval_count = 0
        self.interval_sum = 0.0
        self.interval_max = -1.0
        self.observed: dict[str, LatencyHistogram] = {}
        self.gauges: dict[str, float] = {}
        self.bins = [0] * window_bins
        self.bins_epoch = [0] * window_bins
        self.count_total = 0
        self.first_count_ns: int | None = None
        self.last_count_ns: int | None = None
        self.missed = 0
        self.cpu_last = self.cpu_max = self.cpu_sum = 0.0
        self.mem_last = self.mem_max = 0.0
        self.mem_scope = "own"  # "process": its memory cannot be told apart from the process's
        self.util_n = 0


class Recorder:
    """Measures every component against its budget. See the module docstring for usage.

    Args:
        requirements: the budgets; the reference defaults when omitted.
        clock: time source for throughput windows and violation stamps.
        warn_interval_s: at most one warning per component per this many seconds.
        rate_window_s: width of the sliding window for the windowed rate.
        max_events: how many recent events and violation occurrences to keep.
    """

    def __init__(
        self,
        requirements: Requirements | None = None,
        *,
        clock: Clock = MONOTONIC,
        warn_interval_s: float = 10.0,
        rate_window_s: float = 5.0,
        max_events: int = 2000,
    ) -> None:
        self.requirements = requirements or Requirements(budgets=dict(DEFAULT_BUDGETS))
        self.clock = clock
        self.warn_interval_ns = int(warn_interval_s * 1e9)
        self._window_bins = max(2, int(round(rate_window_s * 1e9 / _BIN_NS)))
        self._series: dict[str, _Series] = {}
        self._create_lock = threading.Lock()
        self._viol_lock = threading.Lock()
        self._violations: dict[tuple[str, str], Violation] = {}
        self._last_warn: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self.events: deque[Event] = deque(maxlen=max_events)
        self.violation_log: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.started_ns = clock.now_ns()

    # -- recording (hot path) -------------------------------------------------------------

    def _get(self, component: str) -> _Series:
        s = self._series.get(component)
        if s is None:
            with self._create_lock:
                s = self._series.get(component)
                if s is None:
                    s = _Series(self.requirements.budget(component), self._window_bins)
                    self._series[component] = s
        return s

    def set_budget(self, component: str, budget: Budget) -> None:
        """Give ``component`` its own budget (a second camera's pipeline at its camera's
        rate), before anything is recorded for it."""
        with self._create_lock:
            s = self._series.get(component)
            if s is None:
                self._series[component] = _Series(budget, self._window_bins)
            else:
                s.budget = budget
                s.max_latency_s = budget.max_latency_ms / 1000.0

    def latency(self, component: str, seconds: float) -> None:
        """Record one operation's latency and check it against the component's budget."""
        s = self._series.get(component) or self._get(component)
        if not -_INF < seconds < _INF:
            raise ValueError(f"{component} latency must be finite, got {seconds}")
        pending = s.pending
        pending.append(seconds)
        if len(pending) >= _FLUSH_AT:
            self._flush(s)
        if seconds > s.max_latency_s:
            b = s.budget
            kind = "deadline" if b.deadline_s is not None else "latency"
            self._violate(component, kind, b.max_latency_ms, seconds * 1000.0, b.critical)

    @staticmethod
    def _flush(s: _Series) -> None:
        """Fold the pending samples into the histogram (O(1) amortised per sample)."""
        with s.lock:
            pending = s.pending
            n = len(pending)
            if not n:
                return
            pop = pending.popleft
            batch = np.fromiter((pop() for _ in range(n)), dtype=np.float64, count=n)
            s.hist.record_many(batch)
            m = float(batch.max())
            if m > s.interval_max:
                s.interval_max = m

    def observe(self, component: str, metric: str, seconds: float) -> None:
        """Record a duration that is not the budgeted latency (a stage, frame age, queue wait)."""
        s = self._get(component)
        with s.lock:
            h = s.observed.get(metric)
            if h is None:
                h = s.observed[metric] = LatencyHistogram()
            h.record(seconds)

    def count(self, component: str, n: int = 1) -> None:
        """Record ``n`` completed operations (throughput)."""
        s = self._get(component)
        now = self.clock.now_ns()
        epoch = now // _BIN_NS
        i = epoch % len(s.bins)
        with s.lock:
            if s.bins_epoch[i] != epoch:
                s.bins_epoch[i] = epoch
                s.bins[i] = 0
            s.bins[i] += n
            s.count_total += n
            if s.first_count_ns is None:
                s.first_count_ns = now
            s.last_count_ns = now

    def miss(self, component: str, n: int = 1) -> None:
        """Record ``n`` missed cycles (a loop overran its period)."""
        s = self._get(component)
        with s.lock:
            s.missed += n
        if s.budget.critical or s.budget.rate_hz is not None:
            self._violate(component, "missed", 0, float(n), s.budget.critical)

    def utilization(self, component: str, cpu_percent: float, memory_mb: float | None) -> None:
        """Record CPU (percent of one core) and resident memory, and check the ceilings.

        ``memory_mb=None``: the component's memory cannot be separated from its process's
        (a thread); the report then shows ``memory_mb: null, memory_scope: "process"``
        instead of a 0 that could never violate its budget."""
        s = self._get(component)
        with s.lock:
            s.cpu_last = cpu_percent
            s.cpu_max = max(s.cpu_max, cpu_percent)
            s.cpu_sum += cpu_percent
            s.util_n += 1
            if memory_mb is None:
                s.mem_scope = "process"
            else:
                s.mem_last = memory_mb
                s.mem_max = max(s.mem_max, memory_mb)
        b = s.budget
        if cpu_percent > b.max_cpu_percent:
            self._violate(component, "cpu", b.max_cpu_percent, cpu_percent, b.critical)
        if memory_mb is not None and memory_mb > b.max_memory_mb:
            self._violate(component, "memory", b.max_memory_mb, memory_mb, b.critical)

    def gauge(self, component: str, name: str, value: float) -> None:
        """Set a last-value gauge (queue length, adaptive level, cache size...)."""
        s = self._get(component)
        with s.lock:
            s.gauges[name] = float(value)

    def event(self, component: str, kind: str, message: str, /, **detail: Any) -> Event:
        """Record a degradation, restart, fault or adaptation; logged once, kept for the report."""
        ev = Event(self.clock.now_ns(), component, kind, message, detail)
        self.events.append(ev)
        logger.info("%s %s: %s", component, kind, message)
        return ev

    # -- budget checks ----------------------------------------------------------------------

    def _violate(self, component: str, kind: str, limit: float, value: float, critical: bool) -> None:
        now = self.clock.now_ns()
        with self._viol_lock:
            key = (component, kind)
            v = self._violations.get(key)
            if v is None:
                v = self._violations[key] = Violation(component, kind, limit, value, 0, now, now, critical)
            v.count += 1
            v.last_ns = now
            if kind == "throughput":
                v.worst = min(v.worst, value)
            else:
                v.worst = max(v.worst, value)
            self.violation_log.append(
                {"stamp_ns": now, "component": component, "kind": kind, "value": value, "limit": limit}
            )
            last = self._last_warn.get(component)
            if last is not None and now - last < self.warn_interval_ns:
                self._suppressed[component] = self._suppressed.get(component, 0) + 1
                return
            suppressed = self._suppressed.pop(component, 0)
            self._last_warn[component] = now
        logger.warning(
            "%s budget violated: %s %.3f (limit %.3f)%s", component, kind, value, limit,
            f"; {suppressed} more violations suppressed since the last warning" if suppressed else "",
        )

    def check(self, *, warmup_s: float | None = None) -> list[Violation]:
        """Check loops' windowed throughput against ``min_throughput_hz``; return all violations.

        A component is checked once it has been counting for a full rate window (or
        ``warmup_s``), so start-up does not count as a breach.
        """
        now = self.clock.now_ns()
        window_ns = self._window_bins * _BIN_NS
        warm_ns = window_ns if warmup_s is None else int(warmup_s * 1e9)
        for name, s in list(self._series.items()):
            b = s.budget
            # Only periodic loops owe a rate; request-driven components (the LLM, a task)
            # are idle when nobody asks, which is not a breach.
            if s.first_count_ns is None or b.min_throughput_hz <= 0 or b.rate_hz is None:
                continue
            if now - s.first_count_ns < warm_ns:
                continue
            rate = self.rate(name)
            if rate < b.min_throughput_hz * 0.95:  # 5 % tolerance for window edges
                self._violate(name, "throughput", b.min_throughput_hz, rate, b.critical)
        return self.violations()

    def violations(self) -> list[Violation]:
        with self._viol_lock:
            return [Violation(**v.as_dict()) for v in self._violations.values()]

    # -- reading --------------------------------------------------------------------------

    def mark(self, component: str) -> tuple[np.ndarray, int, float, int] | None:
        """The cumulative state of ``component``'s latency: (bucket counts, count, sum,
        missed cycles), or None when nothing was recorded. Two marks give the histogram of
        the window between them through :meth:`LatencyHistogram.since`, without touching the
        interval snapshots that ``metrics.jsonl`` owns."""
        s = self._series.get(component)
        if s is None:
            return None
        self._flush(s)
        with s.lock:
            return s.hist.counts(), int(s.hist.count), float(s.hist.sum), int(s.missed)

    def components(self) -> list[str]:
        return sorted(self._series)

    def budget(self, component: str) -> Budget:
        return self._get(component).budget

    def rate(self, component: str) -> float:
        """Operations per second over the sliding window (the complete bins in it)."""
        s = self._series.get(component)
        if s is None:
            return 0.0
        now = self.clock.now_ns()
        epoch = now // _BIN_NS
        n = len(s.bins)
        with s.lock:
            # The current bin is still filling: use the n-1 complete bins before it.
            total = sum(
                c for c, e in zip(s.bins, s.bins_epoch) if epoch - n < e < epoch
            )
            if s.first_count_ns is None:
                return 0.0
            span_bins = min(n - 1, epoch - s.first_count_ns // _BIN_NS)
        if span_bins <= 0:
            return 0.0
        return total / (span_bins * _BIN_NS / 1e9)

    def achieved_hz(self, component: str) -> float:
        """Mean rate over the component's whole life (first to last count)."""
        s = self._series.get(component)
        if s is None or s.first_count_ns is None or s.last_count_ns is None:
            return 0.0
        span = (s.last_count_ns - s.first_count_ns) / 1e9
        return (s.count_total - 1) / span if span > 0 and s.count_total > 1 else 0.0

    def snapshot(self, *, interval: bool = False) -> dict[str, dict[str, Any]]:
        """Per-component figures. With ``interval=True`` the latency is since the previous
        interval snapshot (for time series), and the interval histograms are reset."""
        out: dict[str, dict[str, Any]] = {}
        viols = self.violations()
        for name in self.components():
            s = self._series[name]
            self._flush(s)
            with s.lock:
                if interval:
                    h = s.hist.since(s.interval_counts, s.interval_count, s.interval_sum,
                                     s.interval_max)
                    s.interval_counts = s.hist.counts()
                    s.interval_count, s.interval_sum = s.hist.count, s.hist.sum
                    s.interval_max = -1.0
                    lat = h.summary_ms()
                else:
                    lat = s.hist.summary_ms()
                observed = {k: h.summary_ms() for k, h in s.observed.items()}
                row: dict[str, Any] = {
                    "budget": s.budget.model_dump(),
                    "count": s.count_total,
                    "missed": s.missed,
                    "cpu_percent": s.cpu_last,
                    "cpu_percent_max": s.cpu_max,
                    "cpu_percent_mean": s.cpu_sum / s.util_n if s.util_n else 0.0,
                    "memory_mb": None if s.mem_scope == "process" else s.mem_last,
                    "memory_mb_max": None if s.mem_scope == "process" else s.mem_max,
                    "memory_scope": s.mem_scope,
                    "gauges": dict(s.gauges),
                }
            row["latency_ms"] = lat
            row["observed_ms"] = observed
            row["rate_hz"] = self.rate(name)
            row["achieved_hz"] = self.achieved_hz(name)
            row["violations"] = {v.kind: v.count for v in viols if v.component == name}
            out[name] = row
        return out

    def summary(self) -> dict[str, Any]:
        """Everything a report needs: components, violations and events."""
        return {
            "elapsed_s": (self.clock.now_ns() - self.started_ns) / 1e9,
            "components": self.snapshot(),
            "violations": [v.as_dict() for v in self.violations()],
            "events": [e.as_dict() for e in self.events],
        }

    def critical_violations(self) -> list[Violation]:
        return [v for v in self.violations() if v.critical]

