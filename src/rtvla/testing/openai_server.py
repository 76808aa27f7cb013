"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

It speaks ``POST /v1/chat/completions`` and ``GET /v1/models``. Each request takes the next
scripted :class:`Reply` (or the default one): a valid plan, the plan fenced in markdown,
chatty text with the JSON inside, invalid JSON, the wrong schema, an HTTP error, a slow
answer, or a hang that never answers until the client gives up or the server shuts down.
``reject_json_schema=500`` answers that status to ``response_format`` of type
``json_schema`` only (some servers answer 500 there and accept ``json_object``).
``reject_response_format=True`` makes it answer 400 to any request carrying
``response_format``, like servers without structured output. It records every request and
the highest number of requests in flight at once.

Usage::

    with ScriptedOpenAIServer() as server:
        server.script(Reply.hang(), Reply.valid())
        planner = OpenAIPlanner(LLMSettings(base_url=server.base_url, model="scripted"))
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rtvla.errors import PlannerRefusal
from rtvla.language.rules import RulePlanner
from rtvla.language.schema import Capabilities

__all__ = ["RecordedRequest", "Reply", "ScriptedOpenAIServer"]

logger = logging.getLogger(__name__)

_KINDS = ("valid", "fenced", "chatty", "invalid", "wrong_schema", "error", "slow", "hang")


@dataclass(frozen=True)
class Reply:
    """One scripted behaviour. ``plan`` (a dict) overrides the plan the server would make
    from the instruction; ``delay_s`` delays any reply; ``status`` is for ``error``."""

    kind: str = "valid"
    plan: dict[str, Any] | None = None
    delay_s: float = 0.0
    status: int = 500
    text: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Reply.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.delay_s < 0:
            raise ValueError(f"Reply.delay_s must be >= 0, got {self.delay_s}")

    @classmethod
    def valid(cls, plan: dict[str, Any] | None = None) -> Reply:
        return cls("valid", plan)

    @classmethod
    def fenced(cls, plan: dict[str, Any] | None = None) -> Reply:
        return cls("fenced", plan)

    @classmethod
    def chatty(cls, plan: dict[str, Any] | None = None) -> Reply:
        return cls("chatty", plan)

    @classmethod
    def invalid(cls) -> Reply:
        return cls("invalid")

    @classmethod
    def wrong_schema(cls) -> Reply:
        return cls("wrong_schema")

    @classmethod
    def error(cls, status: int = 500) -> Reply:
        return cls("error", status=status)

    @classmethod
    def slow(cls, delay_s: float, plan: dict[str, Any] | None = None) -> Reply:
        return cls("slow", plan, delay_s=delay_s)

    @classmethod
    def hang(cls) -> Reply:
        return cls("hang")


@dataclass
class RecordedRequest:
    """What the server saw: path, parsed body, arrival time, and how it ended."""

    path: str
    body: dict[str, Any]
    arrived: float
    reply: str = ""
    outcome: str = "pending"  # answered | client_gone | shutdown
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def instruction(self) -> str | None:
        for msg in reversed(self.body.get("messages", [])):
            for line in str(msg.get("content", "")).splitlines():
                if line.startswith("Instruction: "):
                    return line[len("Instruction: "):]
        return None


def _rules_plan(capabilities: Capabilities) -> Callable[[str | None], dict[str, Any]]:
    rules = RulePlanner(capabilities)

    def make(instruction: str | None) -> dict[str, Any]:
        try:
            plan = rules.plan_sync(instruction or "")
        except PlannerRefusal as exc:
            return {"actions": [{"type": "communicate", "parameters": {"text": f"I cannot: {exc}"},
                                 "description": "explain the refusal"}]}
        return plan.to_json()

    return make


