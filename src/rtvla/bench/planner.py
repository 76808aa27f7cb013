"""``rtvla bench planner``: what the planning service costs and whether it keeps its deadline.

Three measurements against a scripted OpenAI-compatible server on 127.0.0.1:

- cache-hit latency of ``PlanningService.plan`` (goal <= 50 us);
- the service's overhead over a direct call to the same server: for every request, the
  service's total latency minus the duration of the planner call it wrapped (measured
  around that very call), p50/p99 (goal <= 2 ms at p99); direct and service latencies are
  also measured side by side in alternation, for reference;
- deadline adherence with a hung server: the answer (the fallback's) must arrive by the
  deadline + 20 ms in every trial.

JSON: ``{"cache_hit_us": {"p50", "p99"}, "overhead_ms": {"p50", "p99"},
"hung_server_answer_s": {"max"}, "deadline_s"}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtvla.language import (
    LLMSettings,
    OpenAIPlanner,
    PlanContext,
    PlannerAnswer,
    PlanningService,
)
from rtvla.testing.openai_server import Reply, ScriptedOpenAIServer

__all__ = ["GOALS", "PlannerBench", "TimedPlanner", "bench_planner"]

TASK = "put the red cube in the blue bin"
GOALS = {"cache_hit_us_p99": 50.0, "overhead_ms_p99": 2.0, "hung_margin_s": 0.020}


class TimedPlanner:
    """Wraps a planner and records how long each of its calls took (the 'direct' time)."""

    def __init__(self, inner: OpenAIPlanner) -> None:
        self.inner = inner
        self.model = inner.model
        self.max_tokens = inner.max_tokens
        self.last_call_s = 0.0

    async def plan(self, instruction: str, context: PlanContext | None = None) -> Any:
        return (await self.plan_detailed(instruction, context)).plan

    async def plan_detailed(self, instruction: str, context: PlanContext | None = None) -> PlannerAnswer:
        t0 = time.perf_counter_ns()
        try:
            return await self.inner.plan_detailed(instruction, context)
        finally:
            self.last_call_s = (time.perf_counter_ns() - t0) / 1e9

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class PlannerBench:
    """Figures and raw samples of one run."""

    cache_hit_us: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)
    direct_ms: list[float] = field(default_factory=list)
    service_ms: list[float] = field(default_factory=list)
    hung_answer_s: list[float] = field(default_factory=list)
    hung_sources: list[str] = field(default_factory=list)
    deadline_s: float = 0.5

    @staticmethod
    def _pct(values: list[float], *qs: float) -> dict[str, float]:
        arr = np.asarray(values, dtype=float)
        if arr.size == 0:
            return {f"p{q:g}": float("nan") for q in qs}
        return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}

    def to_json(self) -> dict[str, Any]:
        """Exactly the issue's keys."""
        return {
            "cache_hit_us": self._pct(self.cache_hit_us, 50, 99),
            "overhead_ms": self._pct(self.overhead_ms, 50, 99),
            "hung_server_answer_s": {"max": max(self.hung_answer_s) if self.hung_answer_s else float("nan")},
            "deadline_s": self.deadline_s,
        }

    def side_by_side(self) -> dict[str, dict[str, float]]:
        return {"direct_ms": self._pct(self.direct_ms, 50, 99),
                "service_ms": self._pct(self.service_ms, 50, 99)}

    def goals(self) -> dict[str, bool]:
        j = self.to_json()
        return {
            "cache_hit_us_p99 <= 50": j["cache_hit_us"]["p99"] <= GOALS["cache_hit_us_p99"],
            "overhead_ms_p99 <= 2": j["overhead_ms"]["p99"] <= GOALS["overhead_ms_p99"],
            "hung answer <= deadline + 20 ms": j["hung_server_answer_s"]["max"]
            <= self.deadline_s + GOALS["hung_margin_s"],
        }


async def _bench(cache_trials: int, overhead_trials: int, hung_trials: int, deadline_s: float,
                 progress: Callable[[str, int], None]) -> PlannerBench:
    out = PlannerBench(deadline_s=deadline_s)
    ctx = PlanContext()
    with ScriptedOpenAIServer() as server:
        settings = LLMSettings(base_url=server.base_url, model="scripted")

        # 1. cache hits
        svc = PlanningService(OpenAIPlanner(settings), deadline_s=5.0)
        await svc.plan(TASK, ctx)
        for i in range(cache_trials):
            t0 = time.perf_counter_ns()
            res = await svc.plan(TASK, ctx)
            out.cache_hit_us.append((time.perf_counter_ns() - t0) / 1e3)
            if res.source != "cache":
                raise RuntimeError(f"cache-hit trial {i} was answered by {res.source}")
            if i % 200 == 0:
                progress("cache hits", 200)
        await svc.aclose()

        # 2. overhead over the same server: wrapped call vs whole request; and alternation
        timed = TimedPlanner(OpenAIPlanner(settings))
        wrapped = PlanningService(timed, cache=False, deadline_s=5.0)
        direct = OpenAIPlanner(settings)
        for _ in range(5):  # warm the connections
            await direct.plan_detailed(TASK, ctx)
            await wrapped.plan(TASK, ctx)
        for i in range(overhead_trials):
            t0 = time.perf_counter_ns()
            await direct.plan_detailed(TASK, ctx)
            out.direct_ms.append((time.perf_counter_ns() - t0) / 1e6)
            t0 = time.perf_counter_ns()
            res = await wrapped.plan(TASK, ctx)
            total = (time.perf_counter_ns() - t0) / 1e9
            if res.source != "llm":
                raise RuntimeError(f"overhead trial {i} was answered by {res.source}: {res.reason}")
            out.service_ms.append(total * 1e3)
            out.overhead_ms.append((total - timed.last_call_s) * 1e3)
            if i % 20 == 0:
                progress("overhead", 20)
        await wrapped.aclose()
        await direct.close()

    # 3. a hung server
    with ScriptedOpenAIServer(default=Reply.hang()) as hung:
        settings = LLMSettings(base_url=hung.base_url, model="scripted")
        svc = PlanningService(OpenAIPlanner(settings), deadline_s=deadline_s, max_retries=0)
        for _ in range(hung_trials):
            t0 = time.perf_counter_ns()
            res = await svc.plan(TASK, ctx)
            out.hung_answer_s.append((time.perf_counter_ns() - t0) / 1e9)
            out.hung_sources.append(res.source)
            progress("hung server", 1)
        await svc.aclose()
    return out


def bench_planner(*, cache_trials: int = 2000, overhead_trials: int = 200, hung_trials: int = 10,
                  deadline_s: float = 0.5,
                  progress: Callable[[str, int], None] | None = None) -> PlannerBench:
    """Run the three measurements; ``progress(stage, n)`` is called as work completes."""
    if cache_trials < 1 or overhead_trials < 1 or hung_trials < 1:
        raise ValueError("cache_trials, overhead_trials and hung_trials must be >= 1, got "
                         f"{cache_trials}, {overhead_trials}, {hung_trials}")
    if not deadline_s > 0:
        raise ValueError(f"deadline_s must be > 0, got {deadline_s}")
    return asyncio.run(_bench(cache_trials, overhead_trials, hung_trials, deadline_s,
                              progress or (lambda stage, n: None)))
