"""Language planning: the plan schema, planners (OpenAI-compatible, embedded rules) and the
planning service with cache, priority queue, concurrency limit, deadline and fallback."""

from __future__ import annotations

from rtvla.language.cache import (
    CacheStats,
    PlanCache,
    SemanticCache,
    cache_key,
    embed,
    normalize_instruction,
)
from rtvla.language.extract import extract_json
from rtvla.language.openai_planner import (
    PLACEHOLDER_API_KEY,
    OpenAIPlanner,
    Planner,
    PlannerAnswer,
    build_messages,
)
from rtvla.language.rules import NEGATION_WORDS, RulePlanner, is_negated
from rtvla.language.schema import (
    ACTION_TYPES,
    Action,
    Capabilities,
    CommunicateParams,
    ManipulateParams,
    NavigateParams,
    PerceiveParams,
    Plan,
    PlanContext,
    Pose2D,
    Workspace,
    parse_plan,
    plan_json_schema,
    validate_plan,
)
from rtvla.language.service import PlanningService, PlanResult
from rtvla.language.settings import DEFAULT_DEADLINE_S, LLMSettings
from rtvla.language.slots import PrioritySlots

__all__ = [
    "ACTION_TYPES",
    "DEFAULT_DEADLINE_S",
    "NEGATION_WORDS",
    "PLACEHOLDER_API_KEY",
    "Action",
    "CacheStats",
    "Capabilities",
    "CommunicateParams",
    "LLMSettings",
    "ManipulateParams",
    "NavigateParams",
    "OpenAIPlanner",
    "PerceiveParams",
    "Plan",
    "PlanCache",
    "PlanContext",
    "PlanResult",
    "Planner",
    "PlannerAnswer",
    "PlanningService",
    "Pose2D",
    "PrioritySlots",
    "RulePlanner",
    "SemanticCache",
    "Workspace",
    "build_messages",
    "cache_key",
    "embed",
    "extract_json",
    "is_negated",
    "normalize_instruction",
    "parse_plan",
    "plan_json_schema",
    "validate_plan",
]
