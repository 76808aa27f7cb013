"""Channel benchmark: publish-to-read latency through five transports, side by side.

For each payload size it measures, in one run:

- ``inproc``: :class:`~rtvla.channels.LatestValue`, reader in a thread of this process;
- ``shm``: :class:`~rtvla.channels.shm.SharedArrayChannel` (the seqlock), reader in a
  spawned process that copies each frame out (``latest(copy=True)``), as a consumer that
  keeps it would;
- ``iceoryx2``: the iceoryx2 library's publish-subscribe service (latest value: a subscriber
  buffer of one with safe overflow) plus an event service for the wake-up, used the cheapest
  way its Python bindings allow (``memmove`` into the loaned sample, no ctypes structs); the
  reader takes the frame the same way as the shm reader (``read``);
- ``zenoh``: :class:`~rtvla.channels.ZenohChannel` between two peers on 127.0.0.1 (configured
  endpoints only, scouting off), as two hosts would use it;
- ``mp_queue``: a ``multiprocessing.Queue`` carrying ``(stamp, array)``, reader in a spawned
  process: the baseline a Python user reaches for.

Latency is one way: the reader's receive time minus the publish stamp, both
``time.monotonic_ns``. The stamp is taken when publish is called, so the copy in (and
Zenoh's encoding) counts. Frames go one at a time: after each one the writer waits for the
reader's acknowledgement (on a separate pipe, outside the measured path) and then a short
gap, so the reader is asleep in its wait again when the next frame arrives and each figure
includes the wake-up.

The Zenoh rows are clock-corrected as two hosts would need them: before the frames, the
reader estimates the writer's clock offset with :mod:`rtvla.channels.clock_sync` (an
NTP-style ping exchange over the same Zenoh link, ``clock_pings`` pings, min-RTT filter)
and maps every publish stamp onto its own clock with that estimate. On one host both
processes read the same ``CLOCK_MONOTONIC``, so the true offset is 0: the row's ``clock``
(the estimate, its uncertainty, the round trip) is the estimator's error on loopback, and
``raw_latency_us`` (stamps compared directly) shows what the correction changed. The other
cross-process rows need no correction: same host, same clock.

Usage::

    rows, samples = bench_channels(iterations=1000)
    for r in rows:
        print(r["channel"], r["bytes"], r["latency_us"]["p50"], r["latency_us"]["p99"])
"""

from __future__ import annotations

import ctypes
import importlib.util
import multiprocessing as mp
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rtvla.channels.inproc import LatestValue
from rtvla.channels.shm import SharedArrayChannel, ShmSpec
from rtvla.errors import ChannelError
from rtvla.timing import MONOTONIC, Clock

__all__ = ["CHANNEL_KINDS", "CLOCK_PINGS", "PAYLOAD_BYTES", "SHM_READS", "available_kinds", "bench_channels",
           "payload", "ratios", "summarize"]

CHANNEL_KINDS = ("inproc", "shm", "iceoryx2", "zenoh", "mp_queue")
_OPTIONAL = {"iceoryx2": "iceoryx2", "zenoh": "zenoh"}  # kind -> module it needs
PAYLOAD_BYTES = (64, 921_600)  # a small message and one 640x480 RGB frame
# How the shm and iceoryx2 readers take each frame: a fresh copy (what mp.Queue and Zenoh
# hand out too), a copy into a preallocated array (the real-time consumer's way), or a
# read-only view in place.
SHM_READS = ("copy", "out", "view")
_READ_KINDS = ("shm", "iceoryx2")
_ACK_TIMEOUT_S = 30.0  # a reader that does not answer for this long has failed
_PING_TIMEOUT_S = 2.0  # one clock-sync ping on loopback
CLOCK_PINGS = 50  # clock-sync pings before the Zenoh frames
_START_TIMEOUT_S = 120.0  # spawning a reader imports numpy: slow on a loaded machine
_IOX_PREFIX = 16  # iceoryx2 sample: int64 stamp, uint64 seq, then the frame


def payload(nbytes: int, fill: int = 0) -> np.ndarray:
    """The array a benchmark sends: an HxWx3 image for 921,600 B, else a flat byte vector."""
    if nbytes <= 0:
        raise ValueError(f"payload bytes must be > 0, got {nbytes}")
    if nbytes == 640 * 480 * 3:
        return np.full((480, 640, 3), fill, np.uint8)
    return np.full((nbytes,), fill, np.uint8)


def available_kinds(kinds: Sequence[str] = CHANNEL_KINDS) -> tuple[str, ...]:
    """``kinds`` minus the transports whose optional package is not installed."""
    return tuple(k for k in kinds
                 if k not in _OPTIONAL or importlib.util.find_spec(_OPTIONAL[k]) is not None)


