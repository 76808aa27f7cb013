"""The ``[runtime]`` table and the check of every section of ``rtvla.toml``.

Each package validates its own table (perception, llm, control, ...); ``validate_sections``
runs all of them so that ``rtvla config check`` and ``rtvla run`` fail early, naming the
field and the bad value, before anything starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.config import Config, format_validation_error
from rtvla.errors import ConfigError, PartError

__all__ = ["RuntimeSettings", "validate_sections"]


class RuntimeSettings(BaseModel):
    """How ``rtvla run`` runs the stack."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = "put the red cube in the blue bin"
    out_root: str = Field("runs", description="run folders are created under this directory")
    metrics_interval_s: float = Field(1.0, gt=0, le=60, description="metrics.jsonl line period")
    prometheus_port: int | None = Field(None, ge=0, le=65535, description="serve /metrics when set")
    prometheus_addr: str = "127.0.0.1"
    startup_timeout_s: float = Field(30.0, gt=0, description="camera/control must be up by then")
    warmup_s: float = Field(1.0, ge=0, description="throughput checks start after this")
    linger_s: float = Field(0.5, ge=0, description="keep measuring this long after the task")
    max_miss_ratio: float = Field(
        0.001, ge=0, le=1,
        description="a critical loop meets its rate budget while missed/ticks stays at or below this")
    dashboard_hz: float = Field(4.0, gt=0, le=30)
    isolate_control_cpu: bool = Field(
        False, description="keep the main process's threads off the control process's CPU")
    perception_placement: Literal["thread"] = "thread"

    @classmethod
    def from_section(cls, data: dict[str, Any]) -> RuntimeSettings:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error("runtime", exc)) from None


def _validators(cfg: Config) -> dict[str, Callable[[dict[str, Any]], Any]]:
    from rtvla.action.control import ControlSettings
    from rtvla.action.navigation import NavigatorConfig
    from rtvla.action.skills import SkillSettings
    from rtvla.adapt.config import AdaptConfig
    from rtvla.language.settings import LLMSettings
    from rtvla.perception.settings import CamerasConfig, PerceptionConfig
    from rtvla.policy.settings import PolicySettings
    from rtvla.record.settings import RecordSettings
    from rtvla.resources.config import ResourcesConfig
    from rtvla.runtime.remote_parts import RemoteSettings
    from rtvla.runtime.ros2_bridge import BridgeSettings, check_bridge_topics
    from rtvla.runtime.wiring import validate_parts

    def ros2(table: dict[str, Any]) -> BridgeSettings:
        settings = BridgeSettings.from_section(table)
        check_bridge_topics(settings, cfg.section("robot"))  # not the ROS 2 robot's own topics
        return settings

    return {
        "runtime": RuntimeSettings.from_section,
        "control": ControlSettings.from_section,
        "navigation": NavigatorConfig.from_section,
        "executor": SkillSettings.from_section,
        "perception": PerceptionConfig.from_section,
        "cameras": CamerasConfig.from_section,
        "llm": LLMSettings.from_mapping,
        # Every part (robot, planner, detector) resolved and its options validated by the
        # part's own model, without building anything.
        "robot": lambda _table: validate_parts(cfg),
        "resources": ResourcesConfig.from_section,
        "adapt": AdaptConfig.from_section,
        "record": RecordSettings.from_section,
        "ros2": ros2,
        "remote": RemoteSettings.from_section,
        "policy": PolicySettings.from_mapping,
    }


def validate_sections(cfg: Config) -> list[str]:
    """Validate every table present in ``cfg``; returns the names checked.

    Raises :class:`ConfigError` with every problem found, each naming ``section.field``.
    """
    problems: list[str] = []
    part_problem = False
    checked = []
    for name, validate in _validators(cfg).items():
        if name not in cfg.sections and name != "robot":  # the robot part is always checked
            continue
        checked.append(name)
        try:
            validate(cfg.section(name))
        except ConfigError as exc:
            problems.append(str(exc))
            part_problem = part_problem or isinstance(exc, PartError)
    if problems:
        raise (PartError if part_problem else ConfigError)("; ".join(problems))
    return checked
