"""Typed, validated configuration: per-component budgets and the raw sections of ``rtvla.toml``.

Budgets are the reference chapter's timing requirements (control 100 Hz, navigation 10 Hz,
perception 30 Hz, LLM answers within 5 s, tasks within 120 s). They are validated once, here,
and handed to the rest of rtvla as frozen objects.

Usage::

    cfg = load_config("rtvla.toml")           # file optional; RTVLA_* env vars override it
    cfg.budget("control").rate_hz              # 100.0
    cfg.budget("my_arm_camera")                # the "any other component" default
    cfg.section("llm")                         # a raw table, validated by the owning package

Environment overrides use ``RTVLA_`` plus the dotted path with ``__`` between levels, for
example ``RTVLA_BUDGETS__CONTROL__RATE_HZ=200`` or ``RTVLA_LLM__MODEL=qwen2.5``. Values are
parsed as TOML scalars where possible (numbers, booleans), else kept as strings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rtvla.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "BUILTIN_COMPONENTS",
    "DEFAULT_BUDGETS",
    "ENV_PREFIX",
    "SECTIONS",
    "Budget",
    "Config",
    "Requirements",
    "format_validation_error",
    "load_config",
    "parse_config",
    "validate_table",
]

ENV_PREFIX = "RTVLA_"

#: Top-level tables of ``rtvla.toml``. ``budgets`` is validated here; the others are
#: validated by the package that owns them (see ``rtvla.runtime`` for the full check).
SECTIONS = (
    "budgets",
    "runtime",
    "control",
    "navigation",
    "executor",
    "perception",
    "cameras",
    "llm",
    "robot",
    "resources",
    "adapt",
    "record",
    "policy",
    "remote",
    "ros2",
)


class Budget(BaseModel):
    """What one component must achieve: its rate, latency, throughput and resource ceilings.

    ``rate_hz`` is the nominal loop rate (None for request-driven components such as the
    LLM); ``deadline_s`` is a hard answer deadline for request-driven components.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_hz: float | None = Field(default=None, description="nominal loop rate")
    max_latency_ms: float = Field(description="latency ceiling per operation")
    min_throughput_hz: float = Field(ge=0.0, description="minimum operations per second")
    max_cpu_percent: float = Field(description="CPU ceiling, percent of one core")
    max_memory_mb: float = Field(description="resident memory ceiling")
    critical: bool = Field(default=False, description="must keep its rate; never degraded")
    deadline_s: float | None = Field(default=None, description="answer deadline")

    @field_validator("rate_hz", "deadline_s")
    @classmethod
    def _positive_or_none(cls, value: float | None, info: Any) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(f"{info.field_name} must be > 0, got {value}")
        return value

    @field_validator("max_latency_ms", "max_cpu_percent", "max_memory_mb")
    @classmethod
    def _positive(cls, value: float, info: Any) -> float:
        if not value > 0:
            raise ValueError(f"{info.field_name} must be > 0, got {value}")
        return value

    @property
    def period_s(self) -> float | None:
        """Loop period in seconds, or None for request-driven components."""
        return None if self.rate_hz is None else 1.0 / self.rate_hz

    @property
    def max_latency_s(self) -> float:
        return self.max_latency_ms / 1000.0


DEFAULT_BUDGETS: dict[str, Budget] = {
    "control": Budget(
        rate_hz=100, max_latency_ms=10, min_throughput_hz=100, max_cpu_percent=80,
        max_memory_mb=100, critical=True,
    ),
    "navigation": Budget(
        rate_hz=10, max_latency_ms=100, min_throughput_hz=10, max_cpu_percent=60,
        max_memory_mb=500, critical=True,
    ),
    "perception": Budget(
        rate_hz=30, max_latency_ms=33, min_throughput_hz=30, max_cpu_percent=70,
        max_memory_mb=1000, critical=True,
    ),
    "llm": Budget(
        max_latency_ms=5000, min_throughput_hz=0.2, max_cpu_percent=90, max_memory_mb=4000,
        critical=False, deadline_s=5.0,
    ),
    "communication": Budget(
        max_latency_ms=100, min_throughput_hz=10, max_cpu_percent=30, max_memory_mb=50,
    ),
    "task": Budget(
        max_latency_ms=120_000, min_throughput_hz=0.0, max_cpu_percent=100,
        max_memory_mb=8000, critical=False, deadline_s=120.0,
    ),
}

#: Budget for any component not named above.
DEFAULT_OTHER = Budget(max_latency_ms=1000, min_throughput_hz=1, max_cpu_percent=80, max_memory_mb=500)

BUILTIN_COMPONENTS = tuple(DEFAULT_BUDGETS)


