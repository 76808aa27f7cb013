"""Pick demonstrations: a recorded episode round-trips through the documented npz format."""

from __future__ import annotations

import numpy as np
import pytest

from rtvla.errors import ConfigError, RenderError
from rtvla.policy.pick.demos import (
    FORMAT,
    action_chunks,
    base_frame,
    concat_demos,
    generate_demos,
    load_demos,
    parse_seeds,
    save_demos,
)
from rtvla.policy.pick.episode import TABLE_REGION, sample_placement


def test_placements_are_seeded_spread_and_on_the_table() -> None:
    a, b = sample_placement(3), sample_placement(3)
    assert a == b and sample_placement(4) != a
    (x0, x1), (y0, y1) = TABLE_REGION
    for seed in range(50):
        p = sample_placement(seed)
        xy = np.array(list(p.cubes.values()))
        assert np.all((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1))
        d = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy))
        assert d.min() >= 0.085 and p.target in p.cubes


def test_base_frame() -> None:
    p = base_frame((2.0, 1.0, 0.5), (1.0, 1.0, np.pi / 2))
    np.testing.assert_allclose(p, (0.0, -1.0, 0.5), atol=1e-12)


def test_a_recorded_episode_round_trips(tmp_path) -> None:
    try:
        arrays = generate_demos([11])
    except RenderError as exc:
        pytest.skip(f"no offscreen rendering here: {exc}")
    assert bool(arrays["ep_success"][0]), "the scripted pick failed on seed 11"
    path = save_demos(arrays, tmp_path / "demos.npz")
    demos = load_demos(path)
    assert str(demos["format"]) == FORMAT and demos.episodes == 1
    assert demos.object_names == ["blue_cube", "green_cube", "red_cube"]
    for key, value in arrays.items():
        np.testing.assert_array_equal(demos[key], value, err_msg=key)
    ep = demos.episode(0)
    n = demos.samples
    assert n == int(demos["ep_len"][0]) > 30  # ~5 s of pick plus 1 s still, at 10 Hz
    assert ep["obs_q"].shape == (n, 5) and ep["obs_onehot"].shape == (n, 3)
    assert np.all(ep["obs_onehot"].sum(axis=1) == 1)
    # the target is where perception saw it (within the cube's size), held for the pick
    err = np.linalg.norm(demos["ep_perceived_world"][0] - demos["ep_true_world"][0])
    assert err < 0.04
    # (the world estimate is held; in the base frame it moves only as much as the base
    # sways under the arm's motion, a few millimetres)
    assert np.ptp(ep["obs_target_base"], axis=0).max() < 0.005
    # the gripper closes once, and the arm ends at rest where it stows
    assert ep["act_gripper"][0] == 0.0 and ep["act_gripper"][-1] == 1.0
    assert np.count_nonzero(np.diff(ep["act_gripper"])) == 1
    np.testing.assert_allclose(ep["obs_q"][-1], ep["act_goal"][-1], atol=0.02)
    goal, grip = action_chunks(demos, 10)
    assert goal.shape == (n, 10, 5) and grip.shape == (n, 10)
    np.testing.assert_array_equal(goal[0, 0], ep["act_goal"][1])
    np.testing.assert_array_equal(goal[-1, -1], ep["act_goal"][-1])  # padded with the last
    both = concat_demos([arrays, arrays])
    assert len(both["obs_q"]) == 2 * n and both["ep_start"].tolist() == [0, n]
    assert both["episode"][n] == 1


def test_bad_files_and_seeds_are_refused(tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.array("something/else"))
    with pytest.raises(ConfigError, match="format must be"):
        load_demos(bad)
    with pytest.raises(ConfigError, match="not a readable"):
        load_demos(tmp_path / "missing.npz")
    assert parse_seeds("0:3,7") == [0, 1, 2, 7]
    with pytest.raises(ConfigError, match="seeds"):
        parse_seeds("a:b")