# --- iceoryx2 (both ends) -------------------------------------------------------------------


def _iox_services(service: str) -> tuple[Any, Any, Any]:
    """(module, node, (pubsub, event)) for one bench service, opened or created."""
    import iceoryx2 as iox2

    iox2.set_log_level_from_env_or(iox2.LogLevel.Error)  # "no config file" is not news
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    name = iox2.ServiceName.new(service)
    # Latest value: each subscriber holds one sample and a new one replaces it.
    pubsub = (node.service_builder(name).publish_subscribe(iox2.Slice[ctypes.c_uint8])
              .subscriber_max_buffer_size(1).enable_safe_overflow(True).open_or_create())
    event = node.service_builder(name).event().open_or_create()
    return iox2, node, (pubsub, event)


class _IoxWriter:
    """Publishes frames through iceoryx2: loan, stamp and frame by ``memmove``, send, notify."""

    def __init__(self, service: str, nbytes: int) -> None:
        self._iox2, self._node, (pubsub, event) = _iox_services(service)
        self._nbytes = nbytes
        self._pub = pubsub.publisher_builder().initial_max_slice_len(nbytes + _IOX_PREFIX).create()
        self._notifier = event.notifier_builder().create()
        self._seq = 0

    def publish(self, frame: np.ndarray) -> None:
        stamp = time.monotonic_ns()
        self._seq += 1
        sample = self._pub.loan_slice_uninit(self._nbytes + _IOX_PREFIX)
        ptr = sample.payload_ptr
        ctypes.c_int64.from_address(ptr).value = stamp
        ctypes.c_uint64.from_address(ptr + 8).value = self._seq
        ctypes.memmove(ptr + _IOX_PREFIX, frame.ctypes.data, self._nbytes)
        sample.assume_init().send()
        self._notifier.notify()

    def close(self) -> None:
        for port in (self._notifier, self._pub):
            port.delete()


def _iceoryx_reader(service: str, shape: tuple[int, ...], n: int, ready: Any, conn: Any,
                    read: str) -> None:
    iox2, _node, (pubsub, event) = _iox_services(service)
    sub = pubsub.subscriber_builder().create()
    listener = event.listener_builder().create()
    nbytes = int(np.prod(shape))
    lat = np.zeros(n, np.int64)
    out = np.empty(shape, np.uint8)
    wait = iox2.Duration.from_secs_f64(_ACK_TIMEOUT_S)
    held = None  # a view keeps its sample loaned until the next one arrives
    last = 0
    ready.set()
    try:
        i = 0
        while i < n:
            if not listener.timed_wait(wait):
                break
            newest = None
            while (s := sub.receive()) is not None:  # drain: keep only the newest
                newest = s
            if newest is None:
                continue
            ptr = newest.payload_ptr
            seq = ctypes.c_uint64.from_address(ptr + 8).value
            if seq <= last:
                continue
            stamp = ctypes.c_int64.from_address(ptr).value
            if read == "view":
                view = np.frombuffer((ctypes.c_uint8 * nbytes).from_address(ptr + _IOX_PREFIX),
                                     np.uint8).reshape(shape)
                view.flags.writeable = False
                held = (newest, view)
            else:
                dst = out if read == "out" else np.empty(shape, np.uint8)
                ctypes.memmove(dst.ctypes.data, ptr + _IOX_PREFIX, nbytes)
                del newest
            now = time.monotonic_ns()
            lat[i] = now - stamp
            last = seq
            i += 1
            conn.send_bytes(b"")
        conn.send_bytes(lat[:i].tobytes())
    finally:
        del held
        listener.delete()
        sub.delete()
        conn.close()


# --- the other readers (module level: spawned processes import them) -------------------------


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
        conn.send_bytes(lat.tobytes())
    finally:
        ch.close()
        conn.close()


def _zenoh_reader(key: str, endpoint: str, n: int, ready: Any, conn: Any, clock_key: str,
                  pings: int) -> None:
    import zenoh

    from rtvla.channels.clock_sync import ClockSync
    from rtvla.channels.zenoh_channel import ZenohChannel, zenoh_config

    lat = np.zeros(n, np.int64)
    session = zenoh.open(zenoh_config(connect=[endpoint]))
    with ZenohChannel(key, session=session) as ch:
        # Clock offset first, over the same link, as a reader on another host would: the
        # writer's stamps are on its clock, not ours.
        sync = ClockSync(session, clock_key, timeout_s=_PING_TIMEOUT_S)
        if not sync.wait_ready(_START_TIMEOUT_S):
            conn.close()
            session.close()
            raise ChannelError(f"zenoh bench reader: the writer's clock did not answer on {clock_key}")
        off = sync.estimate(pings)
        conn.send_bytes(np.array([off.offset_ns, off.uncertainty_ns, off.rtt_ns, off.samples],
                                 np.int64).tobytes())
        ready.set()
        try:
            last = 0
            for i in range(n):
                s = ch.wait_newer(last, timeout=_ACK_TIMEOUT_S)
                now = time.monotonic_ns()
                if s is None:
                    lat = lat[:i]
                    break
                lat[i] = now - off.to_local(s.stamp_ns)
                last = s.seq
                conn.send_bytes(b"")
            conn.send_bytes(lat.tobytes())
        finally:
            conn.close()
    session.close()


