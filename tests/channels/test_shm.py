"""SharedArrayChannel: contract, torn-frame safety across processes, wake-ups, cleanup."""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rtvla.channels import shm_sync
from rtvla.channels.base import Channel
from rtvla.channels.shm import SharedArrayChannel, ShmSpec
from rtvla.errors import ChannelClosed, ChannelError
from rtvla.timing import FakeClock

# Spawned children import their entry points by module name; they inherit this sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
workers = importlib.import_module("_shm_workers")

SPAWN = mp.get_context("spawn")
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _segments(spec: ShmSpec) -> bool:
    return Path("/dev/shm", spec.segment).exists()


@pytest.fixture
def ch():
    with SharedArrayChannel.create("test/frames", (4, 5, 3), np.uint8) as c:
        yield c


def test_roundtrip_seq_and_stamps_from_injected_clock() -> None:
    clock = FakeClock(1_000)
    with SharedArrayChannel.create("cam", (2, 3), np.float32, clock=clock) as ch:
        assert isinstance(ch, Channel)
        assert ch.latest() is None and ch.seq == 0
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        assert ch.publish(a) == 1
        clock.advance(ns=500)
        assert ch.publish(a * 2) == 2
        s = ch.latest()
        assert s is not None and s.seq == 2 and s.stamp_ns == 1_500
        np.testing.assert_array_equal(s.value, a * 2)
        a[:] = -1  # publishing copied: later edits of the source do not leak in
        np.testing.assert_array_equal(ch.latest().value, np.arange(6).reshape(2, 3) * 2)


def test_copy_is_private_view_is_read_only_and_expires(ch: SharedArrayChannel) -> None:
    ch.publish(np.full((4, 5, 3), 1, np.uint8))
    copy = ch.latest()
    copy.value[:] = 99  # a copy is the caller's
    view = ch.latest(copy=False)
    assert view.value[0, 0, 0] == 1
    assert not view.value.flags.writeable
    with pytest.raises(ValueError):
        view.value[0, 0, 0] = 5
    assert ch.still_valid(view)
    for i in range(ch.slots - 1):
        ch.publish(np.full((4, 5, 3), 2 + i, np.uint8))
        assert ch.still_valid(view)  # other slots were written
    ch.publish(np.full((4, 5, 3), 50, np.uint8))
    assert not ch.still_valid(view)  # the writer came round to its slot


def test_latest_into_preallocated_out(ch: SharedArrayChannel) -> None:
    out = np.zeros((4, 5, 3), np.uint8)
    ch.publish(np.full((4, 5, 3), 7, np.uint8))
    s = ch.latest(out=out)
    assert s.value is out and int(out.sum()) == 7 * out.size
    with pytest.raises(ChannelError, match="out must have shape"):
        ch.latest(out=np.zeros((4, 5), np.uint8))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros((4, 5, 3), np.float32), "dtype uint8, got shape"),
        (np.zeros((5, 4, 3), np.uint8), r"expects shape \(4, 5, 3\)"),
        ([[0] * 3] * 5, "publishes numpy arrays, got list"),
    ],
)
def test_publish_mismatch_is_channel_error(ch: SharedArrayChannel, value, match: str) -> None:
    with pytest.raises(ChannelError, match=match):
        ch.publish(value)
    assert ch.seq == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "", "shape": (3,), "dtype": np.uint8}, "non-empty string"),
        ({"name": "x", "shape": (3, 0), "dtype": np.uint8}, "must be > 0"),
        ({"name": "x", "shape": (3,), "dtype": object}, "Python objects"),
        ({"name": "x", "shape": (3,), "dtype": "not-a-dtype"}, "not a numpy dtype"),
        ({"name": "x", "shape": (3,), "dtype": np.uint8, "slots": 1}, "slots must be an int >= 2"),
    ],
)
def test_create_rejects_bad_layout(kwargs, match: str) -> None:
    with pytest.raises(ChannelError, match=match):
        SharedArrayChannel.create(**kwargs)


