"""Action chunks: asynchronous inference for VLA policies that predict many future actions.

A policy produces a *chunk* (an array ``[H, dof]``) of actions for the ticks starting at the
tick it was asked from. The control loop consumes one action per tick with :meth:`pop`. When
fewer than ``threshold * chunk_size`` actions remain, the next inference is requested and
runs asynchronously (a worker thread calling the policy, or the caller's own machinery via
``on_request`` / ``request_event``), so the robot never waits for the policy.

Inference takes time: a chunk requested at tick ``t`` that arrives at tick ``t + d`` starts
at its ``d``-th action (the first ``d`` were due while the policy was thinking and are
skipped). Overlapping predictions for the same tick are merged:

* ``latest``: the newest chunk replaces everything it overlaps (and what lies beyond it);
* ``average``: the equal-weight mean of every prediction for that tick;
* ``weighted``: exponential weights ``exp(-weight_decay * i)`` where ``i`` is the
  prediction's arrival order for that tick (0 = oldest), the temporal ensembling of ACT
  (Zhao et al. 2023). ``weight_decay > 0`` favours older predictions (smoother), ``< 0``
  newer ones.

Queue size, starvation (ticks with nothing to execute), skipped actions and the inference
delay (ticks and seconds) are recorded into the Recorder under ``name``.

This queue serves a policy called from a thread of the same process (a benchmark, a lock-step
skill). A policy followed by the control process (the default placement) goes through
:class:`~rtvla.action.chunk_scheduler.ChunkScheduler` instead: requests and chunks through
shared memory, resampling, delay-covering triggers and velocity targets.

Usage::

    def policy(req: ChunkRequest) -> np.ndarray:       # runs in the worker thread
        return model.predict(req.observation)[:50]      # [50, dof]

    with ActionChunkQueue(50, dof=6, threshold=0.5, merge="weighted", policy=policy) as q:
        q.prime(tick=0, observation=obs)                # first chunk, synchronously
        ...
        action = q.pop(tick.slot, observation=obs)      # each control tick; None = starved
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from rtvla.errors import ActionError
from rtvla.metrics import Recorder
from rtvla.timing import MONOTONIC, Clock

__all__ = ["ActionChunkQueue", "ChunkError", "ChunkRequest", "MergeStrategy"]

logger = logging.getLogger(__name__)


class ChunkError(ActionError, ValueError):
    """A chunk of the wrong shape, non-finite, or starting too far from the queue's window."""


class MergeStrategy(str, Enum):
    LATEST = "latest"
    AVERAGE = "average"
    WEIGHTED = "weighted"


@dataclass(frozen=True)
class ChunkRequest:
    """One inference request: the chunk's first action is for ``start_tick``."""

    seq: int
    start_tick: int
    requested_ns: int
    observation: Any = None


