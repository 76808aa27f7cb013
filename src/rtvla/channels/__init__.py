"""Latest-value channels: in-process, shared memory across processes, Zenoh across machines.

All share one contract (:class:`Channel`): ``publish``, ``latest``, ``wait_newer``, ``close``.
``ZenohChannel`` imports zenoh only when one is built.
"""

from __future__ import annotations

from rtvla.channels.base import Channel, Sample
from rtvla.channels.inproc import LatestValue
from rtvla.channels.shm import SharedArrayChannel, ShmSpec
from rtvla.channels.zenoh_channel import ZenohChannel, zenoh_config

__all__ = ["Channel", "LatestValue", "Sample", "SharedArrayChannel", "ShmSpec", "ZenohChannel", "zenoh_config"]
