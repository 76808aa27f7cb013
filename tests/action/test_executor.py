from __future__ import annotations

import threading

import numpy as np
import pytest

from rtvla.action.executor import ExecStatus, TaskExecutor
from rtvla.action.skills import SkillSettings
from rtvla.action.world import GroundTruthPerception, ObjectEstimate
from rtvla.errors import SkillError

PERCEIVE_PICK = [
    {"type": "perceive", "parameters": {"target": "red_cube"}},
    {"type": "manipulate", "parameters": {"operation": "pick", "object": "red_cube"}},
]


def _scene_capabilities(scene):
    from rtvla.language import Capabilities, Pose2D, Workspace

    return Capabilities(
        places={n: Pose2D(x=p.pose[0], y=p.pose[1], yaw=p.pose[2]) for n, p in scene.places.items()},
        objects=tuple(scene.objects),
        receptacles=tuple(scene.receptacles),
        locations={**{n: o.place for n, o in scene.objects.items()},
                   **{n: r.place for n, r in scene.receptacles.items()}},
        max_speed=0.5,
        workspace=Workspace(x_min=-4, x_max=4, y_min=-4, y_max=4),
    )


def _make_nav(sim, sp, clock, rec):
    from rtvla.action.navigation import Navigator

    return Navigator.for_sim(sim, sp, recorder=rec, clock=clock)


def test_put_the_red_cube_in_the_blue_bin_in_lockstep(lockstep_stack) -> None:
    """The issue's key test: instruction -> rule plan -> skills -> cube in the bin."""
    from rtvla.language import PlanContext, RulePlanner, validate_plan

    s = lockstep_stack("home", navigator=_make_nav)
    caps = _scene_capabilities(s.sim.scene)
    plan = RulePlanner(caps).plan_sync("put the red cube in the blue bin",
                                       PlanContext(capabilities=caps, robot_place="home"))
    validate_plan(plan, caps, robot_place="home")
    assert [a.type for a in plan.actions] == ["navigate", "perceive", "manipulate", "navigate", "manipulate"]

    result = s.driver.run_plan(s.executor, plan, timeout_s=120)

    assert result.success, result.reason
    cube = s.sim.object_position("red_cube")
    bin_xy = s.sim.frame_pose("blue_bin", "body")[:2, 3]
    assert np.hypot(*(cube[:2] - bin_xy)) < 0.08  # inside the 18 cm bin
    assert cube[2] < 0.5  # resting on the bin floor (drop site is at 0.55 m)
    assert s.sim.read_state().holding is None
    assert all(st.status is ExecStatus.SUCCEEDED and st.duration_s >= 0 for st in result.steps)
    assert result.steps[0].duration_s > 1.0 and result.steps[3].duration_s > 1.0  # drove
    assert result.duration_s < 120  # the task budget
    assert s.control.stats()["watchdog_trips"] == 0
    assert s.recorder.snapshot()["task"]["latency_ms"]["count"] == 1


def test_pick_red_cube_in_lockstep(lockstep_stack) -> None:
    progress = []
    s = lockstep_stack("table", progress=progress.append)
    result = s.driver.run_plan(s.executor, PERCEIVE_PICK, timeout_s=60)
    assert result.success, result.reason
    assert s.sim.read_state().holding == "red_cube"
    assert s.sim.object_position("red_cube")[2] > 0.5  # lifted off the 0.45 m table top
    assert [st.status for st in result.steps] == [ExecStatus.SUCCEEDED] * 2
    assert all(st.duration_s >= 0 for st in result.steps) and result.steps[1].duration_s > 0.5
    # progress: start and end of each step, phases in between
    assert progress[0].index == 0 and progress[0].status is ExecStatus.RUNNING
    assert progress[-1].index == 1 and progress[-1].status is ExecStatus.SUCCEEDED
    assert {"approaching", "closing the gripper", "lifting"} <= {p.phase for p in progress}
    assert s.control.stats()["watchdog_trips"] == 0


