from __future__ import annotations

import asyncio
import time

import pytest

from rtvla.config import parse_config
from rtvla.errors import PlannerRefusal
from rtvla.language import LLMSettings, OpenAIPlanner, PlanContext, PlanningService
from rtvla.metrics import Recorder
from rtvla.testing.openai_server import Reply, ScriptedOpenAIServer
from rtvla.timing import FakeClock

pytestmark = pytest.mark.anyio

TASK = "put the red cube in the blue bin"
EXPECTED = ("navigate(table) -> perceive(red_cube) -> manipulate(pick red_cube) -> navigate(kitchen)"
            " -> manipulate(place red_cube -> blue_bin)")


def make(server: ScriptedOpenAIServer, **kw: object) -> PlanningService:
    settings = LLMSettings(base_url=server.base_url, model="scripted",
                           lighter_model=kw.pop("lighter_model", None))  # type: ignore[arg-type]
    kw.setdefault("deadline_s", 1.0)
    kw.setdefault("max_retries", 0)
    kw.setdefault("lighter_model", settings.lighter_model)
    return PlanningService(OpenAIPlanner(settings), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("reply", [Reply.valid(), Reply.fenced(), Reply.chatty(), Reply.slow(0.1)])
async def test_llm_answers_parsed(server: ScriptedOpenAIServer, reply: Reply) -> None:
    server.script(reply)
    svc = make(server)
    res = await svc.plan(TASK)
    assert (res.source, res.degraded, res.reason) == ("llm", False, None)
    assert res.plan.summary() == EXPECTED
    assert res.tokens and res.tokens > 0
    assert res.attempts == 1
    body = server.chat_requests()[0].body
    assert body["model"] == "scripted" and body["max_tokens"] == 512
    assert "Instruction: " + TASK in body["messages"][-1]["content"]
    await svc.aclose()


@pytest.mark.parametrize(("reply", "reason"), [
    (Reply.invalid(), "invalid_json"),
    (Reply.wrong_schema(), "validation"),
    (Reply.error(500), "server_error"),
    (Reply.valid({"actions": [{"type": "navigate", "parameters": {"target": "moon"},
                               "description": "fly"}]}), "validation"),
])
async def test_failures_fall_back_with_reason(server: ScriptedOpenAIServer, reply: Reply,
                                              reason: str) -> None:
    server.default = reply
    rec = Recorder()
    svc = make(server, recorder=rec)
    res = await svc.plan(TASK)
    assert res.source == "fallback" and res.degraded
    assert res.reason is not None and res.reason.startswith(reason + ":"), res.reason
    assert res.plan.summary() == EXPECTED  # the rule planner's plan
    assert [e.kind for e in rec.events] == ["degraded"]
    assert svc.counters.fallbacks == 1
    # Degraded answers are not cached: the next request asks the server again.
    await svc.plan(TASK)
    # A 500 may be a server refusing json_schema: json_object is tried once per plan.
    assert len(server.chat_requests()) == (4 if reason == "server_error" else 2)
    await svc.aclose()


async def test_retry_while_deadline_allows(server: ScriptedOpenAIServer) -> None:
    server.script(Reply.error(503), Reply.valid())
    svc = make(server, max_retries=2)
    res = await svc.plan(TASK)
    assert res.source == "llm" and res.attempts == 2
    assert svc.counters.retries == 1 and svc.counters.server_errors == 1
    await svc.aclose()


async def test_hung_server_deadline_held_and_request_cancelled(server: ScriptedOpenAIServer) -> None:
    server.default = Reply.hang()
    rec = Recorder()
    svc = make(server, recorder=rec, deadline_s=0.5, max_retries=3)
    t0 = time.monotonic()
    res = await svc.plan(TASK)
    elapsed = time.monotonic() - t0
    assert elapsed <= 0.5 + 0.1, elapsed
    assert res.source == "fallback" and res.degraded
    assert res.reason is not None and res.reason.startswith("timeout:")
    assert res.plan.summary() == EXPECTED
    assert res.latency_s <= 0.6
    # The late request was cancelled: the server sees the client go away.
    assert await asyncio.to_thread(server.wait_for, lambda s: s.in_flight == 0, 3.0)
    assert [r.outcome for r in server.chat_requests()] == ["client_gone"]
    assert svc.counters.timeouts == 1
    assert svc.slots.in_flight == 0
    assert rec.snapshot()["llm"]["count"] == 1
    await svc.aclose()


async def test_slow_answer_past_deadline_falls_back(server: ScriptedOpenAIServer) -> None:
    server.default = Reply.slow(2.0)
    svc = make(server, deadline_s=0.4)
    t0 = time.monotonic()
    res = await svc.plan(TASK)
    assert time.monotonic() - t0 <= 0.5
    assert res.source == "fallback" and res.reason.startswith("timeout:")  # type: ignore[union-attr]
    await svc.aclose()


async def test_server_without_response_format(tmp_path: object) -> None:
    with ScriptedOpenAIServer(reject_response_format=True) as server:
        svc = make(server)
        planner = svc.planner
        assert isinstance(planner, OpenAIPlanner)
        res = await svc.plan(TASK)
        assert res.source == "llm" and res.plan.summary() == EXPECTED
        assert planner.structured_supported is False
        await svc.plan("go to the kitchen")
        kinds = [r.reply for r in server.chat_requests()]
        # json_schema and json_object refused once each, then plain JSON prompting
        # remembered for this server.
        assert kinds == ["reject_response_format", "reject_response_format", "valid", "valid"]
        assert planner.response_format == "plain"
        assert "response_format" not in server.chat_requests()[3].body
        assert "JSON schema" in server.chat_requests()[3].body["messages"][-1]["content"]
        await svc.aclose()


async def test_server_that_answers_500_to_json_schema_gets_json_object() -> None:
    with ScriptedOpenAIServer(reject_json_schema=500) as server:
        svc = make(server)
        planner = svc.planner
        res = await svc.plan(TASK)
        assert res.source == "llm" and res.plan.summary() == EXPECTED
        await svc.plan("go to the kitchen")
        reqs = server.chat_requests()
        assert [r.reply for r in reqs] == ["reject_json_schema", "valid", "valid"]
        assert reqs[1].body["response_format"]["type"] == "json_object"
        assert reqs[1].body["response_format"]["schema"]["type"] == "object"
        assert reqs[2].body["response_format"]["type"] == "json_object"  # remembered
        assert planner.response_format == "json_object" and planner.structured_supported is True
        await svc.aclose()


async def test_prompt_carries_the_world_and_what_the_cameras_see(server: ScriptedOpenAIServer) -> None:
    from rtvla.language import PlanContext

    svc = make(server)
    ctx = PlanContext(capabilities=svc.capabilities, robot_place="home",
                      scene={"surfaces": {"shelf": {"height_m": 0.8}}},
                      observations=[{"label": "red_cube", "position": [1.5, -0.4, 0.78], "age_s": 0.2}])
    await svc.plan(TASK, ctx)
    text = server.chat_requests()[0].body["messages"][-1]["content"]
    assert "shelf" in text and "height_m" in text
    assert "red_cube at (1.50, -0.40, 0.78) m, 0.2 s ago" in text
    assert "Robot is at: home" in text
    await svc.aclose()


async def test_structured_output_sent_when_supported(server: ScriptedOpenAIServer) -> None:
    svc = make(server)
    await svc.plan(TASK)
    body = server.chat_requests()[0].body
    assert body["response_format"]["type"] == "json_schema"
    assert svc.planner.structured_supported is True  # type: ignore[union-attr]
    await svc.aclose()


async def test_concurrency_limit_never_exceeded(server: ScriptedOpenAIServer) -> None:
    server.default = Reply.slow(0.15)
    svc = make(server, deadline_s=5.0, max_concurrent=3)
    places = ["home", "table", "kitchen", "shelf"]
    tasks = [f"go to the {p}" for p in places] + [f"look for the {c} cube" for c in ("red", "green", "blue")]
    results = await asyncio.gather(*(svc.plan(t) for t in tasks))
    assert all(r.source == "llm" for r in results)
    assert server.max_in_flight == 3
    assert svc.slots.max_in_flight == 3
    assert max(r.queue_wait_s for r in results) > 0.1  # some waited for a slot
    await svc.aclose()


async def test_priority_order_lower_first_fifo_within(server: ScriptedOpenAIServer) -> None:
    server.script(Reply.slow(0.3))
    svc = make(server, deadline_s=5.0, max_concurrent=1)
    first = asyncio.ensure_future(svc.plan("go home", priority=1))
    assert await asyncio.to_thread(server.wait_for, lambda s: len(s.chat_requests()) == 1, 3.0)
    queued = [("go to the shelf", 5), ("go to the kitchen", 1), ("go to the table", 3),
              ("look for the red cube", 1)]
    others = [asyncio.ensure_future(svc.plan(t, priority=p)) for t, p in queued]
    while svc.slots.queue_length < len(queued):
        await asyncio.sleep(0.005)
    await asyncio.gather(first, *others)
    order = [r.instruction for r in server.chat_requests()]
    assert order == ["go home", "go to the kitchen", "look for the red cube", "go to the table",
                     "go to the shelf"]
    await svc.aclose()


async def test_queue_wait_counts_against_deadline(server: ScriptedOpenAIServer) -> None:
    server.default = Reply.hang()
    svc = make(server, deadline_s=0.4, max_concurrent=1)
    t0 = time.monotonic()
    a, b = await asyncio.gather(svc.plan("go home"), svc.plan("go to the kitchen"))
    assert time.monotonic() - t0 <= 0.55
    assert a.reason.startswith("timeout:") and b.reason.startswith("timeout:")  # type: ignore[union-attr]
    assert "in the queue" in b.reason  # type: ignore[operator]
    assert len(server.chat_requests()) == 1
    await svc.aclose()


async def test_cache_hits_and_context_key(server: ScriptedOpenAIServer) -> None:
    rec = Recorder()
    svc = make(server, recorder=rec)
    first = await svc.plan(TASK)
    again = await svc.plan("  Put the RED cube in the blue bin! ")
    assert first.source == "llm" and again.source == "cache"
    assert again.plan == first.plan and again.latency_s < 0.01
    assert len(server.chat_requests()) == 1
    other = await svc.plan(TASK, PlanContext(robot_place="table"))  # different context
    assert other.source == "llm"
    assert svc.cache.stats.hits == 1 and svc.cache.stats.misses == 2
    stats = svc.stats()
    assert stats["cache_hit_rate"] == pytest.approx(1 / 3)
    svc.publish_gauges()
    assert rec.snapshot()["llm"]["gauges"]["cache_hit_rate"] == pytest.approx(1 / 3)
    await svc.aclose()


async def test_cache_ttl_with_fake_clock(server: ScriptedOpenAIServer) -> None:
    clock = FakeClock()
    svc = make(server, clock=clock, cache_ttl_s=10.0)
    await svc.plan(TASK)
    clock.advance(5.0)
    assert (await svc.plan(TASK)).source == "cache"
    clock.advance(6.0)
    assert (await svc.plan(TASK)).source == "llm"
    assert svc.cache.stats.expirations == 1
    await svc.aclose()


async def test_semantic_cache_never_serves_negation(server: ScriptedOpenAIServer) -> None:
    svc = make(server, semantic_cache=True, semantic_threshold=0.75)
    assert (await svc.plan("pick up the red cube")).source == "llm"
    near = await svc.plan("pick up the red cube carefully")
    assert near.source == "cache" and svc.counters.semantic_hits == 1
    neg = await svc.plan("do not pick up the red cube")
    assert neg.source != "cache"
    assert not any(a.type == "manipulate" for a in neg.plan.actions)
    other = await svc.plan("pick up the blue cube")
    assert other.source == "llm" and "blue_cube" in other.plan.summary()
    assert len(server.chat_requests()) == 3
    await svc.aclose()


async def test_fallback_refusal_raises(server: ScriptedOpenAIServer) -> None:
    server.default = Reply.invalid()
    svc = make(server)
    with pytest.raises(PlannerRefusal, match=r"invalid_json.*fallback planner refused"):
        await svc.plan("juggle the cubes")
    await svc.aclose()


async def test_rules_only_service() -> None:
    rec = Recorder()
    svc = PlanningService.from_config(parse_config({}), recorder=rec)
    assert svc.planner is None and svc.deadline_s == 5.0
    res = await svc.plan(TASK)
    assert (res.source, res.degraded) == ("rules", False)
    assert (await svc.plan(TASK)).source == "cache"
    with pytest.raises(PlannerRefusal, match="negation"):
        await svc.plan("do not move")
    assert rec.snapshot()["llm"]["count"] == 3


async def test_config_deadline_and_knobs(server: ScriptedOpenAIServer) -> None:
    cfg = parse_config({"budgets": {"llm": {"deadline_s": 0.7}},
                        "llm": {"base_url": server.base_url, "model": "scripted",
                                "lighter_model": "scripted-small", "max_tokens": 256}})
    svc = PlanningService.from_config(cfg)
    assert svc.deadline_s == 0.7
    assert svc.knobs["model"].values == ("scripted", "scripted-small")
    svc.knobs["model"].set_index(1)
    svc.knobs["max_tokens"].set_index(2)
    svc.knobs["cache"].set_value(False)
    await svc.plan(TASK)
    await svc.plan(TASK)
    bodies = [r.body for r in server.chat_requests()]
    assert len(bodies) == 2  # cache off
    assert bodies[0]["model"] == "scripted-small" and bodies[0]["max_tokens"] == 64
    await svc.aclose()


def test_one_event_loop_per_call_works(server: ScriptedOpenAIServer) -> None:
    # asyncio.run(service.plan(...)) once per task: the SDK client is rebuilt for each new
    # loop instead of reusing connections that belong to a closed one.
    svc = make(server, cache=False)

    async def once() -> str:
        try:
            return (await svc.plan("go home")).source
        finally:
            await svc.aclose()

    assert [asyncio.run(once()) for _ in range(3)] == ["llm"] * 3


def test_plan_blocking_from_threads(server: ScriptedOpenAIServer) -> None:
    svc = make(server, cache=False)
    try:
        results = [svc.plan_blocking("go to the kitchen", priority=p) for p in (2, 1)]
        assert [r.source for r in results] == ["llm", "llm"]
        assert results[0].plan.summary() == "navigate(kitchen)"
    finally:
        svc.close()
    assert svc.close() is None  # idempotent


async def test_stats_reach_the_recorder(server: ScriptedOpenAIServer) -> None:
    server.script(Reply.valid(), Reply.invalid())
    rec = Recorder()
    svc = make(server, recorder=rec)
    await svc.plan(TASK)
    await svc.plan("go to the kitchen")  # invalid JSON -> fallback
    await svc.plan(TASK)  # cache hit
    row = rec.snapshot()["llm"]
    assert row["count"] == 3
    assert row["gauges"]["fallbacks"] == 1 and row["gauges"]["parse_errors"] == 1
    assert row["gauges"]["tokens"] > 0
    assert "queue_wait" in row["observed_ms"] and "llm_call" in row["observed_ms"]
    stats = svc.stats()
    assert stats["latency_ms"]["count"] == 3
    assert stats["knobs"]["model"] == "scripted"
    await svc.aclose()