class ActionChunkQueue:
    """Tick-indexed queue of future actions, refilled asynchronously by a policy.

    Args:
        chunk_size: actions per chunk (H).
        dof: values per action.
        threshold: request the next chunk when fewer than ``threshold * chunk_size`` remain.
        merge: a :class:`MergeStrategy` (or its name) for overlapping predictions.
        weight_decay: the exponent of the ``weighted`` strategy.
        policy: ``policy(request) -> array [n, dof]``; called in a worker thread started by
            :meth:`start` (or the context manager). Without it, use ``on_request`` or wait on
            :attr:`request_event` and call :meth:`push` yourself.
        on_request: called with each :class:`ChunkRequest` (from the control loop's thread;
            keep it short: hand the work to another thread).
        recorder: where queue size, starvation and inference delay go.
        clock: time source for the delay in seconds.
    """

    def __init__(
        self,
        chunk_size: int,
        dof: int,
        *,
        threshold: float = 0.5,
        merge: MergeStrategy | str = MergeStrategy.LATEST,
        weight_decay: float = 0.01,
        policy: Callable[[ChunkRequest], Any] | None = None,
        on_request: Callable[[ChunkRequest], None] | None = None,
        recorder: Recorder | None = None,
        name: str = "chunks",
        clock: Clock = MONOTONIC,
    ) -> None:
        if not (isinstance(chunk_size, int) and chunk_size >= 1):
            raise ChunkError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        if not (isinstance(dof, int) and dof >= 1):
            raise ChunkError(f"dof must be an integer >= 1, got {dof!r}")
        if not (0.0 <= threshold <= 1.0):
            raise ChunkError(f"threshold must be in [0, 1], got {threshold}")
        try:
            self.merge = MergeStrategy(merge)
        except ValueError:
            raise ChunkError(
                f"merge must be one of {[m.value for m in MergeStrategy]}, got {merge!r}"
            ) from None
        if not math.isfinite(weight_decay):
            raise ChunkError(f"weight_decay must be finite, got {weight_decay}")
        self.chunk_size = chunk_size
        self.dof = dof
        self.threshold = float(threshold)
        self.weight_decay = float(weight_decay) if self.merge is MergeStrategy.WEIGHTED else 0.0
        self.policy = policy
        self.on_request = on_request
        self.recorder = recorder
        self.name = name
        self.clock = clock
        self.request_event = threading.Event()
        self._low_water = self.threshold * chunk_size
        self._cap = 4 * chunk_size
        self._sum = np.zeros((self._cap, dof))
        self._wsum = np.zeros(self._cap)
        self._n = np.zeros(self._cap, dtype=np.int64)
        self._out = np.zeros(dof)
        self._head = 0  # next tick to consume
        self._tail = 0  # one past the last tick holding an action
        self._valid = 0  # ticks in [head, tail) holding an action
        self._lock = threading.Lock()
        self._req_seq = 0
        self._in_flight: ChunkRequest | None = None
        self._pending: ChunkRequest | None = None
        self._wake = threading.Event()
        self._closed = False
        self._worker: threading.Thread | None = None
        self._starving = False
        # statistics
        self.ticks = 0
        self.starved_ticks = 0
        self.skipped_actions = 0
        self.chunks = 0
        self.requests = 0
        self.failures = 0
        self.delay_ticks_last = 0
        self.delay_ticks_max = 0
        self._delay_ticks_sum = 0
        self._delay_s_max = 0.0
        self._delay_s_sum = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ActionChunkQueue:
        """Start the inference worker thread (needs ``policy``)."""
        if self.policy is None:
            raise ChunkError("start() needs a policy; without one, push chunks yourself")
        if self._worker is None:
            self._closed = False
            self._worker = threading.Thread(target=self._run_worker, name=f"{self.name}-policy",
                                            daemon=True)
            self._worker.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (after the inference in progress, if any)."""
        self._closed = True
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                logger.warning("%s: policy worker still busy after %.1f s", self.name, timeout)
            self._worker = None

    def __enter__(self) -> ActionChunkQueue:
        if self.policy is not None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- consuming (control loop, hot path) ------------------------------------------------

    @property
    def size(self) -> int:
        """Actions queued for ticks not yet consumed."""
        return self._valid

    @property
    def in_flight(self) -> bool:
        return self._in_flight is not None

    def pop(self, tick: int, observation: Any = None) -> np.ndarray | None:
        """The merged action for ``tick`` (None when starved); may request the next chunk.

        Ticks between the previous call and ``tick`` are skipped (their actions were due
        then). The returned array is reused by the next call: copy it to keep it.
        """
        request = None
        with self._lock:
            if tick < self._head:
                return None  # already consumed; a repeated tick is not a new one
            self._discard_before(tick)
            slot = tick % self._cap
            self.ticks += 1
            if self._n[slot]:
                np.divide(self._sum[slot], self._wsum[slot], out=self._out)
                self._clear(slot)
                action: np.ndarray | None = self._out
                starved = False
            else:
                action = None
                self.starved_ticks += 1
                starved = True
            self._head = tick + 1
            if self._tail < self._head:
                self._tail = self._head
            size = self._valid
            if size < self._low_water and self._in_flight is None and not self._closed:
                request = self._new_request(self._head, observation)
        if self.recorder is not None:
            self.recorder.gauge(self.name, "queue_size", size)
            if starved != self._starving:
                self._starving = starved
                if starved:
                    self.recorder.event(self.name, "starved", f"no action for tick {tick}",
                                        tick=tick, starved_ticks=self.starved_ticks)
        if request is not None:
            self._dispatch(request)
        return action

    def request(self, tick: int, observation: Any = None) -> ChunkRequest | None:
        """Ask for a chunk starting at ``tick`` now (None when one is already in flight)."""
        with self._lock:
            if self._in_flight is not None:
                return None
            req = self._new_request(tick, observation)
        self._dispatch(req)
        return req

    def prime(self, tick: int, observation: Any = None) -> int:
        """Run the policy synchronously for a first chunk starting at ``tick``; returns its length."""
        if self.policy is None:
            raise ChunkError("prime() needs a policy")
        with self._lock:
            req = self._new_request(tick, observation)
        chunk = self.policy(req)
        self.push(chunk, req.start_tick, request=req)
        return len(chunk)

    # -- producing (policy side) -----------------------------------------------------------

    def push(self, chunk: Any, start_tick: int, *, request: ChunkRequest | None = None) -> int:
        """Merge ``chunk`` (``[n, dof]``, action 0 for ``start_tick``); returns actions skipped.

        Actions for ticks already consumed are skipped. ``request`` (when the chunk answers
        one) closes it and measures the inference delay.
        """
        arr = np.asarray(chunk, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != self.dof or arr.shape[0] < 1:
            raise ChunkError(f"chunk must have shape [n >= 1, {self.dof}], got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ChunkError("chunk holds non-finite actions")
        now = self.clock.now_ns()
        with self._lock:
            head = self._head
            end = start_tick + arr.shape[0]
            lo = max(start_tick, head)
            if end - head > self._cap:
                raise ChunkError(
                    f"chunk for ticks [{start_tick}, {end}) reaches beyond the queue window "
                    f"[{head}, {head + self._cap})"
                )
            skipped = lo - start_tick if lo < end else arr.shape[0]
            if lo < end:
                self._merge(arr[lo - start_tick :], lo, end)
            self.chunks += 1
            if request is not None and self._in_flight is request:
                self._in_flight = None
                delay_ticks = head - request.start_tick
                delay_s = (now - request.requested_ns) / 1e9
                self.delay_ticks_last = delay_ticks
                self.delay_ticks_max = max(self.delay_ticks_max, delay_ticks)
                self._delay_ticks_sum += delay_ticks
                self._delay_s_sum += delay_s
                self._delay_s_max = max(self._delay_s_max, delay_s)
            else:
                delay_s = delay_ticks = None
            self.request_event.clear()
            size = self._valid
        if self.recorder is not None:
            self.recorder.count(self.name)
            self.recorder.gauge(self.name, "queue_size", size)
            self.recorder.gauge(self.name, "skipped_actions", self.skipped_actions + skipped)
            if delay_s is not None:
                self.recorder.observe(self.name, "inference_delay", max(delay_s, 0.0))
                self.recorder.gauge(self.name, "inference_delay_ticks", float(delay_ticks or 0))
        with self._lock:
            self.skipped_actions += skipped
        return skipped

    # -- statistics ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        answered = max(1, self.chunks)
        return {
            "chunk_size": self.chunk_size,
            "threshold": self.threshold,
            "merge": self.merge.value,
            "queue_size": self._valid,
            "ticks": self.ticks,
            "starved_ticks": self.starved_ticks,
            "skipped_actions": self.skipped_actions,
            "chunks": self.chunks,
            "requests": self.requests,
            "failures": self.failures,
            "inference_delay_ticks": {
                "last": self.delay_ticks_last,
                "max": self.delay_ticks_max,
                "mean": self._delay_ticks_sum / answered if self.chunks else 0.0,
            },
            "inference_delay_ms": {
                "max": self._delay_s_max * 1e3,
                "mean": self._delay_s_sum / answered * 1e3 if self.chunks else 0.0,
            },
        }

    # -- internals (called with the lock held) ---------------------------------------------

    def _clear(self, slot: int) -> None:
        self._sum[slot] = 0.0
        self._wsum[slot] = 0.0
        self._n[slot] = 0
        self._valid -= 1

    def _discard_before(self, tick: int) -> None:
        if tick - self._head >= self._cap:
            dropped = int(np.count_nonzero(self._n))
            self._sum[:] = 0.0
            self._wsum[:] = 0.0
            self._n[:] = 0
            self._valid = 0
            self.skipped_actions += dropped
            return
        for k in range(self._head, tick):
            slot = k % self._cap
            if self._n[slot]:
                self._clear(slot)
                self.skipped_actions += 1

    def _merge(self, actions: np.ndarray, lo: int, end: int) -> None:
        idx = np.arange(lo, end) % self._cap
        fresh = int(np.count_nonzero(self._n[idx] == 0))
        if self.merge is MergeStrategy.LATEST:
            self._sum[idx] = actions
            self._wsum[idx] = 1.0
            self._n[idx] = 1
            # Everything the older chunks predicted beyond this one is dropped too.
            for k in range(end, self._tail):
                slot = k % self._cap
                if self._n[slot]:
                    self._clear(slot)
            self._tail = end
        else:
            w = np.exp(-self.weight_decay * self._n[idx])
            self._sum[idx] += w[:, None] * actions
            self._wsum[idx] += w
            self._n[idx] += 1
            self._tail = max(self._tail, end)
        self._valid += fresh

    def _new_request(self, tick: int, observation: Any) -> ChunkRequest:
        self._req_seq += 1
        self.requests += 1
        req = ChunkRequest(self._req_seq, int(tick), self.clock.now_ns(), observation)
        self._in_flight = req
        return req

    # -- dispatch and worker ---------------------------------------------------------------

    def _dispatch(self, req: ChunkRequest) -> None:
        self.request_event.set()
        if self.on_request is not None:
            self.on_request(req)
        if self._worker is not None:
            self._pending = req
            self._wake.set()

    def _run_worker(self) -> None:
        assert self.policy is not None
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            req, self._pending = self._pending, None
            if req is None:
                continue
            try:
                chunk = self.policy(req)
                self.push(chunk, req.start_tick, request=req)
            except Exception as exc:  # the policy is user code: keep the queue alive
                with self._lock:
                    self.failures += 1
                    if self._in_flight is req:
                        self._in_flight = None
                logger.warning("%s: policy failed for request %d: %s", self.name, req.seq, exc)
                if self.recorder is not None:
                    self.recorder.event(self.name, "inference_failed", str(exc), seq=req.seq)
