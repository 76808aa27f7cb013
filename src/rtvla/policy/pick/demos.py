"""Pick demonstrations: the scripted pick skill on seeded placements, recorded at 10 Hz.

Each episode (:class:`~rtvla.policy.pick.episode.PickEpisode`) lets perception look at the
table, then runs the scripted ``manipulate(pick TARGET)`` skill in lock-step simulation and
records one sample per executor tick (10 Hz), plus one second of holding still at the end.
Nothing the network sees comes from the simulator's ground truth: the target position is
the world model's estimate from rendered camera frames (the newest fresh estimate when the
pick starts, held for the whole pick as the scripted skill holds it).

File format (``numpy.savez_compressed``; ``N`` samples, ``E`` episodes, ``K`` objects)::

    format            str    "rtvla.pick_demos/1"
    rate_hz           float  samples per second (10.0)
    object_names      [K]    str, the one-hot's order (sorted scene object names)
    arm_joints        [5]    str, the order of the joint columns
    obs_q             [N,5]  float32  measured arm joint positions (rad)
    obs_gripper       [N]    float32  measured gripper opening, 0 open .. 1 closed
    obs_target_base   [N,3]  float32  perceived target centre in the robot base frame (m)
    obs_onehot        [N,K]  float32  which object the instruction names
    act_goal          [N,5]  float32  arm joint-position goal the skill had set at that tick
                                      (the newest setpoint's ``arm_q``; the measured position
                                      before the first one): what the policy learns
    act_q             [N,5]  float32  arm joint position the control loop was commanding at
                                      that tick (its jerk-limited trajectory toward the goal)
    act_gripper       [N]    float32  gripper command (0 open, 1 closed)
    episode           [N]    int32    episode index of each sample
    t                 [N]    float32  seconds since the episode's first sample
    ep_seed           [E]    int64    placement seed
    ep_target         [E]    int32    target index into object_names
    ep_success        [E]    bool     the scripted pick succeeded (holding, lifted)
    ep_start, ep_len  [E]    int64    sample range of each episode
    ep_perceived_world [E,3] float32  the perceived target centre (world frame)
    ep_true_world     [E,3]  float32  the simulator's target centre (for error figures only)
    ep_base_pose      [E,3]  float32  base (x, y, yaw) during the episode
    ep_duration_s     [E]    float32  duration of the pick step

The action label of sample ``i`` for horizon step ``j`` (0..H-1) is ``act_*[i + 1 + j]`` of
the same episode (the last sample repeated past the end): see :func:`action_chunks`.

Reproduce the shipped training set::

    nice -n 10 python scripts/make_pick_demos.py --seeds 0:1000 --jobs 2 --out pick_demos.npz
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.errors import ConfigError
from rtvla.policy.pick.episode import PickEpisode, sample_placement
from rtvla.robots.sim.scene import load_scene

__all__ = [
    "FORMAT",
    "RATE_HZ",
    "DemoSet",
    "action_chunks",
    "base_frame",
    "concat_demos",
    "generate_demos",
    "load_demos",
    "main",
    "parse_seeds",
    "record_episode",
    "save_demos",
]

logger = logging.getLogger(__name__)

FORMAT = "rtvla.pick_demos/1"
RATE_HZ = 10.0
_TAIL_S = 1.0  # holding still after the skill returns: the policy learns where to stop
_START_Q_NOISE = 0.1  # rad per joint: the start pose varies, so the approach generalises

_SAMPLE_KEYS = ("obs_q", "obs_gripper", "obs_target_base", "obs_onehot", "act_goal", "act_q",
                "act_gripper", "episode", "t")
_EPISODE_KEYS = ("ep_seed", "ep_target", "ep_success", "ep_start", "ep_len", "ep_perceived_world",
                 "ep_true_world", "ep_base_pose", "ep_duration_s")


def base_frame(p_world: Any, base_pose: Any) -> np.ndarray:
    """A world point in the robot base frame (base pose = x, y, yaw; z unchanged)."""
    p = np.asarray(p_world, dtype=float)
    x, y, yaw = (float(v) for v in base_pose)
    c, s = math.cos(yaw), math.sin(yaw)
    dx, dy = p[0] - x, p[1] - y
    return np.array([c * dx + s * dy, -s * dx + c * dy, p[2]])


@dataclass
class DemoSet:
    """A loaded demonstration file: the arrays of the module docstring, by name."""

    arrays: dict[str, np.ndarray]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    @property
    def object_names(self) -> list[str]:
        return [str(v) for v in self.arrays["object_names"]]

    @property
    def episodes(self) -> int:
        return len(self.arrays["ep_seed"])

    @property
    def samples(self) -> int:
        return len(self.arrays["obs_q"])

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """The samples of episode ``i``."""
        lo = int(self.arrays["ep_start"][i])
        hi = lo + int(self.arrays["ep_len"][i])
        return {k: self.arrays[k][lo:hi] for k in _SAMPLE_KEYS}


def record_episode(seed: int, *, start_q_noise: float = _START_Q_NOISE, timeout_s: float = 40.0) -> dict[str, Any]:
    """Run the scripted pick for ``seed`` and return its samples and summary (see the module
    docstring for the fields)."""
    placement = sample_placement(seed, start_q_noise=start_q_noise)
    names = sorted(placement.cubes)
    onehot = np.zeros(len(names), dtype=np.float32)
    onehot[names.index(placement.target)] = 1.0
    rows: list[tuple[Any, ...]] = []
    with PickEpisode(placement) as ep:
        if not ep.look(2.0):
            logger.info("seed %d: perception never saw %s", seed, placement.target)
            return {"seed": seed, "success": False, "rows": [], "reason": "not seen"}
        est = ep.world.estimate(placement.target)
        assert est is not None
        p_world = np.asarray(est.position, dtype=float)
        true0 = ep.true_position()  # scoring only: how far perception was off
        sp = ep.ctx.setpoints
        t0 = ep.clock.now_ns()

        def record(now_ns: int) -> None:
            st = ep.sim.read_state()
            goal = st.q.copy() if sp.arm_q is None else sp.arm_q.copy()
            rows.append((st.q.copy(), st.gripper, base_frame(p_world, st.base_pose), goal,
                         ep.control.trajectory.position.copy(),
                         0.0 if sp.gripper is None else sp.gripper, (now_ns - t0) / 1e9))

        ep.every(RATE_HZ, record)
        result = ep.run_pick(ep.make_executor(), timeout_s=timeout_s)
        ep.driver.run_until(lambda: False, _TAIL_S)
        ok = ep.success(result)
        out = {
            "seed": seed, "success": ok, "rows": rows if ok else [], "reason": result.reason,
            "target": names.index(placement.target), "onehot": onehot, "names": names,
            "perceived": p_world, "true": true0,
            "base_pose": np.asarray(placement.base_pose), "duration_s": result.duration_s,
        }
    return out


def generate_demos(
    seeds: Sequence[int],
    *,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Record one episode per seed; returns the arrays of the module docstring (failed
    scripted episodes keep their summary row with ``ep_success`` False and no samples)."""
    if not seeds:
        raise ConfigError("generate_demos needs at least one seed")
    names = sorted(load_scene().objects)
    cols: dict[str, list[Any]] = {k: [] for k in (*_SAMPLE_KEYS, *_EPISODE_KEYS)}
    n = 0
    for i, seed in enumerate(seeds):
        ep = record_episode(int(seed))
        rows = ep["rows"]
        for q, g, pb, goal, aq, ag, t in rows:
            cols["obs_q"].append(q)
            cols["obs_gripper"].append(g)
            cols["obs_target_base"].append(pb)
            cols["obs_onehot"].append(ep["onehot"])
            cols["act_goal"].append(goal)
            cols["act_q"].append(aq)
            cols["act_gripper"].append(ag)
            cols["episode"].append(i)
            cols["t"].append(t)
        cols["ep_seed"].append(int(seed))
        cols["ep_target"].append(ep.get("target", -1))
        cols["ep_success"].append(bool(ep["success"]))
        cols["ep_start"].append(n)
        cols["ep_len"].append(len(rows))
        cols["ep_perceived_world"].append(ep.get("perceived", np.full(3, np.nan)))
        cols["ep_true_world"].append(ep.get("true", np.full(3, np.nan)))
        cols["ep_base_pose"].append(ep.get("base_pose", np.full(3, np.nan)))
        cols["ep_duration_s"].append(ep.get("duration_s", np.nan))
        n += len(rows)
        if progress is not None:
            progress(i + 1, len(seeds), ep)
    k = len(names)
    f32 = np.float32
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "rate_hz": np.array(RATE_HZ),
        "object_names": np.array(names),
        "arm_joints": np.array(load_scene().robot.arm_joints),
        "obs_q": np.asarray(cols["obs_q"], f32).reshape(-1, 5),
        "obs_gripper": np.asarray(cols["obs_gripper"], f32),
        "obs_target_base": np.asarray(cols["obs_target_base"], f32).reshape(-1, 3),
        "obs_onehot": np.asarray(cols["obs_onehot"], f32).reshape(-1, k),
        "act_goal": np.asarray(cols["act_goal"], f32).reshape(-1, 5),
        "act_q": np.asarray(cols["act_q"], f32).reshape(-1, 5),
        "act_gripper": np.asarray(cols["act_gripper"], f32),
        "episode": np.asarray(cols["episode"], np.int32),
        "t": np.asarray(cols["t"], f32),
        "ep_seed": np.asarray(cols["ep_seed"], np.int64),
        "ep_target": np.asarray(cols["ep_target"], np.int32),
        "ep_success": np.asarray(cols["ep_success"], bool),
        "ep_start": np.asarray(cols["ep_start"], np.int64),
        "ep_len": np.asarray(cols["ep_len"], np.int64),
        "ep_perceived_world": np.asarray(cols["ep_perceived_world"], f32).reshape(-1, 3),
        "ep_true_world": np.asarray(cols["ep_true_world"], f32).reshape(-1, 3),
        "ep_base_pose": np.asarray(cols["ep_base_pose"], f32).reshape(-1, 3),
        "ep_duration_s": np.asarray(cols["ep_duration_s"], f32),
    }
    return arrays