def test_behind_reader_gets_newest_not_backlog(ch: SharedArrayChannel) -> None:
    for i in range(10):
        ch.publish(np.full((4, 5, 3), i, np.uint8))
    s = ch.wait_newer(0, timeout=1.0)
    assert s.seq == 10 and s.value[0, 0, 0] == 9
    t0 = time.monotonic()
    assert ch.wait_newer(10, timeout=0.05) is None
    assert 0.04 <= time.monotonic() - t0 < 2.0


def test_wait_newer_wakes_on_publish_from_another_thread(ch: SharedArrayChannel) -> None:
    got: list = []
    started = threading.Event()

    def reader() -> None:
        started.set()
        got.append(ch.wait_newer(0, timeout=10.0))

    t = threading.Thread(target=reader)
    t.start()
    started.wait(5.0)
    ch.publish(np.full((4, 5, 3), 3, np.uint8))
    t.join(5.0)
    assert not t.is_alive()
    assert got[0] is not None and got[0].seq == 1


def test_close_wakes_waiter_and_is_idempotent() -> None:
    ch = SharedArrayChannel.create("closing", (8,), np.int64)
    got: list = []
    t = threading.Thread(target=lambda: got.append(ch.wait_newer(0, timeout=30.0)))
    t.start()
    t0 = time.monotonic()
    ch.close()
    t.join(10.0)
    assert not t.is_alive() and got == [None]
    assert time.monotonic() - t0 < 10.0
    ch.close()
    assert ch.closed
    with pytest.raises(ChannelClosed):
        ch.publish(np.zeros(8, np.int64))
    with pytest.raises(ChannelClosed):
        ch.latest()
    assert ch.wait_newer(0, timeout=0.01) is None
    ch.unlink()
    ch.unlink()
    assert not _segments(ch.spec)


def test_creator_close_closes_channel_for_attached_handles() -> None:
    owner = SharedArrayChannel.create("owner", (3,), np.int32)
    other = SharedArrayChannel.attach(owner.spec)
    assert not other.is_creator
    owner.publish(np.array([1, 2, 3], np.int32))
    got: list = []
    t = threading.Thread(target=lambda: got.append(other.wait_newer(1, timeout=30.0)))
    t.start()
    owner.close()
    t.join(10.0)
    assert not t.is_alive() and got == [None]
    assert other.closed
    assert other.latest().value.tolist() == [1, 2, 3]  # its mapping is still there
    with pytest.raises(ChannelClosed, match="closed by its creator"):
        other.publish(np.zeros(3, np.int32))
    with pytest.raises(ChannelError, match="only the creating handle"):
        other.unlink()
    owner.unlink()
    other.close()
    assert not _segments(owner.spec)


def test_attach_errors_name_the_problem() -> None:
    with SharedArrayChannel.create("spec", (3,), np.int32) as owner:
        wrong = dataclasses.replace(owner.spec, shape=(4,))
        with pytest.raises(ChannelError, match="does not match spec"):
            SharedArrayChannel.attach(wrong)
        with pytest.raises(ChannelError, match="needs a ShmSpec"):
            SharedArrayChannel.attach(("spec", (3,)))  # type: ignore[arg-type]
        spec = owner.spec
    with pytest.raises(ChannelError, match="does not exist"):
        SharedArrayChannel.attach(spec)


def test_spec_pickles_and_segment_names_are_unique() -> None:
    with SharedArrayChannel.create("a/b c", (2,), np.uint8) as one, \
            SharedArrayChannel.create("a/b c", (2,), np.uint8) as two:
        assert one.spec.segment != two.spec.segment
        assert "/" not in one.spec.segment and " " not in one.spec.segment
        assert pickle.loads(pickle.dumps(one.spec)) == one.spec


