from __future__ import annotations

import pytest

from rtvla.errors import ConfigError, PlanValidationError
from rtvla.language import (
    Capabilities,
    Plan,
    PlanContext,
    Pose2D,
    Workspace,
    parse_plan,
    plan_json_schema,
    validate_plan,
)


def act(kind: str, **params: object) -> dict:
    return {"type": kind, "parameters": params, "description": kind}


CAPS = Capabilities.default()


def test_default_matches_sim_scene_names() -> None:
    assert set(CAPS.places) == {"home", "table", "kitchen", "shelf"}
    assert set(CAPS.objects) == {"red_cube", "green_cube", "blue_cube"}
    assert set(CAPS.receptacles) == {"blue_bin", "green_bin"}
    assert CAPS.location_of("red_cube") == "table"


def test_default_equals_the_packaged_scene() -> None:
    scene = pytest.importorskip("rtvla.robots.sim.scene")
    caps = Capabilities.from_scene(scene.load_scene())
    # Poses are tuned by the scene's owner; the names and where things are must agree.
    assert set(caps.places) == set(CAPS.places)
    assert (caps.objects, caps.receptacles, caps.locations) == (
        CAPS.objects, CAPS.receptacles, CAPS.locations)
    assert caps.max_speed == CAPS.max_speed


def test_resolve_words_to_names() -> None:
    assert CAPS.resolve("the red cube") == "red_cube"
    assert CAPS.resolve("Red Block") == "red_cube"
    assert CAPS.resolve("the blue basket") == "blue_bin"
    assert CAPS.resolve("kitchen") == "kitchen"
    assert CAPS.resolve("purple sphere") is None
    assert CAPS.resolve("red") == "red_cube"  # unique
    assert CAPS.resolve("blue") is None  # blue cube or blue bin: ambiguous
    assert CAPS.mentions("put the red cube in the blue bin") == {"red_cube", "blue_bin"}


def test_valid_plan_passes() -> None:
    plan = parse_plan({"actions": [
        act("navigate", target="table", max_speed=0.3),
        act("perceive", target="red_cube"),
        act("manipulate", operation="pick", object="red_cube"),
        act("navigate", target="kitchen"),
        act("manipulate", operation="place", object="red_cube", destination="blue_bin"),
        act("communicate", text="done"),
    ]}, CAPS)
    assert len(plan.actions) == 6
    assert plan.summary().startswith("navigate(table) -> perceive(red_cube)")
    assert Plan.model_validate(plan.to_json()) == plan


@pytest.mark.parametrize(("actions", "reason"), [
    ([], "plan is empty"),
    ([act("fly", target="moon")], "unknown action type 'fly'"),
    ([act("navigate", target="garage")], "unknown place 'garage'"),
    ([act("navigate", pose={"x": 9.0, "y": 0.0})], "outside the workspace"),
    ([act("navigate", target="home", max_speed=2.0)], "exceeds the limit"),
    ([act("navigate", target="home", pose={"x": 0, "y": 0})], "exactly one of"),
    ([act("navigate", target="home", speed=1)], "unknown field"),
    ([act("perceive", target="unicorn")], "unknown target 'unicorn'"),
    ([act("manipulate", operation="pick", object="purple_sphere")], "unknown object"),
    ([act("manipulate", operation="throw", object="red_cube")], "operation"),
    ([act("navigate", target="table"),
      act("manipulate", operation="place", object="red_cube", destination="blue_bin")], "not held"),
    ([act("navigate", target="table"), act("manipulate", operation="pick", object="red_cube"),
      act("manipulate", operation="place", object="red_cube", destination="moon")],
     "unknown destination 'moon'"),
    ([act("navigate", target="kitchen"), act("manipulate", operation="pick", object="red_cube")],
     "is reached from 'table'"),
    ([act("navigate", target="table"), act("manipulate", operation="pick", object="red_cube"),
      act("manipulate", operation="pick", object="green_cube")], "while holding 'red_cube'"),
    ([act("navigate", target="table"), act("manipulate", operation="pick", object="red_cube"),
      act("manipulate", operation="place", object="red_cube", destination="blue_bin")],
     "robot is at 'table'"),
    ([act("communicate", text="")], "text"),
])
def test_bad_plans_rejected_with_reason(actions: list, reason: str) -> None:
    with pytest.raises(PlanValidationError, match=reason):
        parse_plan({"actions": actions}, CAPS)


def test_not_a_plan() -> None:
    with pytest.raises(PlanValidationError, match="'actions'"):
        parse_plan({"steps": []}, CAPS)
    with pytest.raises(PlanValidationError, match="object"):
        parse_plan("navigate", CAPS)


def test_bare_list_accepted_and_context_state_used() -> None:
    plan = parse_plan([act("manipulate", operation="place", object="red_cube", destination="blue_bin")],
                      CAPS, robot_place="kitchen", holding="red_cube")
    with pytest.raises(PlanValidationError, match="not held"):
        validate_plan(plan, CAPS, robot_place="kitchen")


def test_capabilities_reject_bad_config() -> None:
    with pytest.raises(ValueError, match="unknown place"):
        Capabilities(places={"home": None}, objects=("cube",), locations={"cube": "attic"})
    with pytest.raises(ValueError, match="outside the workspace"):
        Capabilities(places={"far": Pose2D(x=50, y=0)}, objects=(), workspace=Workspace())
    with pytest.raises(ConfigError, match=r"capabilities\.max_speed"):
        Capabilities.from_mapping({"places": {"home": None}, "objects": [], "max_speed": -1})


def test_context_digest_changes_with_what_changes_the_answer() -> None:
    a = PlanContext()
    assert a.digest == PlanContext().digest
    assert a.digest != PlanContext(robot_place="table").digest
    assert a.digest != PlanContext(holding="red_cube").digest
    other = Capabilities(places={"home": None}, objects=("red_cube",))
    assert a.digest != PlanContext(capabilities=other).digest
    with pytest.raises(ValueError, match="unknown place"):
        PlanContext(robot_place="moon")


def test_json_schema_lists_names() -> None:
    schema = plan_json_schema(CAPS)
    items = schema["properties"]["actions"]["items"]["anyOf"]
    nav = items[0]["properties"]["parameters"]["properties"]
    assert set(nav["target"]["enum"]) == set(CAPS.places)
    assert nav["max_speed"]["maximum"] == CAPS.max_speed
