"""Torn frames never reach a reader of SharedArrayChannel, however reads and writes interleave.

Two layers:

- across processes, for real: many reader processes, a writer publishing as fast as it can
  with random pauses, readers reading every way (copy, into ``out``, views, ``latest``) with
  random pauses; every frame is a pattern derived from its seq and is checked whole. Run
  with the x86 ordering and with the fenced (libatomic) ordering that weakly ordered CPUs use.
- in one process, with hypothesis's rule-based state machine: random sequences of publishes,
  reads, views, abandoned writes (a writer killed mid-copy) and, injected at the protocol's
  critical points (a reader between its first version read and its copy, or between its
  copy and its check; a writer between marking a slot and completing it), publishes by a
  second writer handle or reads by a reader handle. The injection wraps the channel's
  ordering object (``_words``) and so runs the real ``latest``/``publish`` code.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from rtvla.channels.shm import SharedArrayChannel

sys.path.insert(0, str(Path(__file__).resolve().parent))
workers = importlib.import_module("_shm_workers")

SPAWN = mp.get_context("spawn")
SHAPE = (64, 128)  # 64 KiB of uint64 words per frame


def test_pattern_check_catches_a_torn_frame() -> None:
    """The checkers' oracle: half of one frame and half of the next is not any frame."""
    base = np.arange(np.prod(SHAPE), dtype=np.uint64).reshape(SHAPE)
    torn = workers.pattern(7, base).copy()
    torn[32:] = workers.pattern(8, base)[32:]
    assert not np.array_equal(torn, workers.pattern(7, base))
    assert not np.array_equal(torn, workers.pattern(8, base))
    assert np.array_equal(workers.pattern(7, base), workers.pattern(7, base))


def test_many_readers_fast_writer_random_pauses_no_torn_frame() -> None:
    """Two slots, so the writer laps the slot under a reader as often as it can. The writer
    alternates between a handle with this CPU's ordering and one with the fenced ordering,
    and the readers alternate too, so both variants write and read, and read each other."""
    n_readers, run_s = 4, 4.0
    rng = random.Random(1234)
    base = np.arange(np.prod(SHAPE), dtype=np.uint64).reshape(SHAPE)
    orderings = ["auto", "atomic"]
    with SharedArrayChannel.create("torture", SHAPE, np.uint64, slots=2) as ch, \
            SharedArrayChannel.attach(ch.spec, ordering="atomic") as fenced:
        results = SPAWN.Queue()
        readies = [SPAWN.Event() for _ in range(n_readers + 1)]
        procs = [SPAWN.Process(target=workers.torture_reader,
                               args=(ch.spec, orderings[i % 2], 100 + i, readies[i], results, 30.0),
                               daemon=True)
                 for i in range(n_readers + 1)]
        for p in procs:
            p.start()
        try:
            for r in readies:
                assert r.wait(90.0), "reader did not start"
            victim = procs[-1]  # one reader dies mid-run: nobody else may notice
            seq = 0
            frame = np.empty(SHAPE, np.uint64)
            t_end = time.monotonic() + run_s
            killed_at = time.monotonic() + run_s / 3
            while time.monotonic() < t_end:
                seq += 1
                np.copyto(frame, workers.pattern(seq, base))
                assert (fenced if rng.random() < 0.5 else ch).publish(frame) == seq
                if rng.random() < 0.02:  # the writer stalls too (scheduler, GC, a slow camera)
                    time.sleep(rng.uniform(0.0, 0.003))
                if victim.is_alive() and time.monotonic() > killed_at:
                    os.kill(victim.pid, signal.SIGKILL)
            final = seq
            ch.close()  # creator close: the readers' wait_newer returns None after the newest
            reports = [results.get(timeout=60.0) for _ in range(n_readers)]
            for p in procs[:-1]:
                p.join(30.0)
                assert p.exitcode == 0
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(5.0)
    assert final > 500, f"the writer only managed {final} frames"
    for rep in reports:
        assert rep["error"] is None, rep
        assert rep["torn"] == 0, rep
        assert rep["backwards"] == 0, rep
        assert rep["stale"] == 0, rep
        assert rep["frames"] >= 20, rep
        assert all(n > 0 for n in rep["modes"].values()), rep
        assert rep["last"] == final, rep  # every reader ends on the newest frame


# --- in-process interleavings (hypothesis state machine) --------------------------------------


