from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from rtvla.errors import PlanParseError
from rtvla.language import (
    PlanCache,
    PrioritySlots,
    SemanticCache,
    cache_key,
    embed,
    extract_json,
    normalize_instruction,
)
from rtvla.testing.openai_server import Reply, ScriptedOpenAIServer
from rtvla.timing import FakeClock

PLAN = {"actions": [{"type": "navigate", "parameters": {"target": "home"}, "description": "go"}]}


# -- JSON extraction ------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    json.dumps(PLAN),
    f"```json\n{json.dumps(PLAN, indent=2)}\n```",
    f"```\n{json.dumps(PLAN)}\n```",
    f"Sure! Here you go: {json.dumps(PLAN)} Anything else?",
    f"Thinking {{not json}} ... then {json.dumps(PLAN)}",
    f"{{\"note\": 1}} and the plan {json.dumps(PLAN)}",
])
def test_extract_plan(text: str) -> None:
    assert extract_json(text) == PLAN


def test_extract_bare_action_list() -> None:
    assert extract_json(f"plan: {json.dumps(PLAN['actions'])}") == PLAN["actions"]


@pytest.mark.parametrize("text", ["", "no json here", '{"actions": [{"type": "nav'])
def test_extract_failures(text: str) -> None:
    with pytest.raises(PlanParseError):
        extract_json(text)


# -- caches -----------------------------------------------------------------------------------

def test_normalize_keeps_negation() -> None:
    assert normalize_instruction("  Please PICK up the red cube! ") == "pick up red cube"
    assert normalize_instruction("Don't pick up the red cube") != normalize_instruction("pick up the red cube")
    assert cache_key("go home", "a") != cache_key("go home", "b")


def test_lru_eviction_and_counts() -> None:
    c: PlanCache[int] = PlanCache(maxsize=2, ttl_s=100)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now most recent
    c.put("c", 3)  # evicts b
    assert c.get("b") is None and c.get("c") == 3 and c.get("a") == 1
    assert (c.stats.hits, c.stats.misses, c.stats.evictions) == (3, 1, 1)
    c.resize(1)
    assert len(c) == 1 and c.stats.evictions == 2


def test_ttl_and_purge() -> None:
    clock = FakeClock()
    c: PlanCache[int] = PlanCache(maxsize=10, ttl_s=1.0, clock=clock)
    c.put("a", 1)
    clock.advance(0.5)
    c.put("b", 2)
    clock.advance(0.6)
    assert c.purge_expired() == 1
    assert c.get("a") is None and c.get("b") == 2


def test_semantic_guard() -> None:
    s: SemanticCache[str] = SemanticCache(maxsize=4, threshold=0.7)
    m = frozenset({"red_cube"})
    s.put("pick up the red cube", "ctx", m, "PICK")
    assert s.get("pick up the red cube please carefully", "ctx", m) is not None
    assert s.get("do not pick up the red cube", "ctx", m) is None  # polarity
    assert s.get("pick up the red cube", "other", m) is None  # context
    assert s.get("pick up the blue cube", "ctx", frozenset({"blue_cube"})) is None  # mentions
    v = embed("pick up the red cube")
    assert v.shape == (512,) and abs(float(v @ v) - 1.0) < 1e-5


# -- priority slots -------------------------------------------------------------------------

@pytest.mark.anyio
async def test_slots_priority_and_cancellation() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    order: list[str] = []

    async def waiter(name: str, prio: int) -> None:
        await slots.acquire(prio)
        order.append(name)
        slots.release()

    tasks = {n: asyncio.ensure_future(waiter(n, p)) for n, p in
             [("low", 9), ("high", 0), ("mid", 5), ("high2", 0), ("gone", 1)]}
    while slots.queue_length < 5:
        await asyncio.sleep(0)
    tasks["gone"].cancel()
    await asyncio.sleep(0)
    assert slots.queue_length == 4
    slots.release()
    await asyncio.gather(*(t for n, t in tasks.items() if n != "gone"))
    assert order == ["high", "high2", "mid", "low"]
    assert slots.in_flight == 0 and slots.max_in_flight == 1
    with pytest.raises(RuntimeError):
        slots.release()


# -- the scripted server itself -------------------------------------------------------------

def test_server_models_and_errors() -> None:
    with ScriptedOpenAIServer(models=("a", "b")) as srv:
        with httpx.Client() as client:
            models = client.get(srv.base_url + "/models").json()
            assert [m["id"] for m in models["data"]] == ["a", "b"]
            srv.script(Reply.error(503))
            r = client.post(srv.base_url + "/chat/completions", json={"messages": []})
            assert r.status_code == 503
            r = client.post(srv.base_url + "/chat/completions", json={
                "model": "a", "messages": [{"role": "user", "content": "Instruction: go home"}]})
            body = r.json()
            assert body["usage"]["total_tokens"] > 0
            plan = json.loads(body["choices"][0]["message"]["content"])
            assert plan["actions"][0]["parameters"] == {"target": "home"}
        assert [r.instruction for r in srv.chat_requests()] == [None, "go home"]
    with pytest.raises(ValueError, match="kind"):
        Reply("explode")
