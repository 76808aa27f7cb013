"""The planning service: cache, priority queue, concurrency limit, deadline and fallback
around any planner (the reference chapter's OptimizedLLMSystem and LLMPerformanceMonitor).

Every answer is due within the deadline (the llm budget, 5 s by default) counted from
submission, queue wait included. When the primary planner times out, fails on the server,
answers with invalid JSON or with a plan that fails validation, the fallback planner (the
rule planner) answers instead, the result is marked degraded with the reason, and the late
request is cancelled. Retries happen only while the deadline leaves time for one.

Usage::

    service = PlanningService.from_config(cfg, recorder=recorder)
    result = await service.plan("put the red cube in the blue bin", PlanContext(), priority=1)
    result.plan, result.source, result.degraded, result.reason, result.latency_s
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rtvla.component import Component, Knob
from rtvla.config import Config
from rtvla.errors import (
    ConfigError,
    LLMServerError,
    PlannerRefusal,
    PlannerTimeout,
    PlanningError,
    PlanParseError,
    PlanValidationError,
)
from rtvla.language.cache import PlanCache, SemanticCache, cache_key
from rtvla.language.openai_planner import OpenAIPlanner, Planner, PlannerAnswer
from rtvla.language.rules import RulePlanner
from rtvla.language.schema import Capabilities, Plan, PlanContext, validate_plan
from rtvla.language.settings import DEFAULT_DEADLINE_S, LLMSettings
from rtvla.language.slots import PrioritySlots
from rtvla.metrics import Recorder
from rtvla.timing import MONOTONIC, Clock, Tick

__all__ = ["COMPONENT", "PlanResult", "PlanningService", "Source"]

logger = logging.getLogger(__name__)

COMPONENT = "llm"
Source = Literal["cache", "llm", "fallback", "rules"]

#: Time kept back from the deadline for the fallback planner to answer in.
FALLBACK_RESERVE_S = 0.01
#: A retry is started only if at least this much time (or the last attempt's duration) is left.
MIN_RETRY_S = 0.05


_GAUGES = ("cache_hit_rate", "cache_size", "queue_length", "in_flight", "tokens", "timeouts",
           "fallbacks", "validation_failures", "parse_errors", "server_errors", "retries",
           "refusals", "failures")


@dataclass(slots=True)
class PlanResult:
    """A validated plan and how it was obtained.

    ``source``: cache, llm (the primary planner), fallback (the fallback planner after the
    primary failed; then ``degraded`` is True and ``reason`` says why) or rules (no LLM is
    configured; the rule planner is the planner).
    """

    plan: Plan
    source: Source
    latency_s: float
    degraded: bool = False
    reason: str | None = None
    tokens: int | None = None
    queue_wait_s: float = 0.0
    attempts: int = 0
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["plan"] = self.plan.to_json()
        return out


@dataclass
class _Counters:
    requests: int = 0
    cache_hits: int = 0
    semantic_hits: int = 0
    cache_misses: int = 0
    llm_answers: int = 0
    rules_answers: int = 0
    fallbacks: int = 0
    timeouts: int = 0
    server_errors: int = 0
    parse_errors: int = 0
    validation_failures: int = 0
    refusals: int = 0
    retries: int = 0
    failures: int = 0
    tokens: int = 0


def _classify(exc: BaseException) -> str:
    if isinstance(exc, (PlannerTimeout, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, PlanParseError):
        return "invalid_json"
    if isinstance(exc, PlanValidationError):
        return "validation"
    if isinstance(exc, PlannerRefusal):
        return "refusal"
    if isinstance(exc, (LLMServerError, ConnectionError, OSError)):
        return "server_error"
    return "error"


class PlanningService(Component):
    """Cache + priority queue + concurrency limit + deadline + fallback around a planner.

    Args:
        planner: the primary planner (an :class:`OpenAIPlanner`, or any :class:`Planner`);
            None means no LLM: the fallback planner answers as the planner (source "rules").
        fallback: answers when the primary fails; None disables fallback (failures raise).
        recorder: where the "llm" figures go.
        deadline_s: answer deadline counted from submission (queue wait included).
        max_concurrent: requests in flight to the primary planner at once.
        cache / cache_size / cache_ttl_s: the exact LRU plan cache.
        semantic_cache / semantic_threshold: the embedding cache behind a flag.
        max_retries: further attempts after a failure, only while the deadline allows.
        lighter_model: offered to the adaptive optimizer through the ``model`` knob.
        capabilities: used when a request passes no context.
    """

    def __init__(
        self,
        planner: Planner | None = None,
        *,
        fallback: Planner | None = None,
        use_fallback: bool = True,
        recorder: Recorder | None = None,
        clock: Clock = MONOTONIC,
        deadline_s: float = DEFAULT_DEADLINE_S,
        max_concurrent: int = 3,
        cache: bool = True,
        cache_size: int = 128,
        cache_ttl_s: float = 600.0,
        semantic_cache: bool = False,
        semantic_threshold: float = 0.9,
        max_retries: int = 1,
        lighter_model: str | None = None,
        capabilities: Capabilities | None = None,
        warn_interval_s: float = 10.0,
    ) -> None:
        super().__init__(COMPONENT, recorder=recorder)
        if not deadline_s > 0:
            raise ConfigError(f"llm deadline_s must be > 0, got {deadline_s}")
        if max_retries < 0:
            raise ConfigError(f"llm.max_retries must be >= 0, got {max_retries}")
        self.clock = clock
        self.capabilities = capabilities or Capabilities.default()
        self.default_context = PlanContext(capabilities=self.capabilities)
        self.planner = planner
        self.fallback: Planner | None = (
            (fallback or RulePlanner(self.capabilities)) if use_fallback else None
        )
        if planner is None and self.fallback is None:
            raise ConfigError("PlanningService needs a planner or a fallback planner")
        self.deadline_s = float(deadline_s)
        self.max_retries = int(max_retries)
        self.slots = PrioritySlots(max_concurrent)
        self.cache_enabled = bool(cache)
        self.cache: PlanCache[PlanResult] = PlanCache(cache_size, cache_ttl_s, clock=clock)
        self.semantic: SemanticCache[PlanResult] | None = (
            SemanticCache(cache_size, cache_ttl_s, semantic_threshold, clock=clock)
            if semantic_cache else None
        )
        self.counters = _Counters()
        self.warn_interval_ns = int(warn_interval_s * 1e9)
        self._last_warn_ns: int | None = None
        self._suppressed = 0
        self._late: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()
        self._add_knobs(lighter_model, cache_size)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: LLMSettings, *, recorder: Recorder | None = None,
                      clock: Clock = MONOTONIC, capabilities: Capabilities | None = None,
                      deadline_s: float | None = None, planner: Planner | None = None,
                      ) -> PlanningService:
        """Build the service (and the OpenAI planner when ``base_url`` is set)."""
        if planner is None and settings.base_url:
            planner = OpenAIPlanner(settings)
        return cls(
            planner,
            use_fallback=settings.fallback == "rules",
            recorder=recorder,
            clock=clock,
            deadline_s=deadline_s or settings.deadline_s or DEFAULT_DEADLINE_S,
            max_concurrent=settings.max_concurrent,
            cache=settings.cache,
            cache_size=settings.cache_size,
            cache_ttl_s=settings.cache_ttl_s,
            semantic_cache=settings.semantic_cache,
            semantic_threshold=settings.semantic_threshold,
            max_retries=settings.max_retries,
            lighter_model=settings.lighter_model,
            capabilities=capabilities,
        )

    @classmethod
    def from_config(cls, cfg: Config, *, recorder: Recorder | None = None,
                    clock: Clock = MONOTONIC, capabilities: Capabilities | None = None,
                    ) -> PlanningService:
        """The service as ``[llm]`` and ``budgets.llm.deadline_s`` describe it."""
        settings = LLMSettings.from_config(cfg)
        return cls.from_settings(settings, recorder=recorder, clock=clock,
                                 capabilities=capabilities, deadline_s=settings.deadline(cfg))

    def _add_knobs(self, lighter_model: str | None, cache_size: int) -> None:
        model = getattr(self.planner, "model", None)
        if isinstance(model, str):
            models = (model, lighter_model) if lighter_model and lighter_model != model else (model,)
            self.add_knob(Knob("model", models, on_change=self._set_model))
        tokens = getattr(self.planner, "max_tokens", None)
        if isinstance(tokens, int):
            values = tuple(dict.fromkeys(max(16, tokens // d) for d in (1, 2, 4)))
            self.add_knob(Knob("max_tokens", values, on_change=self._set_max_tokens))
        # Cheaper is further right: a cache that is on, then larger.
        self.add_knob(Knob("cache", (False, True), index=1 if self.cache_enabled else 0,
                           on_change=self._set_cache))
        self.add_knob(Knob("cache_size", (cache_size, cache_size * 2, cache_size * 4),
                           on_change=self.cache.resize))

    def _set_model(self, model: str) -> None:
        self.planner.model = model  # type: ignore[union-attr]
        self.recorder.event(COMPONENT, "adapt", f"planner model -> {model}", model=model)

    def _set_max_tokens(self, tokens: int) -> None:
        self.planner.max_tokens = tokens  # type: ignore[union-attr]

    def _set_cache(self, on: bool) -> None:
        self.cache_enabled = bool(on)

    # -- the request path ------------------------------------------------------------------

    async def plan(self, instruction: str, context: PlanContext | None = None, *,
                   priority: int = 1, deadline_s: float | None = None) -> PlanResult:
        """A validated plan within the deadline. Raises :class:`PlannerRefusal` only when no
        planner could produce a valid plan (the fallback refused too)."""
        t0 = self.clock.now_ns()
        ctx = context if context is not None else self.default_context
        c = self.counters
        c.requests += 1
        key = None
        if self.cache_enabled:
            key = cache_key(instruction, ctx.digest)
            hit = self.cache.get(key)
            if hit is not None:
                c.cache_hits += 1
                return self._done(t0, hit.plan, "cache", tokens=0, model=hit.model)
            if self.semantic is not None:
                found = self.semantic.get(instruction, ctx.digest,
                                          ctx.capabilities.mentions(instruction))
                if found is not None:
                    c.semantic_hits += 1
                    return self._done(t0, found[0].plan, "cache", tokens=0, model=found[0].model)
            c.cache_misses += 1
        budget = deadline_s if deadline_s is not None else self.deadline_s
        try:
            if self.planner is None:
                result = await self._rules_only(t0, instruction, ctx)
            else:
                result = await self._with_deadline(t0, budget, instruction, ctx, priority)
        except PlanningError:
            self.publish_gauges()
            raise
        if key is not None and not result.degraded:
            self.cache.put(key, result)
            if self.semantic is not None:
                self.semantic.put(instruction, ctx.digest, ctx.capabilities.mentions(instruction), result)
        self.publish_gauges()
        return result

    async def _rules_only(self, t0: int, instruction: str, ctx: PlanContext) -> PlanResult:
        assert self.fallback is not None
        try:
            plan = await self.fallback.plan(instruction, ctx)
            validate_plan(plan, ctx.capabilities, robot_place=ctx.robot_place, holding=ctx.holding)
        except PlanningError:
            self.counters.refusals += 1
            self._record_latency(t0)
            raise
        self.counters.rules_answers += 1
        return self._done(t0, plan, "rules")

    async def _with_deadline(self, t0: int, budget: float, instruction: str, ctx: PlanContext,
                             priority: int) -> PlanResult:
        deadline_ns = t0 + int(budget * 1e9)
        info: dict[str, Any] = {"attempts": 0, "queue_wait_s": 0.0}
        task = asyncio.ensure_future(self._attempts(instruction, ctx, priority, deadline_ns, info))
        reserve = FALLBACK_RESERVE_S if self.fallback is not None else 0.0
        wait_s = max(0.0, (deadline_ns - self.clock.now_ns()) / 1e9 - reserve)
        done, _ = await asyncio.wait({task}, timeout=wait_s)
        if task in done and not task.cancelled() and task.exception() is None:
            answer: PlannerAnswer = task.result()
            self.counters.llm_answers += 1
            if answer.tokens:
                self.counters.tokens += answer.tokens
            return self._done(t0, answer.plan, "llm", tokens=answer.tokens, model=answer.model,
                              queue_wait_s=info["queue_wait_s"], attempts=info["attempts"])
        if task in done:
            exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
            kind = _classify(exc)  # type: ignore[arg-type]
            reason = f"{kind}: {exc}"
        else:
            # The late request is cancelled: its connection closes and its slot is released.
            task.cancel()
            self._late.add(task)
            task.add_done_callback(self._reap)
            self.counters.timeouts += 1
            where = "in the queue" if info["attempts"] == 0 else f"after {info['attempts']} attempt(s)"
            reason = f"timeout: no valid answer within {budget:.3g} s ({where})"
        return await self._fall_back(t0, instruction, ctx, reason, info)

    async def _attempts(self, instruction: str, ctx: PlanContext, priority: int,
                        deadline_ns: int, info: dict[str, Any]) -> PlannerAnswer:
        assert self.planner is not None
        q0 = self.clock.now_ns()
        self.recorder.gauge(COMPONENT, "queue_length", self.slots.queue_length + 1)
        await self.slots.acquire(priority)
        try:
            info["queue_wait_s"] = wait = (self.clock.now_ns() - q0) / 1e9
            self.recorder.observe(COMPONENT, "queue_wait", wait)
            self.recorder.gauge(COMPONENT, "queue_length", self.slots.queue_length)
            self.recorder.gauge(COMPONENT, "in_flight", self.slots.in_flight)
            while True:
                info["attempts"] += 1
                a0 = self.clock.now_ns()
                try:
                    answer = await self._call(instruction, ctx)
                    self.recorder.observe(COMPONENT, "llm_call", (self.clock.now_ns() - a0) / 1e9)
                    return answer
                except (PlanningError, ConnectionError, OSError) as exc:
                    took = (self.clock.now_ns() - a0) / 1e9
                    self.recorder.observe(COMPONENT, "llm_call", took)
                    self._count_failure(exc)
                    left = (deadline_ns - self.clock.now_ns()) / 1e9 - FALLBACK_RESERVE_S
                    if info["attempts"] > self.max_retries or left < max(MIN_RETRY_S, took):
                        raise
                    self.counters.retries += 1
                    logger.debug("llm attempt %d failed (%s); retrying with %.3f s left",
                                 info["attempts"], exc, left)
        finally:
            self.slots.release()
            self.recorder.gauge(COMPONENT, "in_flight", self.slots.in_flight)

    async def _call(self, instruction: str, ctx: PlanContext) -> PlannerAnswer:
        planner = self.planner
        detailed = getattr(planner, "plan_detailed", None)
        if detailed is not None:
            answer = await detailed(instruction, ctx)
        else:
            answer = PlannerAnswer(plan=await planner.plan(instruction, ctx))  # type: ignore[union-attr]
        # Whatever the planner claims, nothing unvalidated leaves the service.
        validate_plan(answer.plan, ctx.capabilities, robot_place=ctx.robot_place, holding=ctx.holding)
        return answer

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._late.discard(task)
        if not task.cancelled():
            task.exception()  # a late answer or error nobody waits for any more

    def _count_failure(self, exc: BaseException) -> None:
        kind = _classify(exc)
        c = self.counters
        if kind == "validation":
            c.validation_failures += 1
        elif kind == "invalid_json":
            c.parse_errors += 1
        elif kind == "server_error":
            c.server_errors += 1
        elif kind == "refusal":
            c.refusals += 1

    async def _fall_back(self, t0: int, instruction: str, ctx: PlanContext, reason: str,
                         info: dict[str, Any]) -> PlanResult:
        self.counters.fallbacks += 1
        if self.fallback is None:
            self.counters.failures += 1
            self._record_latency(t0)
            self.recorder.event(COMPONENT, "failed", reason, instruction=instruction)
            cls = PlannerTimeout if reason.startswith("timeout") else PlannerRefusal
            raise cls(f"planning failed and no fallback is configured: {reason}")
        try:
            plan = await self.fallback.plan(instruction, ctx)
            validate_plan(plan, ctx.capabilities, robot_place=ctx.robot_place, holding=ctx.holding)
        except PlanningError as exc:
            self.counters.failures += 1
            self._record_latency(t0)
            self.recorder.event(COMPONENT, "failed", f"{reason}; fallback refused: {exc}",
                                instruction=instruction)
            raise PlannerRefusal(f"{reason}; and the fallback planner refused: {exc}") from exc
        result = self._done(t0, plan, "fallback", degraded=True, reason=reason,
                            queue_wait_s=info["queue_wait_s"], attempts=info["attempts"])
        self.recorder.event(COMPONENT, "degraded", reason, instruction=instruction,
                            latency_s=result.latency_s)
        self._warn(reason)
        return result

    def _record_latency(self, t0: int) -> float:
        latency = (self.clock.now_ns() - t0) / 1e9
        self.recorder.latency(COMPONENT, latency)
        self.recorder.count(COMPONENT)
        return latency

    def _done(self, t0: int, plan: Plan, source: Source, *, degraded: bool = False,
              reason: str | None = None, tokens: int | None = None, model: str | None = None,
              queue_wait_s: float = 0.0, attempts: int = 0) -> PlanResult:
        latency = self._record_latency(t0)
        return PlanResult(plan, source, latency, degraded, reason, tokens, queue_wait_s,
                          attempts, model)

    def _warn(self, reason: str) -> None:
        now = self.clock.now_ns()
        if self._last_warn_ns is not None and now - self._last_warn_ns < self.warn_interval_ns:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        self._last_warn_ns, self._suppressed = now, 0
        logger.warning("llm answer degraded, fallback planner used: %s%s", reason, more)

    # -- stats, housekeeping, shutdown -----------------------------------------------------

    def _figures(self) -> dict[str, Any]:
        c = self.counters
        lookups = c.cache_hits + c.semantic_hits + c.cache_misses
        return {
            **asdict(c),
            "cache_hit_rate": (c.cache_hits + c.semantic_hits) / lookups if lookups else 0.0,
            "cache_size": len(self.cache),
            "queue_length": self.slots.queue_length,
            "in_flight": self.slots.in_flight,
            "max_in_flight": self.slots.max_in_flight,
        }

    def stats(self) -> dict[str, Any]:
        """Counters, latency percentiles (from the Recorder), cache figures and knobs."""
        row = self.recorder.snapshot().get(COMPONENT, {})
        return {
            **super().stats(),
            **self._figures(),
            "latency_ms": row.get("latency_ms", {}),
            "deadline_s": self.deadline_s,
        }

    def publish_gauges(self) -> None:
        """Push the counters to the Recorder as "llm" gauges (after every non-cached answer)."""
        figures = self._figures()
        for name in _GAUGES:
            self.recorder.gauge(COMPONENT, name, float(figures[name]))

    def step(self, tick: Tick) -> bool:
        """Housekeeping when scheduled periodically: drop expired cache entries, push gauges."""
        self.cache.purge_expired()
        self.publish_gauges()
        return True

    # -- blocking use from threads ---------------------------------------------------------

    def plan_blocking(self, instruction: str, context: PlanContext | None = None, *,
                      priority: int = 1, deadline_s: float | None = None,
                      timeout_s: float | None = None) -> PlanResult:
        """:meth:`plan` from synchronous code (any thread): runs on the service's own event
        loop thread, started on first use and stopped by :meth:`close`."""
        loop = self._ensure_loop()
        fut = asyncio.run_coroutine_threadsafe(
            self.plan(instruction, context, priority=priority, deadline_s=deadline_s), loop)
        budget = deadline_s if deadline_s is not None else self.deadline_s
        return fut.result(timeout=timeout_s if timeout_s is not None else budget + 5.0)

    def open(self) -> None:
        """Start the service's loop thread now (a stack starts it with everything else, so
        that nothing is created lazily during the first task)."""
        self._ensure_loop()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="rtvla-planning",
                                          daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Close the client and stop the service's loop thread (if :meth:`plan_blocking`
        started one)."""
        with self._loop_lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=5.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5.0)
            loop.close()

    def teardown(self) -> None:
        """Component hook: stop the loop thread of :meth:`plan_blocking` and close the client."""
        self.close()

    async def aclose(self) -> None:
        """Cancel late requests still unwinding and close the planner's client."""
        for task in list(self._late):
            task.cancel()
        if self._late:
            await asyncio.gather(*self._late, return_exceptions=True)
        close = getattr(self.planner, "close", None)
        if close is not None:
            await close()
        self.publish_gauges()