def test_many_spawned_readers_never_see_a_torn_frame() -> None:
    """A writer hammers 64 KiB frames whose every byte is the seq's low byte; three
    readers in spawned processes check each frame they read is uniform and matches. Two
    slots, so the writer laps a slot under a reader as often as it can."""
    n_readers, n_frames = 3, 3000
    with SharedArrayChannel.create("hammer", (256, 256), np.uint8, slots=2) as ch:
        results = SPAWN.Queue()
        readies = [SPAWN.Event() for _ in range(n_readers)]
        procs = [SPAWN.Process(target=workers.uniform_reader, args=(ch.spec, r, results, 30.0))
                 for r in readies]
        for p in procs:
            p.start()
        for r in readies:
            assert r.wait(60.0), "reader did not start"
        frame = np.empty((256, 256), np.uint8)
        for seq in range(1, n_frames + 1):
            frame.fill(seq & 0xFF)
            assert ch.publish(frame) == seq
        ch.close()  # creator close: readers' wait_newer returns None and they report
        reports = [results.get(timeout=60.0) for _ in procs]
        for p in procs:
            p.join(30.0)
            assert p.exitcode == 0
    for frames, torn, backwards, last in reports:
        assert torn == 0
        assert backwards == 0
        assert frames >= 1
        assert last == n_frames  # every reader ends on the newest frame


def test_channel_pickles_as_attach_into_child() -> None:
    with SharedArrayChannel.create("pickled", (3,), np.int16) as ch:
        results, ready = SPAWN.Queue(), SPAWN.Event()
        p = SPAWN.Process(target=workers.pickled_reader, args=(ch, ready, results))
        p.start()
        assert ready.wait(60.0)
        ch.publish(np.array([4, 5, 6], np.int16))
        assert results.get(timeout=30.0) == (1, [4, 5, 6], False)
        p.join(30.0)
        assert p.exitcode == 0


def test_waiting_reader_sleeps_in_kernel_not_polling() -> None:
    with SharedArrayChannel.create("idle", (16,), np.uint8) as ch:
        results, ready = SPAWN.Queue(), SPAWN.Event()
        p = SPAWN.Process(target=workers.idle_waiter, args=(ch.spec, ready, results, 1.0))
        p.start()
        assert ready.wait(60.0)
        timed_out, wall, cpu = results.get(timeout=60.0)
        p.join(30.0)
    assert timed_out
    assert wall >= 0.95
    assert cpu < 0.1, f"a 1 s wait used {cpu:.3f} s of CPU: it polls"


def test_no_resource_tracker_warning_or_leaked_segment_at_exit(tmp_path: Path) -> None:
    """Spawned attachers that exit, with or without close, neither unlink nor warn."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing as mp, sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import _shm_workers as workers
        from rtvla.channels.shm import SharedArrayChannel

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            with SharedArrayChannel.create("exit", (10,), np.int32) as ch:
                ch.publish(np.arange(10, dtype=np.int32))
                q = ctx.Queue()
                for close in (True, False):
                    p = ctx.Process(target=workers.attach_and_exit, args=(ch.spec, q, close))
                    p.start()
                    assert q.get(timeout=60) == 45
                    p.join(60)
                    assert p.exitcode == 0
                # Both children are gone; the segment must still be there for the creator.
                assert SharedArrayChannel.attach(ch.spec).latest().seq == 1
                print(ch.spec.segment)
    """))
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "resource_tracker" not in proc.stderr and "leaked" not in proc.stderr, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    segment = proc.stdout.strip()
    assert segment.startswith("rtvla-exit-")
    assert not Path("/dev/shm", segment).exists()


def test_child_process_can_publish_to_the_creator() -> None:
    with SharedArrayChannel.create("from-child", (32,), np.int32) as ch:
        go = SPAWN.Event()
        p = SPAWN.Process(target=workers.publisher, args=(ch.spec, 50, go))
        p.start()
        go.set()
        last = 0
        while last < 50:
            s = ch.wait_newer(last, timeout=60.0)
            assert s is not None, "child publisher went silent"
            assert s.seq > last and np.all(s.value == s.seq)
            last = s.seq
        p.join(30.0)
        assert p.exitcode == 0


