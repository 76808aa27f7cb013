"""Child-process entry points for the shared-memory channel tests (importable under spawn)."""

from __future__ import annotations

import resource
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