def test_a_timed_out_step_says_which_and_why(lockstep_stack) -> None:
    settings = SkillSettings(timeouts_s={"perceive": 0.5, "manipulate": 40.0, "communicate": 1.0})
    s = lockstep_stack("table", settings=settings)
    plan = [
        {"type": "communicate", "parameters": {"text": "looking for the purple sphere"}},
        {"type": "perceive", "parameters": {"target": "purple_sphere"}},
        {"type": "communicate", "parameters": {"text": "never said"}},
    ]
    result = s.driver.run_plan(s.executor, plan, timeout_s=10)
    assert result.status is ExecStatus.TIMED_OUT
    assert result.failed_step == 1
    assert "perceive" in result.failed_action
    assert "timed out after 0.5 s while looking for purple_sphere" in result.reason
    assert result.steps[0].status is ExecStatus.SUCCEEDED
    assert result.steps[2].status is ExecStatus.PENDING
    assert s.ctx.said == ["looking for the purple sphere"]
    assert any(e.kind == "timed_out" for e in s.recorder.events)


class _OffsetWorld(GroundTruthPerception):
    """Ground truth shifted sideways: the gripper will close next to the cube."""

    def estimate(self, name, *, max_age_s=None):
        est = super().estimate(name, max_age_s=max_age_s)
        if est is None:
            return None
        return ObjectEstimate(name, est.position + np.array([0.0, 0.08, 0.0]), est.stamp_ns, 1.0, "test")


def test_pick_that_misses_fails_with_the_reason(lockstep_stack) -> None:
    s = lockstep_stack("table", world=lambda sim, clock: _OffsetWorld(sim, clock=clock))
    result = s.driver.run_plan(s.executor, PERCEIVE_PICK, timeout_s=60)
    assert result.status is ExecStatus.FAILED and result.failed_step == 1
    assert "closed" in result.reason and "on nothing" in result.reason
    assert s.sim.read_state().holding is None


def test_place_without_holding_fails_at_once(lockstep_stack) -> None:
    s = lockstep_stack("kitchen")
    plan = [{"type": "manipulate",
             "parameters": {"operation": "place", "object": "red_cube", "destination": "blue_bin"}}]
    result = s.driver.run_plan(s.executor, plan, timeout_s=5)
    assert result.status is ExecStatus.FAILED
    assert "gripper is empty" in result.reason


def test_stop_event_cancels_the_plan(lockstep_stack) -> None:
    s = lockstep_stack("table")
    stop = threading.Event()
    s.executor.start(PERCEIVE_PICK, stop_event=stop)
    s.driver.executor = s.executor
    s.driver.run_until(lambda: s.ctx.phase == "approaching", 30)
    stop.set()
    s.driver.run_until(lambda: s.executor.status is not ExecStatus.RUNNING, 1)
    res = s.executor.result
    assert res.status is ExecStatus.CANCELED and res.failed_step == 1
    assert "stop requested" in res.reason


def test_unknown_action_type_is_refused(lockstep_stack) -> None:
    s = lockstep_stack("table")
    with pytest.raises(SkillError, match="no skill for action type"):
        s.executor.start([{"type": "dance", "parameters": {}}])
    with pytest.raises(SkillError, match="no actions"):
        s.executor.start([])


