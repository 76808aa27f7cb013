"""A client for policy servers that speak openpi's websocket protocol (no openpi-client).

The protocol, as ``openpi_client.websocket_client_policy`` and openpi's
``serving/websocket_policy_server.py`` implement it: connect with compression off and no
message size limit (optionally ``Authorization: Api-Key <key>``); the server's first frame
is its metadata (msgpack, binary); then each request frame (the msgpack observation) gets one
response frame (the msgpack output: ``actions`` and whatever else the server adds, such as
``policy_timing`` and ``server_timing``). A *text* frame from the server is its error (a
traceback), after which it closes with code 1011.

What this client adds: a timeout per answer (after which the connection is dropped: a late
answer would pair with the next request), :class:`~rtvla.errors.PolicyServerError` for
every transport failure with the server's text, validated actions, measured round trips,
and :meth:`WebsocketPolicy.reconnect` with exponential backoff, waiting on an ``Event`` so
a stop interrupts it.

Usage::

    with WebsocketPolicy("ws://gpu-box:8000", api_key_env="OPENPI_API_KEY", rate_hz=15) as p:
        out = p.infer(observation)          # out["actions"]: [H, A]
        p.last_timing                       # {"round_trip_ms", "server_timing", ...}
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rtvla.errors import CodecError, ConfigError, PolicyError, PolicyOutputError, PolicyServerError
from rtvla.policy import codec
from rtvla.policy.base import PolicyMetadata, check_output
from rtvla.timing import MONOTONIC, Clock

__all__ = ["WebsocketOptions", "WebsocketPolicy"]

logger = logging.getLogger(__name__)


class WebsocketOptions(BaseModel):
    """Options of a ``ws://`` policy (``[policy.options]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    api_key_env: str | None = Field(default=None, description="env var holding the API key")
    timeout_s: float = Field(default=5.0, gt=0, description="longest wait for one answer")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    action_dim: int | None = Field(default=None, gt=0)
    horizon: int | None = Field(default=None, gt=0)
    rate_hz: float | None = Field(default=None, gt=0)
    proxy: str | None = Field(default=None, description="proxy URL; default: connect directly")


def _headers(api_key_env: str | None) -> dict[str, str] | None:
    if not api_key_env:
        return None
    key = os.environ.get(api_key_env)
    if not key:
        raise ConfigError(f"policy.options.api_key_env: environment variable {api_key_env!r} is not set or empty")
    return {"Authorization": f"Api-Key {key}"}


