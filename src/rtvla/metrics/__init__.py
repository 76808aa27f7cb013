"""Constant-memory histograms, the budget-checking ``Recorder``, reports, Prometheus, plots."""

from __future__ import annotations

from rtvla.metrics.histogram import LatencyHistogram
from rtvla.metrics.recorder import Event, Recorder, Violation

__all__ = ["Event", "LatencyHistogram", "Recorder", "Violation"]
