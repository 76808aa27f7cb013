"""Fixtures for resources tests: a scripted sampler whose every counter the test sets."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import pytest

from rtvla.resources import Capacity, CoreTimes, ProcessTimes, RawReading


@dataclass
class ScriptedSampler:
    """Cumulative counters the test moves forward between reads."""

    ncores: int = 2
    busy: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    memory_total_mb: float = 8000.0
    memory_used_mb: float = 2000.0
    net_sent: int | None = 0
    net_recv: int | None = 0
    disk_read: int | None = 0
    disk_write: int | None = 0
    threads: dict[int, float] = field(default_factory=dict)
    processes: dict[int, ProcessTimes] = field(default_factory=dict)
    reads: list[tuple[set[int], set[int]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.busy = self.busy or [0.0] * self.ncores
        self.total = self.total or [0.0] * self.ncores

    def advance(self, dt: float, busy_fraction: list[float]) -> None:
        for i, f in enumerate(busy_fraction):
            self.busy[i] += dt * f
            self.total[i] += dt

    def capacity(self) -> Capacity:
        return Capacity(tuple(range(self.ncores)), self.memory_total_mb,
                        self.memory_total_mb - self.memory_used_mb)

    def read(self, thread_ids: Collection[int], pids: Collection[int]) -> RawReading:
        self.reads.append((set(thread_ids), set(pids)))
        return RawReading(
            cores=tuple(CoreTimes(b, t) for b, t in zip(self.busy, self.total, strict=True)),
            memory_total_mb=self.memory_total_mb,
            memory_used_mb=self.memory_used_mb,
            memory_available_mb=self.memory_total_mb - self.memory_used_mb,
            load_avg=(1.0, 0.5, 0.25),
            net_bytes_sent=self.net_sent,
            net_bytes_recv=self.net_recv,
            disk_read_bytes=self.disk_read,
            disk_write_bytes=self.disk_write,
            own_rss_mb=300.0,
            threads={t: v for t, v in self.threads.items() if t in thread_ids},
            processes={p: v for p, v in self.processes.items() if p in pids},
        )


@pytest.fixture
def scripted() -> type[ScriptedSampler]:
    """The scripted sampler class (tests instantiate or subclass it)."""
    return ScriptedSampler