def test_forked_child_does_not_own_the_segment() -> None:
    fork = mp.get_context("fork")
    with SharedArrayChannel.create("forked", (4,), np.uint8) as ch:
        results = fork.Queue()
        p = fork.Process(target=workers.forked_child_closes, args=(ch, results))
        p.start()
        assert results.get(timeout=60.0) == (False, True)
        p.join(30.0)
        assert not ch.closed  # the child's close detached only the child
        assert ch.publish(np.ones(4, np.uint8)) == 1
        assert _segments(ch.spec)


def _blocked_in_futex(pid: int, timeout_s: float) -> bool:
    """Wait until the process's kernel wait channel is a futex (it sleeps in wait_newer)."""
    wchan, stat = Path(f"/proc/{pid}/wchan"), Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        where = wchan.read_text().strip()
        if "futex" in where:
            return True
        if where in ("", "0") and stat.read_text().rsplit(")", 1)[1].split()[0] == "S":
            return True  # wait channel hidden by the kernel: sleeping is the best evidence

        threading.Event().wait(0.01)
    return False


def test_sigint_interrupts_a_blocked_wait(tmp_path: Path) -> None:
    script = tmp_path / "wait.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        from rtvla.channels.shm import SharedArrayChannel
        with SharedArrayChannel.create("sigint", (4,), np.uint8) as ch:
            print("waiting", flush=True)
            try:
                ch.wait_newer(0, timeout=None)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(3)
    """))
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "waiting"
        assert _blocked_in_futex(proc.pid, timeout_s=30.0), "child never blocked in the futex"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    assert "interrupted" in out
    assert "leaked" not in err


# --- memory ordering ---------------------------------------------------------------------------


def test_fenced_ordering_round_trips_and_mixes_with_the_native_one() -> None:
    with SharedArrayChannel.create("fenced", (5,), np.float64, ordering="atomic") as ch:
        assert ch.ordering == "atomic"
        native = SharedArrayChannel.attach(ch.spec)
        assert native.ordering == ("tso" if shm_sync.tso_cpu() else "atomic")
        assert ch.publish(np.arange(5.0)) == 1
        assert native.publish(np.arange(5.0) * 2) == 2  # same layout, same protocol
        s = ch.wait_newer(1, timeout=5.0)
        assert s.seq == 2 and s.value.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
        view = ch.latest(copy=False)
        assert ch.still_valid(view)
        native.close()


def test_ordering_choices_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ChannelError, match="ordering must be one of"):
        SharedArrayChannel.create("x", (2,), np.uint8, ordering="relaxed")
    # A weakly ordered CPU: the plain x86 protocol is refused, auto picks the fenced one.
    monkeypatch.setattr(shm_sync.platform, "machine", lambda: "aarch64")
    with pytest.raises(ChannelError, match=r"relies on x86 store ordering.*aarch64"):
        SharedArrayChannel.create("x", (2,), np.uint8, ordering="tso")
    with SharedArrayChannel.create("arm", (2,), np.uint8) as ch:
        assert ch.ordering == "atomic"
        ch.publish(np.array([1, 2], np.uint8))
        assert ch.latest().value.tolist() == [1, 2]


def test_missing_libatomic_on_a_weak_cpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shm_sync.platform, "machine", lambda: "armv7l")
    monkeypatch.setattr(shm_sync, "_libatomic", None)
    monkeypatch.setattr(shm_sync.ctypes.util, "find_library", lambda name: "/nonexistent/libatomic.so.1")
    with pytest.raises(ChannelError, match=r"libatomic.*apt install libatomic1"):
        SharedArrayChannel.create("x", (2,), np.uint8)


# --- dead peers never block a reader -----------------------------------------------------------


def _wait_in_thread(ch: SharedArrayChannel, seq: int) -> tuple[threading.Thread, list]:
    got: list = []
    t = threading.Thread(target=lambda: got.append((ch.wait_newer(seq, timeout=None), time.monotonic())),
                         daemon=True)
    t.start()
    return t, got


def test_reader_waiting_forever_returns_when_the_creator_is_killed() -> None:
    results = SPAWN.Queue()
    p = SPAWN.Process(target=workers.create_and_hold, args=(results,), daemon=True)
    p.start()
    try:
        spec = results.get(timeout=60.0)
        ch = SharedArrayChannel.attach(spec)
        assert ch.seq == 1 and ch.writer_gone() is None
        t, got = _wait_in_thread(ch, 1)
        assert not _joined(t, 0.3)  # it really waits while the creator lives
        os.kill(p.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert _joined(t, 10.0), "reader still blocked on a dead creator"
        sample, returned = got[0]
        assert sample is None
        assert returned - killed < 5.0
        assert "creator" in (ch.writer_gone() or "")
        assert ch.latest().value.tolist() == list(range(8))  # what was published stays readable
        ch.close()
    finally:
        p.kill()
        p.join(10.0)


def test_reader_waiting_forever_returns_when_the_publisher_is_killed() -> None:
    with SharedArrayChannel.create("dying-publisher", (4,), np.int32) as ch:
        ready = SPAWN.Event()
        p = SPAWN.Process(target=workers.hold_then_publish, args=(ch.spec, ready, 3), daemon=True)
        p.start()
        try:
            assert ready.wait(60.0)
            assert ch.seq == 3
            t, got = _wait_in_thread(ch, 3)
            assert not _joined(t, 0.3)
            os.kill(p.pid, signal.SIGKILL)
            killed = time.monotonic()
            assert _joined(t, 10.0), "reader still blocked on a dead publisher"
            assert got[0][0] is None and got[0][1] - killed < 5.0
        finally:
            p.kill()
            p.join(10.0)
        assert "last publisher" in (ch.writer_gone() or "")
        # A new publisher (here the creator) takes over: the channel works as before.
        assert ch.publish(np.full(4, 9, np.int32)) == 4
        assert ch.writer_gone() is None
        assert ch.wait_newer(3, timeout=None).value.tolist() == [9, 9, 9, 9]


def test_writer_killed_mid_copy_leaves_the_last_whole_frame() -> None:
    """A writer of 4 MB frames is killed while it publishes as fast as it can, most likely
    mid-copy: readers get the last complete frame, whole, at once, and the next writer goes on."""
    with SharedArrayChannel.create("mid-copy", (2048, 2048), np.uint8, slots=2) as ch:
        ready = SPAWN.Event()
        p = SPAWN.Process(target=workers.publish_big_frames, args=(ch.spec, ready), daemon=True)
        p.start()
        try:
            assert ready.wait(60.0)
            os.kill(p.pid, signal.SIGKILL)
            p.join(10.0)
        finally:
            p.kill()
        t0 = time.monotonic()
        s = ch.latest()
        assert time.monotonic() - t0 < 1.0
        assert s.seq >= 5
        assert s.value.min() == s.value.max() == s.seq & 0xFF
        assert ch.wait_newer(s.seq, timeout=None) is None  # the writer is gone: no hang
        assert ch.publish(np.full((2048, 2048), 7, np.uint8)) == s.seq + 1
        assert ch.latest().value.max() == 7


def test_abandoned_slot_is_rewritten_by_the_next_publish(ch: SharedArrayChannel) -> None:
    ch.publish(np.full((4, 5, 3), 1, np.uint8))
    words, slot = ch._words, 2 % ch.slots  # white box: a writer that died after marking seq 2
    words.begin_write(slot, 2 * 2 + 1)
    ch._frames[slot][:] = 200
    s = ch.latest()
    assert s.seq == 1 and int(s.value.max()) == 1
    assert ch.wait_newer(0, timeout=0).seq == 1
    assert ch.publish(np.full((4, 5, 3), 2, np.uint8)) == 2
    assert ch.latest().value.min() == 2


def _joined(t: threading.Thread, timeout: float) -> bool:
    t.join(timeout)
    return not t.is_alive()
