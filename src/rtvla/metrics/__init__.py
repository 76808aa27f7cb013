"""Constant-memory histograms, the budget-checking ``Recorder``, reports, Prometheus, plots.

``rtvla.metrics.plots`` (matplotlib) and ``rtvla.metrics.prometheus`` are imported on demand.
"""

from __future__ import annotations

from rtvla.metrics.histogram import LatencyHistogram
from rtvla.metrics.recorder import Event, Recorder, Violation
from rtvla.metrics.report import budget_status, build_report, render_table
from rtvla.metrics.timeseries import MetricsLog, read_metrics

__all__ = [
    "Event",
    "LatencyHistogram",
    "MetricsLog",
    "Recorder",
    "Violation",
    "budget_status",
    "build_report",
    "read_metrics",
    "render_table",
]
