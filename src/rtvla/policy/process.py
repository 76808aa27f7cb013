"""A policy in its own process: requests in and chunks out through shared memory.

Inference never runs on a control loop's thread (nor in its process: a model holding the
GIL would delay the loop's wake-ups). :class:`PolicyProcess` ``spawn``-s a child that opens
the policy (from a source string and options, or a picklable factory) and serves requests
through two latest-value :class:`~rtvla.channels.shm.SharedArrayChannel` s, laid out in
:mod:`rtvla.policy.chunk_channel`: *requests* (the newest observation, tick and stamp;
its sequence number is the request id) and *chunks* (header and ``[H, A]`` actions). Any
process can attach to the chunks from :attr:`PolicyProcess.chunk_spec` (the control process
does) and read them with :class:`~rtvla.policy.chunk_channel.ChunkReader`.

A remote policy (``ws://``) that fails with :class:`~rtvla.errors.PolicyServerError` gets an
error chunk for that request and is reconnected with backoff before the next one; the
parent counts errors and reconnections (:meth:`PolicyProcess.stats`).

Nothing user-supplied is pickled: the control pipes carry msgpack bytes; only the source
string, its options and a factory reference travel as ``Process`` arguments. The child ignores
SIGINT (the parent decides when it stops), sees its parent's death as EOF on the command
pipe and exits; :meth:`PolicyProcess.stop` is bounded (ask, wait, terminate, kill).

*Context*: what an observation needs beyond what the requester has (the control process
has the robot's state; camera images, a perceived target and the prompt live in the main
process). :meth:`PolicyProcess.set_context` publishes them to a third latest-value channel;
the child merges the newest context under each request's observation (the request's keys
win), so images never pass through the control process.

One requester at a time: publishers in different processes must take turns (the channel's
rule), so the process that triggers requests (the owner, or the control process through a
:class:`~rtvla.policy.chunk_channel.RequestWriter`) is the only one that calls ``request``.

Usage::

    with PolicyProcess("builtin:pick") as proc:          # metadata known once started
        rid = proc.request(observation, tick=t)
        chunk = proc.wait_chunk(rid, timeout=1.0)       # PolicyChunk or None
        chunk.actions                                   # [H, A] float64, validated
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rtvla.channels.shm import SharedArrayChannel, ShmSpec
from rtvla.errors import ConfigError, PolicyError, PolicyServerError
from rtvla.policy import codec
from rtvla.policy.base import PolicyMetadata, check_output
from rtvla.policy.chunk_channel import (
    LEN_BYTES,
    ChunkLayout,
    PolicyChunk,
    decode_request,
    encode_request,
    request_room,
    spec_from_wire,
    spec_to_wire,
)
from rtvla.timing import MONOTONIC, Clock, RealtimeSettings, apply_realtime

__all__ = ["PolicyProcess"]

logger = logging.getLogger(__name__)


def _send(conn: Any, kind: str, payload: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        conn.send_bytes(codec.packb({"kind": kind, "payload": payload}))


def _child_main(source: str | Callable[[], Any], options: dict[str, Any], cmd_conn: Any,
                event_conn: Any, ppid: int, start_timeout_s: float, cpus: list[int] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the policy stops
    code = 0
    policy = req_ch = chunk_ch = ctx_ch = None
    try:
        # Before the model loads, so its thread pools start on these CPUs (away from the
        # control loop's CPU).
        realtime = apply_realtime(RealtimeSettings(cpus=cpus)) if cpus else {}
        if isinstance(source, str):
            from rtvla.policy.sources import open_policy

            policy = open_policy(source, options)
        else:
            policy = source(**options)
        meta = policy.metadata
        _send(event_conn, "ready", {"metadata": meta.model_dump(mode="json"), "pid": os.getpid(),
                                    "realtime": realtime})
        if not cmd_conn.poll(start_timeout_s):
            raise PolicyError("no channel specs from the parent")
        msg = codec.unpackb(cmd_conn.recv_bytes())
        if msg.get("kind") != "channels":
            return
        req_ch = SharedArrayChannel.attach(spec_from_wire(msg["payload"]["requests"]))
        chunk_ch = SharedArrayChannel.attach(spec_from_wire(msg["payload"]["chunks"]))
        ctx_ch = SharedArrayChannel.attach(spec_from_wire(msg["payload"]["context"]))
        layout = ChunkLayout(int(msg["payload"]["horizon"]), int(msg["payload"]["action_dim"]))
        meta = meta.with_overrides(horizon=layout.horizon, action_dim=layout.action_dim)
        stop = threading.Event()

        def watch() -> None:
            # A message asks to stop; EOF means the parent is gone: stop either way.
            try:
                cmd_conn.recv_bytes()
            except (EOFError, OSError, ValueError):
                logger.error("policy process: parent %d died; exiting", ppid)
            stop.set()
            req_ch.close()  # wakes the main loop's wait at once

        threading.Thread(target=watch, name="policy-watch", daemon=True).start()
        out = np.zeros(layout.size, np.float64)
        clock = MONOTONIC
        seq = 0
        ctx_seq = 0
        context: dict[str, Any] = {}
        while not stop.is_set():
            # A view, not a copy of the whole channel: only the payload is copied, once.
            sample = req_ch.wait_newer(seq, None, copy=False)
            if sample is None:
                break
            seq = sample.seq
            tick = stamp = 0
            t0 = clock.now_ns()
            try:
                req = decode_request(sample.value)
                if not req_ch.still_valid(sample):
                    continue  # overwritten while being read: newer requests exist, serve the newest
                tick, stamp = int(req.get("tick", 0)), int(req.get("stamp_ns", 0))
                if ctx_ch.seq != ctx_seq:
                    ctx_sample = ctx_ch.latest()
                    if ctx_sample is not None:
                        ctx_seq = ctx_sample.seq
                        context = dict(decode_request(ctx_sample.value)["observation"])
                obs = {**context, **req["observation"]} if context else req["observation"]
                t0 = clock.now_ns()
                actions: np.ndarray | None = check_output(policy.infer(obs), meta, source=meta.name)
            except Exception as exc:  # reported to the parent; the process keeps serving
                actions = None
                _send(event_conn, "error", {"request_id": seq, "error": f"{type(exc).__name__}: {exc}"})
                lost = exc
            else:
                lost = None
            done = clock.now_ns()
            chunk_ch.publish(layout.pack(out, request_id=seq, tick=tick, request_ns=stamp, done_ns=done,
                                         infer_ns=done - t0, actions=actions))
            if isinstance(lost, PolicyServerError) and hasattr(policy, "reconnect"):
                # A remote policy went away: reconnect with backoff before the next request
                # (the error chunk above already told the scheduler to cope meanwhile).
                try:
                    policy.reconnect(stop=stop)
                    _send(event_conn, "reconnected", {"request_id": seq})
                except PolicyServerError as exc:
                    _send(event_conn, "error", {"request_id": seq, "error": f"reconnect failed: {exc}"})
    except BaseException as exc:
        _send(event_conn, "fatal", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        code = 1
    finally:
        for ch in (req_ch, chunk_ch, ctx_ch):
            if ch is not None:
                ch.close()
        if policy is not None:
            with contextlib.suppress(Exception):
                policy.close()
        with contextlib.suppress(OSError):
            event_conn.close()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)  # a policy process whose parent died must be gone at once


class PolicyProcess:
    """Runs a policy in a ``spawn``-ed child process. See the module docstring.

    Args:
        source: a source string for :func:`~rtvla.policy.sources.open_policy` (``builtin:pick``,
            a ``.onnx`` path ...) or a picklable factory called with ``options``.
        options: the backend's options.
        max_request_bytes: room for one encoded observation (default: from the policy's
            observation spec, at least 1 MiB).
        start_timeout_s: how long the child may take to import and open the policy.
        stop_timeout_s: how long :meth:`stop` waits before terminating the child.
        cpus: CPU affinity of the child (keep it off the control loop's CPU); None: any.
    """

    def __init__(self, source: str | Callable[..., Any], options: Mapping[str, Any] | None = None, *,
                 name: str = "policy", max_request_bytes: int | None = None,
                 start_timeout_s: float = 60.0, stop_timeout_s: float = 2.0,
                 cpus: list[int] | None = None, clock: Clock = MONOTONIC) -> None:
        if max_request_bytes is not None and max_request_bytes < 1024:
            raise ConfigError(f"max_request_bytes must be >= 1024, got {max_request_bytes}")
        self.source = source
        self.options = dict(options or {})
        self.name = name
        self.max_request_bytes = max_request_bytes
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.cpus = list(cpus) if cpus else None
        self.realtime: dict[str, str] = {}
        self.clock = clock
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._cmd_w: Any = None
        self._events: Any = None
        self._requests: SharedArrayChannel | None = None
        self._chunks: SharedArrayChannel | None = None
        self._context: SharedArrayChannel | None = None
        self._context_buf: np.ndarray | None = None
        self._writer_buf: np.ndarray | None = None
        self._metadata: PolicyMetadata | None = None
        self.layout: ChunkLayout | None = None
        self.errors: dict[int, str] = {}  # request id -> error text (the latest 256)
        self.error_count = 0
        self.reconnects = 0
        self.fatal: str | None = None
        self.pid: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PolicyMetadata:
        """Spawn the child, wait for its policy's metadata, create and hand over the channels."""
        if self._proc is not None:
            raise PolicyError(f"{self.name}: policy process already started")
        cmd_r, cmd_w = self._ctx.Pipe(duplex=False)
        ev_r, ev_w = self._ctx.Pipe(duplex=False)
        self._cmd_w, self._events = cmd_w, ev_r
        self._proc = self._ctx.Process(
            target=_child_main, args=(self.source, self.options, cmd_r, ev_w, os.getpid(), self.start_timeout_s,
                                      self.cpus),
            name=f"rtvla-{self.name}", daemon=True)
        self._proc.start()
        cmd_r.close()  # only the child holds the read end: EOF there means we are gone
        ev_w.close()
        try:
            msg = self._next_event(self.start_timeout_s)
            if msg is None:
                raise PolicyError(f"{self.name}: policy process did not report ready within {self.start_timeout_s} s")
            if msg["kind"] != "ready":
                raise PolicyError(f"{self.name}: policy process failed to start: {msg['payload']}")
            meta = PolicyMetadata.model_validate(msg["payload"]["metadata"])
            self.pid = int(msg["payload"]["pid"])
            self.realtime = dict(msg["payload"].get("realtime") or {})
            if meta.horizon is None or meta.action_dim is None:
                raise PolicyError(f"{self.name}: the policy's horizon and action_dim must be known to size "
                                  f"its chunk channel (got {meta.horizon} x {meta.action_dim}); set them in options")
            self.layout = ChunkLayout(meta.horizon, meta.action_dim)
            size = self.max_request_bytes or request_room(meta)
            self._requests = SharedArrayChannel.create(f"{self.name}-requests", (size + LEN_BYTES,), np.uint8)
            self._chunks = SharedArrayChannel.create(f"{self.name}-chunks", (self.layout.size,), np.float64)
            self._context = SharedArrayChannel.create(f"{self.name}-context", (size + LEN_BYTES,), np.uint8)
            self._writer_buf = np.zeros(self._requests.shape, np.uint8)
            self._context_buf = np.zeros(self._context.shape, np.uint8)
            cmd_w.send_bytes(codec.packb({"kind": "channels", "payload": {
                "requests": spec_to_wire(self._requests.spec), "chunks": spec_to_wire(self._chunks.spec),
                "context": spec_to_wire(self._context.spec),
                "horizon": meta.horizon, "action_dim": meta.action_dim}}))
        except BaseException:
            self._kill()
            raise
        self._metadata = meta
        logger.info("%s: policy process %s serving %s (%d x %d)", self.name, self.pid, meta.name,
                    meta.horizon, meta.action_dim)
        return meta

    def _next_event(self, timeout: float | None) -> dict[str, Any] | None:
        ev = self._events
        if ev is None:
            return None
        try:
            if not ev.poll(timeout):
                return None
            return codec.unpackb(ev.recv_bytes())
        except (EOFError, OSError):
            if self._proc is not None:
                self._proc.join(1.0)  # EOF comes as it exits: let the exit code settle
            return {"kind": "fatal", "payload": f"policy process exited ({self._exit_text()})"}

    def _drain_events(self) -> None:
        while True:
            msg = self._next_event(0)
            if msg is None:
                return
            if msg["kind"] == "error":
                self.error_count += 1
                self.errors[int(msg["payload"]["request_id"])] = str(msg["payload"]["error"])
                if len(self.errors) > 256:
                    self.errors.pop(next(iter(self.errors)))
            elif msg["kind"] == "reconnected":
                self.reconnects += 1
            elif msg["kind"] == "fatal":
                self.fatal = str(msg["payload"])
                self._events = None
                return

    def _exit_text(self) -> str:
        code = None if self._proc is None else self._proc.exitcode
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def stop(self, timeout: float | None = None) -> None:
        """Ask the child to stop, wait at most ``timeout``, then terminate and kill; free shm."""
        if self._proc is None:
            return
        timeout = self.stop_timeout_s if timeout is None else timeout
        if self._cmd_w is not None:
            with contextlib.suppress(OSError, ValueError):
                self._cmd_w.send_bytes(codec.packb({"kind": "stop"}))
        self._proc.join(timeout)
        self._kill()

    def _kill(self, grace_s: float = 1.0) -> None:
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(grace_s)
            if proc.is_alive():
                proc.kill()
                proc.join(grace_s)
        for attr in ("_requests", "_chunks", "_context"):
            ch = getattr(self, attr)
            if ch is not None:
                ch.close()
                ch.unlink()
                setattr(self, attr, None)
        for attr in ("_cmd_w", "_events"):
            conn = getattr(self, attr)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()
                setattr(self, attr, None)

    def stats(self) -> dict[str, Any]:
        """Counts for the run report: failed requests, reconnections, how the child ended."""
        self._drain_events()
        return {"errors": self.error_count, "reconnects": self.reconnects,
                "last_error": next(reversed(self.errors.values()), None) if self.errors else None,
                "alive": self._proc is not None and self._proc.is_alive() and self.fatal is None}

    def check_alive(self) -> str | None:
        """None while the child runs; else how it ended (with its last fatal error)."""
        if self._proc is None:
            return "not started"
        self._drain_events()
        if self._proc.is_alive() and self.fatal is None:
            return None
        return f"policy process {self._exit_text()}" + (f": {self.fatal}" if self.fatal else "")

    # -- requests and chunks ---------------------------------------------------------------

    @property
    def metadata(self) -> PolicyMetadata:
        if self._metadata is None:
            raise PolicyError(f"{self.name}: policy process not started")
        return self._metadata

    @property
    def request_spec(self) -> ShmSpec:
        if self._requests is None:
            raise PolicyError(f"{self.name}: policy process not started")
        return self._requests.spec

    @property
    def chunk_spec(self) -> ShmSpec:
        if self._chunks is None:
            raise PolicyError(f"{self.name}: policy process not started")
        return self._chunks.spec

    def request(self, observation: Mapping[str, Any], *, tick: int = 0, stamp_ns: int | None = None) -> int:
        """Publish a request (non-blocking); returns its request id."""
        if self._requests is None or self._writer_buf is None:
            raise PolicyError(f"{self.name}: policy process not started")
        stamp = self.clock.now_ns() if stamp_ns is None else stamp_ns
        return self._requests.publish(encode_request(self._writer_buf, tick, stamp, observation))

    def set_context(self, context: Mapping[str, Any]) -> int:
        """Publish what every following request's observation should also carry (images, a
        perceived target, the prompt); the request's own keys win. Latest value: each call
        replaces the previous context. Returns the context's sequence number."""
        if self._context is None or self._context_buf is None:
            raise PolicyError(f"{self.name}: policy process not started")
        if not isinstance(context, Mapping):
            raise PolicyError(f"{self.name}: context must be a map of observation keys, got {type(context).__name__}")
        return self._context.publish(encode_request(self._context_buf, 0, self.clock.now_ns(), context))

    def latest_chunk(self) -> PolicyChunk | None:
        if self._chunks is None or self.layout is None:
            raise PolicyError(f"{self.name}: policy process not started")
        s = self._chunks.latest()
        return None if s is None else self.layout.unpack(s.value)

    def wait_chunk(self, request_id: int, timeout: float | None = None) -> PolicyChunk | None:
        """The chunk answering ``request_id`` or a later request; None on timeout. A newer
        request published meanwhile may supersede it (latest-value requests)."""
        ch, layout = self._chunks, self.layout
        if ch is None or layout is None:
            raise PolicyError(f"{self.name}: policy process not started")
        deadline = None if timeout is None else self.clock.now_ns() + int(timeout * 1e9)
        seq = 0
        while True:
            s = ch.latest()
            if s is not None:
                chunk = layout.unpack(s.value)
                if chunk.request_id >= request_id:
                    return chunk
                seq = s.seq
            remaining = None if deadline is None else (deadline - self.clock.now_ns()) / 1e9
            if remaining is not None and remaining <= 0:
                return None
            if ch.wait_newer(seq, remaining if remaining is None else min(remaining, 0.5)) is None \
                    and self.check_alive() is not None:
                raise PolicyServerError(f"{self.name}: {self.check_alive()}")

    def infer(self, observation: Mapping[str, Any], timeout: float | None = 30.0) -> dict[str, Any]:
        """Request and wait (the :class:`~rtvla.policy.base.Policy` protocol); for tools, not
        the control loop."""
        rid = self.request(observation)
        chunk = self.wait_chunk(rid, timeout)
        if chunk is None:
            raise PolicyServerError(f"{self.name}: no chunk within {timeout} s")
        if not chunk.ok:
            self._drain_events()
            raise PolicyError(f"{self.name}: inference failed: {self.errors.get(chunk.request_id, 'unknown error')}")
        return {"actions": chunk.actions, "policy_timing": {"infer_ms": chunk.infer_ns / 1e6},
                "request_id": chunk.request_id}

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> PolicyProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
