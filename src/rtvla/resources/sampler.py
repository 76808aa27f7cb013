"""Where the system monitor's numbers come from: the ``Sampler`` protocol and its psutil source.

A sampler returns *raw cumulative counters* (CPU seconds per core, bytes sent, CPU seconds
per thread and per process); the :class:`~rtvla.resources.monitor.SystemMonitor` turns
deltas between two readings into rates. Keeping the sampler dumb lets tests script every
counter with a fake one (STYLE rule 6) and keeps the arithmetic in one tested place.

Usage::

    sampler = PsutilSampler()
    cap = sampler.capacity()                     # cores, memory and allowed CPU ids
    raw = sampler.read(thread_ids={threading.get_native_id()}, pids=set())
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import psutil

__all__ = ["Capacity", "CoreTimes", "ProcessTimes", "PsutilSampler", "RawReading", "Sampler",
           "hypervisor_steal_s"]

logger = logging.getLogger(__name__)

_MB = 1024.0 * 1024.0


def hypervisor_steal_s() -> float:
    """CPU seconds the hypervisor has taken from this VM since boot, all CPUs (0 on bare
    metal). Differences over a run explain stalls that no scheduling inside can avoid."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


@dataclass(frozen=True)
class Capacity:
    """What the machine offers this program: CPU ids it may run on and memory."""

    cpus: tuple[int, ...]
    memory_total_mb: float
    memory_available_mb: float

    @property
    def cpu_cores(self) -> float:
        return float(len(self.cpus))


@dataclass(frozen=True)
class CoreTimes:
    """Cumulative CPU seconds of one core: busy (not idle, not iowait) and total."""

    busy_s: float
    total_s: float


@dataclass(frozen=True)
class ProcessTimes:
    """Cumulative CPU seconds (user + system) and resident memory of one process."""

    cpu_s: float
    rss_mb: float


@dataclass(frozen=True)
class RawReading:
    """One reading of cumulative counters and instantaneous levels.

    ``threads`` maps native thread ids of *this* process to cumulative CPU seconds;
    ``processes`` maps the requested pids that still exist to their times. Counters that the
    platform does not offer are None (no network interface, no disk statistics in a container).
    """

    cores: tuple[CoreTimes, ...]
    memory_total_mb: float
    memory_used_mb: float
    memory_available_mb: float
    load_avg: tuple[float, float, float]
    net_bytes_sent: int | None = None
    net_bytes_recv: int | None = None
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    own_rss_mb: float = 0.0
    threads: dict[int, float] = field(default_factory=dict)
    processes: dict[int, ProcessTimes] = field(default_factory=dict)


@runtime_checkable
class Sampler(Protocol):
    """A source of raw readings. ``read`` must be cheap enough for 10 Hz."""

    def capacity(self) -> Capacity:
        """CPUs this program may use and memory of the machine."""
        ...

    def read(self, thread_ids: Collection[int], pids: Collection[int]) -> RawReading:
        """Cumulative counters now, with CPU times for the given threads and processes."""
        ...


class PsutilSampler:
    """The real sampler, on psutil. Per-thread CPU comes from ``psutil.Process().threads()``
    (user + system seconds per native thread id); per-process CPU and RSS from cached
    ``psutil.Process(pid)`` handles, dropped when the process exits.

    ``net``/``disk`` turn the network and disk counters off: reading them is about half the
    cost of a sample (~0.2 ms of ~0.4 ms), held under the GIL.
    """

    def __init__(self, pid: int | None = None, *, net: bool = True, disk: bool = True) -> None:
        self._own = psutil.Process(pid if pid is not None else os.getpid())
        self._procs: dict[int, psutil.Process] = {}
        self.net = net
        self.disk = disk

    def capacity(self) -> Capacity:
        try:
            cpus = tuple(sorted(os.sched_getaffinity(0)))
        except (AttributeError, OSError):  # not Linux: every logical CPU
            cpus = tuple(range(psutil.cpu_count() or 1))
        vm = psutil.virtual_memory()
        return Capacity(cpus=cpus, memory_total_mb=vm.total / _MB, memory_available_mb=vm.available / _MB)

    def read(self, thread_ids: Collection[int], pids: Collection[int]) -> RawReading:
        cores = tuple(_core_times(t) for t in psutil.cpu_times(percpu=True))
        vm = psutil.virtual_memory()
        try:
            load = tuple(float(x) for x in os.getloadavg())
        except (AttributeError, OSError):
            load = (0.0, 0.0, 0.0)
        net = psutil.net_io_counters() if self.net else None
        disk = None
        if self.disk:
            try:
                disk = psutil.disk_io_counters()
            except (RuntimeError, OSError):  # no disk statistics (some containers)
                disk = None
        threads: dict[int, float] = {}
        if thread_ids:
            wanted = set(thread_ids)
            for t in self._own.threads():
                if t.id in wanted:
                    threads[t.id] = t.user_time + t.system_time
        with self._own.oneshot():
            own_rss = self._own.memory_info().rss / _MB
        return RawReading(
            cores=cores,
            memory_total_mb=vm.total / _MB,
            memory_used_mb=(vm.total - vm.available) / _MB,
            memory_available_mb=vm.available / _MB,
            load_avg=(load[0], load[1], load[2]),
            net_bytes_sent=None if net is None else int(net.bytes_sent),
            net_bytes_recv=None if net is None else int(net.bytes_recv),
            disk_read_bytes=None if disk is None else int(disk.read_bytes),
            disk_write_bytes=None if disk is None else int(disk.write_bytes),
            own_rss_mb=own_rss,
            threads=threads,
            processes=self._read_processes(pids),
        )

    def _read_processes(self, pids: Collection[int]) -> dict[int, ProcessTimes]:
        out: dict[int, ProcessTimes] = {}
        for pid in pids:
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                with proc.oneshot():
                    t = proc.cpu_times()
                    rss = proc.memory_info().rss
                # Children's times are included only after they are reaped; live ones are not.
                out[pid] = ProcessTimes(cpu_s=t.user + t.system, rss_mb=rss / _MB)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                self._procs.pop(pid, None)
            except psutil.AccessDenied:
                logger.debug("no access to process %s", pid)
        for gone in set(self._procs) - set(pids):
            del self._procs[gone]
        return out


def _core_times(t: object) -> CoreTimes:
    values = t._asdict()  # type: ignore[attr-defined]
    # On Linux guest time is already counted in user time; do not count it twice.
    total = sum(values.values()) - values.get("guest", 0.0) - values.get("guest_nice", 0.0)
    idle = values.get("idle", 0.0) + values.get("iowait", 0.0)
    return CoreTimes(busy_s=max(0.0, total - idle), total_s=total)