class ScriptedOpenAIServer:
    """See the module docstring. A context manager; ``start()``/``stop()`` also work.

    Args:
        default: the reply when the script is empty.
        reject_response_format: answer 400 to requests carrying ``response_format``.
        reject_json_schema: answer this HTTP status to ``response_format`` type ``json_schema``.
        models: the names ``/v1/models`` lists.
        plan_for: instruction -> plan dict for replies without a fixed plan (default: the
            rule planner's plan, so the server behaves like a competent model).
    """

    def __init__(self, *, default: Reply | None = None, reject_response_format: bool = False,
                 reject_json_schema: int | None = None,
                 models: tuple[str, ...] = ("scripted", "scripted-small"),
                 plan_for: Callable[[str | None], dict[str, Any]] | None = None,
                 capabilities: Capabilities | None = None) -> None:
        self.default = default or Reply.valid()
        self.reject_response_format = reject_response_format
        self.reject_json_schema = reject_json_schema
        self.models = models
        self.plan_for = plan_for or _rules_plan(capabilities or Capabilities.default())
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        # Re-entrant: wait_for's predicate may call chat_requests() under the condition.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies, used one per chat request in order."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.max_in_flight = self.in_flight

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._stop.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="scripted-openai-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[ScriptedOpenAIServer], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds (checked on every state change) or timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # -- used by the handler -------------------------------------------------------------------

    def _begin(self, rec: RecordedRequest) -> Reply:
        with self._changed:
            self.requests.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            reply = self._script.popleft() if self._script else self.default
            rec.reply = reply.kind
            self._changed.notify_all()
            return reply

    def _end(self, rec: RecordedRequest, outcome: str) -> None:
        with self._changed:
            rec.outcome = outcome
            self.in_flight -= 1
            self._changed.notify_all()


def _completion(model: str, content: str) -> dict[str, Any]:
    prompt_tokens, completion_tokens = 120, max(1, len(content) // 4)
    return {
        "id": f"chatcmpl-{int(time.monotonic_ns())}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class _Handler(BaseHTTPRequestHandler):
    owner: ScriptedOpenAIServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to some answers.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("scripted server: " + format, *args)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _client_gone(self) -> bool:
        """True when the client closed its end (the request was cancelled)."""
        sock: socket.socket = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _wait(self, seconds: float | None) -> str | None:
        """Wait ``seconds`` (forever when None) unless the client leaves or the server stops."""
        end = None if seconds is None else time.monotonic() + seconds
        stop = self.owner._stop
        while True:
            left = 0.01 if end is None else min(0.01, end - time.monotonic())
            if left <= 0:
                return None
            if stop.wait(left):
                return "shutdown"
            if self._client_gone():
                return "client_gone"

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "owned_by": "rtvla"} for m in self.owner.models]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "request body is not JSON"}})
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        owner = self.owner
        rec = RecordedRequest(self.path, body, time.monotonic())
        reply = owner._begin(rec)
        outcome = "answered"
        try:
            fmt = body.get("response_format") or {}
            if owner.reject_json_schema and fmt.get("type") == "json_schema":
                rec.reply = "reject_json_schema"
                self._send(owner.reject_json_schema, {"error": {"message": "json_schema is not supported",
                                                               "type": "server_error"}})
                return
            if owner.reject_response_format and "response_format" in body:
                rec.reply = "reject_response_format"
                self._send(400, {"error": {"message": "response_format is not supported",
                                           "type": "invalid_request_error"}})
                return
            delay: float | None = reply.delay_s
            if reply.kind == "hang":
                delay = None
            if delay is None or delay > 0:
                gone = self._wait(delay)
                if gone is not None:
                    outcome = gone
                    return
            if reply.kind == "error":
                self._send(reply.status, {"error": {"message": "scripted server error",
                                                    "type": "server_error"}})
                return
            plan = reply.plan if reply.plan is not None else owner.plan_for(rec.instruction)
            text = json.dumps(plan)
            content = {
                "valid": text,
                "slow": text,
                "fenced": f"Here is the plan:\n```json\n{json.dumps(plan, indent=2)}\n```\n",
                "chatty": f"Sure! I thought about it carefully. {text} Let me know if you need more.",
                "invalid": '{"actions": [{"type": "navigate", "parameters": {"target": "tab',
                "wrong_schema": json.dumps({"steps": ["walk", "grab"], "ok": True}),
            }[reply.kind]
            if reply.text is not None:
                content = reply.text
            self._send(200, _completion(str(body.get("model", "scripted")), content))
        except (BrokenPipeError, ConnectionResetError):
            outcome = "client_gone"
        finally:
            owner._end(rec, outcome)