class WebsocketPolicy:
    """A :class:`~rtvla.policy.base.Policy` served over openpi's websocket protocol.

    Args:
        url: ``ws://host:port`` (or ``wss://``).
        api_key_env: name of the environment variable with the API key (never logged).
        timeout_s: longest wait for one answer; past it the connection is dropped and
            :class:`PolicyServerError` raised (call :meth:`reconnect`).
        action_dim, horizon, rate_hz: override (or supply) the server's metadata; an openpi
            server's metadata rarely has them, so unknown ones are learned from the first chunk.
        connect: connect now (default) or at the first :meth:`connect`/:meth:`reconnect`.
    """

    Options = WebsocketOptions

    def __init__(self, url: str, *, api_key_env: str | None = None, timeout_s: float = 5.0,
                 connect_timeout_s: float = 5.0, action_dim: int | None = None,
                 horizon: int | None = None, rate_hz: float | None = None, proxy: str | None = None,
                 connect: bool = True, clock: Clock = MONOTONIC) -> None:
        opts = WebsocketOptions(url=url, api_key_env=api_key_env, timeout_s=timeout_s,
                                connect_timeout_s=connect_timeout_s, action_dim=action_dim,
                                horizon=horizon, rate_hz=rate_hz, proxy=proxy)
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"policy url must start with ws:// or wss://, got {url!r}")
        self.options = opts
        self.url = url
        self.clock = clock
        self._ws: Any = None
        self._lock = threading.Lock()  # one request/response pair at a time
        self._packer = codec.Packer()
        self._metadata = PolicyMetadata(name=url, action_dim=action_dim, horizon=horizon, rate_hz=rate_hz)
        self.server_metadata: dict[str, Any] = {}
        self.round_trips_s: deque[float] = deque(maxlen=256)
        self.last_timing: dict[str, Any] = {}
        self.requests = 0
        self.failures = 0
        self.connects = 0
        if connect:
            self.connect()

    # -- connection ------------------------------------------------------------------------

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def connect(self) -> PolicyMetadata:
        """Open the connection and read the server's metadata (first frame)."""
        from websockets.exceptions import (
            InvalidHandshake,
            InvalidStatus,
            InvalidURI,
            WebSocketException,
        )
        from websockets.sync.client import connect

        self._drop()
        kwargs: dict[str, Any] = {"compression": None, "max_size": None,
                                  "additional_headers": _headers(self.options.api_key_env),
                                  "open_timeout": self.options.connect_timeout_s,
                                  # Closing must not wait long on a server that stopped answering.
                                  "close_timeout": 1.0}
        params = inspect.signature(connect).parameters
        if "proxy" in params:  # websockets >= 15 reads proxies from the environment by default
            kwargs["proxy"] = self.options.proxy
        if "legacy" in params:  # >= 17.1: a plain connection object that this class closes itself
            kwargs["legacy"] = True
        try:
            ws = connect(self.url, **kwargs)
        except InvalidURI as exc:
            raise ConfigError(f"policy url {self.url!r} is not a websocket URI: {exc}") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            why = " (API key missing or refused)" if status in (401, 403) else ""
            raise PolicyServerError(f"policy server {self.url} refused the connection: HTTP {status}{why}") from None
        except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
            raise PolicyServerError(f"cannot connect to policy server {self.url}: "
                                    f"{type(exc).__name__}: {exc}") from None
        try:
            first = self._recv(ws, self.options.connect_timeout_s, "its metadata")
            meta = codec.unpackb(first)
        except CodecError as exc:
            ws.close()
            raise PolicyServerError(f"policy server {self.url}: unreadable metadata: {exc}") from None
        except PolicyServerError:
            ws.close()
            raise
        if not isinstance(meta, dict):
            ws.close()
            raise PolicyServerError(f"policy server {self.url}: metadata must be a map, got {type(meta).__name__}")
        o = self.options
        try:
            # Options beat the server's metadata; what neither says is learned from the next
            # chunk again (the server may have restarted with another model).
            fresh = PolicyMetadata.from_wire(meta, name=str(meta.get("name", self.url))).with_overrides(
                action_dim=o.action_dim, horizon=o.horizon, rate_hz=o.rate_hz)
        except PolicyError as exc:
            ws.close()
            raise PolicyServerError(f"policy server {self.url}: {exc}") from None
        self._ws = ws
        self.server_metadata = meta
        self.connects += 1
        self._metadata = fresh
        logger.info("policy server %s connected (%s)", self.url, self._metadata.name)
        return self._metadata

    def reconnect(self, *, attempts: int = 5, backoff_s: float = 0.1, max_backoff_s: float = 2.0,
                  stop: threading.Event | None = None) -> PolicyMetadata:
        """Connect again, retrying with exponential backoff (``backoff_s`` doubling up to
        ``max_backoff_s``); ``stop`` set by another thread ends the wait at once. Raises the
        last :class:`PolicyServerError` when every attempt failed."""
        if attempts < 1:
            raise ConfigError(f"reconnect attempts must be >= 1, got {attempts}")
        stop = stop or threading.Event()
        delay = backoff_s
        last: PolicyServerError | None = None
        for i in range(attempts):
            try:
                return self.connect()
            except PolicyServerError as exc:
                last = exc
                logger.warning("policy server %s: reconnect attempt %d/%d failed: %s", self.url, i + 1,
                               attempts, exc)
            if i + 1 < attempts and stop.wait(delay):
                break
            delay = min(max_backoff_s, delay * 2)
        assert last is not None
        raise last

    def _recv(self, ws: Any, timeout: float, what: str) -> bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            msg = ws.recv(timeout=timeout)
        except TimeoutError:
            raise PolicyServerError(f"policy server {self.url} sent no {what} within {timeout:g} s; "
                                    "connection dropped (a late answer would pair with the next "
                                    "request); call reconnect()") from None
        except ConnectionClosed as exc:
            raise PolicyServerError(f"policy server {self.url} closed the connection before {what}: "
                                    f"{self._close_text(exc)}") from None
        if isinstance(msg, str):
            text = msg
            raise PolicyServerError(f"policy server {self.url} failed:\n{text.rstrip()}")
        return msg

    @staticmethod
    def _close_text(exc: Any) -> str:
        rcvd = getattr(exc, "rcvd", None)
        if rcvd is None:
            return "no close frame (connection lost)"
        code = int(rcvd.code)
        kind = "internal server error" if code == 1011 else "closed"
        return f"code {code} ({kind}){': ' + rcvd.reason if rcvd.reason else ''}"

    # -- inference -------------------------------------------------------------------------

    def infer(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """Send one observation, wait for its answer (at most ``timeout_s``), validate it.

        The output is the server's map as sent (``actions`` plus e.g. ``server_timing``);
        :attr:`last_timing` adds the measured round trip. Unknown horizon/action_dim are
        learned from the first valid chunk.
        """
        out = self.infer_unchecked(observation)
        actions = check_output(out, self._metadata, source=f"policy server {self.url}")
        if self._metadata.horizon is None or self._metadata.action_dim is None:
            self._metadata = self._metadata.with_overrides(
                horizon=self._metadata.horizon or actions.shape[0],
                action_dim=self._metadata.action_dim or actions.shape[1])
        return out

    def infer_unchecked(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`infer` without validating the answer (``rtvla policy info`` shows what a
        bad answer held); transport failures still raise."""
        from websockets.exceptions import ConnectionClosed

        data = codec.packb(dict(observation))  # CodecError for an unencodable observation
        with self._lock:
            ws = self._ws
            if ws is None:
                raise PolicyServerError(f"policy server {self.url}: not connected; call reconnect()")
            self.requests += 1
            t0 = self.clock.now_ns()
            try:
                ws.send(data)
                reply = self._recv(ws, self.options.timeout_s, "answer")
            except ConnectionClosed as exc:
                self.failures += 1
                self._drop()
                raise PolicyServerError(f"policy server {self.url} went away: {self._close_text(exc)}") from None
            except PolicyServerError:
                self.failures += 1
                self._drop()
                raise
            rtt = (self.clock.now_ns() - t0) / 1e9
        try:
            out = codec.unpackb(reply)
        except CodecError as exc:
            self.failures += 1
            raise PolicyOutputError(f"policy server {self.url}: unreadable answer: {exc}") from None
        self.round_trips_s.append(rtt)
        if not isinstance(out, dict):
            raise PolicyOutputError(f"policy server {self.url}: an answer is a map, got {type(out).__name__}")
        self.last_timing = {"round_trip_ms": rtt * 1e3,
                            **{k: v for k, v in out.items() if isinstance(k, str) and k.endswith("_timing")}}
        return out

    def round_trip_ms(self) -> dict[str, float]:
        """p50/p95/max of the recent round trips, in milliseconds."""
        if not self.round_trips_s:
            return {}
        arr = np.asarray(self.round_trips_s) * 1e3
        return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
                "max": float(arr.max()), "n": float(arr.size)}

    # -- teardown --------------------------------------------------------------------------

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception as exc:  # a half-dead socket: nothing more to tell it
                logger.debug("policy server %s: close failed: %s", self.url, exc)

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> WebsocketPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WebsocketPolicy({self.url!r}, {'connected' if self.connected else 'disconnected'})"
