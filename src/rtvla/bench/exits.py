"""``rtvla bench exits``: how long each way out of ``rtvla run`` takes, caused as a user causes it.

Each case starts ``rtvla run`` in its own session on a pseudo-terminal (as a shell starts a
foreground job), waits until the task is executing (metrics written, the control process
up), then:

* ``ctrl-c``: SIGINT to the whole process group, what a terminal does on Ctrl-C;
* ``sigterm``: SIGTERM to the parent (``kill PID``, systemd, docker stop);
* ``kill-control``: ``kill -9`` of the control process (the robot is lost; the run ends);
* ``kill-parent``: ``kill -9`` of the parent: no report can be written, and the figure is
  how long the orphaned control process takes to stop the robot and exit by itself.

Rows: ``{"case", "signal", "exit_code", "stop_s", "report_complete", "left_behind"}``
(``stop_s``: from the signal to the parent's exit, or to the control process's exit for
``kill-parent``). :class:`PtyRun` is also what the exit tests drive.

Usage::

    rows = bench_exits(["ctrl-c", "sigterm"], repeats=3)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

__all__ = ["CASES", "PtyRun", "RunNotReady", "bench_exits", "exited", "wait_exited"]

logger = logging.getLogger(__name__)

CASES: tuple[str, ...] = ("ctrl-c", "sigterm", "kill-control", "kill-parent")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class RunNotReady(RuntimeError):
    """``rtvla run`` exited early or did not reach the expected state in time."""


class PtyRun:
    """``rtvla run`` in its own session on a pseudo-terminal, as a shell would start it."""

    def __init__(self, cwd: Path, *extra: str, env: dict[str, str] | None = None,
                 on_error: Callable[[str], Any] | None = None) -> None:
        """``on_error(message)`` is called (it must raise) when the run misbehaves; by default
        :class:`RunNotReady` is raised. Tests pass ``pytest.fail``."""
        self._on_error = on_error
        self.cwd = Path(cwd)
        self.out = self.cwd / "run"
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtvla.cli", "run", "--no-dashboard", "--out", str(self.out), *extra],
            stdin=slave, stdout=slave, stderr=slave,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=self.cwd,
            start_new_session=True,  # setsid: its own process group, like a terminal's job
        )
        os.close(slave)
        self.output = b""

    def drain(self) -> str:
        """Read what the run printed so far (the pty must be read or the run blocks on it)."""
        while select.select([self.master], [], [], 0)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                break
            if not data:
                break
            self.output += data
        return self.text()

    def _fail(self, message: str) -> None:
        if self._on_error is not None:
            self._on_error(message)
        raise RunNotReady(message)

    def text(self) -> str:
        return _ANSI.sub("", self.output.decode(errors="replace"))

    def wait_for(self, what: str, cond: Callable[[str], Any], timeout: float = 120.0) -> Any:
        """Until ``cond(output so far)`` is truthy; returns its value."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.drain()
            if self.proc.poll() is not None:
                self._fail(f"rtvla run exited (code {self.proc.returncode}) while waiting for "
                           f"{what}:\n{text}")
            got = cond(text)
            if got:
                return got
            time.sleep(0.1)
        self._fail(f"no {what} within {timeout} s:\n{self.drain()}")

    def wait_running(self, timeout: float = 120.0) -> None:
        """Until the task is executing: three metrics lines written and the control process up."""
        metrics = self.out / "metrics.jsonl"

        def running(_: str) -> bool:
            return (metrics.exists() and len(metrics.read_text().splitlines()) >= 3
                    and self.control_child() is not None)

        self.wait_for("a running task", running, timeout)

    def control_child(self) -> psutil.Process | None:
        """The control process (a multiprocessing child that is not the resource tracker)."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        for child in children:
            try:
                cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "multiprocessing" in cmd and "resource_tracker" not in cmd:
                return child
        return None

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def wait_exit(self, timeout: float) -> float:
        """Seconds until the parent exited; kills the group and raises past ``timeout``."""
        t0 = time.monotonic()
        while self.proc.poll() is None:
            self.drain()
            if time.monotonic() - t0 > timeout:
                self.close()
                self._fail(f"rtvla run did not exit within {timeout} s:\n{self.text()}")
            time.sleep(0.005)
        took = time.monotonic() - t0
        self.drain()
        return took

    def report(self) -> dict[str, Any]:
        return json.loads((self.out / "report.json").read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        with contextlib.suppress(OSError):
            os.close(self.master)

    def __enter__(self) -> PtyRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exited(p: psutil.Process) -> bool:
    """Gone, or a zombie: it has exited and only its reaper is left."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_exited(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes of ``procs`` still alive after up to ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if not exited(p)]
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.002)


def _complete(report: dict[str, Any]) -> bool:
    """The report has the task, the control process's own figures and the exit."""
    try:
        return (report["exit"]["code"] is not None and "success" in report["task"]
                and report["components"]["control"]["count"] > 0)
    except (KeyError, TypeError):
        return False


def _one(case: str, cwd: Path, timeout: float) -> dict[str, Any]:
    with PtyRun(cwd) as run:
        run.wait_running()
        procs = run.descendants()
        row: dict[str, Any] = {"case": case}
        if case == "ctrl-c":
            row["signal"] = "SIGINT to the process group"
            os.killpg(run.proc.pid, signal.SIGINT)
        elif case == "sigterm":
            row["signal"] = "SIGTERM to the parent"
            run.proc.send_signal(signal.SIGTERM)
        elif case == "kill-control":
            row["signal"] = "SIGKILL to the control process"
            child = run.control_child()
            if child is None:
                raise RunNotReady("the control process is gone before the signal")
            child.send_signal(signal.SIGKILL)
        else:
            row["signal"] = "SIGKILL to the parent"
            child = run.control_child()
            if child is None:
                raise RunNotReady("the control process is gone before the signal")
            t0 = time.monotonic()
            run.proc.send_signal(signal.SIGKILL)
            alive = wait_exited([child], timeout)
            row.update(stop_s=round(time.monotonic() - t0, 3) if not alive else None, exit_code=-9,
                       report_complete=None, left_behind=len(wait_exited(procs, 5.0)))
            return row
        row["stop_s"] = round(run.wait_exit(timeout), 3)
        row["exit_code"] = run.proc.returncode
        try:
            row["report_complete"] = _complete(run.report())
        except (OSError, ValueError):
            row["report_complete"] = False
        row["left_behind"] = len(wait_exited(procs, 5.0))
        return row


def bench_exits(cases: Sequence[str] = CASES, *, repeats: int = 1, workdir: Path | None = None,
                timeout: float = 30.0,
                progress: Callable[[str, int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """One row per case and repeat (each a fresh ``rtvla run`` of the default task)."""
    import tempfile

    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown exit case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    for case in cases:
        for i in range(repeats):
            with tempfile.TemporaryDirectory(prefix=f"rtvla-exit-{case}-", dir=workdir) as tmp:
                row = _one(case, Path(tmp), timeout)
            row["repeat"] = i
            rows.append(row)
            if progress is not None:
                progress(case, i, row)
    return rows
