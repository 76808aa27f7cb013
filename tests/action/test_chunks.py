from __future__ import annotations

import threading

import numpy as np
import pytest

from rtvla.action.chunks import ActionChunkQueue, ChunkError, ChunkRequest
from rtvla.bench.control import MLPChunkPolicy
from rtvla.metrics import Recorder
from rtvla.timing import FakeClock


def ramp(n: int, dof: int = 2, offset: float = 0.0) -> np.ndarray:
    """A chunk whose action k is (offset + k) in every dof: easy to recognise."""
    return np.tile((offset + np.arange(n, dtype=float))[:, None], (1, dof))


def wait_until(pred, timeout: float = 10.0) -> bool:
    """Wait for a condition set by another thread (checked every 10 ms, up to ``timeout``)."""
    ev = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if pred():
            return True
        ev.wait(0.01)
    return pred()


def make_queue(**kw):
    requests: list[ChunkRequest] = []
    clock = kw.pop("clock", FakeClock())
    q = ActionChunkQueue(kw.pop("chunk_size", 10), kw.pop("dof", 2), on_request=requests.append,
                         clock=clock, **kw)
    return q, requests, clock


def test_consumes_one_action_per_tick_and_requests_below_threshold():
    q, requests, _ = make_queue(threshold=0.5)
    q.push(ramp(10), start_tick=0)
    got = []
    for tick in range(5):
        a = q.pop(tick)
        got.append(a[0])
    assert got == [0, 1, 2, 3, 4]
    assert q.size == 5 and requests == []  # 5 left: not below 0.5 * 10 yet
    q.pop(5)
    assert q.size == 4
    assert len(requests) == 1 and requests[0].start_tick == 6
    assert q.request_event.is_set()
    # One request in flight at a time, however low the queue gets.
    for tick in range(6, 9):
        q.pop(tick)
    assert len(requests) == 1


def test_skips_actions_due_during_inference_and_measures_delay():
    clock = FakeClock()
    rec = Recorder(clock=clock)
    q, requests, _ = make_queue(threshold=0.5, recorder=rec, clock=clock)
    q.push(ramp(10), start_tick=0)
    for tick in range(6):
        q.pop(tick)
    req = requests[0]  # asked at tick 6 (the first unconsumed one)
    for tick in range(6, 9):  # inference takes 3 ticks
        clock.advance(0.01)
        q.pop(tick)
    skipped = q.push(ramp(10, offset=100.0), req.start_tick, request=req)
    assert skipped == 3
    assert q.delay_ticks_last == 3
    # The chunk computed for tick 6 starts executing at its 3rd action (for tick 9).
    assert q.pop(9)[0] == 103.0
    assert not q.in_flight
    st = q.stats()
    assert st["inference_delay_ticks"]["max"] == 3
    assert st["inference_delay_ms"]["max"] == pytest.approx(30.0)
    assert st["skipped_actions"] == 3
    snap = rec.snapshot()["chunks"]
    assert snap["gauges"]["inference_delay_ticks"] == 3.0


def test_starvation_counted_and_missed_ticks_skipped():
    q, _, _ = make_queue(threshold=0.0)
    assert q.pop(0) is None
    assert q.starved_ticks == 1
    q.push(ramp(10), start_tick=1)
    assert q.pop(1)[0] == 0.0
    # Ticks 2..4 were missed by the control loop: their actions are skipped, not replayed.
    assert q.pop(5)[0] == 4.0
    assert q.skipped_actions == 3
    for tick in range(6, 11):
        assert q.pop(tick) is not None
    assert q.pop(11) is None
    assert q.starved_ticks == 2


def test_merge_latest_replaces_overlap_and_beyond():
    q, _, _ = make_queue(threshold=0.0, merge="latest")
    q.push(ramp(10), start_tick=0)
    q.push(ramp(4, offset=50.0), start_tick=2)
    out = [None if (a := q.pop(t)) is None else a[0] for t in range(8)]
    assert out == [0, 1, 50, 51, 52, 53, None, None]


