"""``SystemMonitor``: machine and per-component CPU/memory at 10 Hz, in a bounded ring.

Each sample turns the deltas between two raw readings of a :class:`Sampler` into rates:
CPU busy per core, network and disk bytes per second, and the CPU (percent of one core) of
every registered component, from the CPU seconds of its threads (thread placement) or its
process (process placement). Samples live in a fixed-size ring, so memory stays constant
however long the run; every sample also feeds ``recorder.utilization`` for each component.

Usage::

    monitor = SystemMonitor(PsutilSampler(), recorder=rec)
    monitor.register_thread("perception", threading.get_native_id())   # from that thread
    monitor.register_process("control", proc.pid)
    with monitor:                                   # start() ... stop()
        ...
        monitor.latest().cpu_percent
        monitor.mean("cpu_percent", seconds=2.0)
        monitor.trend("memory_used_mb")             # MB per second over the ring
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rtvla.errors import ConfigError, ResourceError
from rtvla.metrics import Recorder
from rtvla.resources.sampler import RawReading, Sampler
from rtvla.timing import MONOTONIC, Clock, Periodic

__all__ = ["ComponentUsage", "Sample", "SystemMonitor"]

logger = logging.getLogger(__name__)

_SCALARS = (
    "cpu_percent", "memory_percent", "memory_used_mb", "memory_available_mb", "load_1",
    "load_5", "load_15", "net_sent_bps", "net_recv_bps", "disk_read_bps", "disk_write_bps",
    "process_rss_mb",
)


@dataclass(frozen=True)
class ComponentUsage:
    """CPU of one component over the last interval (percent of one core) and its memory.

    ``memory_mb`` is the resident memory of its process(es) for process-placed components and
    None for thread-placed ones: threads share one address space, so their memory is not
    separable (the process total is ``Sample.process_rss_mb``).
    """

    cpu_percent: float
    memory_mb: float | None
    seen: int  # how many of its registered threads/processes were alive


@dataclass(frozen=True)
class Sample:
    """One monitor sample: rates over ``dt_s`` seconds ending at ``stamp_ns``."""

    stamp_ns: int
    dt_s: float
    cpu_percent: float
    cpu_per_core: tuple[float, ...]
    memory_percent: float
    memory_used_mb: float
    memory_available_mb: float
    load_1: float
    load_5: float
    load_15: float
    net_sent_bps: float | None
    net_recv_bps: float | None
    disk_read_bps: float | None
    disk_write_bps: float | None
    process_rss_mb: float
    components: Mapping[str, ComponentUsage] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        """A scalar by name: a field (``cpu_percent``), ``cpu_core.N`` or
        ``component.NAME.cpu_percent`` / ``component.NAME.memory_mb``; None when absent."""
        if metric in _SCALARS:
            return getattr(self, metric)
        if metric.startswith("cpu_core."):
            try:
                return self.cpu_per_core[int(metric[9:])]
            except (ValueError, IndexError):
                return None
        if metric.startswith("component."):
            name, _, attr = metric[10:].rpartition(".")
            usage = self.components.get(name)
            if usage is None or attr not in ("cpu_percent", "memory_mb"):
                return None
            return getattr(usage, attr)
        raise ConfigError(
            f"unknown monitor metric {metric!r}; use one of {', '.join(_SCALARS)}, "
            "cpu_core.N or component.NAME.cpu_percent|memory_mb"
        )

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {k: getattr(self, k) for k in ("stamp_ns", "dt_s", *_SCALARS)}
        row["cpu_per_core"] = list(self.cpu_per_core)
        row["components"] = {
            n: {"cpu_percent": u.cpu_percent, "memory_mb": u.memory_mb} for n, u in self.components.items()
        }
        return row


def _rate(new: int | None, old: int | None, dt: float) -> float | None:
    if new is None or old is None:
        return None
    # A counter that went backwards was reset (interface re-created): no rate for this interval.
    return max(0, new - old) / dt


class SystemMonitor:
    """Samples a :class:`Sampler` every ``period_s`` (default 0.1 s, 10 Hz) into a ring.

    Args:
        sampler: the raw-counter source (``PsutilSampler()`` for the real machine).
        recorder: receives ``utilization(component, cpu, mem)`` per registered component.
        clock: time source for stamps and rates.
        period_s: sampling period of the background thread.
        capacity: ring size in samples (default: 60 s at the sampling rate).
    """

    def __init__(
        self,
        sampler: Sampler,
        *,
        recorder: Recorder | None = None,
        clock: Clock = MONOTONIC,
        period_s: float = 0.1,
        capacity: int | None = None,
    ) -> None:
        if not period_s > 0:
            raise ConfigError(f"monitor period_s must be > 0, got {period_s}")
        if capacity is None:
            capacity = max(2, round(60.0 / period_s))
        if capacity < 2:
            raise ConfigError(f"monitor capacity must be >= 2 samples, got {capacity}")
        self.sampler = sampler
        self.recorder = recorder
        self.clock = clock
        self.period_s = float(period_s)
        self._ring: deque[Sample] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._threads: dict[str, set[int]] = {}
        self._pids: dict[str, set[int]] = {}
        self._prev: RawReading | None = None
        self._prev_ns = 0
        self._worker = Periodic(period_s, self.sample_once, name="rtvla-monitor")
        self.samples_taken = 0

    @property
    def capacity(self) -> int:
        return self._ring.maxlen or 0

    # -- registration ---------------------------------------------------------------------

    def register_thread(self, component: str, native_id: int | None = None) -> int:
        """Attribute a thread of this process (default: the calling one) to ``component``."""
        tid = threading.get_native_id() if native_id is None else int(native_id)
        with self._lock:
            self._threads.setdefault(component, set()).add(tid)
        return tid

    def register_process(self, component: str, pid: int) -> None:
        """Attribute a whole process (process placement) to ``component``."""
        if int(pid) <= 0:
            raise ResourceError(f"register_process({component!r}): pid must be > 0, got {pid}")
        with self._lock:
            self._pids.setdefault(component, set()).add(int(pid))

    def unregister(self, component: str) -> None:
        with self._lock:
            self._threads.pop(component, None)
            self._pids.pop(component, None)

    def registered(self) -> list[str]:
        with self._lock:
            return sorted(set(self._threads) | set(self._pids))

    # -- sampling -------------------------------------------------------------------------

    def sample_once(self) -> Sample | None:
        """Read the sampler once; returns the new sample (None for the first, priming read)."""
        with self._lock:
            threads = {c: set(t) for c, t in self._threads.items()}
            pids = {c: set(p) for c, p in self._pids.items()}
        all_tids = set().union(*threads.values()) if threads else set()
        all_pids = set().union(*pids.values()) if pids else set()
        raw = self.sampler.read(all_tids, all_pids)
        now = self.clock.now_ns()
        prev, prev_ns = self._prev, self._prev_ns
        self._prev, self._prev_ns = raw, now
        if prev is None or now <= prev_ns:
            return None
        sample = self._derive(prev, raw, (now - prev_ns) / 1e9, now, threads, pids)
        with self._lock:
            self._ring.append(sample)
            self.samples_taken += 1
        if self.recorder is not None:
            for name, usage in sample.components.items():
                self.recorder.utilization(name, usage.cpu_percent, usage.memory_mb)
        return sample

    def _derive(
        self,
        prev: RawReading,
        raw: RawReading,
        dt: float,
        now: int,
        threads: dict[str, set[int]],
        pids: dict[str, set[int]],
    ) -> Sample:
        per_core: list[float] = []
        busy_sum = total_sum = 0.0
        for old, new in zip(prev.cores, raw.cores, strict=False):
            d_total = new.total_s - old.total_s
            d_busy = new.busy_s - old.busy_s
            if d_total > 0:
                per_core.append(min(100.0, max(0.0, 100.0 * d_busy / d_total)))
                busy_sum += max(0.0, d_busy)
                total_sum += d_total
            else:
                per_core.append(0.0)
        cpu = 100.0 * busy_sum / total_sum if total_sum > 0 else 0.0
        components: dict[str, ComponentUsage] = {}
        for name in set(threads) | set(pids):
            cpu_s = 0.0
            mem: float | None = None
            seen = 0
            for tid in threads.get(name, ()):
                if tid in raw.threads and tid in prev.threads:
                    cpu_s += max(0.0, raw.threads[tid] - prev.threads[tid])
                    seen += 1
            for pid in pids.get(name, ()):
                if pid in raw.processes:
                    mem = (mem or 0.0) + raw.processes[pid].rss_mb
                    seen += 1
                    if pid in prev.processes:
                        cpu_s += max(0.0, raw.processes[pid].cpu_s - prev.processes[pid].cpu_s)
            if seen:
                components[name] = ComponentUsage(100.0 * cpu_s / dt, mem, seen)
        mem_total = raw.memory_total_mb
        return Sample(
            stamp_ns=now,
            dt_s=dt,
            cpu_percent=cpu,
            cpu_per_core=tuple(per_core),
            memory_percent=100.0 * raw.memory_used_mb / mem_total if mem_total > 0 else 0.0,
            memory_used_mb=raw.memory_used_mb,
            memory_available_mb=raw.memory_available_mb,
            load_1=raw.load_avg[0],
            load_5=raw.load_avg[1],
            load_15=raw.load_avg[2],
            net_sent_bps=_rate(raw.net_bytes_sent, prev.net_bytes_sent, dt),
            net_recv_bps=_rate(raw.net_bytes_recv, prev.net_bytes_recv, dt),
            disk_read_bps=_rate(raw.disk_read_bytes, prev.disk_read_bytes, dt),
            disk_write_bps=_rate(raw.disk_write_bytes, prev.disk_write_bytes, dt),
            process_rss_mb=raw.own_rss_mb,
            components=components,
        )

    # -- reading --------------------------------------------------------------------------

    def latest(self) -> Sample | None:
        with self._lock:
            return self._ring[-1] if self._ring else None

    def history(self, seconds: float | None = None) -> list[Sample]:
        """Samples of the last ``seconds`` (all in the ring when None), oldest first."""
        with self._lock:
            samples = list(self._ring)
        if seconds is None or not samples:
            return samples
        cutoff = samples[-1].stamp_ns - int(seconds * 1e9)
        return [s for s in samples if s.stamp_ns > cutoff]

    def _series(self, metric: str, seconds: float | None) -> list[tuple[float, float]]:
        out = []
        for s in self.history(seconds):
            v = s.value(metric)
            if v is not None and math.isfinite(v):
                out.append((s.stamp_ns / 1e9, float(v)))
        return out

    def mean(self, metric: str, seconds: float | None = None) -> float | None:
        """Mean of ``metric`` over the window; None with no samples."""
        pts = self._series(metric, seconds)
        return sum(v for _, v in pts) / len(pts) if pts else None

    def peak(self, metric: str, seconds: float | None = None) -> float | None:
        pts = self._series(metric, seconds)
        return max(v for _, v in pts) if pts else None

    def trend(self, metric: str, seconds: float | None = None) -> float:
        """Least-squares slope of ``metric`` in units per second (0.0 with < 2 samples)."""
        pts = self._series(metric, seconds)
        if len(pts) < 2:
            return 0.0
        t0 = pts[0][0]
        n = len(pts)
        mt = sum(t - t0 for t, _ in pts) / n
        mv = sum(v for _, v in pts) / n
        var = sum((t - t0 - mt) ** 2 for t, _ in pts)
        if var <= 0:
            return 0.0
        return sum((t - t0 - mt) * (v - mv) for t, v in pts) / var

    def summary(self, seconds: float | None = None) -> dict[str, Any]:
        """Means and peaks over the window, for the run report's system section."""
        hist = self.history(seconds)
        out: dict[str, Any] = {"samples": len(hist), "period_s": self.period_s, "errors": self.errors}
        if not hist:
            return out
        out["span_s"] = (hist[-1].stamp_ns - hist[0].stamp_ns) / 1e9 + hist[0].dt_s
        for metric in ("cpu_percent", "memory_percent", "memory_used_mb", "load_1", "process_rss_mb"):
            out[metric] = {"mean": self.mean(metric, seconds), "peak": self.peak(metric, seconds)}
        names = sorted({n for s in hist for n in s.components})
        out["components"] = {
            n: {
                "cpu_percent": {
                    "mean": self.mean(f"component.{n}.cpu_percent", seconds),
                    "peak": self.peak(f"component.{n}.cpu_percent", seconds),
                },
                "memory_mb_peak": self.peak(f"component.{n}.memory_mb", seconds),
            }
            for n in names
        }
        return out

    # -- thread mode ----------------------------------------------------------------------

    def start(self) -> SystemMonitor:
        """Prime the counters and start sampling every ``period_s`` in a daemon thread."""
        if self._worker.running:
            raise ResourceError("system monitor already started")
        self._worker.call()  # prime the counters
        self._worker.start()
        return self

    @property
    def errors(self) -> int:
        """Samples that failed (logged, not raised: a monitor must not take the stack down)."""
        return self._worker.errors

    def stop(self, timeout: float = 2.0) -> None:
        self._worker.stop(timeout)

    @property
    def running(self) -> bool:
        return self._worker.running

    def __enter__(self) -> SystemMonitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
