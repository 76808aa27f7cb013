"""The open stack end to end: a surface task, replanning after a failed step, the planner's
context, part errors before start, a robot without a base."""

from __future__ import annotations

import json

import pytest

from rtvla.config import load_config, parse_config
from rtvla.errors import PartError, PlanValidationError
from rtvla.language import Capabilities, parse_plan
from rtvla.runtime.main_job import EXIT_OK, RunOptions, run_task
from rtvla.runtime.settings import validate_sections

pytestmark = pytest.mark.slow


def _cfg(**sections):
    return parse_config(sections) if sections else load_config(environ={}, search_cwd=False)


def test_put_the_red_cube_on_the_shelf(tmp_path):
    out = tmp_path / "run"
    outcome = run_task(_cfg(), RunOptions(out_dir=out, dashboard=False, task="put the red cube on the shelf"))
    report = json.loads((out / "report.json").read_text())
    assert report["task"]["success"] is True, outcome.reason
    assert outcome.exit_code in (EXIT_OK, 3), outcome.reason
    steps = [a["parameters"] for a in report["task"]["plan"]["actions"]]
    assert steps[-1] == {"operation": "place", "object": "red_cube", "destination": "shelf"}
    assert report["embodiment"]["world"]["surfaces"]["shelf"]["place"] == "shelf"


def test_a_failed_step_gets_one_new_plan_from_the_current_state(tmp_path):
    failures = []

    def inject(stack):
        real = stack.executor.skills["manipulate"]

        def flaky(ctx, params, *args, **kwargs):
            if not failures and params.operation == "place":
                failures.append(True)
                from rtvla.errors import SkillError

                raise SkillError("injected: the gripper slipped")
            return (yield from real(ctx, params, *args, **kwargs))

        stack.executor.skills["manipulate"] = flaky
        seen = []
        real_plan = stack.planner.plan_blocking

        def spy(instruction, context=None, **kw):
            seen.append(context)
            return real_plan(instruction, context, **kw)

        stack.planner.plan_blocking = spy
        stack._contexts = seen

    out = tmp_path / "run"
    stacks = []
    outcome = run_task(_cfg(), RunOptions(out_dir=out, dashboard=False),
                       on_stack=lambda s: (inject(s), stacks.append(s)))
    report = json.loads((out / "report.json").read_text())
    plans = report["task"]["plans"]
    assert failures == [True]
    assert len(plans) == 2, plans
    assert plans[0]["status"] == "failed" and "gripper slipped" in plans[0]["reason"]
    assert "gripper slipped" in plans[1]["after_failure"]
    # The second plan starts where the robot is: holding the cube, at the kitchen.
    assert plans[1]["plan"]["actions"][0]["parameters"]["operation"] == "place"
    assert report["task"]["success"] is True, outcome.reason
    assert any(e["kind"] == "replan" for e in report["events"])
    ctx0, ctx1 = stacks[0]._contexts[:2]
    assert set(ctx0.capabilities.places) >= {"table", "kitchen", "shelf"}
    assert "surfaces" in ctx0.scene and "shelf" in ctx0.scene["surfaces"]
    assert ctx1.holding == "red_cube" and ctx1.failure and "gripper slipped" in ctx1.failure
    assert any(o["label"] == "blue_bin" for o in ctx1.observations) or ctx1.observations


def test_a_robot_without_a_base_refuses_navigation():
    caps = Capabilities.default().model_copy(update={"can_navigate": False,
                                                     "navigate_reason": "it has no mobile base"})
    plan = {"actions": [{"type": "navigate", "parameters": {"target": "table"}, "description": "go"}]}
    with pytest.raises(PlanValidationError, match="cannot navigate \\(it has no mobile base\\)"):
        parse_plan(plan, caps)


@pytest.mark.parametrize(("sections", "message"), [
    ({"robot": {"type": "ur5"}}, r"unknown robot 'ur5'.*sim"),
    ({"robot": {"type": "no_such_pkg.mod:make"}}, r"no_such_pkg"),
    ({"robot": {"type": "sim", "options": {"camera": {"width": -3}}}}, r"robot\.options\.camera\.width"),
    ({"perception": {"detector": "yolo9000"}}, r"unknown detector 'yolo9000'"),
    ({"llm": {"planner": "rtvla.language.rules:NoSuchPlanner"}}, r"NoSuchPlanner"),
])
def test_misconfigured_parts_fail_before_anything_starts(sections, message):
    with pytest.raises(PartError, match=message):
        validate_sections(_cfg(**sections))


def test_python_api_runs_tasks_back_to_back_with_a_reset():
    import rtvla

    with rtvla.Stack.from_config(_cfg()) as stack:
        first = stack.run("put the red cube in the blue bin")
        assert first.success, first.reason
        assert first.plans and first.components["control"]["count"] > 100
        stack.reset_robot()
        assert stack.robot.holding is None
        second = stack.run("bring the green cube to the table then say done")
        assert second.success, second.reason
    assert not stack._started  # the context manager stopped it


def test_two_cameras_in_the_simulator_are_both_measured(tmp_path):
    cfg = parse_config({
        "robot": {"options": {"extra_cameras": {"overview": {"width": 160, "height": 120, "rate_hz": 10}}}},
        "cameras": [{"name": "head", "source": "robot:head"},
                    {"name": "overview", "source": "robot:overview"}],
    })
    out = tmp_path / "run"
    run_task(cfg, RunOptions(out_dir=out, dashboard=False, duration_s=6))
    report = json.loads((out / "report.json").read_text())
    head, room = report["components"]["perception"], report["components"]["perception.overview"]
    assert head["count"] > 50 and room["count"] > 20
    assert room["budget"]["rate_hz"] == 10  # measured against its own camera's rate
    assert set(report["cameras"]) == {"head", "overview"}
    assert report["cameras"]["overview"]["pipeline"] == "perception.overview"


@pytest.mark.parametrize("recover", [False, True])
def test_a_latched_stop_holds_unless_recovery_is_configured(tmp_path, recover):
    def inject(stack):
        real = stack.executor.skills["manipulate"]
        done = []

        def stop_then_fail(ctx, params, *args, **kwargs):
            if not done and params.operation == "pick":
                done.append(True)
                stack.robot.stop()  # an operator's stop mid-task: it latches
                from rtvla.errors import SkillError

                deadline = __import__("time").monotonic() + 2
                while not stack.robot.stopped and __import__("time").monotonic() < deadline:
                    yield
                raise SkillError("the arm does not move: the robot is stopped")
            return (yield from real(ctx, params, *args, **kwargs))

        stack.executor.skills["manipulate"] = stop_then_fail

    cfg = parse_config({"executor": {"recover_stops": recover}})
    out = tmp_path / "run"
    outcome = run_task(cfg, RunOptions(out_dir=out, dashboard=False), on_stack=inject)
    report = json.loads((out / "report.json").read_text())
    plans = report["task"]["plans"]
    if recover:
        assert len(plans) == 2 and report["task"]["success"] is True, outcome.reason
        assert any(e["kind"] == "recover" for e in report["events"])
    else:
        assert len(plans) == 1 and report["task"]["success"] is False
        assert "latched stop" in plans[0]["stopped"]
