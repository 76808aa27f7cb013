"""Latest-value channels: in-process now; shared memory and Zenoh share the same contract."""

from __future__ import annotations

from rtvla.channels.base import Channel, Sample
from rtvla.channels.inproc import LatestValue

__all__ = ["Channel", "LatestValue", "Sample"]
