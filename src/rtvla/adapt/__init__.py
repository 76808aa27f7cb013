"""Adaptation: the quality ladder over components' knobs and the optimizer that moves it."""

from __future__ import annotations

from rtvla.adapt.config import AdaptConfig
from rtvla.adapt.ladder import RATE_KNOBS, KnobChange, QualityLadder, QualityLevel, rate_allowed
from rtvla.adapt.optimizer import AdaptiveOptimizer, Decision
from rtvla.adapt.signals import RecorderSignals, Signals, SignalSource

__all__ = [
    "RATE_KNOBS",
    "AdaptConfig",
    "AdaptiveOptimizer",
    "Decision",
    "KnobChange",
    "QualityLadder",
    "QualityLevel",
    "RecorderSignals",
    "SignalSource",
    "Signals",
    "rate_allowed",
]