def test_executor_runs_in_real_time_with_threads() -> None:
    """execute() ticks on a real RateLoop; the control loop runs in its own thread."""
    from rtvla.action.control import ControlLoop
    from rtvla.action.skills import SceneInfo, SetpointWriter, SkillContext
    from rtvla.channels import LatestValue
    from rtvla.metrics import Recorder
    from rtvla.robots.sim import SimRobot

    rec = Recorder()
    said = []
    with SimRobot() as sim:
        sp = LatestValue("setpoints")
        control = ControlLoop(sim, sp, recorder=rec)
        thread = control.start_thread()
        try:
            ctx = SkillContext(read_state=sim.read_state, setpoints=SetpointWriter(sp),
                               world=GroundTruthPerception(sim), scene=SceneInfo.from_sim(sim),
                               recorder=rec, on_say=said.append)
            ex = TaskExecutor(ctx, rate_hz=20.0)
            plan = [{"type": "communicate", "parameters": {"text": "hello"}},
                    {"type": "perceive", "parameters": {"target": "green_cube"}}]
            result = ex.execute(plan, timeout_s=10)
        finally:
            control.stop()
            thread.join(timeout=5)
    assert result.success, result.reason
    assert said == ["hello"]
    assert result.steps[1].detail["source"] == "ground_truth"


def test_bring_the_green_cube_to_the_table_sets_it_down(lockstep_stack) -> None:
    from rtvla.language import PlanContext, RulePlanner

    s = lockstep_stack("home", navigator=_make_nav)
    caps = _scene_capabilities(s.sim.scene)
    plan = RulePlanner(caps).plan_sync("bring the green cube to the table",
                                       PlanContext(capabilities=caps, robot_place="home"))
    start = s.sim.object_position("green_cube")
    result = s.driver.run_plan(s.executor, plan, timeout_s=90)
    assert result.success, result.reason
    assert plan.actions[-1].parameters.destination == "table"
    assert result.steps[-1].message == "green_cube is on table"
    end = s.sim.object_position("green_cube")
    assert np.linalg.norm(end - start) < 0.03 and s.sim.read_state().holding is None


def test_place_on_an_unknown_surface_fails_clearly(lockstep_stack) -> None:
    s = lockstep_stack("table")
    plan = [*PERCEIVE_PICK, {"type": "manipulate", "parameters": {
        "operation": "place", "object": "red_cube", "destination": "shelf"}}]
    result = s.driver.run_plan(s.executor, plan, timeout_s=60)
    assert result.status is ExecStatus.FAILED and result.failed_step == 2
    assert "no drop point or put-down surface known for 'shelf'" in result.reason


def test_skill_settings_merge_timeouts_and_validate() -> None:
    from rtvla.errors import ConfigError

    s = SkillSettings.from_section({"timeouts_s": {"perceive": 0.5}})
    assert s.timeout("perceive") == 0.5 and s.timeout("navigate") == 90.0
    with pytest.raises(ConfigError, match="timeouts_s"):
        SkillSettings.from_section({"timeouts_s": {"perceive": -1}})
    with pytest.raises(ConfigError, match="unknown key"):
        SkillSettings.from_section({"grasp_force": 3})


def test_lockstep_runs_are_deterministic(lockstep_stack) -> None:
    runs = []
    for _ in range(2):
        s = lockstep_stack("table")
        result = s.driver.run_plan(s.executor, PERCEIVE_PICK, timeout_s=60)
        runs.append(([st.duration_s for st in result.steps], s.sim.object_position("red_cube")))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])


def test_canceling_during_navigation_stops_the_base(lockstep_stack) -> None:
    from rtvla.action.navigation import NavStatus

    s = lockstep_stack("home", navigator=_make_nav)
    stop = threading.Event()
    s.executor.start([{"type": "navigate", "parameters": {"target": "kitchen"}}], stop_event=stop)
    s.driver.executor = s.executor
    s.driver.run_until(lambda: s.ctx.phase.startswith("driving (") and "track" in s.ctx.phase, 10)
    s.driver.run_until(lambda: False, 1.0)  # drive for a second
    assert np.hypot(*s.sim.read_state().base_vel[:2]) > 0.1
    stop.set()
    s.driver.run_until(lambda: s.executor.status is not ExecStatus.RUNNING, 1)
    assert s.executor.status is ExecStatus.CANCELED
    assert s.navigator.state().status is NavStatus.CANCELED
    s.driver.run_until(lambda: False, 1.0)
    assert np.all(np.abs(s.sim.read_state().base_vel) < 0.02)