def _queue_reader(q: Any, n: int, ready: Any, conn: Any) -> None:
    lat = np.zeros(n, np.int64)
    ready.set()
    try:
        for i in range(n):
            stamp, value = q.get(timeout=_ACK_TIMEOUT_S)
            lat[i] = time.monotonic_ns() - stamp
            del value
            conn.send_bytes(b"")
        conn.send_bytes(lat.tobytes())
    finally:
        conn.close()


# --- one configuration --------------------------------------------------------------------


def _pace(clock: Clock, gap_s: float) -> None:
    clock.sleep_until(clock.now_ns() + int(gap_s * 1e9))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _ZenohWriter:
    """The writer's end of the Zenoh rows: a listening peer with the channel and the clock
    the reader synchronises with, on one session."""

    def __init__(self, key: str, clock_key: str) -> None:
        import zenoh

        from rtvla.channels.clock_sync import ClockSyncServer
        from rtvla.channels.zenoh_channel import ZenohChannel, zenoh_config

        last: Exception | None = None
        for _ in range(5):  # the probed port may be taken before the peer listens on it
            endpoint = f"tcp/127.0.0.1:{_free_port()}"
            try:
                self.session = zenoh.open(zenoh_config(listen=[endpoint]))
                break
            except Exception as exc:  # zenoh's ZError
                last = exc
        else:
            raise ChannelError(f"zenoh bench writer found no free port on 127.0.0.1: {last}")
        self.endpoint = endpoint
        try:
            self.clock = ClockSyncServer(self.session, clock_key, clock_ns=time.monotonic_ns)
            self.channel = ZenohChannel(key, session=self.session)
        except BaseException:
            self.session.close()
            raise

    def publish(self, frame: np.ndarray) -> None:
        self.channel.publish(frame)

    def wait_matched(self, timeout: float) -> bool:
        return self.channel.wait_matched(timeout)

    def close(self) -> None:
        self.channel.close()
        self.clock.close()
        self.session.close()


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
                       shm_read: str, clock_pings: int = CLOCK_PINGS) -> tuple[np.ndarray, dict[str, Any]]:
    """The reader's latencies (ns) and, for Zenoh, the clock offset it estimated."""
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    recv_end, send_end = ctx.Pipe(duplex=False)
    writer: Any = None
    cleanup: Callable[[], None] | None = None
    if kind == "shm":
        writer = SharedArrayChannel.create("bench", frame.shape, frame.dtype, clock=MONOTONIC)
        target, args = _shm_reader, (writer.spec, n, ready, send_end, shm_read)

        def cleanup() -> None:
            writer.close()
            writer.unlink()
    elif kind == "iceoryx2":
        service = f"rtvla/bench/{os.getpid()}-{secrets.token_hex(4)}"
        writer = _IoxWriter(service, frame.nbytes)
        target, args = _iceoryx_reader, (service, frame.shape, n, ready, send_end, shm_read)
        cleanup = writer.close
    elif kind == "zenoh":
        key = f"rtvla/bench/{os.getpid()}-{secrets.token_hex(4)}"
        writer = _ZenohWriter(key, key + "/clock")
        target, args = _zenoh_reader, (key, writer.endpoint, n, ready, send_end, key + "/clock", clock_pings)
        cleanup = writer.close
    else:
        queue = ctx.Queue()
        target, args = _queue_reader, (queue, n, ready, send_end)

        class _QueueWriter:
            def publish(self, value: np.ndarray) -> None:
                queue.put((time.monotonic_ns(), value))

        writer = _QueueWriter()

        def cleanup() -> None:
            queue.close()
            queue.join_thread()
    proc = ctx.Process(target=target, args=args, name=f"bench-{kind}-reader", daemon=True)
    try:
        proc.start()
        send_end.close()  # the child holds its copy; EOF on ours then means the child is gone
        started = time.monotonic()
        while not ready.wait(0.1):  # a reader that dies while starting is reported at once
            if proc.exitcode is not None:
                raise ChannelError(f"{kind} bench reader exited while starting (exit code {proc.exitcode})")
            if time.monotonic() - started > _START_TIMEOUT_S:
                raise ChannelError(f"{kind} bench reader did not start within {_START_TIMEOUT_S} s")
        extra: dict[str, Any] = {}
        if kind == "zenoh":
            if not recv_end.poll(_ACK_TIMEOUT_S):
                raise ChannelError("zenoh bench reader sent no clock offset")
            offset, unc, rtt, pings = (int(v) for v in np.frombuffer(recv_end.recv_bytes(), np.int64))
            extra["clock"] = {"offset_us": offset / 1e3, "uncertainty_us": unc / 1e3, "rtt_us": rtt / 1e3,
                              "pings": pings, "true_offset_us": 0.0}
            extra["offset_ns"] = offset
            if not writer.wait_matched(_START_TIMEOUT_S):
                raise ChannelError(f"zenoh bench reader did not connect within {_START_TIMEOUT_S} s")
        for i in range(n):
            _pace(clock, gap_s)
            writer.publish(frame)
            if not recv_end.poll(_ACK_TIMEOUT_S):
                raise ChannelError(f"{kind} bench reader did not acknowledge frame {i + 1} "
                                   f"within {_ACK_TIMEOUT_S} s (exit code {proc.exitcode})")
            recv_end.recv_bytes()
        if not recv_end.poll(_ACK_TIMEOUT_S):
            raise ChannelError(f"{kind} bench reader sent no results")
        lat = np.frombuffer(recv_end.recv_bytes(), np.int64).copy()
        proc.join(timeout=10.0)
        return lat, extra
    except EOFError as exc:
        raise ChannelError(f"{kind} bench reader exited early (exit code {proc.exitcode})") from exc
    finally:
        recv_end.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5.0)
        if cleanup is not None:
            cleanup()


