"""The learned pick in lock-step simulation with rendered perception, on held-out seeds."""

from __future__ import annotations

import numpy as np
import pytest

from rtvla.action.executor import ExecStatus
from rtvla.errors import ConfigError, PolicyError, RenderError
from rtvla.policy.pick.bench import pick_rows, run_pick_episode
from rtvla.policy.pick.episode import PickEpisode, pick_plan, sample_placement
from rtvla.policy.pick.skill import PolicyPick, PolicyPickSettings, policy_skills

# Placement seeds the shipped model never saw (it was trained on 0..999).
HELD_OUT = (10_003, 10_011)


@pytest.fixture(scope="module")
def policy() -> PolicyPick:
    return PolicyPick.from_source("builtin:pick")


def _episode(seed: int) -> PickEpisode:
    try:
        return PickEpisode(sample_placement(seed))
    except RenderError as exc:
        pytest.skip(f"no offscreen rendering here: {exc}")


@pytest.mark.parametrize("seed", HELD_OUT)
def test_learned_policy_picks_on_held_out_placements(policy: PolicyPick, seed: int) -> None:
    with _episode(seed) as ep:
        assert ep.look(2.0)
        est = ep.world.estimate(ep.placement.target)
        assert est is not None and est.source == "detections"
        result = ep.run_pick(ep.make_executor(policy.skills()))
        assert result.success, result.reason
        assert ep.sim.holding == ep.placement.target
        assert ep.true_position()[2] > 0.52  # lifted off the table (top at 0.45)
        q = ep.sim.read_state().q
        assert np.max(np.abs(q - np.asarray(policy.carry_q))) < 0.1  # stowed for carrying
        stats = policy.last_stats
        assert stats["chunks"] >= 10 and stats["starved_ticks"] == 0
        assert ep.control.stats_obj().watchdog_trips == 0
        assert "learned policy" in result.steps[0].message


def test_asynchronous_inference_in_a_worker_thread_also_picks() -> None:
    pick = PolicyPick.from_source("builtin:pick", settings=PolicyPickSettings(asynchronous=True, threshold=0.8))
    run = run_pick_episode(HELD_OUT[0], pick)
    assert run["success"], run["reason"]
    assert pick.last_stats["requests"] >= 5


def test_pick_fails_clearly_without_an_estimate_or_for_an_unknown_object(policy: PolicyPick) -> None:
    with _episode(HELD_OUT[0]) as ep:
        # ticked before perception has rendered a single frame: nothing is known yet
        ex = ep.make_executor(policy.skills())
        ex.start(pick_plan(ep.placement.target))
        assert ex.tick() is ExecStatus.FAILED
        assert ex.result is not None and "no estimate" in ex.result.reason
        ex = ep.make_executor(policy.skills())
        plan = [{"type": "manipulate", "parameters": {"operation": "pick", "object": "purple_ball"}}]
        result = ep.driver.run_plan(ex, plan, timeout_s=5)
        assert not result.success and "knows only" in result.reason
    with pytest.raises(PolicyError, match="no model file"):
        PolicyPick.from_source("builtin:nothing_here")


def test_bench_rows_have_the_documented_shape() -> None:
    seen: list[tuple[str, int, int]] = []
    try:
        rows = pick_rows(1, HELD_OUT[1], progress=lambda who, done, total: seen.append((who, done, total)))
    except RenderError as exc:
        pytest.skip(f"no offscreen rendering here: {exc}")
    assert [r["controller"] for r in rows] == ["policy", "scripted"]
    for r in rows:
        assert set(r) == {"bench", "controller", "episodes", "success_rate", "median_time_s"}
        assert r["bench"] == "pick" and r["episodes"] == 1 and r["success_rate"] == 1.0
        assert 1.0 < r["median_time_s"] < 40.0
    assert seen == [("policy", 1, 1), ("scripted", 1, 1)]
    with pytest.raises(ConfigError, match="episodes"):
        pick_rows(0, HELD_OUT[1])
    with pytest.raises(ConfigError, match="seed0"):
        pick_rows(1, -5)


def test_policy_skills_replace_only_manipulate_and_infer_in_a_worker() -> None:
    from rtvla.action.skills import SKILLS

    skills = policy_skills("builtin:pick")
    assert set(skills) == set(SKILLS)
    assert all(skills[k] is SKILLS[k] for k in SKILLS if k != "manipulate")
    pick = skills["manipulate"].__self__
    assert isinstance(pick, PolicyPick) and pick.settings.asynchronous
    assert pick.settings.merge == "average"
    with pytest.raises(PolicyError, match="no model file"):
        policy_skills("/nonexistent/pick.onnx")
    with pytest.raises(PolicyError, match="policy server"):
        policy_skills("ws://127.0.0.1:8000")
    with pytest.raises(PolicyError, match="chunk_steps"):
        PolicyPickSettings(chunk_steps=0)
    with pytest.raises(PolicyError, match="merge"):
        PolicyPickSettings(merge="median")


@pytest.mark.slow
def test_policy_skills_pick_in_real_time_in_the_default_stack() -> None:
    """The default stack (control in its own process, 30 Hz perception, the threaded 10 Hz
    executor) with manipulate(pick) by the learned policy, inferring in a worker thread."""
    from rtvla.config import load_config
    from rtvla.runtime.stack import Stack

    stack = Stack.from_config(load_config(environ={}, search_cwd=False))
    stack.executor.skills = policy_skills("builtin:pick")
    pick = stack.executor.skills["manipulate"].__self__
    with stack:
        report = stack.run("put the red cube on the shelf")
    assert report.success, report.reason
    assert len(report.plans) == 1  # no re-plan was needed
    stats = pick.last_stats
    assert stats["chunks"] >= 10 and stats["starved_ticks"] == 0 and stats["failures"] == 0
    assert stats["inference_delay_ms"]["max"] < 100.0


def test_a_configured_carry_pose_is_reached_after_the_policy_stows(policy: PolicyPick) -> None:
    from rtvla.action.skills import SkillSettings

    carry = (0.3, -0.2, 2.3, 1.0, 0.2)
    try:
        ep = PickEpisode(sample_placement(HELD_OUT[1]), settings=SkillSettings(carry_q=carry))
    except RenderError as exc:
        pytest.skip(f"no offscreen rendering here: {exc}")
    with ep:
        assert ep.look(2.0)
        result = ep.run_pick(ep.make_executor(policy.skills()))
        assert result.success, result.reason
        assert ep.success(result)
        np.testing.assert_allclose(ep.sim.read_state().q, carry, atol=0.05)
