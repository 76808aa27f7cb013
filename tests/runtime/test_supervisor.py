from __future__ import annotations

import threading
import time

from rtvla.metrics import Recorder
from rtvla.runtime.supervisor import Supervisor


def _wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_critical_unit_is_restarted_with_backoff_and_reported():
    rec = Recorder()
    runs = []
    faults = []

    def flaky(stop: threading.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        stop.wait()

    sup = Supervisor(rec, backoff_initial_s=0.05)
    sup.add("perception", flaky, critical=True, on_fault=lambda: faults.append(1))
    sup.start()
    assert _wait(lambda: len(runs) == 3)
    assert sup.states()["perception"].restarts == 2
    assert sup.stop() == []
    kinds = [e.kind for e in rec.events]
    assert kinds.count("fault") == 2 and kinds.count("restart") == 2 and len(faults) == 2
    assert runs[2] - runs[1] >= runs[1] - runs[0] * 1.0 - 1.0  # backoff does not shrink
    assert sup.states()["perception"].status == "stopped"


def test_non_critical_unit_degrades_and_is_not_restarted():
    rec = Recorder()
    calls = []

    def bad(stop):
        calls.append(1)
        raise ValueError("bad answer")

    sup = Supervisor(rec)
    sup.add("llm", bad, critical=False)
    sup.start()
    assert _wait(lambda: sup.states()["llm"].status == "degraded")
    sup.stop()
    assert len(calls) == 1
    assert any(e.kind == "degraded" and "bad answer" in e.message for e in rec.events)


def test_gives_up_after_max_restarts_and_calls_failure_hook():
    rec = Recorder()
    failed = []

    def always(stop):
        raise RuntimeError("dead")

    sup = Supervisor(rec, max_restarts=2, backoff_initial_s=0.01,
                     on_critical_failure=lambda name, msg: failed.append((name, msg)))
    sup.add("control", always, critical=True)
    sup.start()
    assert _wait(lambda: bool(failed))
    sup.stop()
    assert failed[0][0] == "control" and "giving up" in failed[0][1]
    assert sup.states()["control"].status == "failed"


def test_stop_is_reverse_order():
    rec = Recorder()
    order = []

    def unit(name):
        def run(stop):
            stop.wait()
            order.append(name)
        return run

    sup = Supervisor(rec)
    for n in ("robot", "control", "perception"):
        sup.add(n, unit(n), critical=True)
    sup.start()
    sup.stop()
    assert order == ["perception", "control", "robot"]