class _Hooked:
    """The channel's ordering object with one-shot hooks at the protocol's critical points."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hooks: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _fire(self, point: str) -> None:
        hook = self.hooks.pop(point, None)
        if hook is not None:
            hook()

    def seq(self) -> int:
        return self.inner.seq()

    def version(self, slot: int) -> int:
        v = self.inner.version(slot)
        self._fire("after_version")  # a reader between its first version read and its copy
        return v

    def read_fence(self) -> None:
        self._fire("before_fence")  # a reader between its copy and its check
        self.inner.read_fence()

    def begin_write(self, slot: int, odd: int) -> None:
        self.inner.begin_write(slot, odd)
        self._fire("after_begin")  # a writer that marked its slot and has not copied yet

    def end_write(self, slot: int, even: int, seq: int) -> None:
        self._fire("before_end")  # a writer that copied and has not marked the slot complete
        self.inner.end_write(slot, even, seq)

    def wake(self) -> int:
        return self.inner.wake()

    def bump_wake(self) -> None:
        self.inner.bump_wake()


class SeqlockMachine(RuleBasedStateMachine):
    """Model: the frame published for each seq, and for each slot the seq last begun in it."""

    @initialize(slots=st.integers(2, 4), ordering=st.sampled_from(["tso", "atomic"]))
    def setup(self, slots: int, ordering: str) -> None:
        self.slots = slots
        self.writer = SharedArrayChannel.create("hyp", (16,), np.uint64, slots=slots, ordering=ordering)
        self.other_writer = SharedArrayChannel.attach(self.writer.spec, ordering=ordering)
        self.reader = SharedArrayChannel.attach(self.writer.spec, ordering=ordering)
        for ch in (self.writer, self.other_writer, self.reader):
            ch._words = _Hooked(ch._words)  # white box: see the module docstring
        self.frames: dict[int, np.ndarray] = {}
        self.begun: dict[int, int] = {}  # slot -> seq whose write last began there
        self.seq = 0
        self.views: list[Any] = []

    def teardown(self) -> None:
        if hasattr(self, "writer"):
            self.views.clear()
            self.reader.close()
            self.other_writer.close()
            self.writer.close()
            self.writer.unlink()

    # -- helpers ------------------------------------------------------------------------------

    def _publish(self, ch: SharedArrayChannel, salt: int) -> None:
        value = np.arange(16, dtype=np.uint64) * np.uint64(salt) + np.uint64(self.seq + 1)
        self.begun[(self.seq + 1) % self.slots] = self.seq + 1
        got = ch.publish(value)
        self.seq += 1
        assert got == self.seq
        self.frames[self.seq] = value.copy()

    def _check(self, sample: Any, at_least: int) -> None:
        assert sample is not None
        assert at_least <= sample.seq <= self.seq  # latest value, never older than the call
        np.testing.assert_array_equal(sample.value, self.frames[sample.seq])

    # -- rules --------------------------------------------------------------------------------

    @rule(salt=st.integers(0, 2**32), by_other=st.booleans())
    def publish(self, salt: int, by_other: bool) -> None:
        self._publish(self.other_writer if by_other else self.writer, salt)

    @precondition(lambda self: self.seq > 0)
    @rule(how=st.sampled_from(["copy", "out", "view"]))
    def read(self, how: str) -> None:
        out = np.empty(16, np.uint64) if how == "out" else None
        s = self.reader.latest(copy=how != "view", out=out)
        self._check(s, self.seq)
        if how == "view":
            self.views.append(s)

    @precondition(lambda self: self.seq > 0)
    @rule(point=st.sampled_from(["after_version", "before_fence"]), k=st.integers(1, 5),
          salt=st.integers(0, 2**32), abandon=st.booleans())
    def read_while_another_writer_runs(self, point: str, k: int, salt: int, abandon: bool) -> None:
        """At ``point`` of a read, another handle publishes ``k`` frames (and maybe dies in
        the middle of the next one): the read retries or keeps its own, never mixes them."""
        start = self.seq

        def interfere() -> None:
            for _ in range(k):
                self._publish(self.other_writer, salt)
            if abandon:
                self.abandoned_write(salt ^ 0xFFFF)

        self.reader._words.hooks[point] = interfere
        s = self.reader.latest(copy=True)
        self.reader._words.hooks.clear()
        self._check(s, start)

    @precondition(lambda self: self.seq > 0)
    @rule(point=st.sampled_from(["after_begin", "before_end"]), salt=st.integers(0, 2**32),
          how=st.sampled_from(["copy", "view"]))
    def read_in_the_middle_of_a_publish(self, point: str, salt: int, how: str) -> None:
        """A reader that runs while a publish is half done gets the previous frame, whole."""
        before = self.seq
        seen: list[Any] = []

        def read_now() -> None:
            s = self.reader.latest(copy=how == "copy")
            seen.append((s.seq, np.array(s.value), how == "copy" or self.reader.still_valid(s)))

        self.writer._words.hooks[point] = read_now
        self._publish(self.writer, salt)
        self.writer._words.hooks.clear()
        (seq, value, valid), = seen
        assert seq == before
        if valid:
            np.testing.assert_array_equal(value, self.frames[before])

    @precondition(lambda self: self.seq > 0)
    @rule(garbage=st.integers(0, 2**32))
    def abandoned_write(self, garbage: int) -> None:
        """A writer killed mid-copy: its slot stays marked odd and half written. Readers keep
        the last complete frame and nothing waits on the dead writer; the next publish
        rewrites the slot."""
        words = self.other_writer._words.inner
        nxt = self.seq + 1
        slot = nxt % self.slots
        words.begin_write(slot, 2 * nxt + 1)
        self.other_writer._frames[slot][: 8] = np.uint64(garbage)
        self.begun[slot] = -nxt  # begun, never completed

    @precondition(lambda self: self.seq > 0)
    @rule()
    def wait_newer_does_not_block(self) -> None:
        assert self.reader.wait_newer(self.seq, timeout=0) is None
        self._check(self.reader.wait_newer(self.seq - 1, timeout=0), self.seq)

    @rule()
    def check_views(self) -> None:
        for s in self.views:
            valid = self.reader.still_valid(s)
            assert valid == (self.begun.get(s.seq % self.slots) == s.seq)
            if valid:
                np.testing.assert_array_equal(s.value, self.frames[s.seq])
        self.views = [s for s in self.views if self.reader.still_valid(s)]

    @invariant()
    def every_handle_sees_the_newest(self) -> None:
        if hasattr(self, "writer"):
            for ch in (self.writer, self.other_writer, self.reader):
                assert ch.seq == self.seq
            if self.seq:
                np.testing.assert_array_equal(self.reader.latest().value, self.frames[self.seq])


SeqlockMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=25, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
test_seqlock_interleavings = SeqlockMachine.TestCase
