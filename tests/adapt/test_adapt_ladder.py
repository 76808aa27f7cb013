from __future__ import annotations

import pytest

from rtvla.adapt import QualityLadder
from rtvla.component import Knob
from rtvla.errors import ConfigError


def test_explicit_steps_are_cumulative_and_apply_turns_knobs(stack):
    ladder = QualityLadder(stack.values(), [
        {"llm.cache": True},
        {"perception.skip_frames": 1, "llm.model": "light"},
        {"perception.resolution": [480, 360]},  # TOML arrays match tuple values
    ])
    assert ladder.max_level == 3
    top = ladder.level(3).settings
    assert top == {"llm.cache": True, "llm.model": "light", "perception.resolution": (480, 360),
                   "perception.skip_frames": 1}
    assert ladder.level(0).settings["perception.resolution"] == (640, 480)
    assert ladder.level(2).changes == {"perception.skip_frames": 1, "llm.model": "light"}
    assert ladder.level(3).name == "perception.resolution=480x360"
    changes = ladder.apply(3)
    assert {c.knob for c in changes} == set(top)
    assert stack["perception"].knob("resolution") == (480, 360)
    assert stack["perception"].seen == [("resolution", (480, 360))]
    ladder.apply(1)
    assert stack["perception"].knob("resolution") == (640, 480)
    assert stack["llm"].knob("cache") is True and stack["llm"].knob("model") == "primary"
    assert ladder.apply(1) == []


@pytest.mark.parametrize(
    ("step", "match"),
    [
        ({"camera.resolution": 1}, "unknown component 'camera'"),
        ({"perception.fps": 1}, "has no knob 'fps'"),
        ({"perception.skip_frames": 7}, r"has no value 7; allowed: \[0, 1, 2\]"),
        ({"resolution": 1}, "must be written 'component.knob'"),
        ({}, "non-empty table"),
        ({"perception.skip_frames": 0}, "changes nothing"),
    ],
)
def test_bad_steps_are_refused_with_the_field_named(stack, step, match):
    with pytest.raises(ConfigError, match=match):
        QualityLadder(stack.values(), [step])


def test_critical_rate_below_budget_is_refused_non_critical_rate_allowed(stack, make_component):
    with pytest.raises(ConfigError, match=r"below the budget rate 100.0 Hz of critical component 'control'"):
        QualityLadder(stack.values(), [{"control.rate_hz": 50.0}])
    ladder = QualityLadder(stack.values(), [{"control.rate_hz": 100.0}])
    assert ladder.level(1).settings["control.rate_hz"] == 100.0
    viz = make_component("viz", [Knob("rate_hz", (10.0, 5.0, 1.0))])
    assert not viz.budget.critical
    ladder = QualityLadder([*stack.values(), viz], [{"viz.rate_hz": 1.0}])
    assert ladder.level(1).settings["viz.rate_hz"] == 1.0


def test_auto_ladder_orders_cheap_losses_first_and_keeps_critical_rates(stack):
    ladder = QualityLadder.auto(stack.values())
    steps = [dict(lv.changes) for lv in ladder.levels[1:]]
    assert steps[0] == {"llm.cache": True}
    assert steps[1] == {"llm.model": "light"}
    # critical: frame skipping before resolution, rate last and never below 100 Hz
    keys = [next(iter(s)) for s in steps]
    assert keys.index("perception.skip_frames") < keys.index("perception.resolution")
    assert keys[-2:] == ["control.rate_hz", "control.rate_hz"]
    assert steps[-1] == {"control.rate_hz": 100.0}
    for lv in ladder.levels:
        assert lv.settings["control.rate_hz"] >= 100.0
    assert ladder.level(ladder.max_level).settings["perception.resolution"] == (320, 240)
    # one knob step per level
    assert all(len(s) == 1 for s in steps)
    assert ladder.max_level == 1 + 1 + 2 + 2 + 2


def test_failing_knob_callback_is_reported_and_other_knobs_still_turn(make_component):
    def boom(value):
        raise RuntimeError("camera refused the mode")

    cam = make_component("perception", [Knob("resolution", ((640, 480), (320, 240)), on_change=boom),
                                        Knob("skip_frames", (0, 1))])
    ladder = QualityLadder([cam], [{"perception.resolution": (320, 240), "perception.skip_frames": 1}])
    changes = {c.knob: c for c in ladder.apply(1)}
    assert "camera refused the mode" in changes["perception.resolution"].error
    assert changes["perception.skip_frames"].error is None
    assert cam.knob("skip_frames") == 1


def test_duplicate_components_and_bad_level_index(stack):
    with pytest.raises(ConfigError, match="two components named 'llm'"):
        QualityLadder([stack["llm"], stack["llm"]], [])
    ladder = QualityLadder(stack.values(), [{"llm.cache": True}])
    with pytest.raises(ConfigError, match=r"quality level must be in \[0, 1\], got 5"):
        ladder.level(5)
    assert ladder.describe()[1]["settings"] == {"llm.cache": True}
