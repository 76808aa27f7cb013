"""Prometheus exposition of a :class:`~rtvla.metrics.recorder.Recorder`.

A custom collector reads the recorder at scrape time (nothing is duplicated on the hot
path). ``serve`` binds 127.0.0.1 unless told otherwise.

Usage::

    registry = CollectorRegistry()
    registry.register(RecorderCollector(recorder))
    server, thread = serve(recorder, port=9464)        # http://127.0.0.1:9464/metrics
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from rtvla.metrics.recorder import Recorder

__all__ = ["RecorderCollector", "serve"]

_QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"), ("0.999", "p999"))


class RecorderCollector(Collector):
    """Exposes latency summaries, rates, misses, utilization and violations per component."""

    def __init__(self, recorder: Recorder, *, namespace: str = "rtvla") -> None:
        self.recorder = recorder
        self.ns = namespace

    def collect(self) -> Iterator[Any]:
        ns = self.ns
        snap = self.recorder.snapshot()
        lat = SummaryMetricFamily(f"{ns}_latency_seconds", "Operation latency per component",
                                  labels=["component"])
        quant = GaugeMetricFamily(f"{ns}_latency_quantile_seconds",
                                  "Latency quantiles per component", labels=["component", "quantile"])
        rate = GaugeMetricFamily(f"{ns}_rate_hertz", "Windowed operation rate", labels=["component"])
        budget_lat = GaugeMetricFamily(f"{ns}_budget_latency_seconds", "Latency budget",
                                       labels=["component"])
        budget_rate = GaugeMetricFamily(f"{ns}_budget_min_rate_hertz", "Minimum throughput budget",
                                        labels=["component"])
        missed = CounterMetricFamily(f"{ns}_missed_cycles", "Missed loop cycles", labels=["component"])
        cpu = GaugeMetricFamily(f"{ns}_cpu_percent", "CPU use, percent of one core", labels=["component"])
        mem = GaugeMetricFamily(f"{ns}_memory_megabytes", "Resident memory", labels=["component"])
        viol = CounterMetricFamily(f"{ns}_budget_violations", "Budget violations",
                                   labels=["component", "kind"])
        gauges = GaugeMetricFamily(f"{ns}_gauge", "Component gauges", labels=["component", "name"])
        for name, row in snap.items():
            ms = row["latency_ms"]
            if ms["count"]:
                lat.add_metric([name], count_value=ms["count"], sum_value=ms["mean"] * ms["count"] / 1e3)
                for q, key in _QUANTILES:
                    quant.add_metric([name, q], ms[key] / 1e3)
            rate.add_metric([name], row["rate_hz"])
            budget_lat.add_metric([name], row["budget"]["max_latency_ms"] / 1e3)
            budget_rate.add_metric([name], row["budget"]["min_throughput_hz"])
            missed.add_metric([name], row["missed"])
            cpu.add_metric([name], row["cpu_percent"])
            mem.add_metric([name], row["memory_mb"])
            for kind, count in row["violations"].items():
                viol.add_metric([name, kind], count)
            for gname, value in row["gauges"].items():
                gauges.add_metric([name, gname], value)
        yield from (lat, quant, rate, budget_lat, budget_rate, missed, cpu, mem, viol, gauges)


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
