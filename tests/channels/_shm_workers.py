"""Child-process entry points for the shared-memory channel tests (importable under spawn)."""

from __future__ import annotations

import resource
import threading
import time
from typing import Any

import numpy as np

from rtvla.channels.shm import SharedArrayChannel, ShmSpec


def uniform_reader(spec: ShmSpec, ready: Any, results: Any, idle_timeout_s: float) -> None:
    """Read until the channel closes; report (frames, torn, non-increasing, last seq)."""
    ch = SharedArrayChannel.attach(spec)
    ready.set()
    frames = torn = backwards = 0
    last = 0
    while True:
        s = ch.wait_newer(last, timeout=idle_timeout_s)
        if s is None:
            break
        v = s.value
        expected = s.seq & 0xFF
        if not (v.min() == expected and v.max() == expected):
            torn += 1
        if s.seq <= last:
            backwards += 1
        last = s.seq
        frames += 1
    ch.close()
    results.put((frames, torn, backwards, last))


def pickled_reader(ch: SharedArrayChannel, ready: Any, results: Any) -> None:
    """Receives the channel itself as an argument (pickling attaches)."""
    ready.set()
    s = ch.wait_newer(0, timeout=20.0)
    results.put(None if s is None else (s.seq, s.value.tolist(), ch.is_creator))
    ch.close()


def idle_waiter(spec: ShmSpec, ready: Any, results: Any, wait_s: float) -> None:
    """Wait with nothing published; report the CPU seconds the wait used."""
    ch = SharedArrayChannel.attach(spec)
    ready.set()
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    s = ch.wait_newer(ch.seq, timeout=wait_s)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results.put((s is None, wall, cpu))
    ch.close()


def attach_and_exit(spec: ShmSpec, results: Any, close: bool) -> None:
    """Attach, read, and exit with or without closing (neither may unlink or warn)."""
    ch = SharedArrayChannel.attach(spec)
    s = ch.latest()
    results.put(None if s is None else int(np.asarray(s.value).sum()))
    if close:
        ch.close()


def publisher(spec: ShmSpec, n: int, go: Any) -> None:
    """Publish ``n`` frames from a child process (a camera process, say) once told to."""
    ch = SharedArrayChannel.attach(spec)
    go.wait(60.0)
    for i in range(1, n + 1):
        ch.publish(np.full(spec.shape, i, spec.dtype))
    ch.close()


def forked_child_closes(ch: SharedArrayChannel, results: Any) -> None:
    """Under fork the child inherits the creator's object; closing it must not close the
    channel for everyone, and unlinking must be refused."""
    owner = ch.is_creator
    ch.close()
    try:
        ch.unlink()
        refused = False
    except Exception:
        refused = True
    results.put((owner, refused))


# --- torture (tests/channels/test_shm_torture.py) -------------------------------------------

_K = 0x9E3779B97F4A7C15  # a 64-bit odd constant: frames of different seqs differ in every word
_MASK = (1 << 64) - 1


def pattern(seq: int, base: np.ndarray) -> np.ndarray:
    """The frame for ``seq``: word i is ``seq * K + i`` (mod 2**64); ``base`` is arange."""
    return base + np.uint64((seq * _K) & _MASK)


def torture_reader(spec: ShmSpec, ordering: str, seed: int, ready: Any, results: Any,
                   idle_timeout_s: float) -> None:
    """Read until the channel closes, taking frames every way there is (copy, into ``out``,
    a read-only view, ``latest`` without waiting) with random pauses between reads; check
    each frame whole against its seq's pattern. Reports counts, never raises on a bad frame."""
    import random

    rng = random.Random(seed)
    ch = SharedArrayChannel.attach(spec, ordering=ordering)
    base = np.arange(int(np.prod(spec.shape)), dtype=np.uint64).reshape(spec.shape)
    out = np.empty(spec.shape, spec.dtype)
    report = {"frames": 0, "torn": 0, "backwards": 0, "stale": 0, "expired_views": 0,
              "modes": {"copy": 0, "out": 0, "view": 0, "latest": 0}, "last": 0, "error": None}
    last = 0
    ready.set()
    try:
        while True:
            if rng.random() < 0.05:  # a reader that falls behind: it must get the newest
                time.sleep(rng.uniform(0.0, 0.004))
            mode = rng.choice(("copy", "out", "view", "latest"))
            before = ch.seq  # latest value: what we get is at least as new as this
            if mode == "latest":
                s = ch.latest(copy=rng.random() < 0.5, out=out if rng.random() < 0.3 else None)
            else:
                s = ch.wait_newer(last, timeout=idle_timeout_s, copy=mode != "view",
                                  out=out if mode == "out" else None)
            if s is None:
                if mode == "latest":
                    continue
                break
            report["modes"][mode] += 1
            whole = bool(np.array_equal(s.value, pattern(s.seq, base)))
            # A view is only a promise until the writer comes round to its slot:
            # still_valid (checked after reading it) says whether what we read was it.
            if not s.value.flags.writeable and not ch.still_valid(s):
                report["expired_views"] += 1
                continue
            if not whole:
                report["torn"] += 1
            if s.seq < before:
                report["stale"] += 1
            if s.seq < last or (mode != "latest" and s.seq == last):
                report["backwards"] += 1
            last = max(last, s.seq)
            report["frames"] += 1
    except Exception as exc:  # reported to the test, which fails with it
        report["error"] = f"{type(exc).__name__}: {exc}"
    report["last"] = last
    ch.close()
    results.put(report)


def hold_then_publish(spec: ShmSpec, ready: Any, n: int) -> None:
    """Publish ``n`` frames, then block forever (until killed): a publisher that dies silent."""
    ch = SharedArrayChannel.attach(spec)
    for i in range(1, n + 1):
        ch.publish(np.full(spec.shape, i, spec.dtype))
    ready.set()
    threading.Event().wait()


def create_and_hold(results: Any) -> None:
    """Create a channel, publish once, hand its spec over, then block until killed."""
    ch = SharedArrayChannel.create("dying-creator", (8,), np.int64)
    ch.publish(np.arange(8, dtype=np.int64))
    results.put(ch.spec)
    threading.Event().wait()


def publish_big_frames(spec: ShmSpec, ready: Any) -> None:
    """Publish large uniform frames (value = seq & 0xFF) as fast as possible until killed."""
    ch = SharedArrayChannel.attach(spec)
    frame = np.empty(spec.shape, spec.dtype)
    seq = ch.seq
    while True:
        seq += 1
        frame.fill(seq & 0xFF)
        ch.publish(frame)
        if seq >= 5:
            ready.set()
