"""Prometheus exposition of a :class:`~rtvla.metrics.recorder.Recorder`, by Prometheus' conventions.

A custom collector reads the recorder at scrape time (nothing is duplicated on the hot
path). Names follow the Prometheus naming guide and pass ``promtool check metrics``:
base units (seconds, bytes, ratios), counters end in ``_total``, no type names in names,
``le``/``quantile`` only where histograms and summaries own them::

    rtvla_latency_seconds_bucket{component,le}   histogram of each component's latency
    rtvla_latency_seconds_sum / _count
    rtvla_latency_percentile_seconds{component,percentile}  p50/p90/p99/p99.9 (1 % accurate)
    rtvla_rate_hertz{component}                  windowed operation rate
    rtvla_budget_latency_seconds{component}      latency budget
    rtvla_budget_min_rate_hertz{component}       minimum throughput budget
    rtvla_missed_cycles_total{component}
    rtvla_budget_violations_total{component,kind}
    rtvla_cpu_utilization_ratio{component}       CPU time per second (1.0 = one core)
    rtvla_resident_memory_bytes{component}
    rtvla_component_reading{component,name}      the components' own gauges (queue length, level)

The histogram's ``le`` bounds (a 1-2-5 series from 10 µs to 100 s) are sums of the
recorder's constant-memory histogram buckets: a bucket counts into ``le`` when its upper
edge is at most ``le``, so a bound can undercount by the samples within 2 % below it.
``serve`` binds 127.0.0.1 unless told otherwise.

Usage::

    registry = CollectorRegistry()
    registry.register(RecorderCollector(recorder))
    server, thread = serve(recorder, port=9464)        # http://127.0.0.1:9464/metrics
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from rtvla.metrics.histogram import LatencyHistogram
from rtvla.metrics.recorder import Recorder

__all__ = ["LATENCY_BUCKETS_S", "RecorderCollector", "serve"]

#: ``le`` bounds of ``rtvla_latency_seconds`` (seconds).
LATENCY_BUCKETS_S = (*(m * 10.0**e for e in range(-5, 2) for m in (1, 2, 5)), 100.0)

_PERCENTILES = (("50", "p50"), ("90", "p90"), ("99", "p99"), ("99.9", "p999"))


def _bucket_limits(bounds: tuple[float, ...]) -> np.ndarray:
    """For each bound, how many of the recorder histogram's buckets lie wholly at or below it.

    Found through the histogram's public API (the bucket a value lands in), so this stays
    right if its resolution changes: the buckets before that one end at or below the bound.
    """
    out = []
    for b in bounds:
        h = LatencyHistogram()
        h.record(b)
        out.append(int(np.flatnonzero(h.counts())[0]))
    return np.array(out)


_LIMITS = _bucket_limits(LATENCY_BUCKETS_S)


def _fmt_le(b: float) -> str:
    return f"{b:.6g}"


class RecorderCollector(Collector):
    """Exposes latency histograms, rates, budgets, misses, utilization and violations."""

    def __init__(self, recorder: Recorder, *, namespace: str = "rtvla") -> None:
        self.recorder = recorder
        self.ns = namespace

    def _histogram(self, name: str) -> tuple[list[tuple[str, float]], float] | None:
        mark = self.recorder.mark(name)
        if mark is None or mark[1] == 0:
            return None
        counts, total, total_sum, _ = mark
        cum = np.concatenate([[0], np.cumsum(counts)])
        buckets = [(_fmt_le(b), float(cum[k])) for b, k in zip(LATENCY_BUCKETS_S, _LIMITS, strict=True)]
        buckets.append(("+Inf", float(total)))
        return buckets, float(total_sum)

    def collect(self) -> Iterator[Any]:
        ns = self.ns
        snap = self.recorder.snapshot()
        lat = HistogramMetricFamily(f"{ns}_latency_seconds", "Operation latency per component",
                                    labels=["component"])
        pct = GaugeMetricFamily(f"{ns}_latency_percentile_seconds",
                                "Latency percentiles per component (about 1 % accurate)",
                                labels=["component", "percentile"])
        rate = GaugeMetricFamily(f"{ns}_rate_hertz", "Windowed operation rate", labels=["component"])
        budget_lat = GaugeMetricFamily(f"{ns}_budget_latency_seconds", "Latency budget",
                                       labels=["component"])
        budget_rate = GaugeMetricFamily(f"{ns}_budget_min_rate_hertz", "Minimum throughput budget",
                                        labels=["component"])
        missed = CounterMetricFamily(f"{ns}_missed_cycles", "Missed loop cycles", labels=["component"])
        cpu = GaugeMetricFamily(f"{ns}_cpu_utilization_ratio",
                                "CPU time per wall second (1.0 is one core)", labels=["component"])
        mem = GaugeMetricFamily(f"{ns}_resident_memory_bytes", "Resident memory", labels=["component"])
        viol = CounterMetricFamily(f"{ns}_budget_violations", "Budget violations",
                                   labels=["component", "kind"])
        readings = GaugeMetricFamily(f"{ns}_component_reading",
                                     "Values a component reports (queue length, adaptive level, ...)",
                                     labels=["component", "name"])
        for name, row in snap.items():
            hist = self._histogram(name)
            if hist is not None:
                lat.add_metric([name], buckets=hist[0], sum_value=hist[1])
                ms = row["latency_ms"]
                for label, key in _PERCENTILES:
                    if ms.get(key) is not None and math.isfinite(ms[key]):
                        pct.add_metric([name, label], ms[key] / 1e3)
            rate.add_metric([name], row["rate_hz"])
            budget_lat.add_metric([name], row["budget"]["max_latency_ms"] / 1e3)
            budget_rate.add_metric([name], row["budget"]["min_throughput_hz"])
            missed.add_metric([name], row["missed"])
            cpu.add_metric([name], row["cpu_percent"] / 100.0)
            mem.add_metric([name], row["memory_mb"] * 2**20)  # the recorder keeps MiB
            for kind, count in row["violations"].items():
                viol.add_metric([name, kind], count)
            for gname, value in row["gauges"].items():
                readings.add_metric([name, gname], value)
        yield from (lat, pct, rate, budget_lat, budget_rate, missed, cpu, mem, viol, readings)


def serve(
    recorder: Recorder,
    port: int = 9464,
    *,
    addr: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` for ``recorder`` on ``addr:port`` (port 0 picks a free one).

    Returns ``(server, thread)``; ``server.server_address[1]`` is the bound port and
    ``server.shutdown()`` stops it.
    """
    registry = registry if registry is not None else CollectorRegistry()
    registry.register(RecorderCollector(recorder))
    return start_http_server(port, addr=addr, registry=registry)