def concat_demos(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One demonstration set from several (episode indices and sample offsets renumbered)."""
    if not parts:
        raise ConfigError("concat_demos needs at least one part")
    out = dict(parts[0])
    for key in (*_SAMPLE_KEYS, *_EPISODE_KEYS):
        arrs = []
        n_samples = n_eps = 0
        for part in parts:
            a = part[key]
            if key == "episode":
                a = a + n_eps
            elif key == "ep_start":
                a = a + n_samples
            arrs.append(a)
            n_samples += len(part["obs_q"])
            n_eps += len(part["ep_seed"])
        out[key] = np.concatenate(arrs)
    return out


def _generate_slice(seeds: list[int]) -> dict[str, np.ndarray]:
    return generate_demos(seeds)


def save_demos(arrays: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write ``arrays`` (from :func:`generate_demos`) as a compressed npz."""
    missing = [k for k in (*_SAMPLE_KEYS, *_EPISODE_KEYS) if k not in arrays]
    if missing:
        raise ConfigError(f"demonstrations lack {missing}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    return out


def load_demos(path: str | Path) -> DemoSet:
    """Read a demonstration file; raises ConfigError naming what is wrong with it."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{p}: not a readable demonstration npz: {exc}") from None
    fmt = str(arrays.get("format", ""))
    if fmt != FORMAT:
        raise ConfigError(f"{p}: format must be {FORMAT!r}, got {fmt!r}")
    missing = [k for k in (*_SAMPLE_KEYS, *_EPISODE_KEYS) if k not in arrays]
    if missing:
        raise ConfigError(f"{p}: missing arrays {missing}")
    n = len(arrays["obs_q"])
    bad = [k for k in _SAMPLE_KEYS if len(arrays[k]) != n]
    if bad:
        raise ConfigError(f"{p}: arrays {bad} do not have {n} samples like obs_q")
    return DemoSet(arrays)


def action_chunks(demos: DemoSet, horizon: int, arm: str = "act_goal") -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the next ``horizon`` actions of its episode: (arm [N,H,5] from the array
    ``arm`` (``act_goal`` or ``act_q``), gripper [N,H]), the episode's last action repeated
    past its end."""
    if horizon < 1:
        raise ConfigError(f"horizon must be >= 1, got {horizon}")
    if arm not in ("act_goal", "act_q"):
        raise ConfigError(f"arm actions must be 'act_goal' or 'act_q', got {arm!r}")
    ep, aq, ag = demos["episode"], demos[arm], demos["act_gripper"]
    n = len(ep)
    idx = np.arange(n)[:, None] + np.arange(1, horizon + 1)[None, :]
    last = np.empty(n, dtype=np.int64)
    for start, length in zip(demos["ep_start"], demos["ep_len"]):
        if length:
            last[start : start + length] = start + length - 1
    idx = np.minimum(idx, last[:, None])
    return aq[idx], ag[idx]


def parse_seeds(text: str) -> list[int]:
    """``"0:400"`` (a range), ``"1,5,9"`` or a mix ``"0:10,20"``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if ":" in part:
                a, b = part.split(":", 1)
                seeds.extend(range(int(a), int(b)))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"seeds must look like '0:400' or '1,5,9', got {text!r}") from None
    if not seeds:
        raise ConfigError(f"seeds {text!r} name no seed")
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rtvla.policy.pick.demos --seeds 0:1000 --jobs 2 --out pick_demos.npz [--json PATH]``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    ap = argparse.ArgumentParser(prog="make_pick_demos", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0:1000", help="placement seeds, e.g. 0:1000 (default)")
    ap.add_argument("--out", required=True, help="npz file to write")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (each renders its own frames)")
    ap.add_argument("--json", default=None, help="also write the summary as JSON to PATH")
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    try:
        seeds = parse_seeds(args.seeds)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    if args.jobs > 1:
        import multiprocessing as mp

        # Contiguous slices keep the episode order that of the seeds, whatever finishes first.
        k = -(-len(seeds) // args.jobs)
        slices = [seeds[i : i + k] for i in range(0, len(seeds), k)]
        console.print(f"recording {len(seeds)} episodes in {len(slices)} processes")
        with mp.get_context("spawn").Pool(len(slices)) as pool:
            arrays = concat_demos(pool.map(_generate_slice, slices))
    else:
        ok = 0
        with Progress(TextColumn("demos"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[ok]} ok"), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("demos", total=len(seeds), ok=0)

            def progress(done: int, total: int, ep: dict[str, Any]) -> None:
                nonlocal ok
                ok += bool(ep["success"])
                bar.update(task, completed=done, ok=ok)

            arrays = generate_demos(seeds, progress=progress)
    path = save_demos(arrays, args.out)
    succ = arrays["ep_success"]
    err = np.linalg.norm(arrays["ep_perceived_world"][succ] - arrays["ep_true_world"][succ], axis=1)
    summary = {
        "file": str(path), "episodes": len(seeds), "succeeded": int(succ.sum()),
        "samples": len(arrays["obs_q"]),
        "perception_error_m": {"median": float(np.median(err)) if err.size else None,
                               "max": float(err.max()) if err.size else None},
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
