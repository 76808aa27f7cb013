"""Resources: the system monitor (psutil, 10 Hz, bounded ring) and the resource allocator
(admission control, priorities, preemption, CPU-affinity plan)."""

from __future__ import annotations

from rtvla.resources.allocator import (
    AffinityPlan,
    Allocation,
    InvalidResourceRequest,
    Preemption,
    ResourceAllocator,
    ResourceRequest,
    apply_affinity,
)
from rtvla.resources.config import RequestConfig, ResourcesConfig, request_from_budget
from rtvla.resources.monitor import ComponentUsage, Sample, SystemMonitor
from rtvla.resources.sampler import (
    Capacity,
    CoreTimes,
    ProcessTimes,
    PsutilSampler,
    RawReading,
    Sampler,
)

__all__ = [
    "AffinityPlan",
    "Allocation",
    "Capacity",
    "ComponentUsage",
    "CoreTimes",
    "InvalidResourceRequest",
    "Preemption",
    "ProcessTimes",
    "PsutilSampler",
    "RawReading",
    "RequestConfig",
    "ResourceAllocator",
    "ResourceRequest",
    "ResourcesConfig",
    "Sample",
    "Sampler",
    "SystemMonitor",
    "apply_affinity",
    "request_from_budget",
]
