"""Channel benchmark: publish-to-read latency through three transports, side by side.

For each payload size it measures, in one run:

- ``inproc``: :class:`~rtvla.channels.LatestValue`, reader in a thread of this process;
- ``shm``: :class:`~rtvla.channels.shm.SharedArrayChannel`, reader in a spawned process
  that copies each frame out (``latest(copy=True)``), as a consumer that keeps it would;
- ``mp_queue``: a ``multiprocessing.Queue`` carrying ``(stamp, array)``, reader in a spawned
  process: the baseline a Python user reaches for.

Latency is the reader's receive time minus the publish stamp, both ``time.monotonic_ns`` on
one machine; the stamp is taken when publish is called, so the copy in counts. Frames go
one at a time: after each one the writer waits for the reader's acknowledgement (on a
separate pipe, outside the measured path) and then a short gap, so the reader is asleep in
its wait again when the next frame arrives and each figure includes the wake-up.

Usage::

    rows, samples = bench_channels(iterations=1000)
    for r in rows:
        print(r["channel"], r["bytes"], r["latency_us"]["p50"], r["latency_us"]["p99"])
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rtvla.channels.inproc import LatestValue
from rtvla.channels.shm import SharedArrayChannel, ShmSpec
from rtvla.errors import ChannelError
from rtvla.timing import MONOTONIC, Clock

__all__ = ["CHANNEL_KINDS", "PAYLOAD_BYTES", "SHM_READS", "bench_channels", "payload", "ratios", "summarize"]

CHANNEL_KINDS = ("inproc", "shm", "mp_queue")
PAYLOAD_BYTES = (64, 921_600)  # a small message and one 640x480 RGB frame
# How the shm reader takes each frame: a fresh copy (what mp.Queue hands out too), a copy
# into a preallocated array (the real-time consumer's way), or a read-only view in place.
SHM_READS = ("copy", "out", "view")
_ACK_TIMEOUT_S = 30.0  # a reader that does not answer for this long has failed
_START_TIMEOUT_S = 120.0  # spawning a reader imports numpy: slow on a loaded machine


def payload(nbytes: int, fill: int = 0) -> np.ndarray:
    """The array a benchmark sends: an HxWx3 image for 921,600 B, else a flat byte vector."""
    if nbytes <= 0:
        raise ValueError(f"payload bytes must be > 0, got {nbytes}")
    if nbytes == 640 * 480 * 3:
        return np.full((480, 640, 3), fill, np.uint8)
    return np.full((nbytes,), fill, np.uint8)


# --- readers (module level: spawned processes import them) ----------------------------------


def _shm_reader(spec: ShmSpec, n: int, ready: Any, conn: Any, read: str) -> None:
    ch = SharedArrayChannel.attach(spec)
    lat = np.zeros(n, np.int64)
    out = np.empty(spec.shape, spec.dtype) if read == "out" else None
    copy = read != "view"
    last = 0
    ready.set()
    try:
        for i in range(n):
            s = ch.wait_newer(last, timeout=_ACK_TIMEOUT_S, copy=copy, out=out)
            now = time.monotonic_ns()
            if s is None:
                lat = lat[:i]
                break
            lat[i] = now - s.stamp_ns
            last = s.seq
            conn.send_bytes(b"")
        conn.send(lat)
    finally:
        ch.close()
        conn.close()


def _queue_reader(q: Any, n: int, ready: Any, conn: Any) -> None:
    lat = np.zeros(n, np.int64)
    ready.set()
    try:
        for i in range(n):
            stamp, value = q.get(timeout=_ACK_TIMEOUT_S)
            lat[i] = time.monotonic_ns() - stamp
            del value
            conn.send_bytes(b"")
        conn.send(lat)
    finally:
        conn.close()


# --- one configuration --------------------------------------------------------------------


def _pace(clock: Clock, gap_s: float) -> None:
    clock.sleep_until(clock.now_ns() + int(gap_s * 1e9))


def _run_inproc(frame: np.ndarray, n: int, gap_s: float, clock: Clock) -> np.ndarray:
    ch = LatestValue("bench", clock=MONOTONIC)
    lat = np.zeros(n, np.int64)
    acks = threading.Semaphore(0)
    errors: list[BaseException] = []

    def reader() -> None:
        last = 0
        try:
            for i in range(n):
                s = ch.wait_newer(last, timeout=_ACK_TIMEOUT_S)
                now = time.monotonic_ns()
                if s is None:
                    raise ChannelError(f"inproc bench reader got no frame {i + 1} within {_ACK_TIMEOUT_S} s")
                lat[i] = now - s.stamp_ns
                last = s.seq
                acks.release()
        except BaseException as exc:  # handed to the writer thread, which raises it
            errors.append(exc)
            acks.release()

    t = threading.Thread(target=reader, name="bench-inproc-reader", daemon=True)
    t.start()
    try:
        for i in range(n):
            _pace(clock, gap_s)
            ch.publish(frame)
            if not acks.acquire(timeout=_ACK_TIMEOUT_S) or errors:
                raise errors[0] if errors else ChannelError(f"inproc reader did not acknowledge frame {i + 1}")
    finally:
        ch.close()
        t.join(timeout=5.0)
    return lat


def _run_cross_process(kind: str, frame: np.ndarray, n: int, gap_s: float, clock: Clock,
                       shm_read: str) -> np.ndarray:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    recv_end, send_end = ctx.Pipe(duplex=False)
    shm: SharedArrayChannel | None = None
    queue: Any = None
    if kind == "shm":
        shm = SharedArrayChannel.create("bench", frame.shape, frame.dtype, clock=MONOTONIC)
        proc = ctx.Process(target=_shm_reader, args=(shm.spec, n, ready, send_end, shm_read),
                           name="bench-shm-reader", daemon=True)
    else:
        queue = ctx.Queue()
        proc = ctx.Process(target=_queue_reader, args=(queue, n, ready, send_end),
                           name="bench-queue-reader", daemon=True)
    proc.start()
    send_end.close()  # the child holds its copy; EOF on ours then means the child is gone
    try:
        if not ready.wait(_START_TIMEOUT_S):
            raise ChannelError(f"{kind} bench reader did not start within {_START_TIMEOUT_S} s")
        for i in range(n):
            _pace(clock, gap_s)
            if shm is not None:
                shm.publish(frame)
            else:
                queue.put((time.monotonic_ns(), frame))
            if not recv_end.poll(_ACK_TIMEOUT_S):
                raise ChannelError(f"{kind} bench reader did not acknowledge frame {i + 1} "
                                   f"within {_ACK_TIMEOUT_S} s (exit code {proc.exitcode})")
            recv_end.recv_bytes()
        if not recv_end.poll(_ACK_TIMEOUT_S):
            raise ChannelError(f"{kind} bench reader sent no results")
        lat = recv_end.recv()
        proc.join(timeout=10.0)
        return np.asarray(lat, np.int64)
    except EOFError as exc:
        raise ChannelError(f"{kind} bench reader exited early (exit code {proc.exitcode})") from exc
    finally:
        recv_end.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5.0)
        if shm is not None:
            shm.close()
            shm.unlink()
        if queue is not None:
            queue.close()
            queue.join_thread()


def _measure(kind: str, nbytes: int, iterations: int, warmup: int, gap_s: float,
             clock: Clock, shm_read: str) -> np.ndarray:
    frame = payload(nbytes, fill=1)
    n = iterations + warmup
    if kind == "inproc":
        lat = _run_inproc(frame, n, gap_s, clock)
    elif kind in ("shm", "mp_queue"):
        lat = _run_cross_process(kind, frame, n, gap_s, clock, shm_read)
    else:
        raise ValueError(f"channel kind must be one of {CHANNEL_KINDS}, got {kind!r}")
    if lat.size < n:
        raise ChannelError(f"{kind} bench reader returned {lat.size} of {n} samples")
    return lat[warmup:]


# --- summary ------------------------------------------------------------------------------


def summarize(kind: str, nbytes: int, lat_ns: np.ndarray) -> dict[str, Any]:
    """One JSON row: ``{"channel", "bytes", "samples", "latency_us": {p50, p90, p99, max}}``."""
    us = np.asarray(lat_ns, dtype=np.float64) / 1e3
    if us.size == 0:
        raise ValueError(f"no latency samples for {kind} {nbytes} B")
    p50, p90, p99 = np.percentile(us, (50, 90, 99))
    return {"channel": kind, "bytes": int(nbytes), "samples": int(us.size),
            "latency_us": {"p50": float(p50), "p90": float(p90), "p99": float(p99),
                           "max": float(us.max())}}


def ratios(rows: Sequence[dict[str, Any]], numerator: str = "mp_queue",
           denominator: str = "shm") -> dict[int, dict[str, float]]:
    """Per payload size: how many times lower ``denominator``'s p50/p99 are than ``numerator``'s."""
    by = {(r["channel"], r["bytes"]): r["latency_us"] for r in rows}
    out: dict[int, dict[str, float]] = {}
    for (kind, nbytes), lat in by.items():
        if kind != denominator or (numerator, nbytes) not in by:
            continue
        base = by[(numerator, nbytes)]
        out[nbytes] = {q: (base[q] / lat[q] if lat[q] > 0 else float("inf")) for q in ("p50", "p99")}
    return out


def bench_channels(
    *,
    iterations: int = 1000,
    warmup: int = 50,
    payloads: Sequence[int] = PAYLOAD_BYTES,
    kinds: Sequence[str] = CHANNEL_KINDS,
    gap_s: float = 0.001,
    shm_read: str = "copy",
    clock: Clock = MONOTONIC,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Measure every (payload, channel) pair; returns the JSON rows and the raw samples (us).

    ``progress(label)`` is called before each configuration. ``clock`` paces the writer
    between frames (``gap_s``); latencies are always real monotonic time.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0, got {gap_s}")
    if shm_read not in SHM_READS:
        raise ValueError(f"shm_read must be one of {SHM_READS}, got {shm_read!r}")
    unknown = [k for k in kinds if k not in CHANNEL_KINDS]
    if unknown:
        raise ValueError(f"channel kinds must be among {CHANNEL_KINDS}, got {unknown}")
    for nbytes in payloads:
        payload(nbytes)  # validates the size before any process starts
    rows: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    for nbytes in payloads:
        for kind in kinds:
            if progress is not None:
                progress(f"{kind} {nbytes:,} B")
            lat = _measure(kind, nbytes, iterations, warmup, gap_s, clock, shm_read)
            row = summarize(kind, nbytes, lat)
            if kind == "shm":
                row["read"] = shm_read
            rows.append(row)
            samples[f"{kind} {nbytes:,} B"] = lat / 1e3
    return rows, samples
