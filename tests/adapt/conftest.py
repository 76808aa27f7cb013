"""Fixtures for adapt tests: components with knobs like the real stack's."""

from __future__ import annotations

import pytest

from rtvla.component import Component, Knob
from rtvla.metrics import Recorder
from rtvla.timing import FakeClock, Tick


class KnobbedComponent(Component):
    """A component that only carries knobs; stepping it does one unit of bookkeeping."""

    def __init__(self, name: str, recorder: Recorder, knobs: list[Knob]) -> None:
        super().__init__(name, recorder=recorder)
        self.steps = 0
        for k in knobs:
            self.add_knob(k)

    def step(self, tick: Tick) -> bool:
        self.steps += 1
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder(clock: FakeClock) -> Recorder:
    return Recorder(clock=clock)


@pytest.fixture
def stack(recorder: Recorder) -> dict[str, KnobbedComponent]:
    """perception (critical, 30 Hz), llm (non-critical), control (critical, 100 Hz)."""
    seen: list[tuple[str, object]] = []
    perception = KnobbedComponent("perception", recorder, [
        Knob("resolution", ((640, 480), (480, 360), (320, 240)),
             on_change=lambda v: seen.append(("resolution", v))),
        Knob("skip_frames", (0, 1, 2)),
    ])
    llm = KnobbedComponent("llm", recorder, [
        Knob("model", ("primary", "light")),
        Knob("cache", (False, True)),
    ])
    control = KnobbedComponent("control", recorder, [Knob("rate_hz", (200.0, 150.0, 100.0, 50.0))])
    out = {"perception": perception, "llm": llm, "control": control}
    perception.seen = seen  # type: ignore[attr-defined]
    return out


@pytest.fixture
def make_component(recorder: Recorder):
    """Build a knob-carrying component: ``make_component(name, [Knob, ...])``."""

    def make(name: str, knobs: list[Knob]) -> KnobbedComponent:
        return KnobbedComponent(name, recorder, knobs)

    return make
