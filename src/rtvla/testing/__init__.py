"""Helpers for tests, rtvla's own and users': a fake clock and a scripted OpenAI-compatible
server that answers on 127.0.0.1 as the test says (valid, fenced, chatty or invalid JSON,
wrong schema, HTTP 500, slow, hanging)."""

from __future__ import annotations

from rtvla.testing.openai_server import Reply, ScriptedOpenAIServer
from rtvla.timing.clock import FakeClock

__all__ = ["FakeClock", "Reply", "ScriptedOpenAIServer"]
