"""The stack's planner speaks to a real OpenAI-compatible server when given --llm-url."""

from __future__ import annotations

import time

import pytest

from rtvla.config import parse_config
from rtvla.language import PlanContext
from rtvla.metrics import Recorder
from rtvla.runtime.stack import Stack
from rtvla.testing import Reply, ScriptedOpenAIServer


@pytest.fixture
def stack_for():
    built = []

    def make(url: str, deadline_s: float = 1.0) -> Stack:
        cfg = parse_config({"budgets": {"llm": {"deadline_s": deadline_s}}})
        stack = Stack.build(cfg, Recorder(cfg.requirements), llm_url=url, model="scripted")
        built.append(stack)
        return stack

    yield make
    for s in built:
        s.stop()


def test_llm_url_and_model_reach_the_planner(stack_for):
    with ScriptedOpenAIServer() as server:
        stack = stack_for(server.base_url)
        ctx = PlanContext(capabilities=stack.capabilities, robot_place="home")
        result = stack.planner.plan_blocking("put the red cube in the blue bin", ctx)
        assert result.source == "llm" and not result.degraded
        assert [a.type for a in result.plan.actions][:1] == ["navigate"]
        (req,) = server.chat_requests()
        assert req.body["model"] == "scripted"


def test_a_hung_llm_degrades_to_the_rule_planner_within_the_deadline(stack_for):
    with ScriptedOpenAIServer(default=Reply.hang()) as server:
        stack = stack_for(server.base_url, deadline_s=0.5)
        ctx = PlanContext(capabilities=stack.capabilities, robot_place="home")
        t0 = time.monotonic()
        result = stack.planner.plan_blocking("put the red cube in the blue bin", ctx)
        elapsed = time.monotonic() - t0
        assert result.source == "fallback" and result.degraded
        assert result.reason.startswith("timeout")
        assert elapsed < 0.5 + 0.25  # generous: a loaded 2-core machine
        assert [e.kind for e in stack.recorder.events if e.component == "llm"].count("degraded") == 1