def _measure(kind: str, nbytes: int, iterations: int, warmup: int, gap_s: float,
             clock: Clock, shm_read: str, clock_pings: int = CLOCK_PINGS) -> tuple[np.ndarray, dict[str, Any]]:
    frame = payload(nbytes, fill=1)
    n = iterations + warmup
    extra: dict[str, Any] = {}
    if kind == "inproc":
        lat = _run_inproc(frame, n, gap_s, clock)
    else:
        lat, extra = _run_cross_process(kind, frame, n, gap_s, clock, shm_read, clock_pings)
    if lat.size < n:
        raise ChannelError(f"{kind} bench reader returned {lat.size} of {n} samples")
    return lat[warmup:], extra


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
    clock_pings: int = CLOCK_PINGS,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Measure every (payload, channel) pair; returns the JSON rows and the raw samples (us).

    ``progress(label)`` is called before each configuration. ``clock`` paces the writer
    between frames (``gap_s``); latencies are always real monotonic time. A kind whose
    optional package (iceoryx2, eclipse-zenoh) is missing raises :class:`ChannelError`;
    :func:`available_kinds` filters them out beforehand. Zenoh rows are clock-corrected
    with an offset estimated from ``clock_pings`` pings and carry ``clock`` and
    ``raw_latency_us`` (see the module docstring).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0, got {gap_s}")
    if shm_read not in SHM_READS:
        raise ValueError(f"shm_read must be one of {SHM_READS}, got {shm_read!r}")
    if isinstance(clock_pings, bool) or not isinstance(clock_pings, int) or clock_pings < 1:
        raise ValueError(f"clock_pings must be an integer >= 1, got {clock_pings!r}")
    unknown = [k for k in kinds if k not in CHANNEL_KINDS]
    if unknown:
        raise ValueError(f"channel kinds must be among {CHANNEL_KINDS}, got {unknown}")
    missing = [k for k in kinds if k not in available_kinds(kinds)]
    if missing:
        raise ChannelError(f"channel kinds {missing} need packages that are not installed: "
                           + ", ".join(f"{k} needs {_OPTIONAL[k]}" for k in missing)
                           + " (pip install 'rtvla[zenoh,iceoryx2]')")
    for nbytes in payloads:
        payload(nbytes)  # validates the size before any process starts
    rows: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    for nbytes in payloads:
        for kind in kinds:
            if progress is not None:
                progress(f"{kind} {nbytes:,} B")
            lat, extra = _measure(kind, nbytes, iterations, warmup, gap_s, clock, shm_read, clock_pings)
            row = summarize(kind, nbytes, lat)
            if kind in _READ_KINDS:
                row["read"] = shm_read
            if "clock" in extra:
                # Corrected with the estimated offset; the raw figures compare the stamps
                # directly (valid here only because both ends share one clock).
                raw = summarize(kind, nbytes, lat - extra["offset_ns"])["latency_us"]
                row.update(clock_corrected=True, clock=extra["clock"], raw_latency_us=raw)
            rows.append(row)
            samples[f"{kind} {nbytes:,} B"] = lat / 1e3
    return rows, samples