def test_merge_average():
    q, _, _ = make_queue(threshold=0.0, merge="average")
    q.push(ramp(6), start_tick=0)
    q.push(ramp(6, offset=10.0), start_tick=3)
    vals = [q.pop(t)[0] for t in range(9)]
    # ticks 3..5 have two predictions: (3 + 10) / 2, (4 + 11) / 2, (5 + 12) / 2
    assert vals == [0, 1, 2, 6.5, 7.5, 8.5, 13, 14, 15]


def test_merge_weighted_exponential():
    decay = 0.5
    q, _, _ = make_queue(threshold=0.0, merge="weighted", weight_decay=decay, dof=1)
    q.push(np.full((4, 1), 1.0), start_tick=0)
    q.push(np.full((4, 1), 2.0), start_tick=0)
    q.push(np.full((4, 1), 4.0), start_tick=0)
    w = np.exp(-decay * np.arange(3))  # oldest prediction weighs most
    expect = (w * np.array([1.0, 2.0, 4.0])).sum() / w.sum()
    assert q.pop(0)[0] == pytest.approx(expect)
    # The newest-favouring variant.
    q2, _, _ = make_queue(threshold=0.0, merge="weighted", weight_decay=-1.0, dof=1)
    q2.push(np.full((2, 1), 0.0), start_tick=0)
    q2.push(np.full((2, 1), 1.0), start_tick=0)
    assert q2.pop(0)[0] == pytest.approx(np.e / (1 + np.e))


def test_bad_chunks_and_settings():
    q, _, _ = make_queue()
    with pytest.raises(ChunkError, match="shape"):
        q.push(np.zeros((5, 3)), 0)
    with pytest.raises(ChunkError, match="non-finite"):
        q.push(np.full((5, 2), np.nan), 0)
    with pytest.raises(ChunkError, match="beyond the queue window"):
        q.push(np.zeros((10, 2)), 1000)
    with pytest.raises(ChunkError, match="merge"):
        ActionChunkQueue(10, 2, merge="median")
    with pytest.raises(ChunkError, match="threshold"):
        ActionChunkQueue(10, 2, threshold=2.0)
    with pytest.raises(ChunkError, match="policy"):
        ActionChunkQueue(10, 2).start()


def test_worker_runs_real_policy_asynchronously():
    policy = MLPChunkPolicy(dof=3, chunk_size=20, hidden=64, layers=2, repeats=1)
    arrived = threading.Event()
    q = ActionChunkQueue(20, 3, threshold=0.5, policy=policy)
    orig_push = q.push

    def push(chunk, start_tick, *, request=None):
        n = orig_push(chunk, start_tick, request=request)
        arrived.set()
        return n

    q.push = push  # type: ignore[method-assign]
    with q:
        assert q.prime(0) == 20
        arrived.clear()
        for tick in range(11):
            assert q.pop(tick) is not None
        assert q.requests == 2  # the prime, and the one at 9 left
        assert arrived.wait(10.0)
        assert q.chunks == 2
        # The new chunk continues the same smooth trajectory the first one predicted.
        a = q.pop(11).copy()
        expect = policy(ChunkRequest(0, 11, 0, None))[0]
        np.testing.assert_allclose(a, expect, atol=0.05)
    assert q.failures == 0 and policy.calls >= 2


def test_policy_failure_is_recorded_and_retried():
    calls = []

    def flaky(req: ChunkRequest) -> np.ndarray:
        calls.append(req.seq)
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return ramp(10)

    rec = Recorder()
    q = ActionChunkQueue(10, 2, threshold=0.5, policy=flaky, recorder=rec,
                         on_request=lambda r: None)
    with q:
        q.pop(0)  # empty: starved, requests
        assert wait_until(lambda: q.failures == 1 and not q.in_flight)
        q.pop(1)  # asks again
        assert wait_until(lambda: q.chunks == 1)
    assert any(e.kind == "inference_failed" for e in rec.events)
