"""An openpi-compatible policy server: any :class:`~rtvla.policy.base.Policy` over websockets.

It behaves as openpi's ``WebsocketPolicyServer`` does, so openpi's clients work with it and
:class:`~rtvla.policy.websocket.WebsocketPolicy` works with openpi's servers: compression
off, no size limit, the metadata as the first (binary, msgpack) frame, one response per
request with ``server_timing`` (``infer_ms``, ``prev_total_ms``; here also ``delay_ms``),
``GET /healthz`` answered ``200 OK``, and on an error the traceback as a text frame followed
by close code 1011.

Beyond openpi: an optional API key (``Authorization: Api-Key <key>``, compared in constant
time; a request without it gets HTTP 401 and never reaches the policy; ``/healthz`` needs
none), ``delay_s`` that adds server-side latency to every answer (it stands for a larger
model's inference time in benchmarks), and inference in a worker thread so that the event
loop keeps answering health checks and pings while a model runs. Binds 127.0.0.1 unless
told otherwise.

Usage::

    with PolicyServer(OnnxPolicy("pick.onnx"), port=0) as server:   # a thread of its own
        client = WebsocketPolicy(server.url)
    PolicyServer(policy, host="0.0.0.0", port=8000).serve_forever()  # the CLI's way
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from rtvla.errors import ConfigError, PolicyServerError
from rtvla.policy import codec
from rtvla.policy.base import Policy, PolicyMetadata

__all__ = ["PolicyServer"]

logger = logging.getLogger(__name__)


class PolicyServer:
    """Serves ``policy`` over openpi's websocket protocol. See the module docstring.

    Args:
        policy: what answers; called from one worker thread at a time.
        host, port: where to listen (port 0: any free port, see :attr:`port`).
        api_key: required ``Api-Key`` (None: no authentication). Pass the key itself;
            the CLI reads it from the environment variable ``--api-key-env`` names.
        delay_s: server-side latency added to each answer.
        metadata: the first frame (default: ``policy.metadata.to_wire()``).
    """

    def __init__(self, policy: Policy, *, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None, delay_s: float = 0.0,
                 metadata: Mapping[str, Any] | None = None) -> None:
        if delay_s < 0:
            raise ConfigError(f"delay must be >= 0, got {delay_s * 1e3:g} ms")
        if not (0 <= int(port) <= 65535):
            raise ConfigError(f"port must be in [0, 65535], got {port}")
        if api_key is not None and not api_key:
            raise ConfigError("api_key must be a non-empty string or None")
        self.policy = policy
        self.host = host
        self._port = int(port)
        self._api_key = api_key
        self.delay_s = float(delay_s)
        self.metadata: dict[str, Any] = dict(metadata) if metadata is not None else \
            self._wire_metadata(policy.metadata)
        self._infer_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._on_ready: Callable[[PolicyServer], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.requests = 0
        self.errors = 0
        self.connections = 0
        self.refused = 0

    @staticmethod
    def _wire_metadata(meta: PolicyMetadata) -> dict[str, Any]:
        wire = meta.to_wire()
        wire.pop("providers", None)  # a detail of this host, not of the policy
        return wire

    # -- properties ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is not None:
            for sock in self._server.sockets:
                return int(sock.getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"ws://{host}:{self.port}"

    # -- websocket callbacks ---------------------------------------------------------------

    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._api_key is not None:
            got = request.headers.get("Authorization", "")
            want = f"Api-Key {self._api_key}"
            if not hmac.compare_digest(got.encode(), want.encode()):
                self.refused += 1
                logger.warning("policy server: refused a connection from %s (missing or wrong API key)",
                               connection.remote_address)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                          "missing or wrong 'Authorization: Api-Key <key>' header\n")
        return None

    def _run_policy(self, obs: Any) -> tuple[dict[str, Any], float]:
        with self._infer_lock:
            t0 = time.monotonic()
            out = self.policy.infer(obs)
            return out, time.monotonic() - t0

    async def _answer(self, websocket: Any, obs: Any, index: int) -> dict[str, Any]:
        """One answer (runs the policy off the event loop, then the configured delay).
        Subclasses (the scripted test server) override this to misbehave on purpose."""
        out, infer_s = await asyncio.to_thread(self._run_policy, obs)
        if not isinstance(out, dict):
            raise TypeError(f"policy returned {type(out).__name__}, not a dict")
        out = dict(out)
        timing = {"infer_ms": infer_s * 1e3}
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)  # stands for a larger model's inference time
            timing["delay_ms"] = self.delay_s * 1e3
        out["server_timing"] = timing
        return out

    async def _handler(self, websocket: Any) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.frames import CloseCode

        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        logger.info("policy server: connection from %s", websocket.remote_address)
        packer = codec.Packer()
        try:
            await websocket.send(packer.pack(self.metadata))
        except ConnectionClosed:
            return
        prev_total: float | None = None
        while True:
            try:
                msg = await websocket.recv()
                start = time.monotonic()
                if isinstance(msg, str):
                    raise TypeError("requests are binary msgpack frames, got a text frame")
                obs = codec.unpackb(msg)
                self.requests += 1
                out = await self._answer(websocket, obs, self.requests)
                if prev_total is not None:
                    out.setdefault("server_timing", {})["prev_total_ms"] = prev_total * 1e3
                await websocket.send(packer.pack(out))
                prev_total = time.monotonic() - start
            except ConnectionClosed:
                logger.info("policy server: connection from %s closed", websocket.remote_address)
                return
            except Exception:
                self.errors += 1
                text = traceback.format_exc()
                logger.warning("policy server: request failed, closing the connection:\n%s", text)
                try:
                    await websocket.send(text)
                    await websocket.close(code=CloseCode.INTERNAL_ERROR,
                                          reason="Internal server error. Traceback included in previous frame.")
                except ConnectionClosed:
                    pass
                return

    # -- lifecycle -------------------------------------------------------------------------

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        self._stopped = asyncio.Event()
        try:
            self._server = await serve(self._handler, self.host, self._port, compression=None,
                                       max_size=None, process_request=self._process_request)
        except OSError as exc:
            self._start_error = exc
            self._ready.set()
            return
        logger.info("policy server %s serving %s", self.url, self.metadata.get("name"))
        self._ready.set()
        if self._on_ready is not None:
            self._on_ready(self)
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            # A handler may be inside a long inference delay: cancel it rather than wait.
            for task in list(self._tasks):
                task.cancel()
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                logger.warning("policy server: connections still closing at shutdown")

    def start(self, timeout: float = 10.0) -> PolicyServer:
        """Serve from a daemon thread; returns once the port is bound."""
        if self._thread is not None:
            raise ConfigError("policy server already started")

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="policy-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise PolicyServerError(f"policy server on {self.host}:{self._port} did not start within {timeout} s")
        if self._start_error is not None:
            raise PolicyServerError(f"policy server cannot listen on {self.host}:{self._port}: "
                                    f"{self._start_error}") from self._start_error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; bounded by ``timeout``."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("policy server thread did not end within %.1f s", timeout)

    def serve_forever(self, on_ready: Callable[[PolicyServer], None] | None = None) -> None:
        """Serve on this thread until interrupted (Ctrl-C); ``on_ready`` is called once the
        port is bound (the CLI prints the URL from there)."""
        self._on_ready = on_ready
        asyncio.run(self._serve_main())

    async def _serve_main(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._serve()
        if self._start_error is not None:
            raise PolicyServerError(f"policy server cannot listen on {self.host}:{self._port}: "
                                    f"{self._start_error}")

    def __enter__(self) -> PolicyServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
