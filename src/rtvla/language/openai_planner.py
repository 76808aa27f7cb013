"""A planner that asks any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, OpenAI).

It sends a structured prompt listing the robot's capabilities and the plan's JSON schema,
asks for ``response_format`` = json_schema where the server supports it and falls back to
plain JSON prompting when the server rejects it (remembered for this planner's server),
extracts the JSON from fenced or chatty answers and validates the plan. The transport is
one ``openai.AsyncOpenAI`` client, which tests point at a local scripted server.

Usage::

    planner = OpenAIPlanner(LLMSettings(base_url="http://127.0.0.1:8000/v1", model="qwen2.5"))
    answer = await planner.plan_detailed("put the red cube in the blue bin", PlanContext())
    answer.plan, answer.tokens
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import openai

from rtvla.errors import LLMServerError, PlannerTimeout, PlanParseError
from rtvla.language.extract import extract_json
from rtvla.language.schema import Plan, PlanContext, parse_plan, plan_json_schema
from rtvla.language.settings import LLMSettings

__all__ = ["PLACEHOLDER_API_KEY", "OpenAIPlanner", "Planner", "PlannerAnswer", "build_messages"]

logger = logging.getLogger(__name__)

#: Sent when the key's environment variable is unset: local servers ignore the key, but the
#: SDK insists on one.
PLACEHOLDER_API_KEY = "sk-no-key-required"


@runtime_checkable
class Planner(Protocol):
    """Anything that turns an instruction into a validated plan."""

    async def plan(self, instruction: str, context: PlanContext | None = None) -> Plan: ...


@dataclass(frozen=True)
class PlannerAnswer:
    """A plan with what the server reported about it."""

    plan: Plan
    tokens: int | None = None
    model: str | None = None
    structured: bool = False


_SYSTEM = (
    "You are the task planner of a mobile manipulator robot. Turn the user's instruction "
    "into a plan: a JSON object {\"actions\": [...], \"explanation\": \"...\"}. Each action is "
    "{\"type\": ..., \"parameters\": {...}, \"description\": \"...\"} with type one of:\n"
    "- navigate: {\"target\": PLACE} or {\"pose\": {\"x\", \"y\", \"yaw\"}}, optional \"max_speed\" (m/s)\n"
    "- perceive: {\"target\": OBJECT_OR_RECEPTACLE}\n"
    "- manipulate: {\"operation\": \"pick\"|\"place\", \"object\": OBJECT, \"destination\": "
    "RECEPTACLE_OR_PLACE (for place)}\n"
    "- communicate: {\"text\": TEXT}\n"
    "Rules: use only the names listed below. Navigate to the place an object is reached "
    "from before picking it, and to the destination's place before placing. Hold one object "
    "at a time. If the instruction is impossible or forbids an action, return a single "
    "communicate action explaining why. Answer with the JSON object only, no other text."
)


def build_messages(instruction: str, context: PlanContext,
                   *, with_schema: bool) -> list[dict[str, str]]:
    """The chat messages for one request (the schema is inlined when not sent separately)."""
    caps = context.capabilities
    lines = [
        "Places: " + ", ".join(caps.places),
        "Objects: " + ", ".join(f"{o} (at {caps.locations.get(o, '?')})" for o in caps.objects),
        "Receptacles: " + ", ".join(f"{r} (at {caps.locations.get(r, '?')})" for r in caps.receptacles),
        f"Max speed: {caps.max_speed} m/s. Workspace: x [{caps.workspace.x_min}, "
        f"{caps.workspace.x_max}], y [{caps.workspace.y_min}, {caps.workspace.y_max}] m.",
        f"Robot is at: {context.robot_place or 'unknown'}; holding: {context.holding or 'nothing'}.",
    ]
    if context.scene:
        lines.append("Scene: " + json.dumps(context.scene, sort_keys=True, default=str))
    if context.observations:
        seen = []
        for o in context.observations:
            pos = o.get("position")
            where = f" at ({pos[0]:.2f}, {pos[1]:.2f}, {pos[2]:.2f}) m" if pos else ""
            seen.append(f"{o.get('label')}{where}, {float(o.get('age_s', 0.0)):.1f} s ago")
        lines.append("Seen by the cameras: " + "; ".join(seen))
    if context.failure:
        lines.append(f"The previous plan failed: {context.failure}. Plan again from the current state.")
    if not with_schema:
        lines.append("JSON schema of the answer: " + json.dumps(plan_json_schema(caps)))
    lines.append(f"Instruction: {instruction}")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


class OpenAIPlanner:
    """Plans through an OpenAI-compatible chat-completions endpoint; see the module docstring.

    Args:
        settings: URL, model, temperature, max tokens, structured-output mode, key variable.
        client: an ``openai.AsyncOpenAI`` to use instead of building one (tests, proxies).
        http_client: an async HTTP client for the SDK to use (custom transports); its type is
            the one the installed SDK expects (``openai.DefaultAsyncHttpxClient``).
    """

    name = "llm"

    def __init__(self, settings: LLMSettings, *, client: openai.AsyncOpenAI | None = None,
                 http_client: Any = None) -> None:
        if client is None and not settings.base_url:
            raise LLMServerError("llm.base_url is not set: no server to plan with")
        self.settings = settings
        self.model = settings.model
        self.max_tokens = settings.max_tokens
        # None = not tried yet; False once the server rejected response_format.
        # The response_format this server accepts, found once: "json_schema" (structured
        # output), "json_object" (+ the schema), or "plain" JSON prompting. None: not known yet.
        self._format: str | None = "plain" if settings.structured_output == "off" else None
        self._http_client = http_client
        self._own_client = client is None
        self._client: openai.AsyncOpenAI | None = client
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The SDK client. One built here is rebuilt when the event loop changes, because its
        pooled connections belong to the loop that opened them (``asyncio.run`` per plan)."""
        loop = _running_loop()
        if self._own_client and (self._client is None or
                                 (loop is not None and loop is not self._client_loop)):
            key = os.environ.get(self.settings.api_key_env) or PLACEHOLDER_API_KEY
            timeout = openai.Timeout(60.0, connect=5.0)
            # Our own HTTP client, not the SDK's default: the default one schedules its own
            # close on whatever loop runs when it is garbage-collected, which fails for
            # connections of a loop that has ended.
            http = self._http_client or openai.DefaultAsyncHttpxClient(timeout=timeout)
            self._client = openai.AsyncOpenAI(
                base_url=self.settings.base_url, api_key=key, max_retries=0,
                timeout=timeout, http_client=http,
                default_headers=dict(self.settings.extra_headers) or None,
            )
            self._client_loop = loop
        assert self._client is not None
        return self._client

    @property
    def structured_supported(self) -> bool | None:
        """Whether the server accepted ``response_format`` (None until the first request)."""
        return None if self._format is None else self._format != "plain"

    @property
    def response_format(self) -> str | None:
        """``json_schema``, ``json_object`` or ``plain`` once known for this server."""
        return self._format

    async def plan(self, instruction: str, context: PlanContext | None = None) -> Plan:
        return (await self.plan_detailed(instruction, context)).plan

    async def plan_detailed(self, instruction: str,
                            context: PlanContext | None = None) -> PlannerAnswer:
        """Ask the server, parse and validate; raises LLMServerError, PlannerTimeout,
        PlanParseError or PlanValidationError."""
        ctx = context if context is not None else PlanContext()
        fmt = self._format or "json_schema"
        while True:
            try:
                response = await self._request(instruction, ctx, fmt)
                break
            except (openai.BadRequestError, openai.InternalServerError) as exc:
                # Servers without json_schema structured output answer 400 (older llama.cpp)
                # or 500 (some proxies); many accept json_object. Step down once per server,
                # and only to a format that then works.
                forced = self.settings.structured_output == "json_schema"
                # Only 400 and 500 can mean "format refused"; 502-504 are a server or gateway
                # that is unavailable (retried by the service), and a 500 to json_object too
                # is the server failing, not refusing a format.
                broken = exc.status_code > 500 or (exc.status_code == 500 and fmt != "json_schema")
                if fmt == "plain" or fmt == self._format or forced or broken:
                    raise LLMServerError(f"HTTP {exc.status_code} from {self.settings.base_url}: "
                                         f"{_short(exc)}") from None
                nxt = _FORMATS[_FORMATS.index(fmt) + 1]
                logger.info("server %s refused response_format %s (HTTP %s: %s); trying %s",
                            self.settings.base_url, fmt, exc.status_code, _short(exc), nxt)
                fmt = nxt
        self._format = fmt
        return self._parse(response, ctx, fmt != "plain")

    async def _request(self, instruction: str, ctx: PlanContext, fmt: str) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": build_messages(instruction, ctx, with_schema=fmt == "json_schema"),
            "temperature": self.settings.temperature,
            "max_tokens": self.max_tokens,
        }
        schema = plan_json_schema(ctx.capabilities)
        if fmt == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema", "json_schema": {"name": "robot_plan", "schema": schema}}
        elif fmt == "json_object":
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        try:
            return await self.client.chat.completions.create(**kwargs)
        except (openai.BadRequestError, openai.InternalServerError):
            raise  # plan_detailed steps down the response formats, or reports it
        except openai.APITimeoutError:
            raise PlannerTimeout(f"request to {self.settings.base_url} timed out") from None
        except openai.APIStatusError as exc:
            raise LLMServerError(
                f"HTTP {exc.status_code} from {self.settings.base_url}: {_short(exc)}"
            ) from None
        except openai.APIConnectionError as exc:
            raise LLMServerError(f"cannot reach {self.settings.base_url}: {exc}") from None
        except openai.APIResponseValidationError as exc:
            raise PlanParseError(f"malformed response from {self.settings.base_url}: {exc}") from None

    def _parse(self, response: Any, ctx: PlanContext, structured: bool) -> PlannerAnswer:
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise PlanParseError("the server's answer has no choices[0].message.content") from None
        if content is None:
            raise PlanParseError("the server's answer has empty content")
        data = extract_json(content)
        plan = parse_plan(data, ctx.capabilities, robot_place=ctx.robot_place, holding=ctx.holding)
        usage = getattr(response, "usage", None)
        tokens = getattr(usage, "total_tokens", None) if usage is not None else None
        return PlannerAnswer(plan=plan, tokens=tokens, model=getattr(response, "model", None),
                             structured=structured)

    async def close(self) -> None:
        if self._client is not None and (not self._own_client or
                                         self._client_loop is _running_loop()):
            await self._client.close()
        if self._own_client:
            self._client = None


_FORMATS = ("json_schema", "json_object", "plain")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _short(exc: openai.APIStatusError) -> str:
    body = getattr(exc, "body", None)
    text = json.dumps(body) if isinstance(body, (dict, list)) else str(body or exc.message)
    return text[:200]
