"""``rtvla bench policy``: chunk scheduling against a served policy, and the pick rows.

**Chunks rows.** The policy (``builtin:pick`` when the package ships it, else the reference
reach model below, a real ONNX network) is served by ``rtvla serve-policy`` in its own
process on 127.0.0.1, with an added server-side delay of 0, 100 and 300 ms (it stands for
a larger model's inference time). For each delay and each scheduler, a
:class:`~rtvla.policy.process.PolicyProcess` holds the websocket client, a
:class:`~rtvla.action.control_process.ControlProcess` (the default placement) runs the
100 Hz loop with a :class:`~rtvla.action.chunk_scheduler.ChunkScheduler`, and the bench's
main process plays the pick skill: it publishes the target as context, engages
``follow_policy`` for a few seconds, releases it, brings the arm back with setpoints, and
picks the next target. The schedulers:

* ``rtvla``: the scheduler as configured by default (request when the queue covers the
  measured p95 delay plus a margin, drop elapsed actions by counted ticks, replace with a
  crossfade, velocity targets);
* ``sync``: openpi's ``ActionChunkBroker`` behaviour: ask only when the chunk is exhausted,
  hold while waiting, run the new chunk from its first action.

A ``none`` row measures the same loop, same robot, same episode rhythm, fed by setpoints
only: the no-policy lateness that the others are compared with. Rows::

    {"bench": "chunks", "scheduler": "rtvla"|"sync"|"none", "delay_ms", "starved_ticks",
     "control_missed", "lateness_us": {"p50", "p99", "max"}, "boundary_jump_rad": {"p50", "max"},
     "duration_s", ...}

**Pick rows** come from :func:`rtvla.policy.pick.bench.pick_rows` (imported when asked for).

The robot is :class:`~rtvla.bench.control.KinematicRobot` (exact integration), so the
figures are the runtime's, not a simulator's. Placement as ``rtvla run`` does it: the control
process pinned to the last CPU under SCHED_FIFO 80 where permitted, the policy process and
the server on the other CPUs (the same for the no-policy row).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.action.chunk_scheduler import PolicyLink, SchedulerSettings
from rtvla.action.control import ControlSettings
from rtvla.action.control_process import ControlProcess
from rtvla.action.setpoints import Setpoint
from rtvla.bench.control import KinematicRobot, default_limits
from rtvla.errors import ConfigError, PolicyError
from rtvla.timing import MONOTONIC

__all__ = [
    "CARRY_Q",
    "TARGETS",
    "bench_chunks",
    "bench_policy",
    "build_reach_policy",
    "pick_rows_or_reason",
    "resolve_policy",
    "served_policy",
]

logger = logging.getLogger(__name__)

#: The arm pose every pick starts from (the scene's folded arm), 5 joints.
CARRY_Q = (0.0, -0.4, 2.6, 1.2, 0.0)
#: Cube centres in the robot's base frame (m) on the table's near half; the bench cycles them.
TARGETS = ((0.45, -0.20, 0.47), (0.60, 0.20, 0.47), (0.55, 0.0, 0.47))
_READY_RE = re.compile(r"(ws://[0-9.]+:\d+)")


def build_reach_policy(path: str | Path, *, horizon: int = 10, rate_hz: float = 10.0,
                       max_step: float = 0.05) -> Path:
    """Write the reference reach policy (ONNX): joint positions and a target position in,
    ``[1, H, 6]`` out (5 joint targets moving at most ``max_step`` rad per policy step
    toward a joint goal that depends linearly on the target, and a gripper closing as the
    goal is reached). It has the pick model's inputs and layout; the bench uses it until
    ``builtin:pick`` ships."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dof = len(CARRY_Q)
    g = np.array([[1.5, -1.0, 0.8, 0.5, 0.2], [2.5, 0.3, -0.4, 0.2, 1.0], [0.5, 0.6, -1.2, 0.4, 0.0]],
                 np.float32)
    g0 = np.array([-0.9, -0.6, 1.6, 0.6, -0.2], np.float32) - np.array([0.5, 0.0, 0.47], np.float32) @ g
    steps = (max_step * np.arange(1, horizon + 1, dtype=np.float32))[:, None]
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (g, "G"), (g0, "g0"), (steps, "lim"), (-steps, "neg_lim"),
        (np.full((1, dof), -2.7, np.float32), "q_lo"), (np.full((1, dof), 2.7, np.float32), "q_hi"),
        (np.array(10.0, np.float32), "ten"), (np.array(1.0, np.float32), "one"),
        (np.array(0.0, np.float32), "zero"), (np.array([1, horizon, dof + 1], np.int64), "shape"))]
    n = helper.make_node
    nodes = [
        n("MatMul", ["target", "G"], ["tg"]), n("Add", ["tg", "g0"], ["goal"]),
        n("Sub", ["goal", "q"], ["diff"]),                      # [1, 5]
        n("Max", ["diff", "neg_lim"], ["d_lo"]), n("Min", ["d_lo", "lim"], ["d"]),  # [H, 5]
        n("Add", ["q", "d"], ["arm_raw"]),
        n("Max", ["arm_raw", "q_lo"], ["arm_lo"]), n("Min", ["arm_lo", "q_hi"], ["arm"]),
        n("Sub", ["diff", "d"], ["left"]), n("Abs", ["left"], ["left_abs"]),
        n("ReduceMax", ["left_abs"], ["far"], axes=[1], keepdims=1),   # [H, 1]
        n("Mul", ["far", "ten"], ["far10"]), n("Sub", ["one", "far10"], ["close_raw"]),
        n("Max", ["close_raw", "zero"], ["close_lo"]), n("Min", ["close_lo", "one"], ["grip"]),
        n("Concat", ["arm", "grip"], ["flat"], axis=1),
        n("Reshape", ["flat", "shape"], ["actions"]),
    ]
    graph = helper.make_graph(
        nodes, "rtvla_reach", [helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, dof]),
                               helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, horizon, dof + 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="rtvla")
    model.ir_version = 8
    helper.set_model_props(model, {
        "rtvla.name": "reach", "rtvla.horizon": str(horizon), "rtvla.action_dim": str(dof + 1),
        "rtvla.rate_hz": repr(float(rate_hz)), "rtvla.output": "actions",
        "rtvla.inputs": json.dumps({"q": "observation/joint_position", "target": "observation/target_position"}),
        "rtvla.action": json.dumps({"slice": [{"kind": "joint_position", "start": 0, "size": dof},
                                              {"kind": "gripper", "start": dof}]}),
    })
    onnx.checker.check_model(model)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def resolve_policy(source: str | None, workdir: Path) -> tuple[str, str]:
    """(source to serve, what to call it): ``builtin:pick`` when shipped, else the reach model."""
    if source:
        return source, source
    from rtvla.policy.sources import builtin_names

    if "pick" in builtin_names():
        return "builtin:pick", "builtin:pick"
    path = build_reach_policy(workdir / "reach.onnx")
    logger.info("bench policy: builtin:pick is not shipped yet; using the reference reach model %s", path)
    return str(path), "reach (reference ONNX; builtin:pick not shipped yet)"


