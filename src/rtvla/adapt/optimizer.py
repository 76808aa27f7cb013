"""``AdaptiveOptimizer``: steps down the quality ladder under pressure, back up with headroom.

Every decision looks at :class:`~rtvla.adapt.signals.Signals` over the last window. Pressure
(CPU or memory above its high mark, a critical component's p99 above its budget, missed
cycles) that lasts ``degrade_after_s`` moves one level down, at most once per
``min_dwell_s``. Headroom (everything below its low mark, no missed cycle) that lasts
``hold_down_s`` moves one level up. Between the marks nothing moves; a step down soon after a
step up (a flap) lengthens the hold-down by ``flap_backoff`` up to ``max_hold_down_s``.
Each decision is an ``adapt``/``level`` event on the recorder and an entry in ``history``.

Usage::

    ladder = QualityLadder.auto([perception, planner])
    signals = RecorderSignals(recorder, monitor, window_s=2.0)
    opt = AdaptiveOptimizer(ladder, signals, recorder=recorder)
    opt.start()                         # decides every period_s in a thread ...
    opt.step(clock.now_ns())            # ... or step it yourself (tests, FakeClock)
    [d.as_dict() for d in opt.history]  # report.json "adaptation"
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rtvla.adapt.config import AdaptConfig
from rtvla.adapt.ladder import KnobChange, QualityLadder
from rtvla.adapt.signals import RecorderSignals, Signals, SignalSource
from rtvla.component import Component
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder
from rtvla.resources import Preemption, SystemMonitor
from rtvla.timing import MONOTONIC, Clock, Periodic

__all__ = ["AdaptiveOptimizer", "Decision"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """One level change and why it happened."""

    stamp_ns: int
    from_level: int
    to_level: int
    reason: str
    level_name: str
    signals: dict[str, Any]
    changes: tuple[KnobChange, ...] = field(default=())

    @property
    def direction(self) -> str:
        return "down" if self.to_level > self.from_level else "up"

    def as_dict(self) -> dict[str, Any]:
        return {
            "stamp_ns": self.stamp_ns, "from_level": self.from_level, "to_level": self.to_level,
            "direction": self.direction, "reason": self.reason, "level_name": self.level_name,
            "signals": self.signals, "changes": [c.as_dict() for c in self.changes],
        }


class AdaptiveOptimizer:
    """Moves a :class:`QualityLadder` one level at a time from load signals.

    Args:
        ladder: the quality levels (level 0 is assumed in force at start).
        signals: source of :class:`Signals` (``RecorderSignals`` in the runtime).
        policy: thresholds and timings (``AdaptConfig``; defaults when omitted).
        recorder: receives an ``adapt``/``level`` event per decision.
        clock: time source for the thread mode and ``step()`` without ``now_ns``.
        level_gauge: also set ``recorder.gauge("adapt", "level", n)`` (makes an ``adapt``
            row appear among the recorder's components).
        max_history: decisions kept in ``history``.
    """

    def __init__(
        self,
        ladder: QualityLadder,
        signals: SignalSource | None = None,
        *,
        policy: AdaptConfig | None = None,
        recorder: Recorder | None = None,
        clock: Clock = MONOTONIC,
        level_gauge: bool = False,
        max_history: int = 1000,
    ) -> None:
        self.ladder = ladder
        self.signals = signals
        self.policy = policy if policy is not None else AdaptConfig()
        self.recorder = recorder
        self.clock = clock
        self.level_gauge = level_gauge
        self.history: deque[Decision] = deque(maxlen=max_history)
        self.last_signals: Signals | None = None
        self.last_pressure: list[str] = []
        self._level = 0
        self._lock = threading.Lock()
        self._pressure_since: int | None = None
        self._headroom_since: int | None = None
        self._last_change_ns: int | None = None
        self._last_up_ns: int | None = None
        self._hold_down_s = self.policy.hold_down_s
        self._worker = Periodic(self.policy.period_s, self.step, name="rtvla-adapt")

    @classmethod
    def from_config(
        cls,
        config: AdaptConfig,
        components: Iterable[Component],
        recorder: Recorder,
        monitor: SystemMonitor | None = None,
        *,
        clock: Clock = MONOTONIC,
    ) -> AdaptiveOptimizer:
        """The runtime's way in: the configured ladder (or one derived from the components'
        knobs), signals from ``recorder`` and ``monitor`` over ``config.window_s``."""
        comps = list(components)
        ladder = QualityLadder(comps, config.levels) if config.levels else QualityLadder.auto(comps)
        signals = RecorderSignals(recorder, monitor, window_s=config.window_s)
        return cls(ladder, signals, policy=config, recorder=recorder, clock=clock)

    @property
    def level(self) -> int:
        return self._level

    @property
    def hold_down_s(self) -> float:
        """The hold-down in force (longer than the policy's after flapping)."""
        return self._hold_down_s

    # -- deciding -------------------------------------------------------------------------

    def pressure(self, s: Signals) -> list[str]:
        """Reasons the load is too high (empty when it is not)."""
        p = self.policy
        out = []
        if s.cpu_percent is not None and s.cpu_percent > p.cpu_high:
            out.append(f"cpu {s.cpu_percent:.0f}% > {p.cpu_high:g}%")
        if s.memory_percent is not None and s.memory_percent > p.memory_high:
            out.append(f"memory {s.memory_percent:.0f}% > {p.memory_high:g}%")
        for name, r in sorted(s.latency_ratio.items()):
            if r > p.latency_high:
                out.append(f"{name} p99 at {r:.0%} of budget")
        for name, m in sorted(s.missed.items()):
            if m >= p.missed_high:
                out.append(f"{name} missed {m} cycles")
        return out

    def headroom(self, s: Signals) -> bool:
        """True when every signal is below its low mark and no cycle was missed."""
        p = self.policy
        return (
            (s.cpu_percent is None or s.cpu_percent < p.cpu_low)
            and (s.memory_percent is None or s.memory_percent < p.memory_low)
            and all(r < p.latency_low for r in s.latency_ratio.values())
            and all(m == 0 for m in s.missed.values())
        )

    def step(self, now_ns: int | None = None) -> Decision | None:
        """Read the signal source and decide; returns the decision when the level moved."""
        if self.signals is None:
            raise ConfigError("AdaptiveOptimizer.step() needs a signal source; use decide(now, signals)")
        now = self.clock.now_ns() if now_ns is None else now_ns
        return self.decide(now, self.signals.read(now))

    def decide(self, now_ns: int, s: Signals) -> Decision | None:
        """Update the pressure/headroom timers with ``s`` and move at most one level."""
        p = self.policy
        with self._lock:
            self.last_signals = s
            reasons = self.pressure(s)
            self.last_pressure = reasons
            since_change = (
                float("inf") if self._last_change_ns is None else (now_ns - self._last_change_ns) / 1e9
            )
            if since_change > p.max_hold_down_s and self._hold_down_s != p.hold_down_s:
                self._hold_down_s = p.hold_down_s  # long stable: forget earlier flapping
            if reasons:
                self._headroom_since = None
                if self._pressure_since is None:
                    self._pressure_since = now_ns
                lasted = (now_ns - self._pressure_since) / 1e9
                if (lasted >= p.degrade_after_s and since_change >= p.min_dwell_s
                        and self._level < self.ladder.max_level):
                    if self._last_up_ns is not None and (now_ns - self._last_up_ns) / 1e9 < self._hold_down_s:
                        self._hold_down_s = min(p.max_hold_down_s, self._hold_down_s * p.flap_backoff)
                    self._pressure_since = now_ns
                    return self._move_locked(now_ns, self._level + 1, "; ".join(reasons), s)
                return None
            self._pressure_since = None
            if not self.headroom(s):
                self._headroom_since = None  # dead band: neither timer runs
                return None
            if self._headroom_since is None:
                self._headroom_since = now_ns
            lasted = (now_ns - self._headroom_since) / 1e9
            if self._level > 0 and lasted >= self._hold_down_s and since_change >= self._hold_down_s:
                self._headroom_since = now_ns
                self._last_up_ns = now_ns
                return self._move_locked(
                    now_ns, self._level - 1, f"headroom for {lasted:.1f} s (hold-down {self._hold_down_s:g} s)", s
                )
            return None

    def handle_preemption(self, preemption: Preemption) -> Decision | None:
        """``on_preempt`` callback for the resource allocator: one level down at once."""
        return self.force_level(self._level + 1, f"resources preempted: {preemption.reason}")

    def force_level(self, level: int, reason: str) -> Decision | None:
        """Jump to ``level`` (clamped to the ladder) now, bypassing the timers."""
        level = max(0, min(self.ladder.max_level, int(level)))
        now = self.clock.now_ns()
        with self._lock:
            if level == self._level:
                return None
            self._pressure_since = self._headroom_since = None
            return self._move_locked(now, level, reason, self.last_signals or Signals())

    def _move_locked(self, now_ns: int, to: int, reason: str, s: Signals) -> Decision:
        frm = self._level
        changes = tuple(self.ladder.apply(to))
        self._level = to
        self._last_change_ns = now_ns
        lv = self.ladder.level(to)
        d = Decision(now_ns, frm, to, reason, lv.name, s.as_dict(), changes)
        self.history.append(d)
        if self.recorder is not None:
            self.recorder.event(
                "adapt", "level", f"level {frm} -> {to} ({lv.name}): {reason}",
                from_level=frm, to_level=to, reason=reason, changes=[c.as_dict() for c in changes],
            )
            if self.level_gauge:
                self.recorder.gauge("adapt", "level", float(to))
        logger.info("adaptive level %d -> %d: %s", frm, to, reason)
        return d

    # -- reading --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """For the dashboard: level, its name, what presses and the hold-down in force."""
        with self._lock:
            return {
                "level": self._level,
                "max_level": self.ladder.max_level,
                "level_name": self.ladder.level(self._level).name,
                "pressure": list(self.last_pressure),
                "hold_down_s": self._hold_down_s,
                "decisions": len(self.history),
            }

    def report(self) -> list[dict[str, Any]]:
        """The ``adaptation`` list of report.json."""
        return [d.as_dict() for d in self.history]

    # -- thread mode ----------------------------------------------------------------------

    def start(self) -> AdaptiveOptimizer:
        if self._worker.running:
            raise ConfigError("adaptive optimizer already started")
        if self.signals is None:
            raise ConfigError("adaptive optimizer thread mode needs a signal source")
        self._worker.start()
        return self

    @property
    def errors(self) -> int:
        """Steps that failed (logged and counted; the optimizer keeps adapting)."""
        return self._worker.errors

    def stop(self, timeout: float = 2.0) -> None:
        self._worker.stop(timeout)

    @property
    def running(self) -> bool:
        return self._worker.running

    def __enter__(self) -> AdaptiveOptimizer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
