"""The ``[policy]`` config table, validated once into a frozen object.

Example ``rtvla.toml``::

    [policy]
    source = "ws://gpu-box:8000"        # or "builtin:pick", "models/my.onnx", "pkg.mod:factory"
    placement = "process"               # ONNX: its own process (default); "thread" for tools
    [policy.options]
    api_key_env = "OPENPI_API_KEY"      # the key itself stays in the environment
    rate_hz = 15
    timeout_s = 2.0
    [policy.observation]
    preset = "droid"
    cameras = { exterior_image_1_left = "head", wrist_image_left = "wrist" }
    [[policy.action.slice]]
    kind = "joint_position"
    start = 0

Without ``observation``/``action`` tables the policy's own (from its ONNX metadata or its
server's metadata) are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.config import format_validation_error
from rtvla.errors import ConfigError
from rtvla.policy.actions import ActionMapping
from rtvla.policy.base import PolicyMetadata
from rtvla.policy.observation import ObservationMapping

__all__ = ["PolicySettings"]


class PolicySettings(BaseModel):
    """The ``[policy]`` table. See the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str | None = Field(default=None, description="None: no learned policy")
    placement: Literal["process", "thread"] = "process"
    options: dict[str, Any] = Field(default_factory=dict)
    observation: dict[str, Any] | str | None = None
    action: dict[str, Any] | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> PolicySettings:
        try:
            settings = cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise ConfigError(format_validation_error("policy", exc)) from None
        # Validate the mapping tables now, so a mistake is reported before anything starts.
        if settings.observation is not None:
            ObservationMapping.from_table(settings.observation)
        if settings.action is not None:
            ActionMapping.from_table(settings.action)
        return settings

    def observation_mapping(self, metadata: PolicyMetadata | None = None) -> ObservationMapping | None:
        """This table's mapping, else the policy's own, else None."""
        table = self.observation if self.observation is not None else (
            metadata.observation_mapping if metadata is not None else None)
        return None if table is None else ObservationMapping.from_table(table)

    def action_mapping(self, metadata: PolicyMetadata | None = None) -> ActionMapping | None:
        table = self.action if self.action is not None else (
            metadata.action_mapping if metadata is not None else None)
        return None if table is None else ActionMapping.from_table(table)
