"""``bench pick``: the learned pick against the scripted pick on the same seeded placements.

Each episode is a :class:`~rtvla.policy.pick.episode.PickEpisode` (lock-step simulation,
rendered perception) on a placement seed; the seeds default to ``10000 ...``, disjoint from
the demonstration seeds (``0:1000``) the shipped model was trained on. Success means the
pick step succeeded and the simulator agrees (the target is held, off the table); the time
is the pick step's simulated duration, its median over the successful episodes.

Usage::

    rows = pick_rows(20, BENCH_SEED0, progress=lambda who, done, total: ...)
    # [{"bench": "pick", "controller": "policy", "episodes": 20, "success_rate": ...,
    #   "median_time_s": ...}, {"bench": "pick", "controller": "scripted", ...}]
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rtvla.errors import ConfigError
from rtvla.policy.pick.episode import PickEpisode, sample_placement
from rtvla.policy.pick.skill import BUILTIN_PICK, PolicyPick, PolicyPickSettings

__all__ = ["BENCH_SEED0", "bench_pick", "pick_rows", "run_pick_episode"]

logger = logging.getLogger(__name__)

#: First placement seed of the benchmark (training used 0..999).
BENCH_SEED0 = 10_000


def run_pick_episode(seed: int, policy: PolicyPick | None, *, timeout_s: float = 40.0) -> dict[str, Any]:
    """One pick on placement ``seed``: by ``policy``, or by the scripted skill when None.
    Returns ``{"seed", "controller", "target", "success", "time_s", "reason"}``."""
    placement = sample_placement(seed)
    with PickEpisode(placement) as ep:
        if not ep.look(2.0):
            return {"seed": seed, "controller": "scripted" if policy is None else "policy",
                    "target": placement.target, "success": False, "time_s": None,
                    "reason": f"perception never saw {placement.target}"}
        executor = ep.make_executor(None if policy is None else policy.skills())
        result = ep.run_pick(executor, timeout_s=timeout_s)
        ok = ep.success(result)
        return {"seed": seed, "controller": "scripted" if policy is None else "policy",
                "target": placement.target, "success": ok,
                "time_s": round(result.steps[0].duration_s, 3),
                "reason": result.reason or ("" if ok else "not held after the pick")}


def bench_pick(
    episodes: int = 20,
    seeds: Sequence[int] | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    policy_source: str | Path = BUILTIN_PICK,
    settings: PolicyPickSettings | None = None,
    details: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The two ``bench pick`` rows (policy, scripted). ``progress(controller, done, total)``
    after each episode; ``details``, when given, receives one dict per episode."""
    chosen = list(seeds) if seeds is not None else list(range(BENCH_SEED0, BENCH_SEED0 + episodes))
    if not chosen:
        raise ConfigError(f"bench pick needs at least one episode, got episodes={episodes}")
    policy = PolicyPick.from_source(policy_source, settings=settings)
    rows = []
    for name, controller in (("policy", policy), ("scripted", None)):
        runs = []
        for i, seed in enumerate(chosen):
            run = run_pick_episode(int(seed), controller)
            runs.append(run)
            if not run["success"]:
                logger.info("bench pick %s seed %d failed: %s", name, seed, run["reason"])
            if details is not None:
                details.append(run)
            if progress is not None:
                progress(name, i + 1, len(chosen))
        times = [r["time_s"] for r in runs if r["success"]]
        rows.append({"bench": "pick", "controller": name, "episodes": len(runs),
                     "success_rate": sum(r["success"] for r in runs) / len(runs),
                     "median_time_s": round(statistics.median(times), 3) if times else None})
    return rows


def pick_rows(
    episodes: int = 20,
    seed0: int = BENCH_SEED0,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    policy_source: str | Path = BUILTIN_PICK,
) -> list[dict[str, Any]]:
    """The ``bench pick`` rows for ``rtvla bench policy``: the learned and the scripted pick
    on placements ``seed0 .. seed0 + episodes - 1``. ``progress(controller, done, total)``
    after each episode."""
    if not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"bench pick: episodes must be an integer >= 1, got {episodes!r}")
    if not isinstance(seed0, int) or seed0 < 0:
        raise ConfigError(f"bench pick: seed0 must be an integer >= 0, got {seed0!r}")
    return bench_pick(episodes, range(seed0, seed0 + episodes), progress=progress,
                      policy_source=policy_source)
