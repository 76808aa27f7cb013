"""Every way out of ``rtvla run``, caused the way a user causes it: Ctrl-C in a terminal (the
whole foreground process group signalled), SIGTERM to the parent, ``kill -9`` of the control
process, ``kill -9`` of the parent. Each ends within seconds; all but the last leave a complete
report; none leaves a process behind."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from rtvla.bench.exits import PtyRun, wait_exited
from rtvla.runtime.main_job import EXIT_FAILED, EXIT_INTERRUPTED

pytestmark = pytest.mark.slow

STOP_BOUND_S = 5.0  # README: every way out ends within 5 s with a complete report


def Run(cwd, *extra: str) -> PtyRun:
    """``rtvla run`` on a pseudo-terminal; a run that misbehaves fails the test."""
    return PtyRun(cwd, *extra, on_error=pytest.fail)


def _assert_complete(report: dict, code: int) -> None:
    assert report["exit"]["code"] == code
    assert {"instruction", "success", "duration_s", "plan_source"} <= set(report["task"])
    control = report["components"]["control"]
    assert control["count"] > 100, control  # the control process's own figures came back
    assert report["control"]["placement"] == "process"
    for name in ("perception", "navigation"):
        assert report["components"][name]["count"] > 0


def _assert_no_process_left(procs: list[psutil.Process]) -> None:
    alive = wait_exited(procs, 5)
    assert not alive, f"left behind: {alive}"


@pytest.fixture
def run(tmp_path):
    runs: list[PtyRun] = []

    def start(*extra: str) -> PtyRun:
        r = Run(tmp_path, *extra)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.close()


def test_ctrl_c_in_a_terminal_signals_the_whole_group_and_still_reports(run):
    r = run()
    r.wait_running()
    procs = r.descendants()
    os.killpg(r.proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    took = r.wait_exit(STOP_BOUND_S + 10)
    assert r.proc.returncode == EXIT_INTERRUPTED, r.text()
    assert took < STOP_BOUND_S, f"stopping took {took:.1f} s"
    report = r.report()
    _assert_complete(report, EXIT_INTERRUPTED)
    assert report["control"].get("stop_cause") == "parent asked"  # not killed by the signal
    _assert_no_process_left(procs)
    print(f"Ctrl-C to the process group: exited in {took:.2f} s")


def test_sigterm_to_the_parent_reports_and_stops(run):
    r = run()
    r.wait_running()
    procs = r.descendants()
    r.proc.send_signal(signal.SIGTERM)
    took = r.wait_exit(STOP_BOUND_S + 10)
    assert r.proc.returncode == EXIT_INTERRUPTED, r.text()
    assert took < STOP_BOUND_S
    _assert_complete(r.report(), EXIT_INTERRUPTED)
    _assert_no_process_left(procs)
    print(f"SIGTERM to the parent: exited in {took:.2f} s")


def test_kill_9_of_the_control_process_ends_the_run_with_the_cause(run):
    r = run()
    r.wait_running()
    procs = r.descendants()
    child = r.control_child()
    assert child is not None
    child.send_signal(signal.SIGKILL)
    took = r.wait_exit(STOP_BOUND_S + 10)
    assert r.proc.returncode == EXIT_FAILED, r.text()
    assert took < STOP_BOUND_S
    report = r.report()
    assert report["exit"]["code"] == EXIT_FAILED
    assert "control process lost (killed by signal 9" in report["exit"]["reason"]
    assert "control process lost (killed by signal 9" in r.text()
    lost = [e for e in report["events"] if e["component"] == "control" and e["kind"] == "lost"]
    assert lost and "signal 9" in lost[0]["message"]
    assert report["components"]["control"]["count"] > 100  # relayed before it died
    _assert_no_process_left(procs)
    print(f"kill -9 of the control process: exited in {took:.2f} s")


def test_kill_9_of_the_parent_stops_the_robot_and_the_child_exits_by_itself(run):
    r = run()
    r.wait_running()
    child = r.control_child()
    assert child is not None
    procs = r.descendants()
    t0 = time.monotonic()
    r.proc.send_signal(signal.SIGKILL)
    assert not wait_exited([child], 10), "the control process outlived its parent"
    took = time.monotonic() - t0
    # It stops the robot at its next tick and exits (measured: about 40 ms); generous here.
    assert took < 1.0, f"the control process outlived its parent by {took:.2f} s"
    _assert_no_process_left(procs)
    print(f"kill -9 of the parent: the control process exited {took * 1e3:.0f} ms later")