@contextlib.contextmanager
def served_policy(source: str, delay_ms: float, *, start_timeout_s: float = 60.0) -> Iterator[str]:
    """``rtvla serve-policy SOURCE --port 0 --delay-ms D`` in a child process; yields its URL
    and stops it (SIGTERM, then SIGKILL) afterwards."""
    cmd = [sys.executable, "-m", "rtvla.cli", "serve-policy", source, "--host", "127.0.0.1", "--port", "0",
           "--delay-ms", f"{delay_ms:g}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _, others = _placement()
    if others:
        with contextlib.suppress(OSError):  # before it starts its threads: they inherit it
            os.sched_setaffinity(proc.pid, others)
    lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # drained to the end so the server never blocks on its pipe
            lines.append(line.rstrip())
            if not found:
                m = _READY_RE.search(line)
                if m:
                    found.append(m.group(1))
                    ready.set()
        ready.set()

    reader = threading.Thread(target=read, name="serve-policy-out", daemon=True)
    reader.start()
    try:
        if not ready.wait(start_timeout_s) or not found:
            tail = "\n".join(lines[-15:])
            raise PolicyError(f"rtvla serve-policy {source} did not start within {start_timeout_s} s "
                              f"(exit {proc.poll()}):\n{tail}")
        yield found[0]
    finally:
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
        reader.join(2.0)


def _placement() -> tuple[int | None, list[int] | None]:
    """(control CPU, the policy's CPUs): the last CPU for control, the rest for the policy."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return None, None
    return cpus[-1], cpus[:-1]


def _summary(samples_us: Sequence[float]) -> dict[str, float]:
    s = np.asarray(samples_us, dtype=float)
    if not s.size:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    return {"p50": round(float(np.percentile(s, 50)), 1), "p99": round(float(np.percentile(s, 99)), 1),
            "max": round(float(s.max()), 1)}


def _link_keys(meta: Any) -> dict[str, Any]:
    """Arm and gripper columns from the policy's action mapping (pick/reach layout default)."""
    keys: dict[str, Any] = {"state_key": "observation/joint_position",
                            "gripper_key": "observation/gripper_position", "arm_start": 0,
                            "gripper_index": len(CARRY_Q) if (meta.action_dim or 0) > len(CARRY_Q) else None}
    table = meta.action_mapping or {}
    for sl in table.get("slice", []) if isinstance(table, dict) else []:
        if sl.get("kind") == "joint_position":
            keys["arm_start"] = int(sl.get("start", 0))
        elif sl.get("kind") == "gripper":
            keys["gripper_index"] = int(sl.get("start"))
    return keys


def _gripper_threshold(meta: Any) -> float | None:
    """The gripper slice's binarizing threshold, when the policy's action mapping has one."""
    table = meta.action_mapping or {}
    for sl in table.get("slice", []) if isinstance(table, dict) else []:
        if sl.get("kind") == "gripper" and sl.get("threshold") is not None:
            return float(sl["threshold"])
    return None


def _context(meta: Any, target: Sequence[float], k: int) -> dict[str, Any]:
    ctx: dict[str, Any] = {"observation/target_position": np.asarray(target, np.float32)}
    spec = meta.spec("observation/object_onehot")
    if spec is not None and spec.shape:
        onehot = np.zeros(spec.shape, np.float32)
        onehot[k % spec.shape[-1]] = 1.0
        ctx["observation/object_onehot"] = onehot
    return ctx


def _episodes(control: ControlProcess, seconds: float, follow_s: float, home_s: float,
              engage: Callable[[int], None] | None, release: Callable[[], None] | None) -> int:
    """The skill's rhythm for ``seconds``: follow the policy toward target k (or, without a
    policy, step the arm with setpoints), then bring the arm home; returns episodes run."""
    t0 = MONOTONIC.now_ns()
    end = t0 + int(seconds * 1e9)
    k = 0
    seq = 0
    while MONOTONIC.now_ns() < end:
        if engage is not None:
            engage(k)
            _wait_until(min(end, MONOTONIC.now_ns() + int(follow_s * 1e9)), control)
            if release is not None:
                release()
        else:
            # no policy: the same motion as setpoints (a goal per policy period)
            stop_at = min(end, MONOTONIC.now_ns() + int(follow_s * 1e9))
            while MONOTONIC.now_ns() < stop_at:
                seq += 1
                goal = np.asarray(CARRY_Q) + 0.3 * math.sin(seq * 0.1 + k)
                control.publish(Setpoint(stamp_ns=MONOTONIC.now_ns(), seq=seq,
                                         arm_q=np.clip(goal, -2.7, 2.7), gripper=0.0))
                _wait_until(MONOTONIC.now_ns() + 100_000_000, control)
        seq += 1
        control.publish(Setpoint(stamp_ns=MONOTONIC.now_ns(), seq=seq, arm_q=np.asarray(CARRY_Q), gripper=0.0))
        _wait_until(min(end, MONOTONIC.now_ns() + int(home_s * 1e9)), control)
        k += 1
        lost = control.check_alive()
        if lost is not None:
            raise PolicyError(f"bench policy: {lost}")
    return k


def _wait_until(deadline_ns: int, control: ControlProcess) -> None:
    while True:
        left = (deadline_ns - MONOTONIC.now_ns()) / 1e9
        if left <= 0:
            return
        control.wait_state(min(left, 0.1))


def _run_one(scheduler: str, delay_ms: float | None, url: str | None, seconds: float, *,
             follow_s: float, home_s: float, rate_hz: float, policy_name: str) -> dict[str, Any]:
    from rtvla.policy.process import PolicyProcess

    dof = len(CARRY_Q)
    factory = functools.partial(KinematicRobot, dof, limits=default_limits(dof), q0=np.asarray(CARRY_Q))
    control_cpu, others = _placement()
    settings = ControlSettings(placement="process", cpu=control_cpu, fifo_priority=80)
    t0 = MONOTONIC.now_ns()
    with contextlib.ExitStack() as stack:
        link = meta = policy = None
        if url is not None:
            policy = PolicyProcess(url, {"timeout_s": 5.0}, name=f"bench-policy-{scheduler}", cpus=others)
            stack.callback(policy.stop)
            meta = policy.start()
            sched = (SchedulerSettings() if scheduler == "rtvla" else
                     SchedulerSettings(mode="sync", crossfade_ticks=0, starve_hold_ticks=1_000_000,
                                       resample="linear"))
            thr = _gripper_threshold(meta)
            if thr is not None:
                sched = sched.model_copy(update={"gripper_threshold": thr})
            link = PolicyLink.from_process(policy, sched, **_link_keys(meta))
        control = ControlProcess(factory, dof, settings=settings, rate_hz=rate_hz, policy=link,
                                 name=f"bench-{scheduler}")
        control.start()
        try:
            engage = release = None
            if policy is not None:
                pp = policy

                def engage(k: int) -> None:
                    pp.set_context(_context(meta, TARGETS[k % len(TARGETS)], k))
                    control.follow_policy(True)

                def release() -> None:
                    control.follow_policy(False)

            episodes = _episodes(control, seconds, follow_s, home_s, engage, release)
        finally:
            final = control.stop()
        pstats = policy.stats() if policy is not None else None
    duration = (MONOTONIC.now_ns() - t0) / 1e9
    ps = final.get("policy") or {}
    row: dict[str, Any] = {
        "bench": "chunks", "scheduler": scheduler, "delay_ms": delay_ms,
        "starved_ticks": int(ps.get("starved_ticks", 0)),
        "control_missed": int(final.get("missed", 0)),
        "lateness_us": _summary(final.get("lateness_us", [])),
        "boundary_jump_rad": {k: round(float(v), 4) for k, v in
                              (ps.get("boundary_jump_rad") or {"p50": 0.0, "max": 0.0}).items()},
        "duration_s": round(duration, 2),
        "episodes": episodes,
        "policy": policy_name if url is not None else None,
        "robot": "KinematicRobot",
        "realtime": final.get("realtime"),
        "ticks": int(final.get("ticks", 0)),
        # the loop's own step time (scheduler included), less sensitive to a busy machine than lateness
        "step_us": {"avg": round(float(final.get("loop_time_avg_ms", 0.0)) * 1e3, 1),
                    "max": round(float(final.get("loop_time_max_ms", 0.0)) * 1e3, 1)},
        "watchdog_trips": int(final.get("watchdog_trips", 0)),
        "last_trip_reason": final.get("last_trip_reason") or None,
    }
    if url is not None:
        row.update({
            "chunks": int(ps.get("chunks", 0)), "requests": int(ps.get("requests", 0)),
            "starvation_stops": int(ps.get("starvation_stops", 0)),
            "rejected_chunks": int(ps.get("rejected", 0)),
            "dropped_actions": int(ps.get("dropped_actions", 0)),
            "inference_delay_ms": {k: round(float(v), 1) for k, v in (ps.get("delay_ms") or {}).items()},
            "window_warnings": int(ps.get("window_warnings", 0)),
            "policy_errors": (pstats or {}).get("errors", 0),
        })
    return row


def bench_chunks(
    delays_ms: Sequence[float] = (0.0, 100.0, 300.0),
    schedulers: Sequence[str] = ("rtvla", "sync"),
    *,
    seconds: float = 10.0,
    follow_s: float = 3.0,
    home_s: float = 1.0,
    rate_hz: float = 100.0,
    source: str | None = None,
    baseline: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The chunks rows (see the module docstring); ``progress(label)`` before each run."""
    bad = [s for s in schedulers if s not in ("rtvla", "sync")]
    if bad:
        raise ConfigError(f"unknown scheduler {bad[0]!r}; known: rtvla, sync")
    if any(not (d >= 0 and math.isfinite(d)) for d in delays_ms):
        raise ConfigError(f"delays must be finite and >= 0 ms, got {list(delays_ms)}")
    if not seconds > 0:
        raise ConfigError(f"seconds must be > 0, got {seconds}")
    rows: list[dict[str, Any]] = []
    kw = {"follow_s": follow_s, "home_s": home_s, "rate_hz": rate_hz}
    with tempfile.TemporaryDirectory(prefix="rtvla-bench-policy-") as tmp:
        serve, name = resolve_policy(source, Path(tmp))
        if baseline:
            if progress is not None:
                progress("no policy (baseline)")
            rows.append(_run_one("none", None, None, seconds, policy_name=name, **kw))
        for delay in delays_ms:
            with served_policy(serve, delay) as url:
                for sched in schedulers:
                    if progress is not None:
                        progress(f"{sched}, server delay {delay:g} ms")
                    rows.append(_run_one(sched, float(delay), url, seconds, policy_name=name, **kw))
    return rows


def pick_rows_or_reason(episodes: int, seed0: int | None = None,
                        progress: Callable[..., None] | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """The pick rows from :func:`rtvla.policy.pick.bench.pick_rows`, or why there are none."""
    try:
        from rtvla.policy.pick import bench as pick_bench
    except ImportError as exc:
        return [], f"the pick bench is not available ({exc})"
    fn = getattr(pick_bench, "pick_rows", None)
    if fn is None:
        return [], "rtvla.policy.pick.bench.pick_rows does not exist yet (the learned pick is not finished)"
    kwargs: dict[str, Any] = {}
    if progress is not None:
        kwargs["progress"] = progress
    try:
        if seed0 is None:
            return list(fn(episodes, **kwargs)), None
        return list(fn(episodes, seed0, **kwargs)), None
    except (ConfigError, PolicyError, FileNotFoundError) as exc:
        return [], f"the pick rows could not run: {exc}"


def bench_policy(episodes: int = 20, *, seed0: int | None = None, chunks: bool = True, pick: bool = True,
                 progress: Callable[[str], None] | None = None, **chunk_kw: Any) -> dict[str, Any]:
    """Everything ``rtvla bench policy`` prints: ``{"rows": [...], "notes": [...]}``."""
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    if pick:
        if progress is not None:
            progress(f"pick: {episodes} episodes per controller")
        def pick_progress(controller: str, done: int, total: int) -> None:
            if progress is not None:
                progress(f"pick, {controller}: episode {done}/{total}")

        got, why = pick_rows_or_reason(episodes, seed0, pick_progress)
        rows.extend(got)
        if why:
            notes.append(why)
    if chunks:
        rows.extend(bench_chunks(progress=progress, **chunk_kw))
    return {"rows": rows, "notes": notes}
