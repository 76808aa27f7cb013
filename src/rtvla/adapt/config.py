"""``[adapt]`` of ``rtvla.toml``: thresholds, windows and hold-down of the adaptive optimizer.

Example table::

    [adapt]
    cpu_high = 85          # system CPU percent (window mean) that counts as pressure
    cpu_low = 60           # ... and below which there is headroom
    hold_down_s = 1.5      # sustained headroom needed before one step back up (doubles after a flap)
    levels = [             # optional explicit ladder; default: derived from the knobs
        { "llm.cache" = true },
        { "perception.skip_frames" = 1 },
        { "perception.resolution" = [480, 360] },
    ]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rtvla.config import format_validation_error
from rtvla.errors import ConfigError

__all__ = ["AdaptConfig"]


class AdaptConfig(BaseModel):
    """The optimizer's policy. Pressure and headroom thresholds form a dead band (between
    them nothing moves), which together with the dwell and hold-down times prevents flapping."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    period_s: float = Field(default=0.5, gt=0, description="how often the thread mode decides")
    window_s: float = Field(default=2.0, gt=0, description="observation window of the signals")
    cpu_high: float = Field(default=85.0, gt=0, le=100)
    cpu_low: float = Field(default=60.0, ge=0, le=100)
    memory_high: float = Field(default=90.0, gt=0, le=100)
    memory_low: float = Field(default=80.0, ge=0, le=100)
    latency_high: float = Field(default=1.0, gt=0, description="p99 / budget ratio of pressure")
    latency_low: float = Field(default=0.7, ge=0, description="p99 / budget ratio of headroom")
    missed_high: int = Field(default=3, ge=1, description="missed cycles in the window of pressure")
    degrade_after_s: float = Field(default=1.0, ge=0, description="pressure must last this long")
    min_dwell_s: float = Field(default=2.0, ge=0, description="least time between two steps down")
    hold_down_s: float = Field(default=1.5, gt=0, description="headroom must last this long to step up "
                               "(recovery from the bottom of a 2-level ladder in about 2 x this; a "
                               "flap doubles it)")
    max_hold_down_s: float = Field(default=60.0, gt=0)
    flap_backoff: float = Field(default=2.0, ge=1.0, description="hold-down factor after a flap")
    levels: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _bands(self) -> AdaptConfig:
        for hi, lo in (("cpu_high", "cpu_low"), ("memory_high", "memory_low"),
                       ("latency_high", "latency_low")):
            if getattr(self, lo) >= getattr(self, hi):
                raise ValueError(
                    f"{lo} ({getattr(self, lo)}) must be below {hi} ({getattr(self, hi)}) "
                    "to leave a dead band"
                )
        if self.max_hold_down_s < self.hold_down_s:
            raise ValueError(
                f"max_hold_down_s ({self.max_hold_down_s}) must be >= hold_down_s ({self.hold_down_s})"
            )
        return self

    @classmethod
    def from_section(cls, data: Mapping[str, Any]) -> AdaptConfig:
        """Validate the raw ``cfg.section("adapt")``; :class:`ConfigError` names the field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error("adapt", exc)) from None
