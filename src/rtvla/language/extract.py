"""Find the JSON plan in a model's answer: plain, fenced in markdown, or inside chatty text."""

from __future__ import annotations

import json
import re
from typing import Any

from rtvla.errors import PlanParseError

__all__ = ["extract_json"]

_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def _candidates(text: str) -> list[Any]:
    """Every JSON object or array that decodes at a '{' or '[' in ``text``, in order."""
    found: list[Any] = []
    i = 0
    n = len(text)
    while i < n:
        j_obj = text.find("{", i)
        j_arr = text.find("[", i)
        starts = [j for j in (j_obj, j_arr) if j != -1]
        if not starts:
            break
        j = min(starts)
        try:
            value, end = _DECODER.raw_decode(text, j)
        except json.JSONDecodeError:
            i = j + 1
            continue
        found.append(value)
        i = end
    return found


def _is_plan_like(value: Any) -> bool:
    if isinstance(value, dict):
        return "actions" in value
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, dict) and "type" in v for v in value
    )


def extract_json(text: str) -> Any:
    """The plan-shaped JSON value in ``text`` (an object with ``actions`` or a list of actions).

    Tries the whole text, then fenced blocks, then any embedded JSON value; prefers a
    plan-shaped value and otherwise returns the first JSON object found (so that a wrong
    schema is reported by validation, not as a parse failure). Raises :class:`PlanParseError`
    when the text holds no JSON at all.
    """
    if not isinstance(text, str) or not text.strip():
        raise PlanParseError("the answer is empty")
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    first: Any = None
    for block in _FENCE_RE.findall(stripped):
        for value in _candidates(block):
            if _is_plan_like(value):
                return value
            if first is None:
                first = value
    for value in _candidates(stripped):
        if _is_plan_like(value):
            return value
        if first is None and isinstance(value, dict):
            first = value
    if first is not None:
        return first
    snippet = stripped[:80].replace("\n", " ")
    raise PlanParseError(f"no JSON plan in the answer (starts {snippet!r})")
