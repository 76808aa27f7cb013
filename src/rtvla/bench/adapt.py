"""``rtvla bench adapt``: a CPU load step on the running stack, adaptation on vs off.

The whole embedded stack (the robot plug-in and planner from config; by default the MuJoCo
robot with its control process and the rule planner) is started twice, once with ``[adapt]
enabled = true`` and once with ``false``, everything else equal. Each run goes through three
phases, sampled at ``sample_hz``:

1. **settle** (``settle_s``): the stack alone; its perception rate here is the nominal one.
2. **load** (``load_s``): ``procs`` real processes burn CPU (busy loops), then are killed.
3. **after** (up to ``recover_s``): until the stack has recovered, or the time is up.

Per run, one row: ``control_missed`` (missed control cycles from the start of the load to
the end of the run), ``perception_hz_during_load`` (results published per second during the
load), ``level_max`` (highest quality level, 0 = full quality), ``recovery_s`` (from the end
of the load until the level is back to 0 *and* perception's rate over the last second is
back to at least 90 % of its nominal rate; None when that did not happen within
``recover_s``), plus what was around them (the level before the load, the burners' CPU
seconds, the optimizer's decisions and their reasons).

Whether the quality levels cut real cost is measured too (:func:`knob_costs`): on the "on"
stack, after its run, the optimizer is stopped and each level is applied in turn; for each,
the CPU time of one :meth:`VisionPipeline.process` call (resize and detection, the CPU clock
of the calling thread) and the CPU the camera spends rendering one frame (the render thread
and the software rasterizer's worker threads, from ``/proc/self/task/*/schedstat``). For
the simulated camera, :func:`render_cost_at` then measures what rendering would cost at each
level's resolution: the camera renders at one fixed size whatever the level, so only the
processing shrinks with the knob unless the camera follows it.

Goals (issue 9): with adaptation on, 0 control misses, recovery within 5 s, perception above
its minimum rate during the load.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil

from rtvla.config import Config, load_config
from rtvla.errors import ConfigError

__all__ = ["RENDER_THREADS", "CpuLoad", "bench_adapt", "knob_costs", "plot_adapt", "render_cost_at",
           "threads_cpu_ns"]

logger = logging.getLogger(__name__)

#: Thread-name prefixes (``/proc/self/task/*/comm``) whose CPU is the camera's rendering
#: besides the camera's own ``<name>-render`` thread: Mesa llvmpipe's rasterizer threads.
RENDER_THREADS = ("llvmpipe",)

_BURN = "while True:\n    pass\n"

Progress = Callable[[str, float], None]


class CpuLoad:
    """``procs`` real processes that each keep one CPU busy until :meth:`stop` kills them.

    A context manager; ``cpu_s`` after :meth:`stop` is the CPU time they actually got (a load
    step that the scheduler starved would show here as much less than ``procs * seconds``).
    """

    def __init__(self, procs: int) -> None:
        if not isinstance(procs, int) or procs < 1:
            raise ConfigError(f"load procs must be an integer >= 1, got {procs!r}")
        self.procs = procs
        self.cpu_s = 0.0
        self.pids: list[int] = []
        self._popen: list[subprocess.Popen[bytes]] = []

    def start(self) -> CpuLoad:
        for _ in range(self.procs):
            p = subprocess.Popen([sys.executable, "-c", _BURN], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._popen.append(p)
            self.pids.append(p.pid)
        return self

    def stop(self) -> float:
        """Kill the burners (bounded wait), return the CPU seconds they used."""
        total = 0.0
        for p in self._popen:
            try:
                t = psutil.Process(p.pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass  # already gone: nothing to count
            p.kill()
        for p in self._popen:
            try:
                p.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                logger.error("load process %d did not die within 5 s of SIGKILL", p.pid)
        self._popen.clear()
        self.cpu_s = total
        return total

    def __enter__(self) -> CpuLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def threads_cpu_ns(prefixes: Iterable[str], task_dir: str = "/proc/self/task") -> int:
    """CPU nanoseconds used so far by this process's threads whose name starts with one of
    ``prefixes`` (the kernel's ``schedstat`` run time). A Python thread is matched by its
    ``threading`` name (the kernel only knows it as the process's name), any other thread (a
    native library's, such as Mesa's ``llvmpipe-N``) by its kernel name."""
    wanted = tuple(prefixes)
    py_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    total = 0
    for tid in os.listdir(task_dir):
        try:
            name = py_names.get(int(tid))
            if name is None:
                with open(f"{task_dir}/{tid}/comm", encoding="utf-8") as f:
                    name = f.read().strip()
            if not name.startswith(wanted):
                continue
            with open(f"{task_dir}/{tid}/schedstat", encoding="utf-8") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between listing and reading
    return total


def _with_adapt(cfg: Config, enabled: bool) -> Config:
    sections = {k: dict(v) for k, v in cfg.sections.items()}
    sections["adapt"] = {**sections.get("adapt", {}), "enabled": enabled}
    return cfg.model_copy(update={"sections": sections})


def _resolve_config(config: Config | str | os.PathLike[str] | None) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def knob_costs(stack: Any, ladder: Any, *, frames: int = 10, rounds: int = 3,
               warmup: int = 3) -> list[dict[str, Any]]:
    """Per quality level of ``ladder``: CPU ms of perception's processing of one frame (the
    calling thread's CPU clock around :meth:`VisionPipeline.process` on fresh camera
    frames) and CPU ms the camera spent rendering a frame meanwhile. The levels take turns,
    ``rounds`` times ``frames`` frames each after ``warmup`` frames that are not counted,
    and each figure is the median over its rounds, so that a neighbour's load that comes
    and goes does not land on one level only. The optimizer must be stopped (this turns the
    knobs itself); the ladder is left at level 0."""
    pipe = stack.pipeline
    cam = stack.cameras[0].source
    wait_newer = getattr(cam, "wait_newer", None)
    render_threads = (*RENDER_THREADS, f"{getattr(cam, 'name', 'camera')}-render")
    per: dict[int, dict[str, list[float]]] = {
        lv.index: {"cpu": [], "wall": [], "render": []} for lv in ladder.levels}
    shape: dict[int, list[int]] = {}
    for _ in range(rounds):
        for level in ladder.levels:
            ladder.apply(level.index)
            cpu_ms: list[float] = []
            wall_ms: list[float] = []
            seq = -1
            skip = warmup  # frames of the switch itself (a source that follows the knob)
            t0 = time.monotonic()
            rendered0, render0 = getattr(cam, "frames_rendered", 0), threads_cpu_ns(render_threads)
            while len(cpu_ms) < frames:
                frame = wait_newer(seq, 0.5) if wait_newer is not None else cam.read()
                if frame is None or frame.seq == seq:
                    if time.monotonic() - t0 > 10.0:
                        raise RuntimeError("knob costs: the camera delivered no new frame for 10 s")
                    continue
                seq = frame.seq
                if skip > 0:
                    skip -= 1
                    if skip == 0:
                        rendered0 = getattr(cam, "frames_rendered", 0)
                        render0 = threads_cpu_ns(render_threads)
                    continue
                shape[level.index] = [int(frame.image.shape[1]), int(frame.image.shape[0])]
                c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
                pipe.process(frame)
                cpu_ms.append((time.thread_time_ns() - c0) / 1e6)
                wall_ms.append((time.perf_counter_ns() - w0) / 1e6)
            render_ns = threads_cpu_ns(render_threads) - render0
            n = getattr(cam, "frames_rendered", 0) - rendered0
            per[level.index]["cpu"].append(statistics.median(cpu_ms))
            per[level.index]["wall"].append(statistics.median(wall_ms))
            if n > 0:
                per[level.index]["render"].append(render_ns / 1e6 / n)
    ladder.apply(0)
    out: list[dict[str, Any]] = []
    for level in ladder.levels:
        f = per[level.index]
        render = round(statistics.median(f["render"]), 3) if f["render"] else None
        cpu = round(statistics.median(f["cpu"]), 3)
        size = ladder.level(level.index).settings.get("perception.resolution")
        out.append({
            "level": level.index,
            "name": level.name,
            "resolution": list(size) if size is not None else list(pipe.knob("resolution")),
            "camera_size": shape.get(level.index),  # what the frames measured had
            "camera": f"{type(cam).__module__}.{type(cam).__qualname__}",
            "camera_depth": getattr(cam, "depth_enabled", None),
            "process_cpu_ms": cpu,
            "process_wall_ms": round(statistics.median(f["wall"]), 3),
            "render_cpu_ms": render,
            "total_cpu_ms": round(cpu + render, 3) if render is not None else None,
            "frames": frames * rounds,
        })
    return out


def render_cost_at(sizes: Iterable[tuple[int, int]], *, depth: bool = True, frames: int = 10,
                   rounds: int = 3) -> list[dict[str, Any]]:
    """CPU ms per frame of the simulated camera rendering the default scene at each
    ``(w, h)``: what a camera that followed the resolution knob would cost (the running
    stack's camera renders at one fixed size). One on-demand camera per size, warmed up,
    then the sizes take turns (``rounds`` times ``frames`` frames, median of the rounds);
    run it with no other camera rendering in this process."""
    from rtvla.robots.sim.camera import SimCamera
    from rtvla.robots.sim.scene import load_scene

    scene = load_scene()
    qpos = scene.load_model().qpos0.copy()
    sizes = [(int(w), int(h)) for w, h in sizes]
    cams = [SimCamera(scene=scene, qpos_fn=qpos.copy, width=w, height=h, depth=depth, threaded=False,
                      name=f"adapt_render_{i}") for i, (w, h) in enumerate(sizes)]
    cpu: list[list[float]] = [[] for _ in sizes]
    wall: list[list[float]] = [[] for _ in sizes]
    opened: list[Any] = []
    try:
        for cam in cams:
            cam.open()
            opened.append(cam)
            for _ in range(5):  # the first frames compile llvmpipe's shaders
                cam.read()
        for _ in range(rounds):
            for i, cam in enumerate(cams):
                names = (*RENDER_THREADS, f"{cam.name}-render")
                c0, w0 = threads_cpu_ns(names), time.perf_counter_ns()
                for _ in range(frames):
                    cam.read()
                cpu[i].append((threads_cpu_ns(names) - c0) / 1e6 / frames)
                wall[i].append((time.perf_counter_ns() - w0) / 1e6 / frames)
    finally:
        for cam in opened:
            cam.close()
    return [{"size": [w, h], "render_cpu_ms": round(statistics.median(cpu[i]), 3),
             "render_wall_ms": round(statistics.median(wall[i]), 3)} for i, (w, h) in enumerate(sizes)]


class _Sampler:
    """The bench's own view of the running stack, sampled on absolute deadlines."""

    def __init__(self, stack: Any, sample_hz: float) -> None:
        self.stack = stack
        self.period = 1.0 / sample_hz
        self.rows: list[dict[str, Any]] = []
        self._window: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self.t_zero = time.monotonic()
        self._next = self.t_zero

    def level(self) -> int:
        opt = self.stack.optimizer
        return int(opt.level) if opt is not None else 0

    def sample(self, phase: str) -> dict[str, Any]:
        st = self.stack
        now = time.monotonic()
        processed = int(st.pipeline.processed)
        self._window.append((now, processed))
        while len(self._window) > 2 and self._window[1][0] <= now - 1.0:
            self._window.popleft()
        t_old, n_old = self._window[0]
        hz = (processed - n_old) / (now - t_old) if now - t_old >= 0.5 else None
        mon = st.monitor.latest()
        pcpu = mon.components.get("perception") if mon is not None else None
        row = {
            "t": round(now - self.t_zero, 3), "phase": phase, "level": self.level(),
            "perception_hz": None if hz is None else round(hz, 2), "processed": processed,
            "control_missed": int(st.control_stats().get("missed", 0)),
            "cpu_percent": None if mon is None else round(mon.cpu_percent, 1),
            "perception_cpu_percent": None if pcpu is None else round(pcpu.cpu_percent, 1),
        }
        self.rows.append(row)
        return row

    def run_for(self, seconds: float, phase: str, until: Callable[[dict[str, Any]], bool] | None = None,
                tick: Callable[[float], None] | None = None) -> dict[str, Any]:
        """Sample for ``seconds`` (or until ``until(row)`` is true); returns the last row."""
        end = time.monotonic() + seconds
        row = self.sample(phase)
        while time.monotonic() < end:
            self._next += self.period
            self._stop.wait(max(0.0, self._next - time.monotonic()))
            row = self.sample(phase)
            if tick is not None:
                tick(seconds - max(0.0, end - time.monotonic()))
            if until is not None and until(row):
                break
        return row


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _run_mode(cfg: Config, mode: str, *, settle_s: float, load_s: float, procs: int,
              recover_s: float, sample_hz: float, measure_costs: bool,
              progress: Progress | None) -> dict[str, Any]:
    from rtvla.runtime.stack import Stack

    def tick(label: str, done_s: float) -> None:
        if progress is not None:
            progress(f"adaptation {mode}: {label}", done_s)

    stack = Stack.from_config(_with_adapt(cfg, mode == "on"))
    budget = stack.cfg.budget("perception")
    costs: list[dict[str, Any]] | None = None
    with stack:
        s = _Sampler(stack, sample_hz)
        s.run_for(settle_s, "settle", tick=lambda d: tick("settle", d))
        settle = [r for r in s.rows if r["t"] >= settle_s - min(3.0, settle_s / 2)]
        nominal = _mean([r["perception_hz"] for r in settle]) or float(budget.rate_hz or 0.0)
        level_before = s.level()
        missed0 = int(stack.control_stats().get("missed", 0))
        n0, t_load = int(stack.pipeline.processed), time.monotonic()
        with CpuLoad(procs) as load:
            s.run_for(load_s, "load", tick=lambda d: tick("load", settle_s + d))
            n1, t_end = int(stack.pipeline.processed), time.monotonic()
        load_cpu_s, load_pids = load.cpu_s, list(load.pids)
        missed_load = int(stack.control_stats().get("missed", 0)) - missed0
        hz_load = (n1 - n0) / (t_end - t_load)
        threshold = 0.9 * nominal
        recovered: dict[str, float] = {}

        def back(row: dict[str, Any]) -> bool:
            t = time.monotonic() - t_end
            if row["level"] == 0 and "level" not in recovered:
                recovered["level"] = t
            if (row["level"] == 0 and row["perception_hz"] is not None
                    and row["perception_hz"] >= threshold and "all" not in recovered):
                recovered["all"] = t
            # One more second after recovery shows it held.
            return "all" in recovered and t >= recovered["all"] + 1.0

        s.run_for(recover_s, "after", until=back, tick=lambda d: tick("after", settle_s + load_s + d))
        missed_total = int(stack.control_stats().get("missed", 0)) - missed0
        opt = stack.optimizer
        decisions = opt.report() if opt is not None else []
        if measure_costs and opt is not None:
            opt.stop()
            costs = knob_costs(stack, opt.ladder)
    t_zero = s.t_zero
    load_rows = [r for r in s.rows if r["phase"] == "load"]
    row = {
        "adaptation": mode,
        "control_missed": missed_total,
        "control_missed_during_load": missed_load,
        "perception_hz_during_load": round(hz_load, 2),
        "perception_hz_nominal": round(nominal, 2),
        "perception_min_hz": budget.min_throughput_hz,
        "perception_cpu_percent_during_load": _round(_mean([r["perception_cpu_percent"] for r in load_rows])),
        "level_before_load": level_before,
        "level_max": max(r["level"] for r in s.rows),
        "level_max_during_load": max(r["level"] for r in load_rows),
        "recovery_s": _round(recovered.get("all")),
        "level_recovery_s": _round(recovered.get("level")),
        "recover_window_s": recover_s,
        "load": {"procs": procs, "s": round(t_end - t_load, 2), "cpu_s": round(load_cpu_s, 2),
                 "pids": load_pids},
        "system_cpu_percent_during_load": _round(_mean([r["cpu_percent"] for r in load_rows])),
        # The optimizer's clock is MONOTONIC (time.monotonic_ns): same time base as t_load.
        "decisions": [{"t": round(d["stamp_ns"] / 1e9 - t_load, 2),
                       "to_level": d["to_level"], "reason": d["reason"]} for d in decisions],
    }
    timeline = [{**r, "t": round(r["t"] - (t_load - t_zero), 3)} for r in s.rows]
    return {"row": row, "timeline": timeline, "knob_costs": costs, "load_window_s": [0.0, round(t_end - t_load, 3)]}


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def bench_adapt(
    *,
    load_s: float = 10.0,
    procs: int = 2,
    settle_s: float = 5.0,
    recover_s: float = 40.0,
    sample_hz: float = 10.0,
    config: Config | str | os.PathLike[str] | None = None,
    modes: Sequence[str] = ("on", "off"),
    measure_render: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Both runs and the knob costs; see the module docstring. ``progress(label, seconds)``
    is called at each sample with the seconds done in the current run."""
    for name, value in (("load_s", load_s), ("settle_s", settle_s), ("recover_s", recover_s),
                        ("sample_hz", sample_hz)):
        if not (isinstance(value, int | float) and value > 0):
            raise ConfigError(f"bench adapt: {name} must be > 0, got {value!r}")
    if not isinstance(procs, int) or procs < 1:
        raise ConfigError(f"bench adapt: procs must be an integer >= 1, got {procs!r}")
    bad = [m for m in modes if m not in ("on", "off")]
    if bad or not modes:
        raise ConfigError(f"bench adapt: modes must be 'on' and/or 'off', got {list(modes)!r}")
    cfg = _resolve_config(config)
    runs = {}
    for mode in modes:
        runs[mode] = _run_mode(cfg, mode, settle_s=settle_s, load_s=load_s, procs=procs,
                               recover_s=recover_s, sample_hz=sample_hz,
                               measure_costs=mode == "on", progress=progress)
    costs = next((r["knob_costs"] for r in runs.values() if r["knob_costs"]), None)
    if costs and costs[0]["camera"].startswith("rtvla.robots.sim.") and measure_render:
        if progress is not None:
            progress("render cost per camera size", 0.0)
        sized = render_cost_at([tuple(c["resolution"]) for c in costs], depth=bool(costs[0]["camera_depth"]))
        for c, r in zip(costs, sized, strict=True):
            c["render_cpu_ms_if_camera_at_resolution"] = r["render_cpu_ms"]
    return {
        "rows": [runs[m]["row"] for m in modes],
        "knob_costs": costs,
        "knob_cost_summary": _cost_summary(costs),
        "timeline": {m: runs[m]["timeline"] for m in modes},
        "load_window_s": next(iter(runs.values()))["load_window_s"],
        "settings": {"load_s": load_s, "procs": procs, "settle_s": settle_s, "recover_s": recover_s,
                     "sample_hz": sample_hz, "cpus": os.cpu_count(),
                     "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
    }


def _cost_summary(costs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """How much CPU per frame the lowest level saves against full quality, split by stage."""
    if not costs or len(costs) < 2:
        return None
    top, low = costs[0], costs[-1]

    def cut(key: str) -> float | None:
        a, b = top.get(key), low.get(key)
        return round(1.0 - b / a, 3) if a and b is not None else None

    out = {"levels": len(costs) - 1, "process_cpu_cut": cut("process_cpu_ms"),
           "render_cpu_cut": cut("render_cpu_ms"), "total_cpu_cut": cut("total_cpu_ms")}
    if "render_cpu_ms_if_camera_at_resolution" in top:
        # What the lowest level would save if the camera rendered at the knob's resolution.
        a = top["process_cpu_ms"] + top["render_cpu_ms_if_camera_at_resolution"]
        b = low["process_cpu_ms"] + low["render_cpu_ms_if_camera_at_resolution"]
        out["total_cpu_cut_if_camera_followed"] = round(1.0 - b / a, 3) if a else None
    return out


def plot_adapt(result: dict[str, Any], path: str | Path) -> Path:
    """Level and perception rate over time, adaptation on vs off, the load step shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_l, ax_r) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    colors = {"on": "tab:blue", "off": "tab:orange"}
    for mode, rows in result["timeline"].items():
        t = [r["t"] for r in rows]
        ax_l.step(t, [r["level"] for r in rows], where="post", label=f"adaptation {mode}",
                  color=colors.get(mode))
        pts = [(r["t"], r["perception_hz"]) for r in rows if r["perception_hz"] is not None]
        ax_r.plot([a for a, _ in pts], [b for _, b in pts], label=f"adaptation {mode}", color=colors.get(mode))
    lo, hi = result["load_window_s"]
    for ax in (ax_l, ax_r):
        ax.axvspan(lo, hi, color="grey", alpha=0.2, label="CPU load")
        ax.grid(alpha=0.3)
    rows = result["rows"]
    min_hz = rows[0].get("perception_min_hz") if rows else None
    if min_hz:
        ax_r.axhline(min_hz, color="red", linestyle="--", linewidth=1, label="minimum rate")
    ax_l.set_ylabel("quality level (0 = full)")
    ax_l.yaxis.get_major_locator().set_params(integer=True)
    ax_r.set_ylabel("perception Hz (1 s window)")
    ax_r.set_xlabel("seconds from the start of the load")
    ax_l.legend(loc="upper right", fontsize=8)
    ax_r.legend(loc="lower right", fontsize=8)
    s = result["settings"]
    fig.suptitle(f"rtvla bench adapt: {s['procs']} busy processes for {s['load_s']:g} s on {s['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
