"""Supervision: run components in threads, restart critical ones with backoff, degrade others.

Each supervised unit is a ``run(stop_event)`` callable that blocks until ``stop_event`` is
set (a component's loop, a service's serve-forever). When it raises:

* a **critical** unit is restarted after an exponential backoff (``restart`` event), up to
  ``max_restarts`` times within ``restart_window_s``; beyond that it is marked failed and
  ``on_critical_failure`` is called (the runtime stops the robot and the run);
* a **non-critical** unit is marked degraded (``degraded`` event) and not restarted.

Units start in the order added (dependency order) and stop in reverse.

Usage::

    sup = Supervisor(recorder)
    sup.add("control", control.run, critical=True, on_fault=robot.stop)
    sup.add("perception", pipeline.run, critical=True)
    sup.start()
    ...
    sup.stop()          # reverse order, joins every thread
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtvla.metrics import Recorder
from rtvla.timing import MONOTONIC, Clock

__all__ = ["Supervisor", "UnitState"]

logger = logging.getLogger(__name__)


@dataclass
class UnitState:
    """What happened to one supervised unit."""

    name: str
    critical: bool
    status: str = "pending"  # pending | running | restarting | degraded | failed | stopped | lost
    restarts: int = 0
    faults: list[str] = field(default_factory=list)
    thread_id: int | None = None  # native id, for per-thread CPU accounting


@dataclass
class _Unit:
    state: UnitState
    run: Callable[[threading.Event], Any]
    on_fault: Callable[[], Any] | None
    stop_hook: Callable[[], Any] | None
    stop_event: threading.Event
    thread: threading.Thread | None = None
    restart_stamps: list[int] = field(default_factory=list)


class Supervisor:
    """Runs units in threads with restart/degrade policies. See the module docstring."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        clock: Clock = MONOTONIC,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 2.0,
        on_critical_failure: Callable[[str, str], Any] | None = None,
    ) -> None:
        self.recorder = recorder
        self.clock = clock
        self.max_restarts = max_restarts
        self.restart_window_ns = int(restart_window_s * 1e9)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_critical_failure = on_critical_failure
        self._units: dict[str, _Unit] = {}
        self._order: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def add(
        self,
        name: str,
        run: Callable[[threading.Event], Any],
        *,
        critical: bool,
        on_fault: Callable[[], Any] | None = None,
        stop: Callable[[], Any] | None = None,
    ) -> UnitState:
        """Register a unit. ``on_fault`` runs right after it raises (e.g. stop the robot);
        ``stop`` is called at shutdown besides setting the unit's stop event."""
        if name in self._units:
            raise ValueError(f"unit {name!r} already supervised")
        unit = _Unit(UnitState(name, critical), run, on_fault, stop, threading.Event())
        self._units[name] = unit
        self._order.append(name)
        return unit.state

    def start(self, names: list[str] | None = None) -> None:
        """Start units (all not yet started, in the order added)."""
        for name in names or self._order:
            unit = self._units[name]
            if unit.thread is None:
                unit.thread = threading.Thread(target=self._main, args=(unit,), name=f"rtvla-{name}",
                                               daemon=True)
                unit.state.status = "running"
                unit.thread.start()

    def _main(self, unit: _Unit) -> None:
        state = unit.state
        state.thread_id = threading.get_native_id()
        backoff = self.backoff_initial_s
        while not unit.stop_event.is_set():
            try:
                unit.run(unit.stop_event)
                if not unit.stop_event.is_set() and not self._stopping.is_set():
                    state.status = "finished"
                return
            except Exception as exc:  # supervision boundary: every failure is accounted for
                reason = f"{type(exc).__name__}: {exc}"
                state.faults.append(reason)
                logger.error("%s raised %s\n%s", state.name, reason, traceback.format_exc())
                self.recorder.event(state.name, "fault", reason)
                if unit.on_fault is not None:
                    try:
                        unit.on_fault()
                    except Exception as hook_exc:
                        logger.error("%s on_fault hook failed: %s", state.name, hook_exc)
                if self._stopping.is_set():
                    return
                if not state.critical:
                    state.status = "degraded"
                    self.recorder.event(state.name, "degraded",
                                        f"non-critical component stopped after fault: {reason}")
                    return
                now = self.clock.now_ns()
                unit.restart_stamps = [t for t in unit.restart_stamps if now - t < self.restart_window_ns]
                if len(unit.restart_stamps) >= self.max_restarts:
                    state.status = "failed"
                    msg = (f"critical component failed {len(unit.restart_stamps) + 1} times within "
                           f"{self.restart_window_ns / 1e9:g} s; giving up: {reason}")
                    self.recorder.event(state.name, "failed", msg)
                    if self.on_critical_failure is not None:
                        self.on_critical_failure(state.name, msg)
                    return
                unit.restart_stamps.append(now)
                state.status = "restarting"
                self.recorder.event(state.name, "restart",
                                    f"restarting in {backoff:.2f} s after: {reason}",
                                    attempt=len(unit.restart_stamps), backoff_s=backoff)
                if unit.stop_event.wait(backoff):
                    return
                backoff = min(backoff * 2, self.backoff_max_s)
                state.restarts += 1
                state.status = "running"

    def stop(self, timeout_s: float = 5.0) -> list[str]:
        """Stop every unit in reverse order; returns the names that did not stop in time."""
        self._stopping.set()
        stuck = []
        for name in reversed(self._order):
            unit = self._units[name]
            unit.stop_event.set()
            if unit.stop_hook is not None:
                try:
                    unit.stop_hook()
                except Exception as exc:
                    logger.error("stopping %s failed: %s", name, exc)
            if unit.thread is not None:
                unit.thread.join(timeout_s)
                if unit.thread.is_alive():
                    stuck.append(name)
                    logger.error("%s did not stop within %.1f s", name, timeout_s)
            if unit.state.status in ("running", "restarting", "finished"):
                unit.state.status = "stopped"
        return stuck

    def note(self, name: str, status: str, fault: str | None = None) -> None:
        """Record what happened to a unit outside its thread: a remote part that is ``lost``
        (its process runs on another host, whose business restarting it is) and ``running``
        again; ``fault`` joins the unit's faults. Unknown units are ignored."""
        unit = self._units.get(name)
        if unit is None or self._stopping.is_set():
            return
        unit.state.status = status
        if fault is not None:
            unit.state.faults.append(fault)

    def states(self) -> dict[str, UnitState]:
        return {n: self._units[n].state for n in self._order}

    def alive(self, name: str) -> bool:
        t = self._units[name].thread
        return t is not None and t.is_alive()
