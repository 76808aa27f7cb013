"""``[resources]`` of ``rtvla.toml``: monitor rate and ring, allocator reserve, per-component requests.

Usage::

    rc = ResourcesConfig.from_section(cfg.section("resources"))
    monitor = rc.build_monitor(PsutilSampler(), recorder=rec)
    alloc = rc.build_allocator(recorder=rec)
    alloc.request("control", rc.request_for("control", cfg.budget("control")))

Example table::

    [resources]
    monitor_hz = 10
    reserve_memory_mb = 512
    cpu_oversubscription = 1.5
    [resources.requests.perception]
    cpu_cores = 0.7
    memory_mb = 800
    priority = 8
    critical = true
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.config import Budget, format_validation_error
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder
from rtvla.resources.allocator import ResourceAllocator, ResourceRequest
from rtvla.resources.monitor import SystemMonitor
from rtvla.resources.sampler import Capacity, Sampler
from rtvla.timing import MONOTONIC, Clock

__all__ = ["RequestConfig", "ResourcesConfig", "format_validation_error", "request_from_budget"]


class RequestConfig(BaseModel):
    """One component's resource request, as written in ``[resources.requests.NAME]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_cores: float = Field(ge=0)
    memory_mb: float = Field(ge=0)
    priority: int = Field(default=5, ge=0, le=10)
    critical: bool = False
    preemptible: bool | None = None
    exclusive_cpu: bool = False
    min_cpu_cores: float | None = Field(default=None, ge=0)
    min_memory_mb: float | None = Field(default=None, ge=0)

    def to_request(self) -> ResourceRequest:
        return ResourceRequest(**self.model_dump())


def request_from_budget(name: str, budget: Budget) -> ResourceRequest:
    """A request derived from a budget: its CPU and memory ceilings; critical ones get
    priority 9 (control 10 and a dedicated CPU), others priority 3, shrinkable to half."""
    critical = budget.critical
    cpu = budget.max_cpu_percent / 100.0
    if critical:
        return ResourceRequest(
            min(cpu, 1.0) if name == "control" else cpu, budget.max_memory_mb,
            priority=10 if name == "control" else 9, critical=True, exclusive_cpu=name == "control",
        )
    return ResourceRequest(
        cpu, budget.max_memory_mb, priority=3, critical=False,
        min_cpu_cores=cpu / 2, min_memory_mb=budget.max_memory_mb / 2,
    )


class ResourcesConfig(BaseModel):
    """Validated ``[resources]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    monitor_hz: float = Field(default=10.0, gt=0, le=1000)
    history_s: float = Field(default=60.0, gt=0)
    reserve_cores: float = Field(default=0.0, ge=0)
    reserve_memory_mb: float = Field(default=256.0, ge=0)
    cpu_oversubscription: float = Field(default=1.0, ge=1.0)
    requests: dict[str, RequestConfig] = Field(default_factory=dict)
    strict: bool = Field(default=False, description="refuse to start when a request is refused "
                         "(otherwise the component runs in its degraded configuration)")

    @classmethod
    def from_section(cls, data: Mapping[str, Any]) -> ResourcesConfig:
        """Validate the raw ``cfg.section("resources")``; :class:`ConfigError` names the field."""
        try:
            rc = cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error("resources", exc)) from None
        for name, r in rc.requests.items():
            try:
                r.to_request()
            except ValueError as exc:
                raise ConfigError(f"resources.requests.{name}: {exc}") from None
        return rc

    def request_for(self, name: str, budget: Budget) -> ResourceRequest:
        """The configured request of ``name``, else one derived from its budget."""
        if name in self.requests:
            return self.requests[name].to_request()
        return request_from_budget(name, budget)

    def build_monitor(
        self, sampler: Sampler, *, recorder: Recorder | None = None, clock: Clock = MONOTONIC
    ) -> SystemMonitor:
        period = 1.0 / self.monitor_hz
        return SystemMonitor(
            sampler, recorder=recorder, clock=clock, period_s=period,
            capacity=max(2, round(self.history_s / period)),
        )

    def build_allocator(
        self,
        *,
        capacity: Capacity | None = None,
        sampler: Sampler | None = None,
        recorder: Recorder | None = None,
        clock: Clock = MONOTONIC,
    ) -> ResourceAllocator:
        return ResourceAllocator(
            capacity, sampler=sampler, reserve_cores=self.reserve_cores,
            reserve_memory_mb=self.reserve_memory_mb,
            cpu_oversubscription=self.cpu_oversubscription, recorder=recorder, clock=clock,
        )
