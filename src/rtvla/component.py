"""``Component``: a named, budgeted unit of work with knobs the adaptive optimizer may turn.

A component runs ``setup()`` once, ``step(tick)`` at its rate (or on demand), and
``teardown()`` once, in a thread or in its own process (:class:`Placement`). It never
reaches into another component: data flows through channels.

Usage::

    class Perception(Component):
        def __init__(self, recorder):
            super().__init__("perception", recorder=recorder)
            self.add_knob(Knob("resolution", ((640, 480), (480, 360), (320, 240))))

        def step(self, tick):
            w, h = self.knob("resolution")
            ...
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rtvla.config import Budget
from rtvla.errors import ConfigError
from rtvla.metrics import Recorder
from rtvla.timing import Tick

__all__ = ["Component", "Knob", "Placement"]


class Placement(str, Enum):
    """Where a component runs. ``process`` escapes the GIL: a busy Python thread elsewhere
    delays a thread's wake-up by up to the interpreter's switch interval (5 ms)."""

    THREAD = "thread"
    PROCESS = "process"


@dataclass
class Knob:
    """A named setting with ordered allowed values, best quality first.

    ``index`` 0 is full quality; higher indices are cheaper. ``on_change`` is called with
    the new value when the knob turns.
    """

    name: str
    values: Sequence[Any]
    index: int = 0
    on_change: Callable[[Any], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError(f"knob {self.name!r} needs at least one value")
        if not 0 <= self.index < len(self.values):
            raise ConfigError(
                f"knob {self.name!r} index must be in [0, {len(self.values) - 1}], got {self.index}"
            )
        self.values = tuple(self.values)

    @property
    def value(self) -> Any:
        return self.values[self.index]

    @property
    def levels(self) -> int:
        return len(self.values)

    def set_index(self, index: int) -> bool:
        """Move to ``index`` (clamped); returns True when the value changed."""
        index = max(0, min(len(self.values) - 1, int(index)))
        if index == self.index:
            return False
        self.index = index
        if self.on_change is not None:
            self.on_change(self.value)
        return True

    def set_value(self, value: Any) -> bool:
        try:
            return self.set_index(self.values.index(value))
        except ValueError:
            raise ConfigError(
                f"knob {self.name!r} has no value {value!r}; allowed: {list(self.values)}"
            ) from None


class Component(abc.ABC):
    """Base class for everything the runtime schedules. Subclasses implement ``step``."""

    def __init__(
        self,
        name: str,
        *,
        budget: Budget | None = None,
        recorder: Recorder | None = None,
        rate_hz: float | None = None,
        placement: Placement | str = Placement.THREAD,
    ) -> None:
        self.name = name
        self.recorder = recorder if recorder is not None else Recorder()
        self.budget = budget if budget is not None else self.recorder.requirements.budget(name)
        self.rate_hz = rate_hz if rate_hz is not None else self.budget.rate_hz
        self.placement = Placement(placement)
        self.knobs: dict[str, Knob] = {}
        self.stop_event = threading.Event()

    def add_knob(self, knob: Knob) -> Knob:
        if knob.name in self.knobs:
            raise ConfigError(f"component {self.name!r} already has a knob {knob.name!r}")
        self.knobs[knob.name] = knob
        return knob

    def knob(self, name: str) -> Any:
        """The current value of knob ``name``."""
        try:
            return self.knobs[name].value
        except KeyError:
            raise ConfigError(
                f"component {self.name!r} has no knob {name!r}; knobs: {sorted(self.knobs)}"
            ) from None

    def setup(self) -> None:
        """Acquire resources (open devices, load models). Called once before stepping."""

    @abc.abstractmethod
    def step(self, tick: Tick) -> Any:
        """One cycle of work. Return False to stop."""

    def teardown(self) -> None:
        """Release resources. Called once, also after a failure."""

    def stop(self) -> None:
        self.stop_event.set()

    def stats(self) -> dict[str, Any]:
        """Component-specific figures for the report and dashboard."""
        return {"knobs": {k: v.value for k, v in self.knobs.items()}}
