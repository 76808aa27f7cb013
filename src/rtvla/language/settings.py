"""The ``[llm]`` config section, validated once at the edge into a frozen object.

Example ``rtvla.toml``::

    [llm]
    base_url = "http://127.0.0.1:8000/v1"     # vLLM, llama.cpp server, Ollama (/v1)
    model = "qwen2.5-7b-instruct"
    lighter_model = "qwen2.5-1.5b-instruct"   # the adaptive optimizer may switch to it
    api_key_env = "OPENAI_API_KEY"            # name of the env var; the key is never logged
    max_tokens = 512
    cache_size = 128
    semantic_cache = false

Without ``base_url`` the planning service answers with the embedded rule planner only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtvla.config import Config, format_validation_error
from rtvla.errors import ConfigError

__all__ = ["DEFAULT_DEADLINE_S", "LLMSettings"]

DEFAULT_DEADLINE_S = 5.0


class LLMSettings(BaseModel):
    """Everything the OpenAI-compatible planner and the planning service are tuned by."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str | None = Field(default=None, description="OpenAI-compatible /v1 URL")
    model: str = "default"
    lighter_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(default=0.1, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, gt=0, le=32768)
    structured_output: Literal["auto", "json_schema", "off"] = "auto"
    deadline_s: float | None = Field(default=None, gt=0, description="overrides budgets.llm")
    max_concurrent: int = Field(default=3, ge=1, le=64)
    max_retries: int = Field(default=1, ge=0, le=5)
    cache: bool = True
    cache_size: int = Field(default=128, ge=1, le=1_000_000)
    cache_ttl_s: float = Field(default=600.0, gt=0)
    semantic_cache: bool = False
    semantic_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    fallback: Literal["rules", "none"] = "rules"
    planner: str | None = Field(default=None, description="a planner part: openai, rules, an "
                                "entry point of rtvla.planners or 'module:factory'")
    planner_options: dict[str, Any] = Field(default_factory=dict)
    replans: int = Field(default=1, ge=0, le=5, description="new plans asked for after a failed step")
    extra_headers: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> LLMSettings:
        """Validate a raw ``[llm]`` table; the error names the key and the value."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error("llm", exc)) from None

    @classmethod
    def from_config(cls, cfg: Config) -> LLMSettings:
        return cls.from_mapping(cfg.section("llm"))

    def deadline(self, cfg: Config | None = None) -> float:
        """The answer deadline: ``llm.deadline_s``, else ``budgets.llm.deadline_s``, else 5 s."""
        if self.deadline_s is not None:
            return self.deadline_s
        if cfg is not None:
            d = cfg.budget("llm").deadline_s
            if d is not None:
                return d
        return DEFAULT_DEADLINE_S
