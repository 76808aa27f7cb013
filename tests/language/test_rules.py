from __future__ import annotations

import pytest

from rtvla.errors import PlannerRefusal
from rtvla.language import Capabilities, PlanContext, Pose2D, RulePlanner, is_negated

RULES = RulePlanner()


def summary(text: str, ctx: PlanContext | None = None) -> str:
    return RULES.plan_sync(text, ctx).summary()


@pytest.mark.parametrize(("text", "expected"), [
    ("put the red cube in the blue bin",
     "navigate(table) -> perceive(red_cube) -> manipulate(pick red_cube) -> navigate(kitchen)"
     " -> manipulate(place red_cube -> blue_bin)"),
    ("bring the green cube to the table",
     "navigate(table) -> perceive(green_cube) -> manipulate(pick green_cube)"
     " -> manipulate(place green_cube -> table)"),
    ("go to the kitchen", "navigate(kitchen)"),
    ("Please go home.", "navigate(home)"),
    ("pick up the red cube", "navigate(table) -> perceive(red_cube) -> manipulate(pick red_cube)"),
    ("grab the blue block", "navigate(table) -> perceive(blue_cube) -> manipulate(pick blue_cube)"),
    ("look for the blue bin", "navigate(kitchen) -> perceive(blue_bin)"),
    ("say hello", "communicate('hello')"),
    ('say "hello, and welcome" then go to the shelf',
     "communicate('hello, and welcome') -> navigate(shelf)"),
    ("pick up the red cube and put it in the green bin",
     "navigate(table) -> perceive(red_cube) -> manipulate(pick red_cube) -> navigate(kitchen)"
     " -> manipulate(place red_cube -> green_bin)"),
    ("go to the kitchen, then go to the shelf and then go home",
     "navigate(kitchen) -> navigate(shelf) -> navigate(home)"),
    ("find the red cube then bring it to the shelf",
     "navigate(table) -> perceive(red_cube) -> manipulate(pick red_cube) -> navigate(shelf)"
     " -> manipulate(place red_cube -> shelf)"),
])
def test_common_instructions(text: str, expected: str) -> None:
    assert summary(text) == expected


def test_context_place_skips_navigation() -> None:
    ctx = PlanContext(robot_place="table")
    assert summary("pick up the red cube", ctx) == "perceive(red_cube) -> manipulate(pick red_cube)"
    held = PlanContext(robot_place="table", holding="red_cube")
    assert summary("put the red cube in the blue bin", held) == (
        "navigate(kitchen) -> manipulate(place red_cube -> blue_bin)")


@pytest.mark.parametrize(("text", "reason"), [
    ("do not pick up the red cube", "negation"),
    ("don't go to the kitchen", "negation"),
    ("never touch the blue bin", "negation"),
    ("pick up the purple sphere", "unknown object 'the purple sphere'"),
    ("go to the garage", "unknown"),
    ("dance a little", "does not understand 'dance a little'"),
    ("", "empty instruction"),
    ("put it in the blue bin", "refers to nothing"),
    ("pick up the red cube and pick up the green cube", "while holding 'red_cube'"),
    ("put the blue bin in the red cube", "is a receptacle"),
])
def test_refusals(text: str, reason: str) -> None:
    with pytest.raises(PlannerRefusal, match=reason):
        RULES.plan_sync(text)


def test_names_come_from_capabilities() -> None:
    caps = Capabilities(places={"dock": Pose2D(x=0, y=0), "desk": Pose2D(x=1, y=1)},
                        objects=("yellow_mug",), receptacles=("sink",),
                        locations={"yellow_mug": "desk", "sink": "dock"})
    plan = RULES.plan_sync("put the yellow mug in the sink", PlanContext(capabilities=caps))
    assert plan.summary() == ("navigate(desk) -> perceive(yellow_mug) -> manipulate(pick yellow_mug)"
                              " -> navigate(dock) -> manipulate(place yellow_mug -> sink)")
    with pytest.raises(PlannerRefusal):
        RULES.plan_sync("pick up the red cube", PlanContext(capabilities=caps))


def test_negation_detector() -> None:
    assert is_negated("Do NOT pick up the red cube")
    assert is_negated("shouldn't go")
    assert not is_negated("pick up the red cube and go to the kitchen")


@pytest.mark.anyio
async def test_async_plan_is_deterministic() -> None:
    a = await RULES.plan("put the red cube in the blue bin")
    b = await RULES.plan("put the red cube in the blue bin")
    assert a == b