class Requirements(BaseModel):
    """The set of budgets in force: built-ins (possibly overridden) plus custom components."""

    model_config = ConfigDict(frozen=True)

    budgets: dict[str, Budget]
    other: Budget = DEFAULT_OTHER

    def budget(self, component: str) -> Budget:
        """The budget of ``component``; the "any other component" default if it has none.

        Sub-components (``perception.detect``) inherit their parent's budget.
        """
        if component in self.budgets:
            return self.budgets[component]
        parent = component.split(".", 1)[0]
        return self.budgets.get(parent, self.other)

    def timing_requirements(self) -> dict[str, dict[str, Any]]:
        """The reference chapter's ``get_timing_requirements`` view: rate, period, deadline."""
        out: dict[str, dict[str, Any]] = {}
        for name, b in self.budgets.items():
            row: dict[str, Any] = {"critical": b.critical}
            if b.rate_hz is not None:
                row.update(rate_hz=b.rate_hz, period_ms=1000.0 / b.rate_hz)
            if b.deadline_s is not None:
                row["deadline_s"] = b.deadline_s
            out[name] = row
        return out


class Config(BaseModel):
    """The validated contents of ``rtvla.toml`` plus environment overrides."""

    model_config = ConfigDict(frozen=True)

    requirements: Requirements
    sections: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: str | None = None

    def budget(self, component: str) -> Budget:
        return self.requirements.budget(component)

    def section(self, name: str) -> dict[str, Any]:
        """The raw table ``[name]`` (empty when absent); the owning package validates it."""
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; known: {', '.join(SECTIONS)}")
        return dict(self.sections.get(name, {}))


def format_validation_error(prefix: str, exc: ValidationError) -> str:
    """``prefix.field: message (got value)`` for each pydantic error, joined by ``; ``.

    Every package validates its own ``rtvla.toml`` table with this, so that all
    configuration errors read alike and name the field and the bad value.
    """
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{loc}" if loc else prefix
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg} (got {err.get('input')!r})")
    return "; ".join(parts)


M = TypeVar("M", bound=BaseModel)


def validate_table(model: type[M], data: Mapping[str, Any] | None, prefix: str) -> M:
    """Validate one raw table into ``model``; :class:`ConfigError` names ``prefix.field``."""
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(prefix, exc)) from None


def _build_budget(path: str, base: Budget | None, table: Any) -> Budget:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path} must be a table, got {type(table).__name__} {table!r}")
    data = base.model_dump() if base is not None else {}
    data.update(table)
    try:
        return Budget.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None


def parse_config(data: Mapping[str, Any], *, source: str | None = None) -> Config:
    """Validate a parsed TOML mapping (env overrides already merged) into a :class:`Config`."""
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError(
            f"unknown config section {unknown[0]!r}; known sections: {', '.join(SECTIONS)}"
        )
    if isinstance(data.get("cameras"), list):
        # [[cameras]]: an array of camera tables, kept as the [cameras] table's streams.
        data = {**data, "cameras": {"streams": list(data["cameras"])}}
    for key, value in data.items():
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{key}] must be a table, got {type(value).__name__} {value!r}")

    budgets = dict(DEFAULT_BUDGETS)
    other = DEFAULT_OTHER
    for name, table in dict(data.get("budgets", {})).items():
        if name == "custom":
            if not isinstance(table, Mapping):
                raise ConfigError(f"budgets.custom must be a table, got {table!r}")
            for cname, ctable in table.items():
                if cname in DEFAULT_BUDGETS:
                    raise ConfigError(
                        f"budgets.custom.{cname}: {cname!r} is a built-in component; "
                        f"set it under [budgets.{cname}]"
                    )
                budgets[cname] = _build_budget(f"budgets.custom.{cname}", DEFAULT_OTHER, ctable)
        elif name == "other":
            other = _build_budget("budgets.other", DEFAULT_OTHER, table)
        elif name in DEFAULT_BUDGETS:
            budgets[name] = _build_budget(f"budgets.{name}", DEFAULT_BUDGETS[name], table)
        else:
            raise ConfigError(
                f"budgets.{name}: unknown component {name!r}; built-in components are "
                f"{', '.join(BUILTIN_COMPONENTS)} (declare others under [budgets.custom.{name}])"
            )
    sections = {k: dict(v) for k, v in data.items() if k != "budgets"}
    return Config(
        requirements=Requirements(budgets=budgets, other=other), sections=sections, source=source
    )


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _merge_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__")]
        if any(not p for p in path):
            raise ConfigError(f"environment variable {key}: empty path segment")
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {key}: {part!r} is not a table")
            node = child
        node[path[-1]] = _parse_env_value(raw)
    return data


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    search_cwd: bool = True,
) -> Config:
    """Load ``path`` (or ``./rtvla.toml`` when present), apply ``RTVLA_*`` overrides, validate.

    Raises :class:`ConfigError` naming the file, field and bad value.
    """
    environ = os.environ if environ is None else environ
    source: str | None = None
    data: dict[str, Any] = {}
    if path is None and search_cwd and Path("rtvla.toml").is_file():
        path = "rtvla.toml"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {source} does not exist")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    data = _merge_env(data, environ)
    try:
        return parse_config(data, source=source)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
